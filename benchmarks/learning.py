"""
Learning curves of QVPO, QSM, DIPO, CGPO, SAC and TD3 on the same tasks, budgets and seeds, trained with rl-zoo3.

Every run is one ``python -m sb3_qvpo.train`` call (rl-zoo3's train script with QVPO registered),
evaluated every ``eval_freq`` steps on 10 episodes with each algorithm's own deterministic policy.
SAC and TD3 take rl-zoo3's tuned hyper-parameters (the entry named in the scale's ``zoo_entries``:
the zoo tunes Hopper-v4 and the Bullet inverted double pendulum, not their -v5 versions); QVPO, QSM, DIPO and CGPO
take ``hyperparams/<algo>.yml``, with ``benchmarks/hyperparams/<algo>_cpu.yml`` replacing the entries
whose paper settings a 2-core CPU cannot afford. The hyper-parameter files actually used are written
next to the results.

    python benchmarks/learning.py run --tasks Pendulum-v1 InvertedDoublePendulum-v5 Hopper-v5 --jobs 2
    python benchmarks/learning.py report

``--scale paper`` runs the paper's comparison instead (Table 1): Hopper, Walker2d, Ant, HalfCheetah
and Humanoid (-v5), 1e6 steps, every algorithm at its ``hyperparams/<algo>.yml`` settings (the
paper's and official codes'; no CPU overrides), SAC and TD3 at rl-zoo3's tuned -v4 entries, on the
GPU by default; results in ``benchmarks/results/learning_paper/``:

    python benchmarks/learning.py --scale paper run --jobs 1     # 5 seeds x 6 algorithms x 5 tasks
    python benchmarks/learning.py --scale paper report

``run`` skips runs whose evaluations are already saved, so it can be stopped and resumed.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from curves import load_seed_curves

BENCHMARKS_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCHMARKS_DIR / "results" / "learning"
QVPO_CPU_CONF = BENCHMARKS_DIR / "hyperparams" / "qvpo_cpu.yml"
# Ours (hyperparams/<algo>.yml + CPU overrides), then rl-zoo3's tuned baselines.
OUR_ALGOS = ("qvpo", "qsm", "dipo", "cgpo")
ALGOS = (*OUR_ALGOS, "sac", "td3")


@dataclass(frozen=True, eq=False)
class Scale:
    """One comparison: its tasks, budgets, baselines' entries, settings, device and results folder."""

    name: str
    results_dir: Path
    budgets: dict[str, tuple[int, int]]  # task -> (environment steps, evaluation interval)
    zoo_entries: dict[str, str]  # task -> the rl-zoo3 entry whose tuned values SAC and TD3 take
    thresholds: dict[str, float]  # task -> a return that counts as having learned it ("first reached")
    cpu_overrides: bool  # whether benchmarks/hyperparams/<algo>_cpu.yml replaces entries of ours
    device: str
    seeds: tuple[int, ...]
    hardware: str  # the report's line on how the runs shared the machine


PAPER_TASKS = ("Hopper-v5", "Walker2d-v5", "Ant-v5", "HalfCheetah-v5", "Humanoid-v5")
SCALES = {
    # What a 2-core CPU affords: small settings for ours where the paper's cost too much.
    "cpu": Scale(
        name="cpu",
        results_dir=RESULTS_DIR,
        budgets={"Pendulum-v1": (20_000, 1_000), "InvertedDoublePendulum-v5": (30_000, 2_500), "Hopper-v5": (60_000, 5_000)},
        # rl-zoo3 tunes Hopper-v4 and the Bullet inverted double pendulum, not their -v5 versions.
        zoo_entries={
            "Pendulum-v1": "Pendulum-v1",
            "InvertedDoublePendulum-v5": "InvertedDoublePendulumBulletEnv-v0",
            "Hopper-v5": "Hopper-v4",
        },
        thresholds={"Pendulum-v1": -200.0, "InvertedDoublePendulum-v5": 9000.0, "Hopper-v5": 500.0},
        cpu_overrides=True,
        device="cpu",
        seeds=(0, 1, 2),
        hardware="1 torch thread, two runs at a time on 2 cores",
    ),
    # The paper's Table 1 tasks and budget; thresholds near a SAC-level return of each task.
    "paper": Scale(
        name="paper",
        results_dir=BENCHMARKS_DIR / "results" / "learning_paper",
        budgets={task: (1_000_000, 10_000) for task in PAPER_TASKS},
        zoo_entries={task: task.replace("-v5", "-v4") for task in PAPER_TASKS},
        thresholds={
            "Hopper-v5": 3000.0,
            "Walker2d-v5": 3000.0,
            "Ant-v5": 3000.0,
            "HalfCheetah-v5": 5000.0,
            "Humanoid-v5": 5000.0,
        },
        cpu_overrides=False,
        device="cuda",
        seeds=(0, 1, 2, 3, 4),  # the paper's five runs per algorithm
        hardware="1 torch thread, the runs' device as given to `run --device`",
    ),
}

