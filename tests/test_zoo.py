"""
rl-zoo3 integration: the CLI entry points (train, enjoy, record_video, --optimize), the default
hyper-parameter file, the sampler, and tuning with several workers on one Optuna study (journal
file and PostgreSQL).

The CLI tests run ``python -m sb3_qvpo.train`` / ``sb3_qvpo.enjoy`` in subprocesses with tiny settings.
"""

import argparse
import filecmp
import glob
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from stable_baselines3 import SAC

from sb3_qvpo import QVPO, zoo
from sb3_qvpo.zoo import ZooExperimentManager, convert_qvpo_params, hyperparams_file, register, sample_qvpo_params
from sb3_qvpo.zoo.experiment import hide_password
from sb3_qvpo.zoo.samplers import POLICY_KWARGS_KEYS, RAW_TO_KWARG, SamplerContext, sampler_context

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER_ENVS = {"Hopper-v5": 1, "Walker2d-v5": 2, "Ant-v5": 2, "HalfCheetah-v5": 4, "Humanoid-v5": 2}  # env: K_t
ALL_ENVS = ["Pendulum-v1", "InvertedPendulum-v5", "InvertedDoublePendulum-v5", *PAPER_ENVS]

# Tiny QVPO settings for the command line; with --optimize they are pinned (not sampled).
TINY_PARAMS = [
    "learning_starts:100",
    "batch_size:16",
    "buffer_size:1000",
    "n_action_samples:4",
    "n_uniform_samples:2",
    "n_eval_samples:4",
    "policy_kwargs:dict(net_arch=[16,16],n_diffusion_steps=3)",
]
PINNED_RAW_PARAMS = {"batch_size_pow", "n_action_samples", "n_uniform_samples", "net_arch", "n_diffusion_steps"}


def zoo_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", MUJOCO_GL="egl", PYTHONUNBUFFERED="1")
    return env


