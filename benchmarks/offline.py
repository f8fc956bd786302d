"""
Offline RL on Pendulum-v1 and Hopper-v5: two datasets per task recorded from a SAC run, then
DiffusionQL, diffusion behaviour cloning (DiffusionQL with eta 0), and d3rlpy's TD3+BC and IQL
trained on each with the same gradient-step budget, seeds and evaluations; on Hopper, online
fine-tuning of the offline DiffusionQL models against QVPO from scratch.

    python benchmarks/offline.py --env Hopper-v5 datasets    # SAC reference, checkpoints, medium + replay datasets
    python benchmarks/offline.py --env Hopper-v5 run --jobs 2 # the methods x datasets x seeds not yet saved
    python benchmarks/offline.py --env Hopper-v5 finetune     # online fine-tuning vs QVPO from scratch
    python benchmarks/offline.py --env Hopper-v5 report       # benchmarks/results/offline/<env>/README.md, figures

``datasets``: SAC with rl-zoo3's tuned hyper-parameters (Pendulum-v1's; Hopper-v4's for Hopper-v5),
seed 0, one thread, a checkpoint and its replay buffer every ``checkpoint_freq`` steps; the random
policy and every checkpoint evaluated on deterministic episodes. Normalised score: (R - R_random) /
(R_sac - R_random), R_sac the final model's return. The "medium" policy is the first checkpoint
scoring in [1/3, 1/2] (else the one closest to 0.4); ``<task>/medium-v0``: that policy acting
stochastically (``medium_budget`` of the task); ``<task>/replay-v0``: SAC's replay buffer at that
checkpoint. Both are recorded with ``python -m sb3_qvpo.offline.collect`` under
``$MINARI_DATASETS_PATH`` = ``<log folder>/minari``.

``run``: ``diffusion_ql`` and ``bc`` through ``python -m sb3_qvpo.offline.train`` (hyperparams/
diffusion_ql.yml's entry of the task); ``td3_plus_bc`` and ``iql`` through
``benchmarks/offline_d3rlpy.py`` in a separate venv (``--d3rlpy-python``, default
``.venv-d3rlpy/bin/python``; d3rlpy 2.8.1 pins gymnasium 1.0.0):

    python3 -m venv .venv-d3rlpy && .venv-d3rlpy/bin/pip install torch==2.13.0 d3rlpy==2.8.1 'gymnasium[mujoco]==1.0.0'

Every run of a task: the same gradient steps and evaluations, one torch thread. Curves and command
lines are copied to ``benchmarks/results/offline/<env>/runs/``; ``run`` skips those already there.
``finetune`` (Hopper): each seed's offline DiffusionQL model on the medium dataset keeps training
online (``python -m sb3_qvpo.train -i``, its dataset still in the replay buffer) for
``finetune_steps`` environment steps, and QVPO trains from scratch for as many (the small CPU
settings of the learning benchmark), both evaluated alike. ``--results-dir``, ``--log-folder`` and
the budget flags make a small trial run elsewhere.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from curves import load_seed_curves

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCHMARKS_DIR.parent
DATASETS = ("medium", "replay")
METHODS = ("diffusion_ql", "bc", "td3_plus_bc", "iql")
D3RLPY_METHODS = ("td3_plus_bc", "iql")
METHOD_LABELS = {"diffusion_ql": "DiffusionQL", "bc": "Diffusion BC", "td3_plus_bc": "TD3+BC (d3rlpy)", "iql": "IQL (d3rlpy)"}


@dataclass(frozen=True)
class Task:
    """What differs between the tasks: budgets, the zoo entries used, the dataset sizes."""

    namespace: str  # Minari namespace of the datasets: <namespace>/medium-v0, <namespace>/replay-v0
    sac_entry: str  # rl-zoo3's tuned SAC entry
    sac_steps: int
    checkpoint_freq: int
    medium_budget: tuple[str, str]  # the collect command's budget flag for the medium dataset
    n_steps: int  # gradient steps per offline run
    eval_freq: int
    eval_episodes: int
    diffusion_ql_net_arch: str  # hyperparams/diffusion_ql.yml's networks, as a -params value
    finetune_steps: int = 0  # environment steps of the fine-tuning comparison (0: none)
    finetune_eval_freq: int = 0


TASKS = {
    # Pendulum: SAC learns within a few thousand steps, so checkpoints come every 250 to find a medium one.
    # Hopper: the official networks (3x256, about 70 ms per DiffusionQL update on one CPU thread) for
    # 10,000 gradient steps, 0.5% of the official 2e6: what 2 CPU cores afford for 24 runs.
    "Pendulum-v1": Task("pendulum", "Pendulum-v1", 20_000, 250, ("--n-episodes", "500"), 10_000, 1_000, 10, "[64, 64]"),
    "Hopper-v5": Task(
        "hopper", "Hopper-v4", 200_000, 10_000, ("--n-steps", "100000"), 10_000, 1_000, 5, "[256, 256, 256]", 20_000, 2_000
    ),
}


def bc_params(task: Task) -> list[str]:
    """DiffusionQL without its Q term and Q-based action choice: a pure denoising fit of the data."""
    networks = task.diffusion_ql_net_arch
    return ["eta:0.0", f"policy_kwargs:dict(net_arch={networks}, n_behavior_samples=1, n_eval_samples=1)"]


MEDIUM_RANGE = (1 / 3, 1 / 2)
EVAL_SEED = 1_000  # evaluation episode i of the SAC checkpoints and the random policy resets with EVAL_SEED + i
REFERENCE_EPISODES = 10  # episodes per evaluation of the random policy, SAC and its checkpoints


@dataclass(frozen=True)
class Settings:
    env_id: str
    task: Task
    results_dir: Path
    log_folder: Path
    d3rlpy_python: Path = REPO_DIR / ".venv-d3rlpy" / "bin" / "python"

    def dataset_id(self, dataset: str) -> str:
        return f"{self.task.namespace}/{dataset}-v0"

    @property
    def minari_path(self) -> Path:
        return self.log_folder / "minari"

    @property
    def sac_folder(self) -> Path:
        return self.log_folder / "sac"

    @property
    def datasets_json(self) -> Path:
        return self.results_dir / "datasets.json"

    def env(self) -> dict[str, str]:
        """Environment of every subprocess: the local Minari folder, one OpenMP thread."""
        return {**os.environ, "MINARI_DATASETS_PATH": str(self.minari_path.resolve()), "OMP_NUM_THREADS": "1"}

    def npz_dataset(self, dataset: str) -> Path:
        return self.log_folder / "npz" / f"{dataset}.npz"


@dataclass(frozen=True)
class Run:
    dataset: str
    method: str
    seed: int

    def path(self, settings: Settings, suffix: str) -> Path:
        return settings.results_dir / "runs" / self.dataset / f"{self.method}_seed{self.seed}{suffix}"

    def log_folder(self, settings: Settings) -> Path:
        return settings.log_folder / "runs" / self.dataset / f"{self.method}_seed{self.seed}"


def default_results_dir(env_id: str) -> Path:
    return BENCHMARKS_DIR / "results" / "offline" / env_id


def default_log_folder(env_id: str) -> Path:
    return REPO_DIR / "logs" / "offline" / env_id


def saved_model(run: Run, settings: Settings) -> Path:
    """The final model an offline DiffusionQL or BC run saved (rl-zoo3's layout under its log folder)."""
    (model_path,) = run.log_folder(settings).glob(f"diffusion_ql/{settings.env_id}_*/{settings.env_id}.zip")
    return model_path


def sac_hyperparams(task: Task) -> dict[str, Any]:
    """rl-zoo3's tuned SAC entry for the task (YAML anchors resolved)."""
    import rl_zoo3

    entries = yaml.safe_load((Path(rl_zoo3.__file__).parent / "hyperparams" / "sac.yml").read_text())
    return dict(entries[task.sac_entry])


def evaluate(env_id: str, policy: Any, n_episodes: int) -> list[float]:
    """Returns of ``n_episodes`` episodes; ``policy`` maps an observation to an action, or None: random actions."""
    import gymnasium as gym

    env = gym.make(env_id)
    env.action_space.seed(EVAL_SEED)
    returns = []
    for episode in range(n_episodes):
        observation, _ = env.reset(seed=EVAL_SEED + episode)
        total, done = 0.0, False
        while not done:
            action = env.action_space.sample() if policy is None else policy(observation)
            observation, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def train_sac(settings: Settings) -> dict[str, Any]:
    """Train (unless saved) and evaluate SAC and its checkpoints; the evaluations are cached in the log folder."""
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import CheckpointCallback

    torch.set_num_threads(1)
    folder = settings.sac_folder
    final_path = folder / "final_model.zip"
    hyperparams = sac_hyperparams(settings.task)
    n_steps = settings.task.sac_steps
    if not final_path.exists():
        shutil.rmtree(folder, ignore_errors=True)
        kwargs = {key: value for key, value in hyperparams.items() if key not in ("n_timesteps", "policy")}
        # A buffer of the run's length holds the same transitions as SB3's 1e6 (it never wraps) in smaller checkpoints.
        kwargs.setdefault("buffer_size", n_steps)
        model = SAC(hyperparams["policy"], settings.env_id, seed=0, device="cpu", verbose=0, **kwargs)
        callback = CheckpointCallback(
            settings.task.checkpoint_freq, str(folder / "checkpoints"), name_prefix="sac", save_replay_buffer=True
        )
        start = time.perf_counter()
        model.learn(n_steps, callback=callback)
        model.save(final_path)
        (folder / "train.json").write_text(json.dumps({"wall_seconds": time.perf_counter() - start}))
    evaluations_path = folder / "evaluations.json"
    if evaluations_path.exists():
        return json.loads(evaluations_path.read_text())
    final = SAC.load(final_path, device="cpu")
    evaluations: dict[str, Any] = {
        "hyperparams": hyperparams,
        "n_timesteps": n_steps,
        "train_wall_seconds": json.loads((folder / "train.json").read_text())["wall_seconds"],
        "random": evaluate(settings.env_id, None, REFERENCE_EPISODES),
        "final": evaluate(settings.env_id, lambda obs: final.predict(obs, deterministic=True)[0], REFERENCE_EPISODES),
        "checkpoints": {},
    }
    for step in range(settings.task.checkpoint_freq, n_steps + 1, settings.task.checkpoint_freq):
        model = SAC.load(folder / "checkpoints" / f"sac_{step}_steps.zip", device="cpu")
        evaluations["checkpoints"][str(step)] = evaluate(
            settings.env_id, lambda obs, model=model: model.predict(obs, deterministic=True)[0], REFERENCE_EPISODES
        )
        print(f"SAC checkpoint {step}: {np.mean(evaluations['checkpoints'][str(step)]):.1f}", flush=True)
    evaluations_path.write_text(json.dumps(evaluations, indent=1))
    return evaluations


def choose_medium(evaluations: dict[str, Any]) -> tuple[int, float, bool]:
    """Step and score of the medium checkpoint, and whether its score is inside MEDIUM_RANGE."""
    r_random, r_sac = np.mean(evaluations["random"]), np.mean(evaluations["final"])
    scores = {
        int(step): (np.mean(returns) - r_random) / (r_sac - r_random) for step, returns in evaluations["checkpoints"].items()
    }
    for step in sorted(scores):
        if MEDIUM_RANGE[0] <= scores[step] <= MEDIUM_RANGE[1]:
            return step, float(scores[step]), True
    step = min(sorted(scores), key=lambda step: abs(scores[step] - 0.4))
    return step, float(scores[step]), False


def shown_command(command: list[str]) -> str:
    """``command`` as typed from the repository root: paths relative to it, arguments with spaces quoted."""
    parts = [part.replace(f"{REPO_DIR}/", "") for part in command]
    return " ".join(part if " " not in part else f"'{part}'" for part in parts)


def dataset_folder(settings: Settings, dataset_id: str) -> Path:
    return settings.minari_path / dataset_id


def record_dataset(settings: Settings, dataset: str, medium_step: int) -> dict[str, Any]:
    """Record ``dataset`` with the collect CLI unless it exists; its command and statistics."""
    from sb3_qvpo.offline import load_minari, open_minari_dataset
    from sb3_qvpo.offline.recording import METADATA_KEY

    dataset_id = settings.dataset_id(dataset)
    checkpoints = settings.sac_folder / "checkpoints"
    command = [sys.executable, "-m", "sb3_qvpo.offline.collect", "--env", settings.env_id, "--dataset-id", dataset_id]
    command += ["--algo", "sac"]
    if dataset == "medium":
        command += ["--model", str(checkpoints / f"sac_{medium_step}_steps.zip"), *settings.task.medium_budget]
        command += ["--seed", "0", "--device", "cpu"]
    else:
        command += ["--from-replay-buffer", str(checkpoints / f"sac_replay_buffer_{medium_step}_steps.pkl")]
    summary_path = settings.log_folder / f"collect_{dataset}.txt"
    if not dataset_folder(settings, dataset_id).exists():
        completed = subprocess.run(command, capture_output=True, text=True, env=settings.env(), check=False)
        if completed.returncode != 0:
            raise SystemExit(f"collect failed: {' '.join(command)}\n{completed.stderr[-3000:]}")
        summary_path.write_text(completed.stdout.strip().splitlines()[-1])
    os.environ["MINARI_DATASETS_PATH"] = settings.env()["MINARI_DATASETS_PATH"]
    transitions = load_minari(dataset_id)
    summary = open_minari_dataset(dataset_id).storage.metadata[METADATA_KEY]
    npz_path = settings.npz_dataset(dataset)
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        npz_path,
        observations=transitions.observations,
        actions=transitions.actions,
        rewards=transitions.rewards,
        terminals=transitions.terminals,
        timeouts=transitions.timeouts,
    )
    return {
        "id": dataset_id,
        "command": shown_command(["python", *command[1:]]),
        "collect_summary": summary_path.read_text() if summary_path.exists() else None,
        # The collect command's summary: the average is over the episodes that ended on their own (the
        # replay buffer's last episode is cut at the checkpoint; all episodes if none did), the std over all.
        "transitions": summary["n_transitions"],
        "episodes": summary["n_episodes"],
        "complete_episodes": summary["n_complete_episodes"],
        "average_return": summary["mean_return"] or float(np.mean(transitions.episode_returns)),
        "std_return": float(np.std(transitions.episode_returns)),
    }