# Variants of our algorithms (`run --variants ...`): name -> (algorithm, policy_kwargs added to the
# task's entry, algorithm parameters). Each variant sets its options explicitly, so its runs do not
# depend on the defaults.
# QVPO with the release's two remaining differences switched on one at a time and together. The
# plain "qvpo" runs committed before the defaults changed used truncated_normal and a shared minibatch.
# DIPO's "accumulate": its defaults before 0.2 (write-back memory, truncated init); the "dipo" runs
# committed before then were made with them and are stored under this variant's name.
VARIANTS: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    "normal-init": ("qvpo", {"weight_init": "'normal'"}, {"independent_actor_batch": "False"}),
    "independent-batch": ("qvpo", {"weight_init": "'truncated_normal'"}, {"independent_actor_batch": "True"}),
    "release": ("qvpo", {"weight_init": "'normal'"}, {"independent_actor_batch": "True"}),
    "accumulate": ("dipo", {"weight_init": "'truncated_normal'"}, {"accumulate_improved_actions": "True"}),
}
VARIANT_NOTES = {
    "qvpo": (
        "QVPO-<variant> rows: QVPO with the release's initialisation (weight_init='normal') and/or an actor\n"
        "minibatch drawn independently of the critic's (`run --variants`, see VARIANTS); the QVPO rows were\n"
        "run with truncated_normal and a shared minibatch."
    ),
    "dipo": (
        "DIPO-ACCUMULATE rows: DIPO's defaults before 0.2 (improved actions written back into the diffusion\n"
        "memory, truncated-normal init); the DIPO rows run the official code's behaviour (memory = the stored\n"
        "actions, never written; untruncated-normal init)."
    ),
}


@dataclass(frozen=True)
class Run:
    task: str
    algo: str
    seed: int
    results_dir: Path  # the scale's
    variant: str = ""

    @property
    def name(self) -> str:
        """The label of the runs: the algorithm, or "<algorithm>-<variant>"."""
        return f"{self.algo}-{self.variant}" if self.variant else self.algo

    @property
    def evaluations_path(self) -> Path:
        return self.results_dir / self.task / f"{self.name}_seed{self.seed}.npz"

    @property
    def wall_time_path(self) -> Path:
        return self.results_dir / self.task / f"{self.name}_seed{self.seed}.json"

    @property
    def contrast_path(self) -> Path:
        """Where ``train/critic_contrast`` (CGPO's eq. 9 Delta_Q) of the run is kept, if it logs one."""
        return self.results_dir / self.task / "critic_contrast" / f"{self.name}_seed{self.seed}.npz"


def write_zoo_conf(algo: str, scale: Scale) -> Path:
    """Copy rl-zoo3's tuned entries under the task names we run, so the zoo reads exactly them."""
    import rl_zoo3

    with open(Path(rl_zoo3.__file__).parent / "hyperparams" / f"{algo}.yml") as file:
        zoo_hyperparams = yaml.safe_load(file)
    conf = {task: dict(zoo_hyperparams[entry]) for task, entry in scale.zoo_entries.items()}
    path = scale.results_dir / "hyperparams" / f"{algo}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Written by benchmarks/learning.py from rl-zoo3 {rl_zoo3.__version__}'s {algo}.yml; entries used:\n"
    header += "".join(f"#   {task} <- {entry}\n" for task, entry in scale.zoo_entries.items())
    path.write_text(header + yaml.safe_dump(conf, sort_keys=True))
    return path


