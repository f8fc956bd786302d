"""
Learning curves of QVPO, QSM, DIPO, SAC and TD3 on the same tasks, budgets and seeds, trained with rl-zoo3.

Every run is one ``python -m sb3_qvpo.train`` call (rl-zoo3's train script with QVPO registered),
evaluated every ``eval_freq`` steps on 10 episodes with each algorithm's own deterministic policy.
SAC and TD3 take rl-zoo3's tuned hyper-parameters (the entry named in ``ZOO_ENTRIES``: the zoo
tunes Hopper-v4 and the Bullet inverted double pendulum, not their -v5 versions); QVPO, QSM and DIPO
take ``hyperparams/<algo>.yml``, with ``benchmarks/hyperparams/<algo>_cpu.yml`` replacing the entries
whose paper settings a 2-core CPU cannot afford. The hyper-parameter files actually used are written
next to the results.

    python benchmarks/learning.py run --tasks Pendulum-v1 InvertedDoublePendulum-v5 Hopper-v5 --jobs 2
    python benchmarks/learning.py report

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

import numpy as np
import yaml
from curves import load_seed_curves

BENCHMARKS_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCHMARKS_DIR / "results" / "learning"
QVPO_CPU_CONF = BENCHMARKS_DIR / "hyperparams" / "qvpo_cpu.yml"
# Ours (hyperparams/<algo>.yml + CPU overrides), then rl-zoo3's tuned baselines.
OUR_ALGOS = ("qvpo", "qsm", "dipo")
ALGOS = (*OUR_ALGOS, "sac", "td3")

# Budget (environment steps) and evaluation interval per task.
TASK_BUDGETS = {
    "Pendulum-v1": (20_000, 1_000),
    "InvertedDoublePendulum-v5": (30_000, 2_500),
    "Hopper-v5": (60_000, 5_000),
}

# A return that counts as having learned the task, for the "first reached" column (sample efficiency).
REACHED_THRESHOLDS = {"Pendulum-v1": -200.0, "InvertedDoublePendulum-v5": 9000.0, "Hopper-v5": 500.0}

# The rl-zoo3 entry whose tuned hyper-parameters SAC and TD3 use on each task.
ZOO_ENTRIES = {
    "Pendulum-v1": "Pendulum-v1",
    "InvertedDoublePendulum-v5": "InvertedDoublePendulumBulletEnv-v0",
    "Hopper-v5": "Hopper-v4",
}

# QVPO with the release's two remaining differences switched on one at a time and together
# (`run --variants ...`): (policy_kwargs added to the task's entry, algorithm parameters). Each
# variant sets both options explicitly, so its runs do not depend on QVPO's defaults. The plain
# "qvpo" runs committed before the defaults changed used truncated_normal and a shared minibatch.
QVPO_VARIANTS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "normal-init": ({"weight_init": "'normal'"}, {"independent_actor_batch": "False"}),
    "independent-batch": ({"weight_init": "'truncated_normal'"}, {"independent_actor_batch": "True"}),
    "release": ({"weight_init": "'normal'"}, {"independent_actor_batch": "True"}),
}


@dataclass(frozen=True)
class Run:
    task: str
    algo: str
    seed: int
    variant: str = ""

    @property
    def name(self) -> str:
        """The label of the runs: the algorithm, or "qvpo-<variant>"."""
        return f"{self.algo}-{self.variant}" if self.variant else self.algo

    @property
    def evaluations_path(self) -> Path:
        return RESULTS_DIR / self.task / f"{self.name}_seed{self.seed}.npz"

    @property
    def wall_time_path(self) -> Path:
        return RESULTS_DIR / self.task / f"{self.name}_seed{self.seed}.json"


def write_zoo_conf(algo: str, tasks: list[str]) -> Path:
    """Copy rl-zoo3's tuned entries under the task names we run, so the zoo reads exactly them."""
    import rl_zoo3

    with open(Path(rl_zoo3.__file__).parent / "hyperparams" / f"{algo}.yml") as file:
        zoo_hyperparams = yaml.safe_load(file)
    conf = {task: dict(zoo_hyperparams[ZOO_ENTRIES[task]]) for task in tasks}
    path = RESULTS_DIR / "hyperparams" / f"{algo}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Written by benchmarks/learning.py from rl-zoo3 {rl_zoo3.__version__}'s {algo}.yml; entries used:\n"
    header += "".join(f"#   {task} <- {ZOO_ENTRIES[task]}\n" for task in tasks)
    path.write_text(header + yaml.safe_dump(conf, sort_keys=True))
    return path