def make_datasets(settings: Settings) -> None:
    evaluations = train_sac(settings)
    r_random, r_sac = float(np.mean(evaluations["random"])), float(np.mean(evaluations["final"]))
    medium_step, medium_score, in_range = choose_medium(evaluations)
    info: dict[str, Any] = {
        "env": settings.env_id,
        "sac_hyperparams": evaluations["hyperparams"],
        "sac_steps": evaluations["n_timesteps"],
        "sac_train_wall_seconds": evaluations["train_wall_seconds"],
        "r_random": r_random,
        "r_random_std": float(np.std(evaluations["random"])),
        "r_sac": r_sac,
        "r_sac_std": float(np.std(evaluations["final"])),
        "checkpoint_returns": {step: float(np.mean(returns)) for step, returns in evaluations["checkpoints"].items()},
        "medium_step": medium_step,
        "medium_score": medium_score,
        "medium_in_range": in_range,
        "medium_return": float(np.mean(evaluations["checkpoints"][str(medium_step)])),
        "datasets": {},
    }
    for dataset in DATASETS:
        info["datasets"][dataset] = stats = record_dataset(settings, dataset, medium_step)
        stats["score"] = (stats["average_return"] - r_random) / (r_sac - r_random)
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    settings.datasets_json.write_text(json.dumps(info, indent=2))
    print(json.dumps({key: value for key, value in info.items() if key != "checkpoint_returns"}, indent=2))


