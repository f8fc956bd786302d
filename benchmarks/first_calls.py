"""
How fast acting is from the first call, by how the compiled acting path starts:

- before 0.3: compiled in the calling thread at the 10,000th call of a batch size, which waits;
- default: built ahead in a child process from the 1,000th call (an AOTInductor package on disk),
  switching at the 10,000th call, waiting only if the build is still running;
- when ready (``compiled_acting_when_ready=True``, ``compile_acting_after=0``): the build starts at
  the first call and acting switches as soon as the package is ready, never waiting.

Three measurements, each configuration in a fresh process with an empty inductor and package cache
(so every one pays its own compile), one torch thread:

- ``pendulum``: wall time of the first 20,000 steps of a Pendulum-v1 run at the small settings of
  ``hyperparams/qvpo.yml`` (training included);
- ``evaluate``: wall time of ``evaluate_policy`` over 10 episodes of 1,000 steps with Hopper-v5's
  sizes (11 observations, 3 actions) and the paper's policy (3x256, T 20, best of 32);
- ``latency``: per-call latency of the first 1,000 ``predict(deterministic=True)`` calls of that policy.

``warm cache``: the when-ready configuration once more, its cache kept (a second process finds the package).

    python benchmarks/first_calls.py --rounds 1        # writes benchmarks/results/first_calls_cpu.md
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from fresh_process import run_fresh

CONFIGS = {
    "before 0.3 (compiled in the calling thread at call 10,000)": dict(
        compile_acting_after=10_000, compile_in_background=False
    ),
    "default (built from call 1,000 in a child process, switch at 10,000)": dict(compile_acting_after=10_000),
    "when ready (built from the first call, switch when ready)": dict(compile_acting_after=0, compiled_acting_when_ready=True),
}
WARM = "when ready (built from the first call, switch when ready)"  # run once more with its cache kept
MEASUREMENTS = ("pendulum", "evaluate", "latency")
RESULTS = Path(__file__).resolve().parent / "results"


def measure(measurement: str, config: dict, seed: int, scale: float = 1.0) -> dict:
    """Runs in a child process: one measurement of one configuration."""
    import numpy as np
    import torch as th
    import yaml
    from gymnasium.wrappers import TimeLimit
    from speed import SizedEnv
    from stable_baselines3.common.evaluation import evaluate_policy

    from sb3_qvpo import QVPO

    th.set_num_threads(1)
    if measurement == "pendulum":
        entry = yaml.safe_load((Path(__file__).resolve().parent.parent / "hyperparams" / "qvpo.yml").read_text())[
            "Pendulum-v1"
        ]
        kwargs = {key: value for key, value in entry.items() if key not in ("n_timesteps", "policy", "policy_kwargs")}
        policy_kwargs = eval(entry.get("policy_kwargs", "dict()"))  # the zoo's convention: a Python expression
        model = QVPO("MlpPolicy", "Pendulum-v1", seed=seed, device="cpu", policy_kwargs={**policy_kwargs, **config}, **kwargs)
        start = time.perf_counter()
        model.learn(int(20_000 * scale))
        seconds = time.perf_counter() - start
        model.policy.compiled_acting.wait()  # a build still running ends before the next run starts
        return {"seconds": seconds}
    env = TimeLimit(SizedEnv(11, 3), max_episode_steps=int(1_000 * scale))  # Hopper-v5's sizes
    model = QVPO("MlpPolicy", env, seed=seed, device="cpu", buffer_size=1_000, policy_kwargs=config)
    if measurement == "evaluate":
        start = time.perf_counter()
        evaluate_policy(model, env, n_eval_episodes=10, deterministic=True)
        seconds = time.perf_counter() - start
        model.policy.compiled_acting.wait()
        return {"seconds": seconds}
    obs = env.observation_space.sample()
    latencies = []
    for _ in range(int(1_000 * scale)):
        start = time.perf_counter()
        model.predict(obs, deterministic=True)
        latencies.append(time.perf_counter() - start)
    model.policy.compiled_acting.wait()
    ms = np.asarray(latencies) * 1e3
    return {
        "mean_ms": float(ms.mean()),
        "median_ms": float(np.median(ms)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "last_100_mean_ms": float(ms[-len(ms) // 10 :].mean()),
    }


def run_child(measurement: str, config_name: str, seed: int, cache_dir: str, scale: float) -> dict:
    return run_fresh(__file__, [measurement, config_name, str(seed), str(scale)], cache_dir)


def mean_of(runs: list[dict], key: str) -> float | None:
    return sum(run[key] for run in runs) / len(runs) if runs else None


def render(results: dict[str, dict[str, list[dict]]], args: argparse.Namespace) -> str:
    """The table; a measurement not run (``--measurements``) shows as a dash."""
    command = f"python benchmarks/first_calls.py --rounds {args.rounds}"
    if set(args.measurements) != set(MEASUREMENTS):
        command += f" --measurements {' '.join(args.measurements)} --output {args.output}"
    lines = [
        f"Command: `{command}`; one torch thread, each run a fresh process",
        "with empty inductor and package caches except the warm row (its configuration once more, its caches kept);",
        "mean over rounds",
        "(in each round the configurations run one after the other).",
        "",
        "| configuration | Pendulum-v1, first 20,000 steps (s) | evaluate_policy, 10 x 1,000 steps, Hopper sizes (s) "
        "| first 1,000 predict calls: mean / median / p99 / max ms | last 100 of them, mean ms |",
        "|---|---|---|---|---|",
    ]
    for name, by_measurement in results.items():
        pendulum, evaluate = mean_of(by_measurement["pendulum"], "seconds"), mean_of(by_measurement["evaluate"], "seconds")
        latency = {key: mean_of(by_measurement["latency"], key) for key in ("mean_ms", "median_ms", "p99_ms", "max_ms")}
        last_100 = mean_of(by_measurement["latency"], "last_100_mean_ms")
        latency_cell = "-" if last_100 is None else " / ".join(f"{latency[key]:.2f}" for key in latency)
        cells = ["-" if value is None else f"{value:.1f}" for value in (pendulum, evaluate)]
        lines.append(
            f"| {name} | {cells[0]} | {cells[1]} | {latency_cell} | {'-' if last_100 is None else f'{last_100:.2f}'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        measurement, config_name, seed, scale = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
        config = CONFIGS[config_name.removesuffix(", warm cache")]
        print(json.dumps(measure(measurement, config, seed, scale)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measurements", nargs="+", default=list(MEASUREMENTS), choices=MEASUREMENTS)
    parser.add_argument("--output", type=Path, default=RESULTS / "first_calls_cpu.md")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink every budget (a rehearsal; writes nothing)")
    args = parser.parse_args()
    names = [*CONFIGS, f"{WARM}, warm cache"]
    results: dict[str, dict[str, list[dict]]] = {name: {m: [] for m in MEASUREMENTS} for name in names}
    for _ in range(args.rounds):
        for measurement in args.measurements:
            with tempfile.TemporaryDirectory() as root:
                for index, name in enumerate(names):
                    # The warm row reuses the cache folder of its configuration, filled by its run just before.
                    cache = os.path.join(root, str(list(CONFIGS).index(WARM) if name.endswith("warm cache") else index))
                    results[name][measurement].append(run_child(measurement, name, args.seed, cache, args.scale))
                    print(name, measurement, results[name][measurement][-1], flush=True)
    table = render(results, args)
    print(table)
    if args.scale == 1.0:
        args.output.write_text(table)


if __name__ == "__main__":
    main()
