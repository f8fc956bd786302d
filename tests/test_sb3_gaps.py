"""
What SB3's own off-policy algorithms do and QVPO (QSM, DIPO) must do too: BatchNorm statistics in
the targets, ``action_noise``, ``load`` with the construction's ``policy_kwargs``, sample counts
that stay in sync, and training under ``-W error``.
"""

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from helpers import AsymmetricBoxEnv, baseline_kwargs, tiny_kwargs
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sb3_qvpo import DIPO, QSM, QVPO

DATA_DIR = Path(__file__).resolve().parent / "data"

ALGORITHMS = {"QVPO": QVPO, "QSM": QSM, "DIPO": DIPO}
DATA = Path(__file__).parent / "data"


def make(name: str, env: Any, **overrides: Any) -> Any:
    kwargs = tiny_kwargs(**overrides) if name == "QVPO" else baseline_kwargs(name, **overrides)
    if "policy_kwargs" in overrides:
        kwargs["policy_kwargs"] = {
            **(tiny_kwargs() if name == "QVPO" else baseline_kwargs(name))["policy_kwargs"],
            **overrides["policy_kwargs"],
        }
    return ALGORITHMS[name]("MlpPolicy", env, **kwargs)


class BatchNormExtractor(BaseFeaturesExtractor):
    """Linear + BatchNorm1d: its running mean and variance are buffers, not parameters."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 8):
        super().__init__(observation_space, features_dim)
        self.net = nn.Sequential(nn.Linear(int(np.prod(observation_space.shape)), features_dim), nn.BatchNorm1d(features_dim))

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.net(observations)


def running_stats(module: nn.Module) -> list[th.Tensor]:
    return [buffer for name, buffer in module.named_buffers() if "running_" in name]


@pytest.mark.parametrize("name", list(ALGORITHMS))
@pytest.mark.parametrize("tau", [0.0, 0.005])
def test_batch_norm_statistics_reach_the_targets(name: str, tau: float) -> None:
    model = make(name, AsymmetricBoxEnv(), tau=tau, policy_kwargs=dict(features_extractor_class=BatchNormExtractor))
    model.learn(80)
    pairs = [(model.critic, model.critic_target)]
    if model.actor_target is not None:
        pairs.append((model.actor, model.actor_target))
    for online, target in pairs:
        online_stats, target_stats = running_stats(online), running_stats(target)
        assert len(online_stats) == len(target_stats) == 2  # one BatchNorm: running mean and variance
        assert any(not th.allclose(stat, th.zeros_like(stat)) for stat in online_stats[::2])  # the means moved
        for stat, target_stat in zip(online_stats, target_stats, strict=True):
            assert th.equal(stat, target_stat)
    if tau == 0.0:  # the weights themselves did not move
        for online, target in pairs:
            online_weights = dict(online.named_parameters())
            assert any(not th.equal(online_weights[key], value) for key, value in target.named_parameters())


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_action_noise_is_added_to_collected_actions_and_saved(tmp_path: Path, name: str) -> None:
    noise = NormalActionNoise(mean=np.full(2, 0.6), sigma=np.full(2, 0.05))
    plain = make(name, AsymmetricBoxEnv(), seed=0)
    noisy = make(name, AsymmetricBoxEnv(), seed=0, action_noise=noise)
    assert noisy.action_noise is noise
    plain.learn(80)
    noisy.learn(80)
    shift = noisy.replay_buffer.actions[:80] - plain.replay_buffer.actions[:80]
    # Added in [-1, 1] and clipped there: a mean shift of at most 0.6, clearly above zero.
    assert 0.3 < shift.mean() <= 0.6 + 1e-6
    assert np.all(np.abs(noisy.replay_buffer.actions[:80]) <= 1.0)
    # predict does not use it, as in SAC.
    obs = np.zeros((3, 3), np.float32)
    np.testing.assert_array_equal(noisy.predict(obs, deterministic=True)[0], noisy.predict(obs, deterministic=True)[0])
    noisy.save(tmp_path / "model.zip")
    loaded = ALGORITHMS[name].load(tmp_path / "model.zip", env=AsymmetricBoxEnv())
    assert isinstance(loaded.action_noise, NormalActionNoise)
    np.testing.assert_array_equal(loaded.action_noise._mu, noise._mu)


def test_load_with_the_construction_policy_kwargs(tmp_path: Path) -> None:
    policy_kwargs = dict(net_arch=[16, 16], n_diffusion_steps=3)
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), **tiny_kwargs(policy_kwargs=dict(policy_kwargs)))
    assert model.policy_kwargs == policy_kwargs  # kept as given
    model.save(tmp_path / "model.zip")
    loaded = QVPO.load(tmp_path / "model.zip", env=AsymmetricBoxEnv(), policy_kwargs=dict(policy_kwargs))
    assert loaded.policy.actor.n_diffusion_steps == 3
    assert (loaded.n_behavior_samples, loaded.n_eval_samples) == (4, 8)
    with pytest.raises(ValueError, match="policy kwargs do not equal the stored"):
        QVPO.load(tmp_path / "model.zip", policy_kwargs=dict(net_arch=[32]))


def test_sample_counts_have_one_source_of_truth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), **tiny_kwargs(n_behavior_samples=4, n_eval_samples=8))
    model.n_behavior_samples = 3
    assert model.policy.n_behavior_samples == 3
    model.policy.n_eval_samples = 5
    assert model.n_eval_samples == 5
    with pytest.raises(ValueError, match="n_behavior_samples"):
        model.n_behavior_samples = 0

    seen: list[int] = []
    original = model.actor.sample

    def recording(features: th.Tensor, generator: Any = None, n_per_state: int = 1, **kwargs: Any) -> th.Tensor:
        seen.append(n_per_state)
        return original(features, generator, n_per_state, **kwargs)

    monkeypatch.setattr(model.actor, "sample", recording)
    model.predict(np.zeros(3, np.float32))
    model.predict(np.zeros(3, np.float32), deterministic=True)
    assert seen == [3, 5]

    model.save(tmp_path / "model.zip")
    loaded = QVPO.load(tmp_path / "model.zip")
    assert (loaded.n_behavior_samples, loaded.n_eval_samples) == (3, 5)
    assert (loaded.policy.n_behavior_samples, loaded.policy.n_eval_samples) == (3, 5)
    overridden = QVPO.load(tmp_path / "model.zip", n_eval_samples=16)
    assert overridden.n_eval_samples == overridden.policy.n_eval_samples == 16
    custom = QVPO.load(tmp_path / "model.zip", custom_objects={"n_behavior_samples": 2})
    assert custom.n_behavior_samples == custom.policy.n_behavior_samples == 2
    with pytest.raises(ValueError, match="n_eval_samples"):
        QVPO.load(tmp_path / "model.zip", n_eval_samples=0)


def test_counts_of_a_file_saved_before_they_became_properties() -> None:
    # tests/data/qvpo_v1_pendulum.zip kept the counts as attributes and in policy_kwargs (n_eval_samples 8).
    reference = json.loads((DATA / "qvpo_v1_pendulum.json").read_text())
    old = QVPO.load(DATA / "qvpo_v1_pendulum.zip")
    assert (old.n_behavior_samples, old.n_eval_samples) == (4, 8)
    assert "n_eval_samples" not in old.policy_kwargs
    actions, _ = old.predict(np.array(reference["observations"], dtype=np.float32), deterministic=True)
    np.testing.assert_array_equal(actions, np.array(reference["deterministic_actions"], dtype=np.float32))
    overridden = QVPO.load(DATA / "qvpo_v1_pendulum.zip", n_eval_samples=3)
    assert overridden.policy.n_eval_samples == 3


def test_training_under_warnings_as_errors() -> None:
    # 16 candidates x 32 states x 256 units: large enough for the compiled (fused) Mish.
    script = (
        "import torch as th; from sb3_qvpo import QVPO; th.set_num_threads(1); "
        "m = QVPO('MlpPolicy', 'Pendulum-v1', learning_starts=40, batch_size=32, n_action_samples=16, buffer_size=500, "
        "seed=0, policy_kwargs=dict(net_arch=[256])); m.learn(50); "
        "from sb3_qvpo.diffusion.fast_ops import fused_mish; print(m._n_updates, fused_mish.compiled is not None)"
    )
    result = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["10", "True"]


# --- the release's remaining differences, as options ---------------------------------------------


def test_release_normal_init_is_untruncated() -> None:
    from sb3_qvpo.diffusion import get_weight_init

    th.manual_seed(0)
    layer = nn.Linear(400, 500)
    get_weight_init("normal")(layer)
    std = 1 / (2 * np.sqrt(400))
    weights = layer.weight.detach()
    assert weights.std().item() == pytest.approx(std, rel=0.02)
    # An untruncated normal has 4.55% of its mass beyond 2 std; the truncated init has none.
    assert (weights.abs() > 2 * std).float().mean().item() == pytest.approx(0.0455, abs=0.005)
    assert th.all(layer.bias == 0)
    get_weight_init("truncated_normal")(layer)
    assert layer.weight.abs().max().item() <= 2 * std
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), **tiny_kwargs(policy_kwargs=dict(net_arch=[256, 256], weight_init="normal")))
    first = model.actor.noise_net.body[0].weight.detach()
    assert (first.abs() > 2 / (2 * np.sqrt(first.shape[1]))).any()


@pytest.mark.parametrize("independent", [False, True])
def test_independent_actor_batch(monkeypatch: pytest.MonkeyPatch, independent: bool) -> None:
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), **tiny_kwargs(independent_actor_batch=independent))
    model.learn(60)
    critic_batches: list[th.Tensor] = []
    actor_batches: list[th.Tensor] = []
    original_critic_step, original_actor_step = model._critic_step, model._actor_step

    def critic_step(replay_data: Any) -> Any:
        critic_batches.append(replay_data.observations.clone())
        return original_critic_step(replay_data)

    def actor_step(observations: th.Tensor, entropy_coef: float) -> Any:
        actor_batches.append(observations.clone())
        return original_actor_step(observations, entropy_coef)

    monkeypatch.setattr(model, "_critic_step", critic_step)
    monkeypatch.setattr(model, "_actor_step", actor_step)
    model.train(gradient_steps=3, batch_size=16)
    assert len(actor_batches) == len(critic_batches) == 3
    for critic_obs, actor_obs in zip(critic_batches, actor_batches, strict=True):
        assert actor_obs.shape == critic_obs.shape == (16, 3)
        assert th.equal(critic_obs, actor_obs) is not independent


def test_defaults_are_the_release_behaviour_and_old_files_keep_theirs(tmp_path: Path) -> None:
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), **tiny_kwargs())
    assert model.independent_actor_batch is True
    assert model.policy.weight_init == "normal"
    model.save(tmp_path / "new.zip")
    assert QVPO.load(tmp_path / "new.zip").independent_actor_batch is True
    # A file saved before the option existed trained with the critic's minibatch, and keeps doing so.
    old = QVPO.load(DATA_DIR / "qvpo_v1_pendulum.zip")
    assert old.independent_actor_batch is False
    assert QVPO.load(DATA_DIR / "qvpo_v1_pendulum.zip", independent_actor_batch=True).independent_actor_batch is True
    with open(DATA_DIR / "qvpo_v1_pendulum.zip", "rb") as file:
        assert QVPO.load(io.BytesIO(file.read())).independent_actor_batch is False
    # DIPO also defaults to what its code runs (tests/test_dipo.py).
    assert DIPO("MlpPolicy", AsymmetricBoxEnv(), learning_starts=10, buffer_size=100).policy.weight_init == "normal"