def keeps_for_finetuning(run: Run, settings: Settings) -> bool:
    """The offline DiffusionQL runs on the medium dataset that ``finetune`` continues online."""
    return settings.task.finetune_steps > 0 and run.method == "diffusion_ql" and run.dataset == "medium"


def command_of(run: Run, settings: Settings, log_folder: Path) -> list[str]:
    task = settings.task
    common = ["--n-steps" if run.method in D3RLPY_METHODS else "-n", str(task.n_steps)]
    common += ["--eval-freq", str(task.eval_freq), "--eval-episodes", str(task.eval_episodes)]
    common += ["--seed", str(run.seed), "--num-threads", "1"]
    if run.method in D3RLPY_METHODS:
        script = str(BENCHMARKS_DIR / "offline_d3rlpy.py")
        output = ["--output", str(log_folder / "curve.npz"), "--device", "cpu:0"]
        dataset = ["--dataset", str(settings.npz_dataset(run.dataset).resolve())]
        command = [str(settings.d3rlpy_python), script, "--algo", run.method, "--env", settings.env_id]
        return [*command, *dataset, *common, *output]
    command = [sys.executable, "-m", "sb3_qvpo.offline.train", "--algo", "diffusion_ql", "--env", settings.env_id]
    command += ["--dataset", settings.dataset_id(run.dataset), *common, "--n-eval-envs", "1", "--device", "cpu"]
    command += ["-f", str(log_folder)]
    if keeps_for_finetuning(run, settings):
        command.append("--save-replay-buffer")  # the dataset, for `-i` to find next to the model
    return command + (["-params", *bc_params(task)] if run.method == "bc" else [])