def write_our_conf(algo: str, scale: Scale) -> Path:
    """hyperparams/<algo>.yml's entries of the scale's tasks, with benchmarks/hyperparams/<algo>_cpu.yml's
    replacing them at the CPU scale."""
    entries = yaml.safe_load((BENCHMARKS_DIR.parent / "hyperparams" / f"{algo}.yml").read_text())
    header = f"# Written by benchmarks/learning.py: hyperparams/{algo}.yml"
    if scale.cpu_overrides:
        entries.update(yaml.safe_load((BENCHMARKS_DIR / "hyperparams" / f"{algo}_cpu.yml").read_text()))
        header += f" updated with benchmarks/hyperparams/{algo}_cpu.yml"
    path = scale.results_dir / "hyperparams" / f"{algo}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + yaml.safe_dump({task: entries[task] for task in scale.budgets}, sort_keys=True))
    return path


def conf_file(algo: str, scale: Scale) -> Path:
    return write_our_conf(algo, scale) if algo in OUR_ALGOS else write_zoo_conf(algo, scale)


def variant_params(run: Run, conf: Path) -> list[str]:
    """rl-zoo3 ``-params`` overrides of a variant: its options added to the task's entry."""
    if not run.variant:
        return []
    algo, policy_extra, algo_params = VARIANTS[run.variant]
    assert algo == run.algo, (run, algo)
    entry = yaml.safe_load(conf.read_text())[run.task]
    policy_kwargs = entry.get("policy_kwargs", "dict()").strip()
    assert policy_kwargs.startswith("dict(") and policy_kwargs.endswith(")"), policy_kwargs
    extra = ", ".join(f"{key}={value}" for key, value in policy_extra.items())
    joined = f"{policy_kwargs[:-1]}, {extra})" if policy_kwargs != "dict()" else f"dict({extra})"
    return ["-params", f"policy_kwargs:{joined}", *(f"{key}:{value}" for key, value in algo_params.items())]


