"""
``--algo qsm``, ``--algo dipo``, ``--algo diffusion_ql`` and ``--algo cgpo`` in rl-zoo3: files, registration, samplers
and the command line, online and (Diffusion-QL) offline from a dataset.
"""

import argparse
import filecmp
from pathlib import Path

import numpy as np
import optuna
import pytest
from test_zoo import ALL_ENVS, PAPER_ENVS, REPO_ROOT, run_zoo

from sb3_qvpo import CGPO, DIPO, QSM, DiffusionQL
from sb3_qvpo.zoo import (
    ZOO_ALGORITHMS,
    ZooExperimentManager,
    convert_cgpo_params,
    convert_diffusion_ql_params,
    convert_dipo_params,
    convert_qsm_params,
    hyperparams_file,
    register,
    sample_cgpo_params,
    sample_diffusion_ql_params,
    sample_dipo_params,
    sample_qsm_params,
)
from sb3_qvpo.zoo.samplers import (
    CGPO_RAW_TO_KWARG,
    DIFFUSION_QL_RAW_TO_KWARG,
    DIPO_RAW_TO_KWARG,
    QSM_RAW_TO_KWARG,
    SamplerContext,
    sampler_context,
)

BASELINES = {
    "qsm": (QSM, sample_qsm_params, convert_qsm_params),
    "dipo": (DIPO, sample_dipo_params, convert_dipo_params),
    "diffusion_ql": (DiffusionQL, sample_diffusion_ql_params, convert_diffusion_ql_params),
    "cgpo": (CGPO, sample_cgpo_params, convert_cgpo_params),
}
RAW_TO_KWARGS = {
    "qsm": QSM_RAW_TO_KWARG,
    "dipo": DIPO_RAW_TO_KWARG,
    "diffusion_ql": DIFFUSION_QL_RAW_TO_KWARG,
    "cgpo": CGPO_RAW_TO_KWARG,
}


@pytest.mark.parametrize("algo", ["qvpo", "qsm", "dipo", "diffusion_ql", "cgpo"])
def test_packaged_hyperparams_files_are_identical_to_the_checkout_ones(algo: str) -> None:
    packaged = REPO_ROOT / "sb3_qvpo" / "zoo" / "hyperparams" / f"{algo}.yml"
    canonical = REPO_ROOT / "hyperparams" / f"{algo}.yml"
    assert filecmp.cmp(canonical, packaged, shallow=False), f"cp hyperparams/{algo}.yml sb3_qvpo/zoo/hyperparams/"


def test_register_adds_all_five() -> None:
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
    from rl_zoo3.utils import ALGOS

    register()
    for algo, (algorithm, sampler, converter) in ZOO_ALGORITHMS.items():
        assert ALGOS[algo] is algorithm
        assert HYPERPARAMS_SAMPLER[algo] is sampler and HYPERPARAMS_CONVERTER[algo] is converter
    assert {"qvpo", "qsm", "dipo", "diffusion_ql", "cgpo", "sac", "td3"} <= set(ALGOS)


@pytest.mark.parametrize(
    ("algo", "env_id"),
    [(algo, env_id) for algo in ("qsm", "dipo", "cgpo") for env_id in ALL_ENVS[:1] + ALL_ENVS[2:]]
    + [("diffusion_ql", env_id) for env_id in ("Pendulum-v1", "Hopper-v5", "Walker2d-v5", "HalfCheetah-v5")],
)
def test_default_hyperparams_build_a_model(algo: str, env_id: str, tmp_path: Path) -> None:
    manager = ZooExperimentManager(argparse.Namespace(), algo, env_id, str(tmp_path))
    assert manager.config == str(hyperparams_file(algo))
    raw, _ = manager.read_hyperparameters()
    hyperparams, *_ = manager._preprocess_hyperparams(raw)
    if env_id in PAPER_ENVS:
        # Diffusion-QL's are gradient steps: 2,000 epochs of 1,000 updates (main.py)
        assert manager.n_timesteps == (2_000_000 if algo == "diffusion_ql" else 1_000_000)
    algorithm = BASELINES[algo][0]
    model = algorithm(env=env_id, device="cpu", **{**hyperparams, "buffer_size": 1_000})
    if algo == "dipo" and env_id == "HalfCheetah-v5":
        assert (model.action_gradient_steps, model.actor_target_update_interval) == (40, 2)
    model.get_env().close()


@pytest.mark.parametrize("algo", list(BASELINES))
def test_sampler_samples_valid_models_and_converts_back(algo: str) -> None:
    algorithm, sampler, converter = BASELINES[algo]
    raw_to_kwarg = RAW_TO_KWARGS[algo]
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(2):
        trial = study.ask()
        hyperparams = sampler(trial, 1, 1, {"using_her_replay_buffer": False})
        assert set(trial.params) == set(raw_to_kwarg)
        assert converter(trial.params) == hyperparams
        model = algorithm("MlpPolicy", "Pendulum-v1", device="cpu", **{**hyperparams, "buffer_size": 1_000})
        assert model.policy.actor.n_diffusion_steps == hyperparams["policy_kwargs"]["n_diffusion_steps"]
        if algo == "qsm":
            assert model.policy.exploration_noise == hyperparams["policy_kwargs"]["exploration_noise"]
        if algo == "cgpo":
            assert 0 < model.n_guided_steps <= model.policy.actor.n_diffusion_steps
        study.tell(trial, 0.0)
    # Pinned keys are not sampled.
    trial = study.ask()
    with sampler_context(
        SamplerContext(pinned=frozenset({"gamma", "n_diffusion_steps"}), policy_kwargs={"n_diffusion_steps": 4})
    ):
        hyperparams = sampler(trial, 1, 1, {"using_her_replay_buffer": False})
    assert not {"one_minus_gamma", "n_diffusion_steps"} & set(trial.params)
    assert hyperparams["policy_kwargs"]["n_diffusion_steps"] == 4


