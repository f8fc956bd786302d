"""
Acting with fewer denoising steps than the chain was trained with (``policy.n_acting_steps = S``):
the return of 10 evaluation episodes and the time of one ``predict`` for S in {T, T/2, T/4, 2, 1}
(rounded up, repeats dropped), on models trained with T at the CPU learning benchmark's settings.

Each model is one ``python -m sb3_qvpo.train`` run of ``benchmarks/learning.py``'s settings (the
hyper-parameter files it wrote next to its results), trained here unless ``--model TASK:ALGO=PATH``
gives one (e.g. the zip that a ``learning.py run`` left in its log folder). Every S of a model is
evaluated on the same 10 episodes (the evaluation env is seeded alike) with the deterministic policy;
``predict`` is timed on one observation, eagerly (no compiled acting), one torch thread, the S
values taking turns in ``--rounds`` rounds so that a busy machine slows them alike.

    python benchmarks/fewer_steps.py run      # trains the missing models, writes results/fewer_steps/
    python benchmarks/fewer_steps.py report   # the table, results/fewer_steps/README.md
"""

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCHMARKS_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCHMARKS_DIR / "results" / "fewer_steps"
CONF_DIR = BENCHMARKS_DIR / "results" / "learning" / "hyperparams"
# (task, algorithm) -> environment steps of its training run: the CPU learning benchmark's budgets.
MODELS = {
    ("Pendulum-v1", "qvpo"): 20_000,
    ("Pendulum-v1", "dipo"): 20_000,
    ("Pendulum-v1", "qsm"): 20_000,
    ("Hopper-v5", "qvpo"): 60_000,
    ("Hopper-v5", "dipo"): 60_000,
}
EVAL_SEED = 1_000


def step_counts(n_steps: int) -> list[int]:
    """T, T/2, T/4 (rounded up), 2 and 1, largest first, each once."""
    counts = [n_steps, math.ceil(n_steps / 2), math.ceil(n_steps / 4), 2, 1]
    return sorted({count for count in counts if 1 <= count <= n_steps}, reverse=True)


def model_path(log_folder: Path, task: str, algo: str) -> Path:
    return log_folder / f"{task}_{algo}" / algo / f"{task}_1" / f"{task}.zip"


def train(task: str, algo: str, seed: int, log_folder: Path) -> Path:
    """One zoo training run at the learning benchmark's settings; returns the saved model's path."""
    folder = log_folder / f"{task}_{algo}"
    command = [
        sys.executable, "-m", "sb3_qvpo.train", "--algo", algo, "--env", task,
        "--conf-file", str(CONF_DIR / f"{algo}.yml"), "-n", str(MODELS[task, algo]), "--seed", str(seed),
        "--eval-freq", "-1", "--num-threads", "1", "--device", "cpu", "-f", str(folder), "--verbose", "0",
    ]  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.log", "w") as output:
        subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=True)
    return model_path(log_folder, task, algo)


def time_predict(model, observation: np.ndarray, counts: list[int], rounds: int, calls: int) -> dict[int, float]:
    """Median over rounds of the mean milliseconds of one deterministic ``predict``, per S."""
    per_count: dict[int, list[float]] = {count: [] for count in counts}
    for _ in range(rounds):
        for count in counts:
            model.policy.n_acting_steps = count
            model.predict(observation, deterministic=True)  # warm-up of this S
            start = time.perf_counter()
            for _ in range(calls):
                model.predict(observation, deterministic=True)
            per_count[count].append(1e3 * (time.perf_counter() - start) / calls)
    return {count: float(np.median(values)) for count, values in per_count.items()}


