"""
Train QVPO on Pendulum-v1 and report the evaluation return before and after training.

Small networks and sample counts keep one run to a few minutes on a laptop CPU; the paper's
settings (3x256 Mish, N_d = 64, T = 20) are QVPO's defaults and are meant for a GPU.

    python examples/train_pendulum.py --timesteps 15000 --seeds 0 1 2
"""

import argparse
import json
import time

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_qvpo import QVPO

PENDULUM_KWARGS = dict(
    learning_starts=1_000,
    batch_size=128,
    gamma=0.98,
    learning_rate=1e-3,
    actor_learning_rate=1e-3,
    n_action_samples=16,
    n_uniform_samples=4,
    n_behavior_samples=4,
    n_target_samples=1,
    n_eval_samples=16,
    policy_kwargs=dict(net_arch=[64, 64], n_diffusion_steps=10),
)


def train_one_seed(seed: int, timesteps: int, n_eval_episodes: int, verbose: int) -> dict[str, float]:
    env = make_vec_env("Pendulum-v1", n_envs=1, seed=seed)
    eval_env = make_vec_env("Pendulum-v1", n_envs=1, seed=seed + 10_000)
    model = QVPO("MlpPolicy", env, seed=seed, verbose=verbose, **PENDULUM_KWARGS)
    before, before_std = evaluate_policy(model, eval_env, n_eval_episodes=n_eval_episodes, deterministic=True)
    start = time.perf_counter()
    model.learn(timesteps, progress_bar=verbose == 0)
    wall = time.perf_counter() - start
    after, after_std = evaluate_policy(model, eval_env, n_eval_episodes=n_eval_episodes, deterministic=True)
    return {
        "seed": seed,
        "before": float(before),
        "before_std": float(before_std),
        "after": float(after),
        "after_std": float(after_std),
        "train_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=15_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (small nets run best on 1)")
    parser.add_argument("--output", type=str, default=None, help="write the results as JSON here")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(args.threads)

    results = [train_one_seed(seed, args.timesteps, args.eval_episodes, args.verbose) for seed in args.seeds]
    print(f"\nQVPO on Pendulum-v1, {args.timesteps} steps, torch threads {args.threads}")
    print(f"{'seed':>4} | {'return before':>16} | {'return after':>16} | {'train s':>7}")
    for row in results:
        print(
            f"{row['seed']:>4} | {row['before']:>8.1f} ± {row['before_std']:>5.1f} | "
            f"{row['after']:>8.1f} ± {row['after_std']:>5.1f} | {row['train_seconds']:>7.0f}"
        )
    afters = np.array([row["after"] for row in results])
    befores = np.array([row["before"] for row in results])
    print(f"mean | {befores.mean():>16.1f} | {afters.mean():>16.1f} |")
    if args.output:
        with open(args.output, "w") as file:
            json.dump({"timesteps": args.timesteps, "kwargs": repr(PENDULUM_KWARGS), "results": results}, file, indent=2)


if __name__ == "__main__":
    main()