def write_our_conf(algo: str, tasks: list[str]) -> Path:
    """hyperparams/<algo>.yml updated with the CPU overrides of benchmarks/hyperparams/<algo>_cpu.yml."""
    entries = yaml.safe_load((BENCHMARKS_DIR.parent / "hyperparams" / f"{algo}.yml").read_text())
    entries.update(yaml.safe_load((BENCHMARKS_DIR / "hyperparams" / f"{algo}_cpu.yml").read_text()))
    path = RESULTS_DIR / "hyperparams" / f"{algo}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Written by benchmarks/learning.py: hyperparams/{algo}.yml updated with benchmarks/hyperparams/{algo}_cpu.yml\n"
    )
    path.write_text(header + yaml.safe_dump({task: entries[task] for task in tasks}, sort_keys=True))
    return path


def write_qvpo_conf(tasks: list[str]) -> Path:
    return write_our_conf("qvpo", tasks)


def conf_file(algo: str, tasks: list[str]) -> Path:
    return write_our_conf(algo, tasks) if algo in OUR_ALGOS else write_zoo_conf(algo, tasks)


def variant_params(run: Run, conf: Path) -> list[str]:
    """rl-zoo3 ``-params`` overrides of a QVPO variant: its options added to the task's entry."""
    if not run.variant:
        return []
    policy_extra, algo_params = QVPO_VARIANTS[run.variant]
    entry = yaml.safe_load(conf.read_text())[run.task]
    policy_kwargs = entry.get("policy_kwargs", "dict()").strip()
    assert policy_kwargs.startswith("dict(") and policy_kwargs.endswith(")"), policy_kwargs
    extra = ", ".join(f"{key}={value}" for key, value in policy_extra.items())
    joined = f"{policy_kwargs[:-1]}, {extra})" if policy_kwargs != "dict()" else f"dict({extra})"
    return ["-params", f"policy_kwargs:{joined}", *(f"{key}:{value}" for key, value in algo_params.items())]


def train(run: Run, conf: Path, log_root: Path) -> str:
    budget, eval_freq = TASK_BUDGETS[run.task]
    log_folder = log_root / run.task / f"{run.name}_seed{run.seed}"
    shutil.rmtree(log_folder, ignore_errors=True)
    command = [
        sys.executable, "-m", "sb3_qvpo.train",
        "--algo", run.algo, "--env", run.task, "--conf-file", str(conf),
        "-n", str(budget), "--seed", str(run.seed),
        "--eval-freq", str(eval_freq), "--eval-episodes", "10", "--n-eval-envs", "1",
        "--num-threads", "1", "--device", "cpu", "-f", str(log_folder), "--verbose", "0",
        *variant_params(run, conf),
    ]  # fmt: skip
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall_seconds = time.perf_counter() - start
    if completed.returncode != 0:
        return f"FAILED {run}: {completed.stderr[-2000:]}"
    (evaluations,) = log_folder.glob(f"{run.algo}/{run.task}_*/evaluations.npz")
    run.evaluations_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(evaluations, run.evaluations_path)
    run.wall_time_path.write_text(json.dumps({"wall_seconds": wall_seconds, "command": " ".join(command[1:])}))
    final = np.load(run.evaluations_path)["results"][-1].mean()
    return f"{run.task} {run.name} seed {run.seed}: final eval {final:.1f}, {wall_seconds:.0f} s"


