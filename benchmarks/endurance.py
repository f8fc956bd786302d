"""
Endurance run: 20,000 steps of Pendulum-v1 with tiny settings and a 5,000-transition replay buffer.

Checks that the resident memory (RSS) stays flat once the buffer is full, and that no value that
``train`` logs (losses, Q statistics, weights) is ever NaN or inf. RSS is sampled every 1,000 steps
by a callback (psutil if installed, else VmRSS from /proc/self/status); the training values are
checked after every call of ``train``, not only at the logger's dumps.

    python benchmarks/endurance.py            # writes benchmarks/results/endurance.txt

Exits with status 1 if a logged value is not finite or RSS grows by more than --max-growth-mib
between the first sample after the buffer is full and the end.
"""

import argparse
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import stable_baselines3
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

import sb3_qvpo
from sb3_qvpo import QVPO

TINY_SETTINGS: dict[str, Any] = dict(
    learning_starts=50,
    batch_size=32,
    n_action_samples=8,
    n_uniform_samples=2,
    n_eval_samples=4,
    policy_kwargs=dict(net_arch=[32, 32], n_diffusion_steps=5),
)
RESULT = Path(__file__).parent / "results" / "endurance.txt"


def rss_mib() -> float:
    try:
        import psutil  # type: ignore[import-untyped]

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("cannot read the resident set size: install psutil")


def rss_source() -> str:
    try:
        import psutil  # type: ignore[import-untyped]  # noqa: F401

        return "psutil"
    except ImportError:
        return "/proc/self/status VmRSS"


class EnduranceWatch(BaseCallback):
    """RSS every ``every`` steps; every value that train() records, after each call of train()."""

    def __init__(self, every: int):
        super().__init__()
        self.every = every
        self.samples: list[dict[str, float]] = []
        self.n_checked = 0
        self.non_finite: list[tuple[int, str, float]] = []
        self.extremes: dict[str, tuple[float, float]] = {}
        self.last_losses: dict[str, float] = {}
        self._next_sample = every
        self._start = time.perf_counter()

    def _check_train_values(self) -> None:
        values = {key: float(value) for key, value in self.logger.name_to_value.items() if key.startswith("train/")}
        if not values:
            return
        self.n_checked += 1
        for key, value in values.items():
            if not math.isfinite(value):
                self.non_finite.append((self.model._n_updates, key, value))
            low, high = self.extremes.get(key, (math.inf, -math.inf))
            self.extremes[key] = (min(low, value), max(high, value))
        self.last_losses = {key: values[key] for key in ("train/critic_loss", "train/actor_loss") if key in values}
        # Nothing is dumped (log_interval=None): clearing makes each train() call checked exactly once.
        self.logger.name_to_value.clear()

    def _sample(self) -> None:
        buffer = self.model.replay_buffer
        self.samples.append(
            {
                "step": self.num_timesteps,
                "rss": rss_mib(),
                "buffer": buffer.size() if buffer is not None else 0,
                "updates": self.model._n_updates,
                "seconds": time.perf_counter() - self._start,
                **self.last_losses,
            }
        )

    def _on_training_start(self) -> None:
        self._start = time.perf_counter()
        self._sample()

    def _on_rollout_start(self) -> None:
        # Runs after the previous step was stored and its update made.
        self._check_train_values()
        if self.num_timesteps >= self._next_sample:
            self._next_sample += self.every
            self._sample()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self._check_train_values()
        if self.samples[-1]["step"] != self.num_timesteps:
            self._sample()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=20_000)
    parser.add_argument("--buffer-size", type=int, default=5_000)
    parser.add_argument("--every", type=int, default=1_000, help="steps between RSS samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-growth-mib", type=float, default=20.0)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    th.set_num_threads(args.threads)

    env = make_vec_env("Pendulum-v1", n_envs=1, seed=args.seed)
    model = QVPO("MlpPolicy", env, buffer_size=args.buffer_size, seed=args.seed, **TINY_SETTINGS)
    watch = EnduranceWatch(args.every)
    model.learn(args.timesteps, callback=watch, log_interval=None)  # type: ignore[arg-type]
    parameters_finite = all(bool(th.isfinite(p).all()) for p in model.policy.parameters())

    full = [sample for sample in watch.samples if sample["buffer"] >= args.buffer_size]
    growth = full[-1]["rss"] - full[0]["rss"] if full else math.nan
    spread = max(s["rss"] for s in full) - min(s["rss"] for s in full) if full else math.nan
    flat = bool(full) and growth <= args.max_growth_mib
    finite = not watch.non_finite and parameters_finite and watch.n_checked == model._n_updates

    lines = [
        f"$ python benchmarks/endurance.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}",
        "",
        f"QVPO endurance: Pendulum-v1, {args.timesteps:,} steps, buffer_size {args.buffer_size:,}, seed {args.seed}, "
        f"{args.threads} torch thread(s)",
        f"tiny settings: {TINY_SETTINGS}",
        f"sb3_qvpo {sb3_qvpo.__version__}, stable-baselines3 {stable_baselines3.__version__}, torch {th.__version__}, "
        f"numpy {np.__version__}, Python {platform.python_version()}, {platform.machine()}",
        f"RSS from {rss_source()}; training values checked after every train() call",
        "",
        f"{'step':>7} {'buffer':>7} {'updates':>8} {'RSS MiB':>9} {'seconds':>8} {'critic_loss':>12} {'actor_loss':>11}",
    ]
    for s in watch.samples:
        critic = f"{s['train/critic_loss']:12.4g}" if "train/critic_loss" in s else f"{'-':>12}"
        actor = f"{s['train/actor_loss']:11.4g}" if "train/actor_loss" in s else f"{'-':>11}"
        counts = f"{int(s['step']):>7} {int(s['buffer']):>7} {int(s['updates']):>8}"
        lines.append(f"{counts} {s['rss']:9.2f} {s['seconds']:8.1f} {critic} {actor}")
    lines += [
        "",
        f"buffer full from step {int(full[0]['step']) if full else '-'}: RSS {full[0]['rss']:.2f} MiB there, "
        f"{full[-1]['rss']:.2f} MiB at the end: growth {growth:+.2f} MiB (max - min {spread:.2f} MiB; "
        f"limit {args.max_growth_mib:g} MiB) -> {'FLAT' if flat else 'GROWING'}"
        if full
        else "the buffer never filled: increase --timesteps",
        f"training values checked: {watch.n_checked} train() calls for {model._n_updates} updates; "
        f"non-finite: {len(watch.non_finite)}{' ' + str(watch.non_finite[:5]) if watch.non_finite else ''}; "
        f"final weights finite: {parameters_finite}",
        "ranges over the run: "
        + ", ".join(
            f"{key.removeprefix('train/')} [{low:.3g}, {high:.3g}]"
            for key, (low, high) in sorted(watch.extremes.items())
            if key in ("train/critic_loss", "train/actor_loss", "train/q_values")
        ),
        f"result: {'PASS' if flat and finite else 'FAIL'}",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    return 0 if flat and finite else 1


if __name__ == "__main__":
    sys.exit(main())
