"""
How much of an offline DiffusionQL model's return comes from its action choice: the final models of
``benchmarks/offline.py run`` evaluated again with three choices among the samples of the online
actor (the one ``predict`` samples, as the official ``sample_action`` does; not the EMA actor):

- the official one (50 samples, one drawn with probabilities softmax(min-Q)),
- the highest min-Q of the 50 samples ("best"),
- a single sample, so the critic plays no part at acting.

    python benchmarks/offline_selection.py --env Hopper-v5 --episodes 10

If one sample does as well as the Q-based choices, the critic adds nothing at acting time and the
return is set by what training put into the actor. Writes
``benchmarks/results/offline/<env>/selection.md``.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch as th
from offline import DATASETS, TASKS, Run, Settings, default_log_folder, default_results_dir, evaluate, saved_model

from sb3_qvpo import DiffusionQL

CHOICES = {
    "softmax of 50 (official)": dict(n_eval_samples=50, action_selection="softmax"),
    "best of 50": dict(n_eval_samples=50, action_selection="best"),
    "one sample": dict(n_eval_samples=1, action_selection="best"),
}


def evaluate_choice(model: DiffusionQL, env_id: str, n_episodes: int) -> tuple[list[float], float]:
    """
    Deterministic-mode returns on the offline benchmark's evaluation episodes, and the share of
    action components within 1% of the action bounds (a policy collapsed onto a bound shows as ~1).
    """
    high = model.action_space.high
    at_bound: list[bool] = []

    def act(observation: np.ndarray) -> np.ndarray:
        action, _ = model.predict(observation, deterministic=True)
        at_bound.extend(np.abs(action) >= 0.99 * high)
        return action

    returns = evaluate(env_id, act, n_episodes)
    return returns, float(np.mean(at_bound))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v5", choices=list(TASKS))
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--log-folder", type=Path, help="the offline benchmark's; default: logs/offline/<env>")
    args = parser.parse_args()
    th.set_num_threads(1)
    settings = Settings(
        env_id=args.env,
        task=TASKS[args.env],
        results_dir=default_results_dir(args.env),
        log_folder=args.log_folder or default_log_folder(args.env),
    )

    lines = [
        f"# {args.env}: offline DiffusionQL's final models, acting with three action choices",
        "",
        f"`python benchmarks/offline_selection.py --env {args.env} --episodes {args.episodes}` "
        f"(torch.set_num_threads(1)). The final model of each seed of `benchmarks/offline.py run` "
        f"({settings.task.n_steps:,} gradient steps), {args.episodes} episodes per seed with `predict(deterministic=True)`, "
        "reset with the seeds R_random and R_SAC were measured with (`offline.py`'s EVAL_SEED + i); "
        "mean ± std over the seeds of each seed's mean return; in brackets, the share of action "
        "components within 1% of the action bounds.",
        "",
        "| dataset | " + " | ".join(CHOICES) + " |",
        "|---|" + "---|" * len(CHOICES),
    ]
    started = time.time()
    per_seed_lines = ["", "Per seed (seeds " + ", ".join(map(str, args.seeds)) + "):", ""]
    for dataset in DATASETS:
        per_choice: dict[str, list[float]] = {name: [] for name in CHOICES}
        bound_shares: dict[str, list[float]] = {name: [] for name in CHOICES}
        for seed in args.seeds:
            model = DiffusionQL.load(saved_model(Run(dataset, "diffusion_ql", seed), settings), device="cpu")
            for name, choice in CHOICES.items():
                model.policy.n_eval_samples = choice["n_eval_samples"]
                model.policy.action_selection = choice["action_selection"]
                returns, at_bound = evaluate_choice(model, args.env, args.episodes)
                mean_return = float(np.mean(returns))
                per_choice[name].append(mean_return)
                bound_shares[name].append(at_bound)
                print(f"{dataset} seed {seed} {name}: {mean_return:.1f} (at the bounds {at_bound:.2f})", flush=True)
        cells = [
            f"{np.mean(values):.1f} ± {np.std(values):.1f} ({np.mean(bound_shares[name]):.2f})"
            for name, values in per_choice.items()
        ]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
        for name, values in per_choice.items():
            per_seed_lines.append(f"- {dataset}, {name}: " + ", ".join(f"{value:.1f}" for value in values))
    lines += [*per_seed_lines, "", f"Wall time: {time.time() - started:.0f} s."]
    output = settings.results_dir / "selection.md"
    output.write_text("\n".join(lines) + "\n")
    print(output.read_text())


if __name__ == "__main__":
    main()