def fresh_folder(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def run_logged(command: list[str], log_folder: Path, settings: Settings) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``command`` from the repository root, its output kept in ``log_folder/stdout.txt``; also its wall time."""
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env=settings.env(), cwd=REPO_DIR, check=False)
    wall_seconds = time.perf_counter() - start
    (log_folder / "stdout.txt").write_text(completed.stdout + completed.stderr)
    return completed, wall_seconds


def train(run: Run, settings: Settings) -> str:
    log_folder = fresh_folder(run.log_folder(settings))
    command = command_of(run, settings, log_folder)
    completed, wall_seconds = run_logged(command, log_folder, settings)
    if completed.returncode != 0:
        return f"FAILED {run}: {completed.stderr[-2000:]}"
    if run.method in D3RLPY_METHODS:
        curve = log_folder / "curve.npz"
    else:
        (curve,) = log_folder.glob(f"diffusion_ql/{settings.env_id}_*/evaluations.npz")
    run.path(settings, ".npz").parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(curve, run.path(settings, ".npz"))
    program = "python" if run.method not in D3RLPY_METHODS else ".venv-d3rlpy/bin/python"
    record = {"wall_seconds": wall_seconds, "command": shown_command([program, *command[1:]])}
    record["dataset"] = settings.dataset_id(run.dataset)
    run.path(settings, ".json").write_text(json.dumps(record, indent=2))
    final = np.load(run.path(settings, ".npz"))["results"][-1].mean()
    return f"{run.dataset} {run.method} seed {run.seed}: final eval {final:.1f}, {wall_seconds:.0f} s"


def run_all(settings: Settings, datasets: list[str], methods: list[str], seeds: list[int], jobs: int) -> None:
    if not settings.datasets_json.exists():
        raise SystemExit(f"no {settings.datasets_json}: run `python benchmarks/offline.py datasets` first")
    # Seed by seed, so that an interrupted sweep leaves every method with the same seeds.
    pending = [
        run
        for seed in seeds
        for dataset in datasets
        for method in methods
        for run in [Run(dataset, method, seed)]
        if not run.path(settings, ".npz").exists()
    ]
    print(f"{len(pending)} runs to do with {jobs} parallel jobs (1 torch thread each)", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for message in pool.map(lambda run: train(run, settings), pending):
            print(message, flush=True)


FINETUNE_METHODS = ("diffusion_ql", "qvpo")
FINETUNE_LABELS = {"diffusion_ql": "DiffusionQL, offline then online", "qvpo": "QVPO from scratch"}
QVPO_CPU_CONF = BENCHMARKS_DIR / "hyperparams" / "qvpo_cpu.yml"


def finetune_command(method: str, seed: int, settings: Settings, log_folder: Path) -> list[str]:
    """Online training through rl-zoo3: DiffusionQL from its offline model and dataset, or QVPO from scratch."""
    task = settings.task
    command = [sys.executable, "-m", "sb3_qvpo.train", "--algo", method, "--env", settings.env_id]
    command += ["-n", str(task.finetune_steps), "--eval-freq", str(task.finetune_eval_freq)]
    command += ["--eval-episodes", str(task.eval_episodes), "--n-eval-envs", "1", "--seed", str(seed)]
    command += ["--num-threads", "1", "--device", "cpu", "-f", str(log_folder)]
    if method == "qvpo":
        return [*command, "--conf-file", str(QVPO_CPU_CONF)]
    model_path = saved_model(Run("medium", "diffusion_ql", seed), settings)
    if not (model_path.parent / "replay_buffer.pkl").exists():
        raise SystemExit(f"{model_path.parent} has no replay_buffer.pkl: rerun its offline run (`run`)")
    return [*command, "-i", str(model_path)]


def finetune_path(settings: Settings, method: str, seed: int, suffix: str) -> Path:
    return settings.results_dir / "finetune" / f"{method}_seed{seed}{suffix}"


def finetune(method: str, seed: int, settings: Settings) -> str:
    log_folder = fresh_folder(settings.log_folder / "finetune" / f"{method}_seed{seed}")
    command = finetune_command(method, seed, settings, log_folder)
    completed, wall_seconds = run_logged(command, log_folder, settings)
    if completed.returncode != 0:
        return f"FAILED {method} seed {seed}: {completed.stderr[-2000:]}"
    (curve,) = log_folder.glob(f"{method}/{settings.env_id}_*/evaluations.npz")
    finetune_path(settings, method, seed, ".npz").parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(curve, finetune_path(settings, method, seed, ".npz"))
    record = {"wall_seconds": wall_seconds, "command": shown_command(["python", *command[1:]])}
    finetune_path(settings, method, seed, ".json").write_text(json.dumps(record, indent=2))
    final = np.load(finetune_path(settings, method, seed, ".npz"))["results"][-1].mean()
    return f"finetune {method} seed {seed}: final eval {final:.1f}, {wall_seconds:.0f} s"


def finetune_all(settings: Settings, seeds: list[int], jobs: int) -> None:
    if settings.task.finetune_steps <= 0:
        raise SystemExit(f"no fine-tuning comparison is set up for {settings.env_id}")
    pending = [
        (method, seed)
        for seed in seeds
        for method in FINETUNE_METHODS
        if not finetune_path(settings, method, seed, ".npz").exists()
    ]
    print(f"{len(pending)} fine-tuning runs to do with {jobs} parallel jobs (1 torch thread each)", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for message in pool.map(lambda item: finetune(*item, settings), pending):
            print(message, flush=True)


def load_curves(settings: Settings, dataset: str, method: str) -> tuple[np.ndarray, np.ndarray, list[float]] | None:
    """Gradient steps, per-seed mean evaluation returns (seeds x evaluations) and per-seed wall times."""
    return load_seed_curves(list((settings.results_dir / "runs" / dataset).glob(f"{method}_seed*.npz")))


def mean_std(values: np.ndarray, digits: int = 1) -> str:
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def load_finetune_curves(settings: Settings, method: str) -> tuple[np.ndarray, np.ndarray, list[float]] | None:
    """Environment steps, per-seed mean evaluation returns and wall times of the fine-tuning runs of ``method``."""
    return load_seed_curves(list((settings.results_dir / "finetune").glob(f"{method}_seed*.npz")))


def plot_band(axis: Any, steps: np.ndarray, returns: np.ndarray, label: str) -> None:
    """The mean over seeds, with a band of one std."""
    mean, std = returns.mean(axis=0), returns.std(axis=0)
    axis.plot(steps, mean, label=f"{label} ({len(returns)} seeds)")
    axis.fill_between(steps, mean - std, mean + std, alpha=0.2)


def finish_figure(figure: Any, axis: Any, references: dict[str, float], title: str, xlabel: str, path: Path) -> None:
    """Dashed / dotted lines at the dataset's and SAC's returns, labels, legend; saved and closed."""
    for (label, value), style in zip(references.items(), ("--", ":"), strict=False):
        axis.axhline(value, color="gray" if style == "--" else "black", linestyle=style, label=f"{label} ({value:.0f})")
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("evaluation return")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    figure.clf()


def finetune_report(settings: Settings, r_random: float, r_sac: float, r_data: float, plt: Any) -> list[str]:
    """The fine-tuning section of the report (and its figure), if any run is saved."""
    curves = {method: load_finetune_curves(settings, method) for method in FINETUNE_METHODS}
    if all(curve is None for curve in curves.values()):
        return []
    task = settings.task
    lines = [
        "",
        "## Online fine-tuning after offline training vs QVPO from scratch",
        "",
        f"DiffusionQL trained offline on `{settings.dataset_id('medium')}` ({task.n_steps:,} gradient steps, above) keeps "
        f"training online for {task.finetune_steps:,} environment steps: `python -m sb3_qvpo.train --algo diffusion_ql "
        "-i <its model>` (rl-zoo3 loads the model and its replay buffer, which still holds the dataset; one update per "
        f"step, no random warm-up). QVPO trains from scratch for as many steps with the learning benchmark's small CPU "
        f"settings (`benchmarks/hyperparams/qvpo_cpu.yml`: 10,000 random steps first). Both evaluated every "
        f"{task.finetune_eval_freq:,} steps on {task.eval_episodes} episodes; seed s fine-tunes the offline model of seed s.",
        "",
        f"![fine-tuning]({settings.env_id}_finetune.png)",
        "",
        "| method | seeds | first evaluation | final return | final / SAC | best return | wall time per run (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    figure, axis = plt.subplots(figsize=(6, 4))
    for method, curve in curves.items():
        if curve is None:
            lines.append(f"| {FINETUNE_LABELS[method]} | 0 | not run | | | | |")
            continue
        steps, returns, walls = curve
        plot_band(axis, steps, returns, FINETUNE_LABELS[method])
        final = returns[:, -1]
        lines.append(
            f"| {FINETUNE_LABELS[method]} | {len(returns)} | {mean_std(returns[:, 0])} (at {int(steps[0]):,}) "
            f"| {mean_std(final)} | {mean_std((final - r_random) / (r_sac - r_random), 2)} "
            f"| {mean_std(returns.max(axis=1))} | {np.mean(walls):.0f} |"
        )
    references = {"dataset average": r_data, "SAC": r_sac}
    path = settings.results_dir / f"{settings.env_id}_finetune.png"
    finish_figure(figure, axis, references, f"{settings.env_id}: fine-tuning vs from scratch", "environment steps", path)
    plt.close(figure)
    return [*lines, "", "Command of each run: `finetune/<method>_seed<S>.json`."]


def diffusion_ql_entry(env_id: str) -> dict[str, Any]:
    """hyperparams/diffusion_ql.yml's entry for the task, as the offline runs read it."""
    return dict(yaml.safe_load((REPO_DIR / "hyperparams" / "diffusion_ql.yml").read_text())[env_id])


def report(settings: Settings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = json.loads(settings.datasets_json.read_text())
    r_random, r_sac = info["r_random"], info["r_sac"]
    medium_note = (
        "the first checkpoint whose score lies in [1/3, 1/2]"
        if info["medium_in_range"]
        else "no checkpoint scored in [1/3, 1/2]: the one closest to 0.4"
    )
    lines = [
        f"# Offline RL on {settings.env_id}: DiffusionQL vs diffusion BC vs d3rlpy's TD3+BC and IQL",
        "",
        "Written by `python benchmarks/offline.py report`; the data and runs come from:",
        "",
        "```",
        f"python benchmarks/offline.py --env {settings.env_id} datasets",
        f"python benchmarks/offline.py --env {settings.env_id} run --jobs 2",
        f"python benchmarks/offline.py --env {settings.env_id} report",
        "```",
        "",
        "## Datasets",
        "",
        f"SAC with rl-zoo3's tuned {settings.env_id} hyper-parameters (`{info['sac_hyperparams']}`), seed 0, "
        f"{info['sac_steps']:,} steps, one thread ({info['sac_train_wall_seconds']:.0f} s), a checkpoint and its replay "
        f"buffer every {settings.task.checkpoint_freq:,} steps. Returns are means over {REFERENCE_EPISODES} evaluation "
        "episodes (deterministic policy for SAC).",
        f"R_random = {r_random:.1f} ± {info['r_random_std']:.1f} (uniform random actions), "
        f"R_sac = {r_sac:.1f} ± {info['r_sac_std']:.1f} (final SAC model). "
        "Normalised score of a return R: (R - R_random) / (R_sac - R_random).",
        f"Medium policy: the checkpoint at {info['medium_step']:,} steps ({medium_note}), evaluation return "
        f"{info['medium_return']:.1f}, score {info['medium_score']:.2f}.",
        "",
        "SAC checkpoints (return, score): "
        + ", ".join(
            f"{int(step):,}: {ret:.0f} ({(ret - r_random) / (r_sac - r_random):.2f})"
            for step, ret in info["checkpoint_returns"].items()
        )
        + ".",
        "",
        "| dataset | source | transitions | episodes | average episode return | normalised score |",
        "|---|---|---|---|---|---|",
    ]
    sources = {
        "medium": f"SAC checkpoint {info['medium_step']:,} acting stochastically",
        "replay": f"SAC replay buffer at {info['medium_step']:,} steps",
    }
    for dataset, stats in info["datasets"].items():
        lines.append(
            f"| `{stats['id']}` | {sources[dataset]} | {stats['transitions']:,} | {stats['episodes']:,} "
            f"| {stats['average_return']:.1f} ± {stats['std_return']:.1f} | {stats['score']:.2f} |"
        )
    lines += ["", "Recorded with:", "", "```"]
    lines += [stats["command"] for stats in info["datasets"].values()]
    lines += [
        "```",
        "",
        "## Methods",
        "",
        f"Each run: {settings.task.n_steps:,} gradient steps (batch 256), evaluated every "
        f"{settings.task.eval_freq:,} steps on "
        f"{settings.task.eval_episodes} episodes with the method's deterministic policy, one torch thread, two runs at a "
        "time on a shared 2-core CPU.",
        "",
        f"- **DiffusionQL**: `hyperparams/diffusion_ql.yml`'s {settings.env_id} entry: "
        f"`{diffusion_ql_entry(settings.env_id)}`.",
        "- **Diffusion BC**: the same with `-params "
        + " ".join(f'"{param}"' for param in bc_params(settings.task))
        + "`: no Q term and "
        "one sample per action choice, a pure denoising fit of the data.",
        "- **TD3+BC**, **IQL**: d3rlpy 2.8.1 (`benchmarks/offline_d3rlpy.py`, its own venv), d3rlpy's default "
        "hyper-parameters with batch 256 and a `MinMaxActionScaler` to the task's action bounds (d3rlpy's "
        "policies squash to [-1, 1]); the datasets are passed with their timeouts as timeouts (d3rlpy then drops "
        "the last transition of each time-limited episode, whose next observation it does not keep).",
        "",
        "Final = last evaluation, best = highest evaluation during training; mean ± std over seeds. "
        "Normalised: / dataset = (R - R_random) / (R_dataset - R_random) (1 = the dataset's average episode), "
        "/ SAC = (R - R_random) / (R_sac - R_random). Wall time: seconds per run, training and evaluations.",
        "",
    ]
    for dataset, stats in info["datasets"].items():
        r_data = stats["average_return"]
        figure, axis = plt.subplots(figsize=(6, 4))
        lines += [
            f"### `{stats['id']}`",
            "",
            f"![{dataset}]({settings.env_id}_{dataset}.png)",
            "",
            "| method | seeds | final return | final / dataset | final / SAC | best return | best / dataset "
            "| best / SAC | wall time per run (s) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        if r_data <= r_random:
            lines[-2:-2] = [
                f"The dataset's average return ({r_data:.1f}) is not above R_random ({r_random:.1f}): "
                "the / dataset normalisation has no meaning here (n/a).",
                "",
            ]
        for method in METHODS:
            curves = load_curves(settings, dataset, method)
            if curves is None:
                lines.append(f"| {METHOD_LABELS[method]} | 0 | not run | | | | | | |")
                continue
            steps, returns, walls = curves
            plot_band(axis, steps, returns, METHOD_LABELS[method])
            cells = [f"{METHOD_LABELS[method]}", str(len(returns))]
            for values in (returns[:, -1], returns.max(axis=1)):
                by_data = mean_std((values - r_random) / (r_data - r_random), 2) if r_data > r_random else "n/a"
                by_sac = (values - r_random) / (r_sac - r_random)
                cells += [mean_std(values), by_data, mean_std(by_sac, 2)]
            cells.append(f"{np.mean(walls):.0f}")
            lines.append("| " + " | ".join(cells) + " |")
        path = settings.results_dir / f"{settings.env_id}_{dataset}.png"
        references = {"dataset average": r_data, "SAC": r_sac}
        finish_figure(figure, axis, references, f"{settings.env_id}, {stats['id']}", "gradient steps", path)
        plt.close(figure)
        lines.append("")
    lines += ["Command of each run: `runs/<dataset>/<method>_seed<S>.json` (curves in the `.npz` next to it)."]
    lines += finetune_report(settings, r_random, r_sac, info["datasets"]["medium"]["average_return"], plt)
    (settings.results_dir / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1", choices=list(TASKS))
    parser.add_argument("--results-dir", type=Path, help="default: benchmarks/results/offline/<env>")
    parser.add_argument("--log-folder", type=Path, help="not committed; default: logs/offline/<env>")
    budget_flags = (
        "sac_steps",
        "checkpoint_freq",
        "n_steps",
        "eval_freq",
        "eval_episodes",
        "finetune_steps",
        "finetune_eval_freq",
    )
    for flag in budget_flags:
        parser.add_argument(f"--{flag.replace('_', '-')}", type=int, help="override the task's value (a trial run)")
    parser.add_argument("--d3rlpy-python", type=Path, default=REPO_DIR / ".venv-d3rlpy" / "bin" / "python")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("datasets", help="SAC reference, checkpoints and the two datasets")
    run_parser = commands.add_parser("run", help="train the missing runs")
    run_parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    run_parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    run_parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    run_parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one torch thread each")
    finetune_parser = commands.add_parser("finetune", help="online fine-tuning of the offline models vs QVPO from scratch")
    finetune_parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    finetune_parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one torch thread each")
    commands.add_parser("report", help="tables and figures from the saved runs")
    args = parser.parse_args()
    overrides = {flag: getattr(args, flag) for flag in budget_flags if getattr(args, flag) is not None}
    settings = Settings(
        env_id=args.env,
        task=replace(TASKS[args.env], **overrides),
        results_dir=(args.results_dir or default_results_dir(args.env)).resolve(),
        log_folder=(args.log_folder or default_log_folder(args.env)).resolve(),
        d3rlpy_python=args.d3rlpy_python,
    )
    if args.command == "datasets":
        make_datasets(settings)
    elif args.command == "run":
        run_all(settings, args.datasets, args.methods, args.seeds, args.jobs)
    elif args.command == "finetune":
        finetune_all(settings, args.seeds, args.jobs)
    else:
        report(settings)


if __name__ == "__main__":
    main()
