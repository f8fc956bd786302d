"""ONNX export: onnxruntime's actions equal predict's, in both modes, for every algorithm of the package."""

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from helpers import AsymmetricBoxEnv, GoalDictEnv, baseline_kwargs, tiny_kwargs
from stable_baselines3 import SAC
from stable_baselines3.common.envs import FakeImageEnv

from sb3_qvpo import CGPO, DIPO, QSM, QVPO, DiffusionQL
from sb3_qvpo.export import OnnxPolicy, acting_noise, draw_acting_noise, export_onnx, onnx_inputs

pytest.importorskip("onnxruntime")

ALGORITHMS = {"QVPO": QVPO, "QSM": QSM, "DIPO": DIPO, "DiffusionQL": DiffusionQL, "CGPO": CGPO}


def make(name: str, env: Any, policy: str = "MlpPolicy", **overrides: Any) -> Any:
    kwargs = tiny_kwargs(**overrides) if name == "QVPO" else baseline_kwargs(name, **overrides)
    return ALGORITHMS[name](policy, env, seed=0, **kwargs)


def observations(space: spaces.Space, batch_size: int, seed: int = 1) -> Any:
    space.seed(seed)
    samples = [space.sample() for _ in range(batch_size)]
    if isinstance(space, spaces.Dict):
        return {key: np.stack([sample[key] for sample in samples]) for key in space.spaces}
    return np.stack(samples)


def predict_matches_onnx(model: Any, path: Path, batch_size: int, deterministic: bool) -> float:
    """Largest |onnxruntime - predict| over a batch, the stochastic mode fed predict's own draws."""
    export_onnx(model, path, deterministic=deterministic, batch_size=batch_size)
    runner = OnnxPolicy(path)
    obs = observations(model.policy.observation_space, batch_size)
    if deterministic:
        noise = None
        expected = model.predict(obs, deterministic=True)[0]
    else:
        th.manual_seed(7)
        noise = draw_acting_noise(model.policy, batch_size)
        th.manual_seed(7)
        expected = model.predict(obs, deterministic=False)[0]
    actions = runner.predict(obs, noise)
    assert actions.shape == expected.shape == (batch_size, *model.action_space.shape)
    return float(np.abs(actions - expected).max())


@pytest.mark.parametrize("name", list(ALGORITHMS))
@pytest.mark.parametrize("deterministic", [True, False])
def test_onnx_equals_predict_on_asymmetric_bounds(tmp_path: Path, name: str, deterministic: bool) -> None:
    model = make(name, AsymmetricBoxEnv())
    model.learn(60)  # a few updates, so that the critic's scores are not those of the init
    for batch_size in (1, 3):
        assert predict_matches_onnx(model, tmp_path / f"{batch_size}.onnx", batch_size, deterministic) < 1e-5


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_onnx_equals_predict_on_dict_observations(tmp_path: Path, name: str) -> None:
    model = make(name, GoalDictEnv(), policy="MultiInputPolicy")
    assert predict_matches_onnx(model, tmp_path / "det.onnx", 2, deterministic=True) < 1e-5
    assert predict_matches_onnx(model, tmp_path / "stoch.onnx", 2, deterministic=False) < 1e-5
    assert onnx_inputs(tmp_path / "det.onnx")["inputs"] == {"observation": [2, 3], "desired_goal": [2, 2]}


def test_onnx_equals_predict_on_images_with_the_policy_preprocessing(tmp_path: Path) -> None:
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=False)
    model = make("QVPO", env, policy="CnnPolicy", buffer_size=100)
    assert model.policy.observation_space.shape == (1, 36, 36)  # channel first, as VecTransposeImage gives it
    export_onnx(model, tmp_path / "cnn.onnx", batch_size=2)
    obs = observations(model.policy.observation_space, 2)
    assert obs.dtype == np.uint8  # the graph divides by 255 itself, as the policy does
    np.testing.assert_allclose(
        OnnxPolicy(tmp_path / "cnn.onnx").predict(obs), model.predict(obs, deterministic=True)[0], atol=1e-5
    )


def test_noise_inputs_are_documented_by_shape() -> None:
    qsm = make("QSM", "Pendulum-v1")
    noise = acting_noise(qsm.policy, batch_size=3, deterministic=False)
    assert noise.shapes == {"chain_noise": (5, 3 * qsm.policy.n_behavior_samples, 1), "exploration_noise": (3, 1)}
    diffusion_ql = make("DiffusionQL", "Pendulum-v1")
    assert acting_noise(diffusion_ql.policy, 2, deterministic=True).shapes == {
        "chain_noise": (5, 2 * 50, 1),
        "selection_noise": (2, 50),
    }
    drawn = draw_acting_noise(diffusion_ql.policy, 2)
    assert {key: value.shape for key, value in drawn.items()} == {"chain_noise": (5, 100, 1), "selection_noise": (2, 50)}
    assert (drawn["selection_noise"] > 0).all()  # standard exponentials


def test_export_of_a_loaded_model_equals_the_export_before_saving(tmp_path: Path) -> None:
    model = make("CGPO", AsymmetricBoxEnv())
    model.learn(60)
    export_onnx(model, tmp_path / "before.onnx", batch_size=4)
    model.save(tmp_path / "model.zip")
    export_onnx(CGPO.load(tmp_path / "model.zip"), tmp_path / "after.onnx", batch_size=4)
    obs = observations(model.observation_space, 4)
    np.testing.assert_array_equal(
        OnnxPolicy(tmp_path / "before.onnx").predict(obs), OnnxPolicy(tmp_path / "after.onnx").predict(obs)
    )


def test_runner_names_wrong_inputs(tmp_path: Path) -> None:
    model = make("QVPO", "Pendulum-v1")
    export_onnx(model, tmp_path / "stoch.onnx", deterministic=False, batch_size=2)
    runner = OnnxPolicy(tmp_path / "stoch.onnx")
    assert runner.description["noise_inputs"] == ["chain_noise"] and runner.description["algorithm"] == "QVPO"
    with pytest.raises(ValueError, match=r"Missing inputs \['chain_noise'\]"):
        runner.predict(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"'observation' has shape \[1, 3\].*\[2, 3\]"):
        runner.predict(np.zeros((1, 3), dtype=np.float32), draw_acting_noise(model.policy, 2))


def test_export_refuses_what_it_does_not_cover(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TypeError, match="SAC"):
        export_onnx(SAC("MlpPolicy", "Pendulum-v1"), tmp_path / "sac.onnx")
    model = make("QVPO", "Pendulum-v1")
    with pytest.raises(ValueError, match="batch_size"):
        export_onnx(model, tmp_path / "zero.onnx", batch_size=0)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"sb3-qvpo\[export\]"):
        export_onnx(model, tmp_path / "missing.onnx")
