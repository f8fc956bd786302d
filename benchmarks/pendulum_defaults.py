"""
QVPO with its default settings (the paper's and the release's: 3x256 Mish, T = 20, N_d = 64, actor lr 1e-4)
on Pendulum-v1, with only learning_starts lowered from 10,000 to 1,000 to fit a CPU budget.

    python benchmarks/pendulum_defaults.py --timesteps 3000   # writes benchmarks/results/pendulum_defaults.json
"""

import argparse
import json
import time

import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_qvpo import QVPO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=3_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--output", default="benchmarks/results/pendulum_defaults.json")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    env = make_vec_env("Pendulum-v1", n_envs=1, seed=args.seed)
    eval_env = make_vec_env("Pendulum-v1", n_envs=1, seed=args.seed + 10_000)
    model = QVPO("MlpPolicy", env, learning_starts=1_000, seed=args.seed)
    before = evaluate_policy(model, eval_env, n_eval_episodes=args.eval_episodes, deterministic=True)
    start = time.perf_counter()
    model.learn(args.timesteps)
    train_seconds = time.perf_counter() - start
    after = evaluate_policy(model, eval_env, n_eval_episodes=args.eval_episodes, deterministic=True)
    result = {
        "timesteps": args.timesteps,
        "updates": model._n_updates,
        "torch_threads": args.threads,
        "return_before": before,
        "return_after": after,
        "train_seconds": train_seconds,
    }
    print(json.dumps(result, indent=2))
    with open(args.output, "w") as file:
        json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
