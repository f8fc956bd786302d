"""DIPO's action gradient against a quadratic Q, the write-back into the diffusion memory, its targets and defaults."""

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from helpers import AsymmetricBoxEnv, baseline_kwargs
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import set_random_seed
from test_qsm import QuadraticQ
from torch import nn

from sb3_qvpo import DIPO
from sb3_qvpo.common.critic import min_q_values
from sb3_qvpo.diffusion import sample_actions
from sb3_qvpo.dipo.dipo import improve_actions


def tiny_model(**overrides: Any) -> DIPO:
    model = DIPO("MlpPolicy", AsymmetricBoxEnv(), seed=0, **baseline_kwargs("DIPO", **overrides))
    model.learn(60)
    return model


def quadratic_critic(model: DIPO, centers: list[list[float]]) -> None:
    model.critic.q_networks = [QuadraticQ(center) for center in centers]  # type: ignore[assignment]


def test_action_ascent_moves_actions_to_the_argmax_of_a_quadratic_q() -> None:
    model = tiny_model()
    center = [0.5, -0.25]
    quadratic_critic(model, [center, center])
    actions = th.rand(64, 2) * 2 - 1
    features = th.zeros(64, 3)
    distance = (actions - th.tensor(center)).norm(dim=1)
    few = improve_actions(model.critic, features, actions, 0.03, 5, max_grad_norm=0.0)
    many = improve_actions(model.critic, features, actions, 0.03, 200, max_grad_norm=0.0)
    distance_few = (few - th.tensor(center)).norm(dim=1)
    distance_many = (many - th.tensor(center)).norm(dim=1)
    # Adam moves each coordinate by about lr per step towards the centre.
    assert th.all(distance_few < distance)
    assert th.all(distance_few >= distance - 5 * 0.03 * np.sqrt(2) - 1e-6)
    assert distance_many.max().item() < 0.05
    # A centre outside [-1, 1]: the actions end on the box edge, never beyond.
    quadratic_critic(model, [[2.0, -3.0], [2.0, -3.0]])
    clamped = improve_actions(model.critic, features, actions, 0.1, 100, max_grad_norm=0.0)
    th.testing.assert_close(clamped, th.tensor([[1.0, -1.0]]).expand(64, 2))


def test_action_ascent_leaves_the_critic_gradients_alone() -> None:
    model = tiny_model()
    before = [None if p.grad is None else p.grad.clone() for p in model.critic.parameters()]
    improved = improve_actions(model.critic, th.zeros(16, 3), th.zeros(16, 2), 0.03, 5, max_grad_norm=0.2)
    assert not th.equal(improved, th.zeros(16, 2))
    for grad, p in zip(before, model.critic.parameters(), strict=True):
        assert (grad is None and p.grad is None) or th.equal(grad, p.grad)


def test_action_ascent_follows_the_min_of_the_critics_and_the_batch_norm_clip() -> None:
    model = tiny_model()
    # min(Q1, Q2) with Q1 centred at +0.8 and Q2 at -0.8 (same scale): between them the min is the
    # farther one, whose gradient points towards its own centre; from 0.3 the ascent goes to 0.
    quadratic_critic(model, [[0.8, 0.0], [-0.8, 0.0]])
    start = th.tensor([[0.3, 0.0]])
    improved = improve_actions(model.critic, th.zeros(1, 3), start, 0.01, 300, max_grad_norm=0.0)
    assert abs(improved[0, 0].item()) < 0.03
    # A gradient clipped far below Adam's eps (1e-5) barely moves the actions.
    quadratic_critic(model, [[0.5, 0.5], [0.5, 0.5]])
    actions = th.zeros(32, 2)
    clipped = improve_actions(model.critic, th.zeros(32, 3), actions, 0.03, 5, max_grad_norm=1e-9)
    free = improve_actions(model.critic, th.zeros(32, 3), actions, 0.03, 5, max_grad_norm=0.0)
    assert clipped.abs().max().item() < 1e-3 * 0.03
    assert free.min().item() > 0.1


