"""
The paper's Figure 2: QVPO's diffusion policy on a continuous bandit with three reward peaks, and
the same experiment for the paper's diffusion baselines QSM and DIPO and for CGPO.

Each run trains QVPO on ``MultiPeakBanditEnv`` (w = 1.5, sigma = 0.1, centres (-1.35, 0.65),
(-0.65, 1.35), (-1.61, 1.61); actions in [-2.5, 2.5]^2) and, at several points of training, draws
1,000 actions from the diffusion policy itself (plain samples, not the best-of-K behaviour policy)
and plots them over the reward's contour lines. QVPO in four settings: with and without the entropy
term (N_e uniform actions per state), with few (T = 5) and many (T = 20) diffusion steps; QSM (its
official T = 5, vp, M_q = 50) and DIPO (T = 20) with the same networks, batch and learning rates.

    python examples/bandit_multimodality.py --seeds 0 1 2 --jobs 2
    python examples/bandit_multimodality.py --seeds 0 1 2 --settings QSM DIPO --figure figure2_baselines.png
    python examples/bandit_multimodality.py --seeds 0 1 2 --settings DIPO "DIPO, accumulate, truncated init" \
        --figure figure2_dipo_memory.png
    python examples/bandit_multimodality.py --seeds 0 1 2 --settings CGPO --figure figure2_cgpo.png

write ``benchmarks/results/bandit/<figure>`` (first seed) and ``bandit.md`` / ``bandit.json`` (per
seed and snapshot: mean reward of the samples and the share of samples on each peak); rows of
settings not re-run are kept from the existing ``bandit.json``.
"""

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from sb3_qvpo import CGPO, DIPO, QSM, QVPO
from sb3_qvpo.common.off_policy import DiffusionOffPolicyAlgorithm
from sb3_qvpo.envs import MultiPeakBanditEnv

RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "bandit"
RANDOM_STEPS = 500
SNAPSHOT_UPDATES = (0, 250, 500, 1000, 2000, 4000)
N_PLOTTED_SAMPLES = 1_000
# A sample counts as "on" a peak when it lies within 3 sigma of the peak's centre.
ON_PEAK_RADIUS = 0.3
# How widely the policy still explores part-way through training: std of the samples, mean over dimensions.
SPREAD_AT_UPDATES = 1000

SETTINGS: dict[str, dict[str, int | str | bool]] = {
    "T=20, entropy": dict(n_diffusion_steps=20, n_uniform_samples=10),
    "T=20, no entropy": dict(n_diffusion_steps=20, n_uniform_samples=0),
    "T=5, entropy": dict(n_diffusion_steps=5, n_uniform_samples=10),
    "T=5, no entropy": dict(n_diffusion_steps=5, n_uniform_samples=0),
    "QSM": dict(algo="qsm", n_diffusion_steps=5),
    "DIPO": dict(algo="dipo", n_diffusion_steps=20),
    # DIPO's defaults before 0.2 (what its official code means rather than what it runs)
    "DIPO, accumulate, truncated init": dict(
        algo="dipo", n_diffusion_steps=20, accumulate_improved_actions=True, weight_init="truncated_normal"
    ),
    # CGPO at T = 20 with its paper's G = 10 guided steps and N_e = 10 uniform actions
    "CGPO": dict(algo="cgpo", n_diffusion_steps=20),
}


class PolicySnapshots(BaseCallback):
    """Draws actions from the diffusion policy after given numbers of gradient updates."""

    def __init__(self, updates: tuple[int, ...], n_samples: int, seed: int):
        super().__init__()
        self.pending = sorted(updates)
        self.n_samples = n_samples
        self.seed = seed
        self.snapshots: dict[int, np.ndarray] = {}

    def _on_step(self) -> bool:
        updates = max(0, self.num_timesteps - RANDOM_STEPS)
        while self.pending and updates >= self.pending[0]:
            self.snapshots[self.pending.pop(0)] = self.draw()
        return bool(self.pending)

    def draw(self) -> np.ndarray:
        policy = self.model.policy
        observation = th.zeros((1, 1), device=policy.device)
        generator = th.Generator(device=policy.device).manual_seed(self.seed)
        with th.no_grad():
            features = policy.actor.extract_features(observation, policy.actor.features_extractor)
            actions = policy.actor.sample(features, generator, n_per_state=self.n_samples)
        return policy.unscale_action(actions.cpu().numpy())