@pytest.mark.parametrize(
    ("algo", "params"),
    [
        ("qsm", ["policy_kwargs:dict(net_arch=[16,16])"]),
        ("dipo", ["action_gradient_steps:2", "policy_kwargs:dict(net_arch=[16,16],n_diffusion_steps=3)"]),
        ("cgpo", ["n_guided_steps:2", "policy_kwargs:dict(net_arch=[16,16],n_diffusion_steps=3)"]),
    ],
)
def test_cli_train_then_enjoy(tmp_path: Path, algo: str, params: list[str]) -> None:
    run_zoo(
        "sb3_qvpo.train",
        *("--algo", algo, "--env", "Pendulum-v1", "-n", "300", "--seed", "3", "--device", "cpu", "--num-threads", "1"),
        *("--eval-freq", "150", "--eval-episodes", "1", "-f", "logs"),
        *("-params", "learning_starts:100", "batch_size:16", "buffer_size:1000", *params),
        cwd=tmp_path,
    )
    run_dir = tmp_path / "logs" / algo / "Pendulum-v1_1"
    algorithm = BASELINES[algo][0]
    model = algorithm.load(run_dir / "Pendulum-v1.zip", device="cpu")
    assert model.num_timesteps == 300 and model._n_updates == 200
    assert model.policy.actor.noise_net.body[0].out_features == 16
    enjoyed = run_zoo(
        "sb3_qvpo.enjoy",
        *("--algo", algo, "--env", "Pendulum-v1", "-f", "logs", "-n", "210", "--no-render", "--device", "cpu"),
        cwd=tmp_path,
    )
    assert f"Loading logs/{algo}/Pendulum-v1_1/Pendulum-v1.zip" in enjoyed.stdout
    assert "Mean reward:" in enjoyed.stdout  # one whole 200-step episode played


def test_offline_train_from_a_recorded_dataset_then_enjoy(tmp_path: Path) -> None:
    """``python -m sb3_qvpo.offline.train``: rl-zoo3's train with --dataset, -n counting gradient steps."""
    env = {"MINARI_DATASETS_PATH": str(tmp_path / "minari")}
    run_zoo(
        "sb3_qvpo.offline.collect",
        *("--env", "Pendulum-v1", "--dataset-id", "pendulum/random-v0", "--n-episodes", "2"),
        cwd=tmp_path,
        extra_env=env,
    )
    trained = run_zoo(
        "sb3_qvpo.offline.train",
        *("--algo", "diffusion_ql", "--env", "Pendulum-v1", "--dataset", "pendulum/random-v0", "-n", "60"),
        *("--eval-freq", "30", "--eval-episodes", "1", "--seed", "2", "-f", "logs", "--device", "cpu", "--num-threads", "1"),
        *("-params", "batch_size:16", "buffer_size:1000", "policy_kwargs:dict(net_arch=[16, 16])"),
        cwd=tmp_path,
        extra_env=env,
    )
    assert "Dataset pendulum/random-v0: 400 transitions" in trained.stdout
    run_dir = tmp_path / "logs" / "diffusion_ql" / "Pendulum-v1_1"
    model = DiffusionQL.load(run_dir / "Pendulum-v1.zip", device="cpu")
    assert model.num_timesteps == 60 and model._n_updates == 60 and model.eta == 1.0
    assert model.policy.actor.noise_net.body[0].out_features == 16
    evaluations = np.load(run_dir / "evaluations.npz")
    assert list(evaluations["timesteps"]) == [30, 60]
    enjoyed = run_zoo(
        "sb3_qvpo.enjoy",
        *("--algo", "diffusion_ql", "--env", "Pendulum-v1", "-f", "logs", "-n", "210", "--no-render", "--device", "cpu"),
        cwd=tmp_path,
    )
    assert "Mean reward:" in enjoyed.stdout


def test_offline_train_refuses_missing_dataset_and_optimize(tmp_path: Path) -> None:
    missing = run_zoo("sb3_qvpo.offline.train", "--algo", "diffusion_ql", "--env", "Pendulum-v1", cwd=tmp_path, check=False)
    assert missing.returncode != 0 and "needs --dataset" in missing.stderr
    optimize = run_zoo(
        "sb3_qvpo.offline.train",
        *("--algo", "diffusion_ql", "--env", "Pendulum-v1", "--dataset", "x/y-v0", "--optimize"),
        cwd=tmp_path,
        check=False,
    )
    assert optimize.returncode != 0 and "--optimize is not supported from a dataset" in optimize.stderr