def measure(task: str, algo: str, path: Path, rounds: int, calls: int, episodes: int) -> dict:
    import gymnasium as gym
    import torch as th
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from sb3_qvpo.zoo import ZOO_ALGORITHMS

    th.set_num_threads(1)
    algorithm, _, _ = ZOO_ALGORITHMS[algo]  # the zoo's names, under which the models were trained
    model = algorithm.load(path, device="cpu")
    model.policy.compiled_acting.compile_after = None  # eager acting: what every call costs before compiling
    n_steps = model.policy.n_diffusion_steps
    counts = step_counts(n_steps)
    returns = {}
    for count in counts:
        model.policy.n_acting_steps = count
        env = DummyVecEnv([lambda: Monitor(gym.make(task))])
        env.seed(EVAL_SEED)
        episode_returns, _ = evaluate_policy(
            model, env, n_eval_episodes=episodes, deterministic=True, return_episode_rewards=True
        )
        returns[count] = [float(value) for value in episode_returns]
        env.close()
    observation = gym.make(task).reset(seed=EVAL_SEED)[0]
    milliseconds = time_predict(model, observation, counts, rounds, calls)
    return {
        "task": task,
        "algo": algo,
        "model": str(path),
        "n_diffusion_steps": n_steps,
        "n_eval_samples": model.policy.n_eval_samples,
        "returns": {str(count): returns[count] for count in counts},
        "predict_ms": {str(count): milliseconds[count] for count in counts},
        "torch_threads": th.get_num_threads(),
        "rounds": rounds,
        "calls_per_round": calls,
    }


def report() -> None:
    lines = [
        "# Acting with fewer denoising steps",
        "",
        "Written by `python benchmarks/fewer_steps.py report` from the runs of `python benchmarks/fewer_steps.py run`.",
        "Models trained with T steps at the CPU learning benchmark's settings (seed 0); each row acts with",
        "`policy.n_acting_steps = S` (the trained schedule at S evenly spaced steps, DDIM with eta = 1), deterministic",
        "policy (best of `n_eval_samples` by the critic), the same 10 evaluation episodes for every S.",
        "predict: mean ms of one deterministic `predict` on one observation, eager (no compiled acting), 1 torch thread,",
        "median of the rounds (the S values take turns); relative to S = T in brackets.",
        "",
        "| task | algorithm | T | S | return (10 episodes) | vs S = T | predict ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for path in sorted(RESULTS_DIR.glob("*.json")):
        result = json.loads(path.read_text())
        full = str(result["n_diffusion_steps"])
        full_mean = np.mean(result["returns"][full])
        for count, returns in result["returns"].items():
            mean, std = np.mean(returns), np.std(returns)
            milliseconds = result["predict_ms"][count]
            ratio = milliseconds / result["predict_ms"][full]
            lines.append(
                f"| {result['task']} | {result['algo'].upper()} | {full} | {count} | {mean:.1f} ± {std:.1f} "
                f"| {mean - full_mean:+.1f} | {milliseconds:.2f} ({ratio:.2f}x) |"
            )
    (RESULTS_DIR / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="train the missing models, measure every S")
    run_parser.add_argument("--models", nargs="+", default=[f"{task}:{algo}" for task, algo in MODELS], help="TASK:ALGO")
    run_parser.add_argument("--model", nargs="+", default=[], help="TASK:ALGO=PATH: a trained model to use")
    run_parser.add_argument("--seed", type=int, default=0)
    run_parser.add_argument("--rounds", type=int, default=5)
    run_parser.add_argument("--calls", type=int, default=100)
    run_parser.add_argument("--episodes", type=int, default=10)
    run_parser.add_argument("--log-folder", type=Path, default=Path("logs/fewer_steps"), help="trained models (not committed)")
    commands.add_parser("report", help="the table from the saved measurements")
    args = parser.parse_args()
    if args.command == "report":
        report()
        return
    given = {name: Path(path) for name, path in (item.split("=", 1) for item in args.model)}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        task, algo = name.split(":")
        path = given.get(name) or model_path(args.log_folder, task, algo)
        if not path.exists():
            print(f"training {name} ({MODELS[task, algo]:,} steps)", flush=True)
            path = train(task, algo, args.seed, args.log_folder)
        result = measure(task, algo, path, args.rounds, args.calls, args.episodes)
        (RESULTS_DIR / f"{task}_{algo}.json").write_text(json.dumps(result, indent=1))
        means = {count: round(float(np.mean(values)), 1) for count, values in result["returns"].items()}
        print(f"{name}: returns {means}, predict ms {result['predict_ms']}", flush=True)
    report()


if __name__ == "__main__":
    main()
