"""
Train d3rlpy's TD3+BC or IQL on an offline dataset exported by ``benchmarks/offline.py`` and save
its learning curve; run with the python of the separate d3rlpy venv (d3rlpy 2.8.1 pins
gymnasium 1.0.0, which the project's venv cannot hold):

    python3 -m venv .venv-d3rlpy
    .venv-d3rlpy/bin/pip install torch==2.13.0 d3rlpy==2.8.1
    .venv-d3rlpy/bin/python benchmarks/offline_d3rlpy.py --algo td3_plus_bc --dataset data.npz \\
        --env Pendulum-v1 --n-steps 10000 --eval-freq 1000 --eval-episodes 10 --seed 0 --output run.npz

``--dataset``: an .npz with ``observations``, ``actions``, ``rewards``, ``terminals`` and
``timeouts`` (one row per transition, episodes one after the other). The algorithm takes d3rlpy's
default hyper-parameters, batch 256, and a ``MinMaxActionScaler`` to the environment's action
bounds (d3rlpy's policies squash to [-1, 1]). After every ``--eval-freq`` gradient steps it plays
``--eval-episodes`` episodes with ``algo.predict`` (deterministic). ``--output`` gets ``timesteps``
and ``results`` (evaluations x episodes) as rl-zoo3's ``evaluations.npz``, and ``--output`` with a
.json suffix the wall time.
"""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import d3rlpy
import gymnasium as gym
import numpy as np
import torch

ALGOS = ("td3_plus_bc", "iql")


def make_algo(name: str, env: gym.Env, device: str) -> Any:
    low, high = env.action_space.low, env.action_space.high  # type: ignore[attr-defined]
    scaler = d3rlpy.preprocessing.MinMaxActionScaler(minimum=low, maximum=high)
    if name == "td3_plus_bc":
        return d3rlpy.algos.TD3PlusBCConfig(batch_size=256, action_scaler=scaler).create(device=device)
    if name == "iql":
        return d3rlpy.algos.IQLConfig(batch_size=256, action_scaler=scaler).create(device=device)
    raise ValueError(f"unknown algorithm {name!r}, expected one of {ALGOS}")


def load_dataset(path: Path) -> d3rlpy.dataset.ReplayBuffer:
    data = np.load(path)
    return d3rlpy.dataset.MDPDataset(
        observations=data["observations"].astype(np.float32),
        actions=data["actions"].astype(np.float32),
        rewards=data["rewards"].astype(np.float32),
        terminals=data["terminals"].astype(np.float32),
        timeouts=data["timeouts"].astype(np.float32),
    )


def evaluate(algo: Any, env: gym.Env, n_episodes: int, seed: int) -> list[float]:
    """Undiscounted returns of ``n_episodes`` deterministic episodes, the i-th reset with ``seed + i``."""
    returns = []
    for episode in range(n_episodes):
        observation, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            action = algo.predict(np.asarray(observation, dtype=np.float32)[None])[0]
            observation, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", required=True, choices=ALGOS)
    parser.add_argument("--dataset", required=True, type=Path, help=".npz of transitions")
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--n-steps", type=int, default=10_000, help="gradient steps")
    parser.add_argument("--eval-freq", type=int, default=1_000, help="gradient steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--device", default="cpu:0")
    parser.add_argument("--output", required=True, type=Path, help=".npz curve (and a .json next to it)")
    args = parser.parse_args()

    torch.set_num_threads(args.num_threads)
    d3rlpy.seed(args.seed)
    dataset = load_dataset(args.dataset)
    env = gym.make(args.env)
    algo = make_algo(args.algo, env, args.device)
    timesteps: list[int] = []
    results: list[list[float]] = []
    start = time.perf_counter()
    fitter = algo.fitter(
        dataset,
        n_steps=args.n_steps,
        n_steps_per_epoch=args.eval_freq,
        with_timestamp=False,
        logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
        show_progress=False,
    )
    for epoch, _metrics in fitter:
        returns = evaluate(algo, env, args.eval_episodes, seed=10_000 * (args.seed + 1) + 100 * epoch)
        timesteps.append(epoch * args.eval_freq)
        results.append(returns)
        print(f"{args.algo} step {timesteps[-1]}: return {np.mean(returns):.1f} ± {np.std(returns):.1f}", flush=True)
    wall_seconds = time.perf_counter() - start
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.output, timesteps=np.array(timesteps), results=np.array(results))
    info = {"wall_seconds": wall_seconds, "d3rlpy": d3rlpy.__version__, "torch": torch.__version__}
    args.output.with_suffix(".json").write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