def train(run: Run, scale: Scale, conf: Path, log_root: Path, device: str) -> str:
    budget, eval_freq = scale.budgets[run.task]
    log_folder = log_root / run.task / f"{run.name}_seed{run.seed}"
    shutil.rmtree(log_folder, ignore_errors=True)
    command = [
        sys.executable, "-m", "sb3_qvpo.train",
        "--algo", run.algo, "--env", run.task, "--conf-file", str(conf),
        "-n", str(budget), "--seed", str(run.seed),
        "--eval-freq", str(eval_freq), "--eval-episodes", "10", "--n-eval-envs", "1",
        "--num-threads", "1", "--device", device, "-f", str(log_folder), "--verbose", "0",
        "--tensorboard-log", str(log_folder / "tensorboard"),
        *variant_params(run, conf),
    ]  # fmt: skip
    start = time.perf_counter()
    # Output to a file, not a pipe: a run outlives this process if it is stopped (see `collect`),
    # where a pipe would break and kill it at its next print.
    log_folder.mkdir(parents=True, exist_ok=True)
    with open(log_folder / "train.log", "w") as output:
        completed = subprocess.run(
            command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
    wall_seconds = time.perf_counter() - start
    if completed.returncode != 0:
        return f"FAILED {run}: {(log_folder / 'train.log').read_text()[-2000:]}"
    return store_results(run, log_folder, {"wall_seconds": wall_seconds, "command": " ".join(command[1:])})


def store_results(run: Run, log_folder: Path, wall_time: dict) -> str:
    """Copy a finished run's evaluations (and its logged critic contrast) from its zoo log folder to the results."""
    (evaluations,) = log_folder.glob(f"{run.algo}/{run.task}_*/evaluations.npz")
    run.evaluations_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(evaluations, run.evaluations_path)
    run.wall_time_path.write_text(json.dumps(wall_time))
    save_logged_scalar(log_folder / "tensorboard", CONTRAST_KEY, run.contrast_path)
    final = np.load(run.evaluations_path)["results"][-1].mean()
    return f"{run.task} {run.name} seed {run.seed}: final eval {final:.1f}, {wall_time['wall_seconds']:.0f} s"


def collect_finished(scale: Scale, tasks: list[str], algos: list[str], seeds: list[int], log_root: Path) -> None:
    """
    Store the runs that finished training without ``run`` storing them (its process was stopped
    while the training processes went on): those whose final model is saved. Their wall time is
    from the start written in the run's Monitor file to the final model's modification time.
    """
    for task in tasks:
        for algo in algos:
            for seed in seeds:
                run = Run(task, algo, seed, scale.results_dir)
                log_folder = log_root / scale.name / task / f"{run.name}_seed{seed}"
                finals = list(log_folder.glob(f"{algo}/{task}_*/{task}.zip"))
                if run.evaluations_path.exists() or len(finals) != 1:
                    continue
                (monitor,) = finals[0].parent.glob("*monitor.csv")
                started = json.loads(monitor.read_text().split("\n", 1)[0].lstrip("#"))["t_start"]
                (command_file,) = finals[0].parent.glob(f"{task}/command.txt")
                wall_time = {
                    "wall_seconds": finals[0].stat().st_mtime - started,
                    "command": command_file.read_text().strip(),
                    "note": "stored by `learning.py collect`: wall time from the Monitor's start to the final model",
                }
                print(store_results(run, log_folder, wall_time), flush=True)


CONTRAST_KEY = "train/critic_contrast"


def save_logged_scalar(tensorboard_folder: Path, key: str, path: Path) -> None:
    """Steps and values of one logged scalar of a run's tensorboard events, saved if the run logged it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps, values = [], []
    for events in sorted(tensorboard_folder.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        if key in accumulator.Tags()["scalars"]:
            scalars = accumulator.Scalars(key)
            steps += [scalar.step for scalar in scalars]
            values += [scalar.value for scalar in scalars]
    if steps:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, timesteps=np.asarray(steps), values=np.asarray(values))


def run_all(
    scale: Scale,
    tasks: list[str],
    algos: list[str],
    seeds: list[int],
    jobs: int,
    log_root: Path,
    device: str,
    variants: list[str] | None = None,
) -> None:
    """``variants``: variants to run instead of ``algos`` (see :data:`VARIANTS`)."""
    runs_of_seed = [(VARIANTS[variant][0], variant) for variant in variants] if variants else [(algo, "") for algo in algos]
    confs = {algo: conf_file(algo, scale) for algo, _ in runs_of_seed}
    # Longest tasks first so the two workers finish together.
    pending = [
        run
        for task in sorted(tasks, key=lambda name: -scale.budgets[name][0])
        for seed in seeds
        for run in [Run(task, algo, seed, scale.results_dir, variant) for algo, variant in runs_of_seed]
        if not run.evaluations_path.exists()
    ]
    print(f"{len(pending)} runs to do with {jobs} parallel jobs (1 torch thread each)", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for message in pool.map(lambda run: train(run, scale, confs[run.algo], log_root / scale.name, device), pending):
            print(message, flush=True)


def load_curves(results_dir: Path, task: str, algo: str) -> tuple[np.ndarray, np.ndarray, list[float]] | None:
    """Steps, per-seed mean evaluation returns (seeds x evaluations) and per-seed wall times."""
    return load_seed_curves(list((results_dir / task).glob(f"{algo}_seed*.npz")))


def first_reached(steps: np.ndarray, curve: np.ndarray, threshold: float) -> str:
    reached = np.flatnonzero(curve >= threshold)
    return f"{steps[reached[0]]:,}" if len(reached) else "-"


def plot_and_tabulate(scale: Scale, task: str, names: list[str], figure_path: Path, reference: str | None = None) -> list[str]:
    """
    Mean ± std curves of the runs called ``names`` on ``task`` saved to ``figure_path``, and their
    table rows; ``reference``'s mean curve is drawn too, without a row.
    """
    import matplotlib.pyplot as plt

    rows = []
    figure, axis = plt.subplots(figsize=(6, 4))
    if reference is not None and (curves := load_curves(scale.results_dir, task, reference)) is not None:
        axis.plot(curves[0], curves[1].mean(axis=0), color="black", label=f"{reference.upper()} ({len(curves[1])} seeds)")
    for name in names:
        curves = load_curves(scale.results_dir, task, name)
        if curves is None:
            continue
        steps, returns, walls = curves
        mean, std = returns.mean(axis=0), returns.std(axis=0)
        axis.plot(steps, mean, label=f"{name.upper()} ({len(returns)} seeds)")
        axis.fill_between(steps, mean - std, mean + std, alpha=0.25)
        final, best = returns[:, -1], returns.max(axis=1)
        reached = " / ".join(first_reached(steps, curve, scale.thresholds[task]) for curve in returns)
        rows.append(
            f"| {task} | {scale.budgets[task][0]:,} | {name.upper()} | {len(returns)} "
            f"| {final.mean():.1f} ± {final.std():.1f} | {best.mean():.1f} ± {best.std():.1f} | {reached} "
            f"| {np.mean(walls):.0f} |"
        )
    if rows:
        save_figure(figure, axis, task, "evaluation return (10 episodes)", figure_path)
    plt.close(figure)
    return rows


def save_figure(figure: Any, axis: Any, title: str, ylabel: str, path: Path) -> None:
    """Title, labels, legend and grid of one curve figure, saved."""
    axis.set_title(title)
    axis.set_xlabel("environment steps")
    axis.set_ylabel(ylabel)
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_contrast(scale: Scale, task: str, figure_path: Path) -> list[str]:
    """
    Figure 9 of CGPO's paper on our runs: ``train/critic_contrast`` against steps, mean ± std over
    seeds (each seed's logged values averaged in 20 equal windows of the run), for the algorithms
    that log it; returns lines saying what was drawn.
    """
    import matplotlib.pyplot as plt

    budget = scale.budgets[task][0]
    edges = np.linspace(0, budget, 21)
    centres = (edges[:-1] + edges[1:]) / 2
    figure, axis = plt.subplots(figsize=(6, 4))
    lines = []
    folder = scale.results_dir / task / "critic_contrast"
    names = sorted({path.name.rsplit("_seed", 1)[0] for path in folder.glob("*_seed*.npz")})
    for name in names:
        paths = sorted(folder.glob(f"{name}_seed*.npz"))
        windows = np.full((len(paths), 20), np.nan)
        for row, path in enumerate(paths):
            logged = np.load(path)
            window = np.clip(np.digitize(logged["timesteps"], edges) - 1, 0, 19)
            for index in np.unique(window):
                windows[row, index] = logged["values"][window == index].mean()
        updated = ~np.isnan(windows).all(axis=0)  # no updates before learning_starts
        mean, std = np.nanmean(windows[:, updated], axis=0), np.nanstd(windows[:, updated], axis=0)
        axis.plot(centres[updated], mean, label=f"{name.upper()} ({len(paths)} seeds)")
        axis.fill_between(centres[updated], mean - std, mean + std, alpha=0.25)
        lines.append(
            f"| {task} | {name.upper()} | {len(paths)} | {mean[0]:.3g} | {mean[len(mean) // 2]:.3g} | {mean[-1]:.3g} |"
        )
    if lines:
        save_figure(figure, axis, f"{task}: critic contrast Delta_Q", "Q(target) - mean Q(samples)", figure_path)
    plt.close(figure)
    return lines


def report(scale: Scale) -> None:
    import matplotlib

    matplotlib.use("Agg")
    lines = [
        "# Learning curves: QVPO vs QSM vs DIPO vs CGPO vs SAC vs TD3",
        "",
        f"Written by `python benchmarks/learning.py --scale {scale.name} report` from the runs of "
        f"`python benchmarks/learning.py --scale {scale.name} run`.",
        "Each evaluation: 10 episodes with the algorithm's deterministic policy. Final = last evaluation;",
        "best = highest evaluation during training (the paper's Table 1 metric); both are mean ± std over seeds.",
        f"Wall time: mean seconds per run (training + evaluations), {scale.hardware}.",
        "",
        "First reached: the first evaluation step at which each seed's return reached the threshold",
        f"({', '.join(f'{task} {threshold:g}' for task, threshold in scale.thresholds.items())}); - = never.",
        "",
    ]
    # algorithm -> the names of its variants, and the tasks where some of them were run
    variant_names = {
        algo: [f"{algo}-{variant}" for variant, (owner, _, _) in VARIANTS.items() if owner == algo] for algo in VARIANT_NOTES
    }
    tasks_with_variants = {
        algo: [task for task in scale.budgets if any(load_curves(scale.results_dir, task, name) is not None for name in names)]
        for algo, names in variant_names.items()
    }
    for algo, tasks in tasks_with_variants.items():
        if tasks:
            lines += [*VARIANT_NOTES[algo].split("\n"), ""]
    lines += [
        "| task | budget (steps) | algorithm | seeds | final return | best return | first reached, per seed "
        "| wall time per run (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in scale.budgets:
        lines += plot_and_tabulate(scale, task, list(ALGOS), scale.results_dir / f"{task}.png")
        # Each algorithm's variants in a figure of their own, next to its plain curve.
        for algo, tasks in tasks_with_variants.items():
            if task in tasks:
                figure_path = scale.results_dir / f"{task}_{algo}_variants.png"
                lines += plot_and_tabulate(scale, task, variant_names[algo], figure_path, reference=algo)
    contrast_rows = [
        row for task in scale.budgets for row in plot_contrast(scale, task, scale.results_dir / f"{task}_critic_contrast.png")
    ]
    if contrast_rows:
        lines += [
            "",
            f"Critic contrast (`{CONTRAST_KEY}`, CGPO's eq. 9 and Figure 9): QVPO's is the best minus the mean",
            "Q of its N_d candidates, CGPO's the Qhat of the guided target minus that of an unguided sample,",
            "averaged in 20 equal windows of each run, then mean over seeds (figures <task>_critic_contrast.png).",
            "",
            "| task | algorithm | seeds | first window with updates | middle one | last window |",
            "|---|---|---|---|---|---|",
            *contrast_rows,
        ]
    scale.results_dir.mkdir(parents=True, exist_ok=True)
    (scale.results_dir / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=list(SCALES), default="cpu", help="the CPU comparison or the paper's")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="train the missing runs")
    run_parser.add_argument("--tasks", nargs="+", default=None, help="some of the scale's tasks (default: all)")
    run_parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    run_parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the scale's (3 or 5)")
    run_parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one torch thread each")
    run_parser.add_argument("--device", default=None, help="torch device of the runs (default: the scale's, cpu or cuda)")
    run_parser.add_argument("--log-folder", type=Path, default=Path("logs/learning"), help="rl-zoo3 logs (not committed)")
    run_parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=None, help="variants of ours instead of --algos"
    )
    commands.add_parser("report", help="plots and table from the saved evaluations")
    collect_parser = commands.add_parser("collect", help="store finished runs that `run` did not store (it was stopped)")
    collect_parser.add_argument("--tasks", nargs="+", default=None)
    collect_parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    collect_parser.add_argument("--seeds", nargs="+", type=int, default=None)
    collect_parser.add_argument("--log-folder", type=Path, default=Path("logs/learning"))
    args = parser.parse_args()
    scale = SCALES[args.scale]
    if args.command == "report":
        report(scale)
        return
    if args.command == "collect":
        collect_finished(
            scale, args.tasks or list(scale.budgets), args.algos, args.seeds or list(scale.seeds), args.log_folder
        )
        return
    tasks = args.tasks or list(scale.budgets)
    if unknown := sorted(set(tasks) - set(scale.budgets)):
        parser.error(f"--tasks {' '.join(unknown)}: not in the {scale.name} scale's tasks {list(scale.budgets)}")
    seeds = args.seeds or list(scale.seeds)
    run_all(scale, tasks, args.algos, seeds, args.jobs, args.log_folder, args.device or scale.device, args.variants)


if __name__ == "__main__":
    main()