def run_all(
    tasks: list[str], algos: list[str], seeds: list[int], jobs: int, log_root: Path, variants: list[str] | None = None
) -> None:
    """``variants``: QVPO variants to run instead of ``algos`` (see :data:`QVPO_VARIANTS`)."""
    if variants:
        algos = ["qvpo"]
    confs = {algo: conf_file(algo, list(TASK_BUDGETS)) for algo in algos}
    # Longest tasks first so the two workers finish together.
    pending = [
        run
        for task in sorted(tasks, key=lambda name: -TASK_BUDGETS[name][0])
        for seed in seeds
        for algo in algos
        for run in [Run(task, algo, seed, variant) for variant in (variants or [""])]
        if not run.evaluations_path.exists()
    ]
    print(f"{len(pending)} runs to do with {jobs} parallel jobs (1 torch thread each)", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for message in pool.map(lambda run: train(run, confs[run.algo], log_root), pending):
            print(message, flush=True)


def load_curves(task: str, algo: str) -> tuple[np.ndarray, np.ndarray, list[float]] | None:
    """Steps, per-seed mean evaluation returns (seeds x evaluations) and per-seed wall times."""
    return load_seed_curves(list((RESULTS_DIR / task).glob(f"{algo}_seed*.npz")))


def first_reached(steps: np.ndarray, curve: np.ndarray, threshold: float) -> str:
    reached = np.flatnonzero(curve >= threshold)
    return f"{steps[reached[0]]:,}" if len(reached) else "-"


def plot_and_tabulate(task: str, names: list[str], figure_path: Path, reference: str | None = None) -> list[str]:
    """
    Mean ± std curves of the runs called ``names`` on ``task`` saved to ``figure_path``, and their
    table rows; ``reference``'s mean curve is drawn too, without a row.
    """
    import matplotlib.pyplot as plt

    rows = []
    figure, axis = plt.subplots(figsize=(6, 4))
    if reference is not None and (curves := load_curves(task, reference)) is not None:
        axis.plot(curves[0], curves[1].mean(axis=0), color="black", label=f"{reference.upper()} ({len(curves[1])} seeds)")
    for name in names:
        curves = load_curves(task, name)
        if curves is None:
            continue
        steps, returns, walls = curves
        mean, std = returns.mean(axis=0), returns.std(axis=0)
        axis.plot(steps, mean, label=f"{name.upper()} ({len(returns)} seeds)")
        axis.fill_between(steps, mean - std, mean + std, alpha=0.25)
        final, best = returns[:, -1], returns.max(axis=1)
        reached = " / ".join(first_reached(steps, curve, REACHED_THRESHOLDS[task]) for curve in returns)
        rows.append(
            f"| {task} | {TASK_BUDGETS[task][0]:,} | {name.upper()} | {len(returns)} "
            f"| {final.mean():.1f} ± {final.std():.1f} | {best.mean():.1f} ± {best.std():.1f} | {reached} "
            f"| {np.mean(walls):.0f} |"
        )
    if rows:
        axis.set_title(task)
        axis.set_xlabel("environment steps")
        axis.set_ylabel("evaluation return (10 episodes)")
        axis.legend()
        axis.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(figure_path, dpi=100)
    plt.close(figure)
    return rows


def report() -> None:
    import matplotlib

    matplotlib.use("Agg")
    lines = [
        "# Learning curves: QVPO vs QSM vs DIPO vs SAC vs TD3",
        "",
        "Written by `python benchmarks/learning.py report` from the runs of `python benchmarks/learning.py run`.",
        "Each evaluation: 10 episodes with the algorithm's deterministic policy. Final = last evaluation;",
        "best = highest evaluation during training (the paper's Table 1 metric); both are mean ± std over seeds.",
        "Wall time: mean seconds per run (training + evaluations), 1 torch thread, two runs at a time on 2 cores.",
        "",
        "First reached: the first evaluation step at which each seed's return reached the threshold",
        f"({', '.join(f'{task} {threshold:g}' for task, threshold in REACHED_THRESHOLDS.items())}); - = never.",
        "",
        "QVPO-<variant> rows: QVPO with the release's initialisation (weight_init='normal') and/or an actor",
        "minibatch drawn independently of the critic's (`run --variants`, see QVPO_VARIANTS); the QVPO rows were",
        "run with truncated_normal and a shared minibatch.",
        "",
        "| task | budget (steps) | algorithm | seeds | final return | best return | first reached, per seed "
        "| wall time per run (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    variant_names = [f"qvpo-{variant}" for variant in QVPO_VARIANTS]
    for task in TASK_BUDGETS:
        lines += plot_and_tabulate(task, list(ALGOS), RESULTS_DIR / f"{task}.png")
        # QVPO's variants in a figure of their own, next to the plain QVPO curve.
        if any(load_curves(task, name) is not None for name in variant_names):
            lines += plot_and_tabulate(task, variant_names, RESULTS_DIR / f"{task}_qvpo_variants.png", reference="qvpo")
    (RESULTS_DIR / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="train the missing runs")
    run_parser.add_argument("--tasks", nargs="+", default=list(TASK_BUDGETS), choices=list(TASK_BUDGETS))
    run_parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    run_parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    run_parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one torch thread each")
    run_parser.add_argument("--log-folder", type=Path, default=Path("logs/learning"), help="rl-zoo3 logs (not committed)")
    run_parser.add_argument(
        "--variants", nargs="+", choices=list(QVPO_VARIANTS), default=None, help="QVPO variants instead of --algos"
    )
    commands.add_parser("report", help="plots and table from the saved evaluations")
    args = parser.parse_args()
    if args.command == "run":
        run_all(args.tasks, args.algos, args.seeds, args.jobs, args.log_folder, args.variants)
    else:
        report()


if __name__ == "__main__":
    main()