def record_memory_samples(monkeypatch: pytest.MonkeyPatch, model: DIPO) -> list[Any]:
    """The (observations, actions, indices) of every sample_memory call from now on."""
    buffer = model.diffusion_memory
    sampled: list[Any] = []
    original = buffer.sample_memory

    def recording(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        sampled.append(result)
        return result

    monkeypatch.setattr(buffer, "sample_memory", recording)
    return sampled


def test_default_memory_is_the_replay_actions_and_never_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    # DIPO's official DiffusionMemory.replace writes into a copy: every update starts from the stored actions.
    model = tiny_model()
    buffer = model.diffusion_memory
    assert not model.accumulate_improved_actions and not buffer.accumulates
    assert buffer.memory_actions is buffer.actions  # no second copy
    actions_before = buffer.actions.copy()
    sampled = record_memory_samples(monkeypatch, model)
    checked: list[bool] = []
    original_errors = model.actor.denoising_errors

    def checking_errors(actions: th.Tensor, *args: Any, **kwargs: Any) -> th.Tensor:
        # Called right after the ascent, with the critic it used: the fitted actions are the ascended copies.
        observations, stored, (positions, envs) = sampled[-1]
        np.testing.assert_array_equal(stored.numpy(), actions_before[positions, envs])
        with th.no_grad():
            features = model.critic.extract_features(observations, model.critic.features_extractor)
        ratio, steps = model.action_grad_norm_ratio, model.action_gradient_steps
        expected = improve_actions(model.critic, features, stored, model.action_learning_rate, steps, ratio * 2)
        th.testing.assert_close(actions, expected, rtol=0, atol=0)
        checked.append(not th.equal(expected, stored))
        return original_errors(actions, *args, **kwargs)

    monkeypatch.setattr(model.actor, "denoising_errors", checking_errors)
    model.train(gradient_steps=3, batch_size=32)
    assert checked == [True, True, True]
    np.testing.assert_array_equal(buffer.actions, actions_before)
    with pytest.raises(RuntimeError, match="set_accumulation"):
        buffer.write_memory(sampled[0][2], np.zeros((32, 2), dtype=np.float32))


def test_improved_actions_are_written_back_where_they_were_sampled(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model(accumulate_improved_actions=True)
    buffer = model.diffusion_memory
    assert buffer.accumulates and buffer.memory_actions is not buffer.actions
    actions_before = buffer.actions.copy()
    memory_before = buffer.memory_actions.copy()
    sampled = record_memory_samples(monkeypatch, model)
    model.train(gradient_steps=1, batch_size=32)
    ((_, stored, (positions, envs)),) = sampled
    np.testing.assert_array_equal(buffer.actions, actions_before)  # the critic's data stay as collected
    changed = np.flatnonzero(np.any(buffer.memory_actions[:, 0] != memory_before[:, 0], axis=1))
    assert set(changed) == set(positions.tolist())
    assert np.all(envs == 0)
    assert not np.allclose(buffer.memory_actions[positions, envs], stored.numpy())


def test_improvement_accumulates_in_the_memory() -> None:
    # With the critic frozen (lr 0), every update raises min-Q of the memory's actions further.
    model = tiny_model(learning_rate=0.0, action_gradient_steps=5, accumulate_improved_actions=True)
    buffer = model.diffusion_memory
    rows = slice(0, buffer.pos)

    def memory_q() -> float:
        observations = th.as_tensor(buffer.observations[rows, 0])
        with th.no_grad():
            return min_q_values(model.critic, observations, th.as_tensor(buffer.memory_actions[rows, 0])).mean().item()

    values = [memory_q()]
    for _ in range(3):
        model.train(gradient_steps=20, batch_size=32)
        values.append(memory_q())
    assert values == sorted(values) and values[-1] > values[0]


def test_td_target_uses_one_target_actor_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    observations = th.rand(8, 3) * 2 - 1
    constant = th.full((8, 2), -0.4)
    assert model.actor_target is not None
    monkeypatch.setattr(model.actor_target, "sample", lambda features, *args, **kwargs: constant.clone())
    monkeypatch.setattr(model.actor, "sample", lambda features, *args, **kwargs: th.zeros(8, 2))
    features = model.critic_target.extract_features(observations, model.critic_target.features_extractor)
    th.testing.assert_close(model._next_actions_q(observations), min_q_values(model.critic_target, features, constant))


def test_actor_target_update_interval() -> None:
    model = tiny_model(actor_target_update_interval=2)
    assert model.actor_target is not None
    changed = []
    for _ in range(4):
        before = [p.clone() for p in model.actor_target.parameters()]
        model.train(gradient_steps=1, batch_size=16)
        changed.append(any(not th.equal(a, b) for a, b in zip(before, model.actor_target.parameters(), strict=True)))
    # 10 updates were done by learn(60): the 11th, 13th, ... (indices 10, 12) update the target.
    assert changed == [True, False, True, False]


def test_deterministic_predict_is_the_noise_free_chain() -> None:
    model = tiny_model()
    obs = np.random.default_rng(0).uniform(-1, 1, (5, 3)).astype(np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    generator = th.Generator().manual_seed(model.policy.eval_seed)
    with th.no_grad():
        expected = sample_actions(model.actor.noise_net, model.actor.schedule, th.as_tensor(obs), generator, noise_scale=0.0)
    np.testing.assert_allclose(model.policy.unscale_action(expected.numpy()), actions, rtol=1e-5, atol=1e-5)


def test_official_defaults() -> None:
    model = DIPO("MlpPolicy", "Pendulum-v1")
    policy = model.policy
    assert (model.action_learning_rate, model.action_gradient_steps, model.action_grad_norm_ratio) == (0.03, 20, 0.1)
    assert (model.max_grad_norm, model.actor_target_update_interval, model.learning_starts) == (2.0, 1, 10_000)
    assert (policy.n_behavior_samples, policy.n_eval_samples, policy.eval_noise_scale) == (1, 1, 0.0)
    actor = policy.actor
    assert (actor.n_diffusion_steps, actor.beta_schedule, actor.reverse_process) == (100, "cosine", "x0_clipped")
    assert [layer.out_features for layer in actor.noise_net.body if isinstance(layer, nn.Linear)] == [256, 256, 256, 1]
    assert actor.optimizer.defaults["eps"] == 1e-5
    assert policy.actor_target is not None


def test_memory_sampling_covers_only_stored_transitions() -> None:
    model = DIPO("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=2, seed=0), **baseline_kwargs("DIPO", learning_starts=1000))
    with pytest.raises(RuntimeError, match="empty"):
        model.diffusion_memory.sample_memory(4)
    model.learn(40)  # 20 positions x 2 envs, no update yet
    _, _, (positions, envs) = model.diffusion_memory.sample_memory(2000)
    assert positions.max() == 19 and positions.min() == 0 and set(envs.tolist()) == {0, 1}


DATA = Path(__file__).resolve().parent / "data"


def test_a_file_saved_before_the_option_keeps_accumulating_as_it_did() -> None:
    # tests/data/dipo_v1_pendulum.*: saved by the write-back version; the reference continuation ran on that code.
    reference = json.loads((DATA / "dipo_v1_pendulum.json").read_text())
    model = DIPO.load(DATA / "dipo_v1_pendulum.zip", env=gym.make("Pendulum-v1"))
    assert model.accumulate_improved_actions is True
    obs = np.asarray(reference["observations"], dtype=np.float32)
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], reference["deterministic_actions"], rtol=1e-6)
    model.load_replay_buffer(DATA / "dipo_v1_pendulum_buffer.pkl")
    buffer = model.diffusion_memory
    assert buffer.accumulates and np.any(buffer.memory_actions[: buffer.pos] != buffer.actions[: buffer.pos])
    set_random_seed(1)
    model.set_random_seed(1)
    model.learn(50, reset_num_timesteps=False)
    continued = reference["continued"]
    # To 1e-5, not bitwise: the reference was made in an earlier session, and float32 results differ
    # in their last digits between machines and library builds (a later one gave -32.365642 for the
    # reference's -32.365666). Without write-back the memory would sum to the actions' 3.71: the
    # check still tells the two behaviours apart by far.
    assert np.float64(buffer.memory_actions[: buffer.pos]).sum() == pytest.approx(continued["memory_sum"], rel=1e-5)
    assert np.float64(buffer.actions[: buffer.pos]).sum() == pytest.approx(continued["actions_sum"], rel=1e-5)
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], continued["deterministic_actions"], rtol=1e-5)
    # Asked for the official behaviour, the same file drops the copy and reads the buffer's actions.
    official = DIPO.load(DATA / "dipo_v1_pendulum.zip", accumulate_improved_actions=False)
    official.load_replay_buffer(DATA / "dipo_v1_pendulum_buffer.pkl")
    assert official.diffusion_memory.memory_actions is official.diffusion_memory.actions


