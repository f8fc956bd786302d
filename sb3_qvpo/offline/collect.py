"""
``python -m sb3_qvpo.offline.collect``: record a local Minari dataset with random actions, a saved
SB3 model or an rl-zoo3 agent, or convert a saved SB3 replay buffer (see ``--help``), e.g.
``python -m sb3_qvpo.offline.collect --env Pendulum-v1 --dataset-id pendulum/random-v0 --n-episodes 10``.
"""

import argparse
from collections.abc import Sequence
from typing import Any

from sb3_qvpo.offline.collection import collect_random, collect_with_model, collect_with_zoo_agent
from sb3_qvpo.offline.recording import CollectionSummary
from sb3_qvpo.offline.replay import replay_buffer_to_minari


def _parser() -> argparse.ArgumentParser:
    from rl_zoo3.utils import StoreDict

    parser = argparse.ArgumentParser(
        prog="python -m sb3_qvpo.offline.collect",
        description="Record a local Minari dataset (under $MINARI_DATASETS_PATH, default ~/.minari/datasets). "
        "Acts randomly unless --model or -f/--folder gives an agent; --from-replay-buffer converts a saved SB3 replay buffer.",
    )
    parser.add_argument("--env", required=True, help="Gymnasium environment id, e.g. Hopper-v5")
    parser.add_argument("--dataset-id", required=True, help="Minari dataset id, (namespace/)name-vN, e.g. hopper/medium-v0")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="saved SB3 model (.zip) to act with; needs --algo")
    source.add_argument("-f", "--folder", help="rl-zoo3 log folder of the agent to act with; needs --algo")
    source.add_argument("--from-replay-buffer", metavar="PATH", help="write this saved replay buffer (.pkl) instead of acting")
    parser.add_argument("--algo", help="algorithm of the agent: sac, td3, ppo, qvpo, qsm, dipo, ... (rl-zoo3's names)")
    parser.add_argument("--exp-id", type=int, default=0, help="with -f: run number (0: the latest)")
    parser.add_argument("--load-best", action="store_true", help="with -f: best_model.zip")
    parser.add_argument("--load-checkpoint", help="with -f: checkpoint of this many steps")
    parser.add_argument("--load-last-checkpoint", action="store_true", help="with -f: the latest checkpoint")
    parser.add_argument("--vec-normalize", help="with --model: VecNormalize statistics (.pkl) it was trained with")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--n-steps", type=int, help="transitions to record (the last episode is cut short)")
    budget.add_argument("--n-episodes", type=int, help="whole episodes to record")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deterministic", action="store_true", help="the agent's deterministic actions")
    parser.add_argument("--action-noise-std", type=float, default=0.0, help="Gaussian noise on the agent's [-1, 1] actions")
    parser.add_argument("--env-kwargs", type=str, nargs="+", action=StoreDict, help="as rl-zoo3's: key:value ...")
    parser.add_argument("--algorithm-name", help="dataset metadata (default: the policy's description)")
    parser.add_argument("--author", help="dataset metadata")
    parser.add_argument("--description", help="dataset metadata (default: the collection summary)")
    parser.add_argument("--device", default="auto", help="torch device of the agent")
    return parser


def main(argv: Sequence[str] | None = None) -> CollectionSummary:
    """The command line; returns (and prints) the summary of what was written."""
    parser = _parser()
    args = parser.parse_args(argv)
    common: dict[str, Any] = dict(env_kwargs=args.env_kwargs, author=args.author, description=args.description)
    if args.from_replay_buffer is not None:
        summary = replay_buffer_to_minari(
            args.from_replay_buffer, args.dataset_id, args.env, algorithm_name=args.algorithm_name or args.algo, **common
        )
    else:
        if args.n_steps is None and args.n_episodes is None:
            parser.error("one of --n-steps or --n-episodes is required")
        if (args.model or args.folder) and args.algo is None:
            parser.error("--model and -f/--folder need --algo")
        budget: dict[str, Any] = dict(n_steps=args.n_steps, n_episodes=args.n_episodes, seed=args.seed, **common)
        acting: dict[str, Any] = dict(
            deterministic=args.deterministic,
            action_noise_std=args.action_noise_std,
            algorithm_name=args.algorithm_name,
            device=args.device,
        )
        if args.model is not None:
            summary = collect_with_model(
                args.model, args.env, args.dataset_id, args.algo, vec_normalize_path=args.vec_normalize, **budget, **acting
            )
        elif args.folder is not None:
            summary = collect_with_zoo_agent(
                args.folder,
                args.algo,
                args.env,
                args.dataset_id,
                exp_id=args.exp_id,
                load_best=args.load_best,
                load_checkpoint=args.load_checkpoint,
                load_last_checkpoint=args.load_last_checkpoint,
                **budget,
                **acting,
            )
        else:
            summary = collect_random(args.env, args.dataset_id, algorithm_name=args.algorithm_name or "random", **budget)
    print(f"Minari dataset {summary.dataset_id}: {summary.describe()}")
    return summary


if __name__ == "__main__":
    main()