def zoo_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def run_zoo(
    module: str,
    *args: str,
    cwd: Path,
    check: bool = True,
    timeout: float = 240,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        zoo_command(module, *args),
        cwd=cwd,
        env={**zoo_env(), **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{module} {shlex.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def optimize_args(*extra: str, n_trials: int = 2) -> list[str]:
    return [
        "--algo",
        "qvpo",
        "--env",
        "Pendulum-v1",
        "-n",
        "200",
        "--optimize",
        "--n-trials",
        str(n_trials),
        "--n-evaluations",
        "1",
        "--eval-episodes",
        "1",
        "--no-optim-plots",
        "--num-threads",
        "1",
        "--device",
        "cpu",
        "-f",
        "logs",
        *extra,
        "-params",
        *TINY_PARAMS,
    ]


def finished_trials(storage: str | optuna.storages.BaseStorage, study_name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(storage=storage, study_name=study_name)
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))


def journal(path: Path) -> optuna.storages.BaseStorage:
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


# --- hyper-parameter file, registration, sampler (in this process) ---------------------------------


def test_packaged_hyperparams_file_is_identical_to_the_checkout_one() -> None:
    packaged = REPO_ROOT / "sb3_qvpo" / "zoo" / "hyperparams" / "qvpo.yml"
    canonical = REPO_ROOT / "hyperparams" / "qvpo.yml"
    assert filecmp.cmp(canonical, packaged, shallow=False), (
        "sb3_qvpo/zoo/hyperparams/qvpo.yml (installed with the package) differs from hyperparams/qvpo.yml: "
        "cp hyperparams/qvpo.yml sb3_qvpo/zoo/hyperparams/qvpo.yml"
    )
    # a source checkout (editable install) reads its own file, an installed package its copy
    from_checkout = Path(zoo.__file__).resolve().is_relative_to(REPO_ROOT)
    assert hyperparams_file() == (
        canonical if from_checkout else Path(zoo.__file__).resolve().parent / "hyperparams" / "qvpo.yml"
    )


def test_register_adds_qvpo_next_to_the_zoo_algorithms() -> None:
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
    from rl_zoo3.utils import ALGOS

    register()
    register()  # idempotent
    assert ALGOS["qvpo"] is QVPO
    assert HYPERPARAMS_SAMPLER["qvpo"] is sample_qvpo_params
    assert HYPERPARAMS_CONVERTER["qvpo"] is convert_qvpo_params
    assert {"sac", "td3", "tqc", "ppo"} <= set(ALGOS)


@pytest.mark.parametrize("env_id", ALL_ENVS)
def test_default_hyperparams_build_a_model(env_id: str, tmp_path: Path) -> None:
    manager = ZooExperimentManager(argparse.Namespace(), "qvpo", env_id, str(tmp_path))
    assert manager.config == str(hyperparams_file())
    raw, _ = manager.read_hyperparameters()
    hyperparams, *_ = manager._preprocess_hyperparams(raw)
    if env_id in PAPER_ENVS:
        assert manager.n_timesteps == 1_000_000
        assert hyperparams["n_target_samples"] == PAPER_ENVS[env_id]
    model = QVPO(env=env_id, device="cpu", **{**hyperparams, "buffer_size": 1_000})
    assert model.n_target_samples == hyperparams.get("n_target_samples", 1)
    model.get_env().close()


def test_sampler_samples_valid_models_and_converts_back() -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        trial = study.ask()
        hyperparams = sample_qvpo_params(trial, 1, 1, {"using_her_replay_buffer": False})
        assert set(trial.params) == set(RAW_TO_KWARG)
        assert convert_qvpo_params(trial.params) == hyperparams
        model = QVPO("MlpPolicy", "Pendulum-v1", device="cpu", **{**hyperparams, "buffer_size": 1_000})
        assert model.policy.actor.n_diffusion_steps == hyperparams["policy_kwargs"]["n_diffusion_steps"]
        study.tell(trial, 0.0)


def test_sampler_leaves_pinned_parameters_alone() -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    context = SamplerContext(
        pinned=frozenset({"batch_size", "gamma", "entropy_coef", "n_diffusion_steps"}),
        policy_kwargs={"n_diffusion_steps": 3, "time_embedding_dim": 8},
    )
    with sampler_context(context):
        hyperparams = sample_qvpo_params(trial, 1, 1, {"using_her_replay_buffer": False})
    assert not {"batch_size_pow", "one_minus_gamma", "entropy_coef", "entropy_schedule", "n_diffusion_steps"} & set(
        trial.params
    )
    assert not {"batch_size", "gamma", "entropy_coef"} & set(hyperparams)
    assert hyperparams["policy_kwargs"]["n_diffusion_steps"] == 3
    assert hyperparams["policy_kwargs"]["time_embedding_dim"] == 8
    assert set(POLICY_KWARGS_KEYS) <= set(hyperparams["policy_kwargs"])


def test_hide_password() -> None:
    assert hide_password("postgresql://me:s3cr%40t@db:5432/optuna") == "postgresql://me:***@db:5432/optuna"
    assert hide_password("logs/qvpo/Hopper-v5_optuna.log") == "logs/qvpo/Hopper-v5_optuna.log"


# --- the command line ----------------------------------------------------------------------------


def test_cli_train_writes_a_model_that_enjoy_and_record_video_run(tmp_path: Path) -> None:
    run_zoo(
        "sb3_qvpo.train",
        *("--algo", "qvpo", "--env", "InvertedPendulum-v5", "-n", "300", "--seed", "3", "--device", "cpu"),
        *("--eval-freq", "150", "--eval-episodes", "1", "--save-freq", "200", "-tb", "tb", "--num-threads", "1"),
        *("-f", "logs", "-params", *TINY_PARAMS, "actor_learning_rate:'lin_3e-4'"),
        cwd=tmp_path,
    )
    run_dir = tmp_path / "logs" / "qvpo" / "InvertedPendulum-v5_1"
    for name in ("InvertedPendulum-v5.zip", "best_model.zip", "rl_model_200_steps.zip", "evaluations.npz"):
        assert (run_dir / name).is_file(), name
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    config = yaml.load((run_dir / "InvertedPendulum-v5" / "config.yml").read_text(), Loader=yaml.UnsafeLoader)
    assert dict(config)["n_action_samples"] == 4  # -params over the default file
    assert len(np.load(run_dir / "evaluations.npz")["timesteps"]) == 2

    model = QVPO.load(run_dir / "InvertedPendulum-v5.zip", device="cpu")
    assert model.num_timesteps == 300
    assert model.n_action_samples == 4 and model.policy.actor.n_diffusion_steps == 3

    enjoyed = run_zoo(
        "sb3_qvpo.enjoy",
        *("--algo", "qvpo", "--env", "InvertedPendulum-v5", "-f", "logs", "-n", "120", "--no-render"),
        *("--device", "cpu", "--num-threads", "1"),
        cwd=tmp_path,
    )
    assert "Loading logs/qvpo/InvertedPendulum-v5_1/InvertedPendulum-v5.zip" in enjoyed.stdout
    assert "Mean reward:" in enjoyed.stdout

    # rl-zoo3 records videos with its record_video script; MuJoCo renders off-screen through EGL
    recorded = run_zoo(
        "sb3_qvpo.zoo",
        *("record_video", "--algo", "qvpo", "--env", "InvertedPendulum-v5", "-f", "logs", "-n", "30", "-o", "videos"),
        cwd=tmp_path,
        check=False,
    )
    if recorded.returncode != 0 and re.search(r"OpenGL|EGL|mujoco.FatalError", recorded.stderr):
        pytest.skip(f"no off-screen MuJoCo rendering (MUJOCO_GL=egl) here, so no video: {recorded.stderr[-300:]!r}")
    assert recorded.returncode == 0, recorded.stderr[-5000:]
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0


def test_conf_file_and_sac_from_the_same_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "custom.yml"
    conf.write_text(
        yaml.safe_dump({"Pendulum-v1": {"n_timesteps": 100, "policy": "MlpPolicy", "learning_starts": 1000, "gamma": 0.9}})
    )
    for algo in ("qvpo", "sac"):
        zoo.train(
            [
                *("--algo", algo, "--env", "Pendulum-v1", "--conf-file", str(conf), "--eval-freq", "-1", "--seed", "0"),
                *("--device", "cpu", "-f", "logs", "--verbose", "0"),
                *(
                    ["-params", "buffer_size:1000", "n_eval_samples:4", "policy_kwargs:dict(net_arch=[16])"]
                    if algo == "qvpo"
                    else []
                ),
            ]
        )
        run_dir = tmp_path / "logs" / algo / "Pendulum-v1_1"
        config = yaml.load((run_dir / "Pendulum-v1" / "config.yml").read_text(), Loader=yaml.UnsafeLoader)
        assert dict(config)["gamma"] == 0.9
        model_class = QVPO if algo == "qvpo" else SAC
        assert model_class.load(run_dir / "Pendulum-v1.zip", device="cpu").gamma == 0.9


def test_bad_algo_or_env_fails_with_rl_zoo3_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        zoo.train(["--algo", "qvpoo", "--env", "Pendulum-v1"])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert "argument --algo: invalid choice: 'qvpoo'" in stderr
    assert "'qvpo'" in stderr.split("choose from")[1]
    with pytest.raises(ValueError, match=re.escape("Pendulum-v9 not found in gym registry, you maybe meant Pendulum-v1?")):
        zoo.train(["--algo", "qvpo", "--env", "Pendulum-v9"])
    with pytest.raises(SystemExit) as exit_info:
        zoo.enjoy(["--algo", "qvpoo", "--env", "Pendulum-v1"])
    assert exit_info.value.code == 2
    assert not (tmp_path / "logs").exists()


def test_cli_optimize_records_trials_in_the_default_journal_file(tmp_path: Path) -> None:
    result = run_zoo("sb3_qvpo.train", *optimize_args("--seed", "0"), cwd=tmp_path)
    storage_file = tmp_path / "logs" / "qvpo" / "Pendulum-v1_optuna.log"
    assert f"Optuna storage: {Path('logs/qvpo/Pendulum-v1_optuna.log')} - study: qvpo_Pendulum-v1_200" in result.stdout
    trials = finished_trials(journal(storage_file), "qvpo_Pendulum-v1_200")
    assert len(trials) == 2
    for trial in trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE and np.isfinite(trial.value)
        assert not PINNED_RAW_PARAMS & set(trial.params)  # -params are not tuned
        assert {"learning_rate", "n_behavior_samples", "n_target_samples"} <= set(trial.params)
    assert list((tmp_path / "logs" / "qvpo").glob("report_Pendulum-v1_2-trials-200-tpe-median_*.csv"))


def two_workers(storage: str, study_name: str, cwd: Path) -> set[str]:
    """Start two --optimize workers on one study at the same time; return their 'hostname:pid'."""
    args = optimize_args("--storage", storage, "--study-name", study_name, "--sampler", "random")
    workers = [
        subprocess.Popen(zoo_command("sb3_qvpo.train", *args, "--seed", str(seed)), cwd=cwd, env=zoo_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for seed in (1, 2)
    ]  # fmt: skip
    for worker in workers:
        output, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0, output[-5000:]
    return {f"{socket.gethostname()}:{worker.pid}" for worker in workers}


def assert_both_workers_contributed(trials: list[optuna.trial.FrozenTrial], workers: set[str]) -> None:
    assert len(trials) == 4
    per_worker = {worker: sum(trial.user_attrs["worker"] == worker for trial in trials) for worker in workers}
    assert per_worker == dict.fromkeys(workers, 2)


def test_two_workers_share_one_journal_study(tmp_path: Path) -> None:
    storage_file = tmp_path / "shared" / "study.log"
    workers = two_workers(str(storage_file), "shared", tmp_path)
    assert_both_workers_contributed(finished_trials(journal(storage_file), "shared"), workers)


# --- PostgreSQL: a throw-away server on loopback -------------------------------------------------


def _postgres_bin_dir() -> Path | None:
    """The folder of initdb and pg_ctl: on the PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl", path=str(Path(initdb).resolve().parent)):
        return Path(initdb).resolve().parent
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb") + glob.glob("/usr/local/pgsql/bin/initdb")
    for candidate in sorted(
        candidates, key=lambda path: [int(part) for part in path.split("/") if part.isdigit()], reverse=True
    ):
        if os.access(Path(candidate).parent / "pg_ctl", os.X_OK):
            return Path(candidate).parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """Start a PostgreSQL server on 127.0.0.1 in a temporary folder; yield its URL; stop it."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail("the PostgreSQL driver (psycopg 3) is missing: it is the 'postgres' extra, pip install -e '.[postgres]'")
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) found; scripts/ci_services.sh installs them")
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the 'postgres' (or 'nobody') user
        for name in ("postgres", "nobody"):
            try:
                owner = pwd.getpwnam(name)
                break
            except KeyError:
                continue
        if owner is None:
            pytest.skip("running as root and no 'postgres' or 'nobody' user to run the PostgreSQL server as")
        run_as = (
            ["runuser", "-u", owner.pw_name, "--"] if shutil.which("runuser") else ["su", owner.pw_name, "-s", "/bin/sh", "-c"]
        )

    def run(*command: str) -> None:
        full = [*run_as, shlex.join(command)] if run_as[:1] == ["su"] else [*run_as, *command]
        result = subprocess.run(full, capture_output=True, text=True, timeout=120, check=False, cwd="/")
        assert result.returncode == 0, f"{shlex.join(command)}:\n{result.stdout}\n{result.stderr}"

    root = Path(tempfile.mkdtemp(prefix="sb3-qvpo-pg-"))
    data = root / "data"
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        server_options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=40"
        run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "server.log"),
            "-o",
            server_options,
            "-w",
            "-t",
            "60",
            "start",
        )
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_postgresql_study(postgres_url: str, tmp_path: Path) -> None:
    workers = two_workers(postgres_url, "shared", tmp_path)
    assert_both_workers_contributed(finished_trials(postgres_url, "shared"), workers)