def make_model(setting: dict[str, int | str | bool], env: MultiPeakBanditEnv, seed: int) -> DiffusionOffPolicyAlgorithm:
    """QVPO (the default) or, with ``algo``, QSM / DIPO / CGPO at their own defaults, all with the same sizes and rates."""
    common: dict = dict(
        learning_starts=RANDOM_STEPS,
        batch_size=128,
        learning_rate=1e-3,
        actor_learning_rate=1e-3,
        policy_kwargs=dict(net_arch=[128, 128], n_diffusion_steps=setting["n_diffusion_steps"]),
        seed=seed,
    )
    if "weight_init" in setting:
        common["policy_kwargs"]["weight_init"] = setting["weight_init"]
    algo = setting.get("algo", "qvpo")
    if algo == "qsm":
        return QSM("MlpPolicy", env, **common)
    if algo == "cgpo":
        return CGPO("MlpPolicy", env, **common)
    if algo == "dipo":
        accumulate = bool(setting.get("accumulate_improved_actions", False))
        return DIPO("MlpPolicy", env, accumulate_improved_actions=accumulate, **common)
    return QVPO("MlpPolicy", env, n_action_samples=16, n_uniform_samples=setting["n_uniform_samples"], **common)


def train_setting(setting: dict[str, int | str | bool], seed: int) -> tuple[dict[int, np.ndarray], float]:
    env = MultiPeakBanditEnv()
    model = make_model(setting, env, seed)
    snapshots = PolicySnapshots(SNAPSHOT_UPDATES, N_PLOTTED_SAMPLES, seed)
    start = time.perf_counter()
    model.learn(RANDOM_STEPS + max(SNAPSHOT_UPDATES) + 1, callback=snapshots)
    return snapshots.snapshots, time.perf_counter() - start


def summarise(env: MultiPeakBanditEnv, actions: np.ndarray) -> dict[str, float | list[float]]:
    distances = np.linalg.norm(actions[:, None, :] - env.centers[None], axis=-1)
    return {
        "mean_reward": float(env.reward(actions).mean()),
        "spread": float(actions.std(axis=0).mean()),
        "share_on_each_peak": [float(share) for share in (distances < ON_PEAK_RADIUS).mean(axis=0)],
    }