@pytest.mark.parametrize("accumulate", [False, True])
def test_save_load_keeps_the_mode(tmp_path: Path, accumulate: bool) -> None:
    model = tiny_model(accumulate_improved_actions=accumulate)
    model.save(tmp_path / "model.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    loaded = DIPO.load(tmp_path / "model.zip")
    assert loaded.accumulate_improved_actions is accumulate
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    buffer = loaded.diffusion_memory
    assert buffer.accumulates is accumulate and (buffer.memory_actions is buffer.actions) is not accumulate
    np.testing.assert_array_equal(buffer.memory_actions, model.diffusion_memory.memory_actions)
    # A buffer saved in the other mode is put in this model's: a copy of the actions, or the actions.
    other = DIPO.load(tmp_path / "model.zip", accumulate_improved_actions=not accumulate)
    other.load_replay_buffer(tmp_path / "buffer.pkl")
    assert other.diffusion_memory.accumulates is not accumulate
    np.testing.assert_array_equal(other.diffusion_memory.memory_actions, buffer.actions)


def test_load_replay_buffer_after_the_buffer_was_deleted(tmp_path: Path) -> None:
    # SB3's test_her.py::test_save_load_replay_buffer deletes the buffer before loading one.
    model = tiny_model()
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    size = model.replay_buffer.size()  # type: ignore[union-attr]
    del model.replay_buffer
    model.load_replay_buffer(tmp_path / "buffer.pkl")
    assert model.replay_buffer is not None and model.replay_buffer.size() == size
    model.learn(10, reset_num_timesteps=False)
    # A buffer of another algorithm is still refused, and the model is left without one, as before the call.
    from sb3_qvpo import QVPO

    qvpo = QVPO("MlpPolicy", AsymmetricBoxEnv(), buffer_size=100, learning_starts=10, policy_kwargs=dict(net_arch=[8]))
    qvpo.learn(20)
    qvpo.save_replay_buffer(tmp_path / "qvpo.pkl")
    del model.replay_buffer
    with pytest.raises(TypeError, match="still has no replay buffer"):
        model.load_replay_buffer(tmp_path / "qvpo.pkl")
    assert model.replay_buffer is None


def test_accumulate_option_is_checked_and_weight_init_defaults_to_what_runs() -> None:
    with pytest.raises(ValueError, match="accumulate_improved_actions"):
        DIPO("MlpPolicy", AsymmetricBoxEnv(), accumulate_improved_actions=1)
    model = DIPO("MlpPolicy", AsymmetricBoxEnv(), learning_starts=10, buffer_size=100)
    assert model.policy.weight_init == "normal"
    layer = model.actor.noise_net.body[0]
    std = 1 / (2 * np.sqrt(layer.weight.shape[1]))
    assert (layer.weight.abs() > 2 * std).any()  # untruncated
    truncated = DIPO("MlpPolicy", AsymmetricBoxEnv(), buffer_size=100, policy_kwargs=dict(weight_init="truncated_normal"))
    first = truncated.actor.noise_net.body[0].weight
    assert first.abs().max().item() <= 2 / (2 * np.sqrt(first.shape[1]))