def plot(env: MultiPeakBanditEnv, snapshots: dict[str, dict[int, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bound = float(env.action_space.high[0])
    grid = np.linspace(-bound, bound, 300)
    xx, yy = np.meshgrid(grid, grid)
    reward = env.reward(np.stack([xx, yy], axis=-1))
    figure, axes = plt.subplots(
        len(snapshots), len(SNAPSHOT_UPDATES), figsize=(2.6 * len(SNAPSHOT_UPDATES), 2.6 * len(snapshots)), squeeze=False
    )
    for row, (name, by_update) in enumerate(snapshots.items()):
        for column, updates in enumerate(SNAPSHOT_UPDATES):
            axis = axes[row, column]
            axis.contour(xx, yy, reward, levels=[1.0, 5.0, 15.0], colors="grey", linewidths=0.7)
            actions = by_update[updates]
            axis.scatter(actions[:, 0], actions[:, 1], s=2, alpha=0.4, color="tab:blue")
            # The action box, drawn inside a margin so samples clamped to its edge stay visible.
            axis.add_patch(plt.Rectangle((-bound, -bound), 2 * bound, 2 * bound, fill=False, linestyle=":", color="grey"))
            axis.set_xlim(-1.06 * bound, 1.06 * bound)
            axis.set_ylim(-1.06 * bound, 1.06 * bound)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(f"{updates} updates")
            if column == 0:
                axis.set_ylabel(name)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, in separate processes")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--figure", default="figure2.png", help="file name of the first seed's figure")
    parser.add_argument("--table-only", action="store_true", help="rewrite bandit.md from bandit.json, no training")
    args = parser.parse_args()
    if args.table_only:
        saved = json.loads((args.results_dir / "bandit.json").read_text())
        write_table(saved, MultiPeakBanditEnv(), sorted({row["seed"] for row in saved}), args.results_dir)
        return
    th.set_num_threads(args.threads)
    env = MultiPeakBanditEnv()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    first_seed_snapshots: dict[str, dict[int, np.ndarray]] = {}
    runs = [(name, seed) for seed in args.seeds for name in args.settings]
    with ProcessPoolExecutor(max_workers=args.jobs, initializer=th.set_num_threads, initargs=(args.threads,)) as pool:
        trained = list(pool.map(train_setting, [SETTINGS[name] for name, _ in runs], [seed for _, seed in runs]))
    for (name, seed), (snapshots, seconds) in zip(runs, trained, strict=True):
        if seed == args.seeds[0]:
            first_seed_snapshots[name] = snapshots
        for updates, actions in sorted(snapshots.items()):
            results.append({"setting": name, "seed": seed, "updates": updates, **summarise(env, actions)})
        final = results[-1]
        print(f"seed {seed} {name}: {seconds:.0f} s, final mean reward {final['mean_reward']:.2f}, "
              f"share on peaks {np.round(final['share_on_each_peak'], 2).tolist()}", flush=True)  # fmt: skip
    plot(env, first_seed_snapshots, args.results_dir / args.figure)
    results = merged_results(args.results_dir / "bandit.json", results)
    (args.results_dir / "bandit.json").write_text(json.dumps(results, indent=1))
    write_table(results, env, sorted({row["seed"] for row in results}), args.results_dir)


def merged_results(path: Path, new: list[dict]) -> list[dict]:
    """The saved rows of the (setting, seed) pairs not re-run, then the new rows."""
    rerun = {(row["setting"], row["seed"]) for row in new}
    old = json.loads(path.read_text()) if path.exists() else []
    return [row for row in old if (row["setting"], row["seed"]) not in rerun] + new


def write_table(results: list[dict], env: MultiPeakBanditEnv, seeds: list[int], results_dir: Path) -> None:
    """Mean over seeds; a peak counts as covered when >= 5% of samples sit on it."""
    last, middle = max(SNAPSHOT_UPDATES), SPREAD_AT_UPDATES
    lines = [
        f"# Continuous bandit (paper's Figure 2), {last} updates, seeds {seeds}",
        "",
        "Written by `python examples/bandit_multimodality.py --seeds " + " ".join(map(str, seeds)) + " [--settings ...]`;",
        "QVPO rows are named by T and the entropy term; QSM and DIPO run at their own defaults with the same sizes",
        "(DIPO, accumulate, truncated init: DIPO's defaults before 0.2, the write-back memory).",
        f"Uniform policy's mean reward: {env.uniform_mean_reward():.3f}; a peak's top: "
        f"{env.weight / (2 * np.pi * env.sigma**2):.1f}. Samples: {N_PLOTTED_SAMPLES} plain diffusion-policy draws.",
        "",
        f"| setting | spread of samples after {middle} updates | spread after {last} | mean reward of samples "
        "| share on any peak | peaks covered (>= 5% of samples) per seed |",
        "|---|---|---|---|---|---|",
    ]
    for name in SETTINGS:
        rows = [row for row in results if row["setting"] == name and row["updates"] == last]
        if not rows:
            continue
        spreads = [row["spread"] for row in results if row["setting"] == name and row["updates"] == middle]
        final_spreads = [row["spread"] for row in rows]
        rewards = [row["mean_reward"] for row in rows]
        on_any = [sum(row["share_on_each_peak"]) for row in rows]
        covered = [sum(share >= 0.05 for share in row["share_on_each_peak"]) for row in rows]
        lines.append(
            f"| {name} | {np.mean(spreads):.2f} ± {np.std(spreads):.2f} "
            f"| {np.mean(final_spreads):.2f} ± {np.std(final_spreads):.2f} "
            f"| {np.mean(rewards):.2f} ± {np.std(rewards):.2f} "
            f"| {np.mean(on_any):.2f} | {covered} |"
        )
    (results_dir / "bandit.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
