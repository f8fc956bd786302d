"""
DiffusionQL: its update rule against closed forms on tiny cases, the official action selection,
the EMA actor's schedule, offline training with SB3's callbacks, and learning from a dataset.
"""

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch as th
from helpers import AsymmetricBoxEnv, baseline_kwargs
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from test_resume import assert_same_buffer, assert_same_model, make_env, resume_everything, save_everything, scramble_rngs

from sb3_qvpo import DiffusionQL
from sb3_qvpo.common.critic import q_values_per_network
from sb3_qvpo.common.policies import choose_candidates
from sb3_qvpo.diffusion_ql.diffusion_ql import normalised_q_loss
from sb3_qvpo.envs import MultiPeakBanditEnv
from sb3_qvpo.offline import TransitionSet, collect_random, load_d4rl_hdf5, load_minari


def make(env: Any = None, **overrides: Any) -> DiffusionQL:
    return DiffusionQL("MlpPolicy", AsymmetricBoxEnv() if env is None else env, **baseline_kwargs("DiffusionQL", **overrides))


def fill_with_uniform_actions(model: DiffusionQL, n_transitions: int, seed: int = 0) -> float:
    """A dataset of uniformly random actions in the model's replay buffer; returns its mean reward."""
    env = model.env.envs[0].unwrapped  # type: ignore[union-attr]
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    rewards = []
    obs, _ = env.reset(seed=seed)
    for _ in range(n_transitions):
        action = rng.uniform(low, high).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        scaled = model.policy.scale_action(action)
        model.replay_buffer.add(obs[None], next_obs[None], scaled[None], np.array([reward]), np.array([terminated]), [{}])
        rewards.append(reward)
        obs = env.reset()[0] if terminated or truncated else next_obs
    return float(np.mean(rewards))


def test_normalised_q_loss_closed_form() -> None:
    q_values = th.tensor([[2.0, -4.0], [4.0, 2.0]], requires_grad=True)
    # -mean(Q1) / mean|Q2| = -(3) / (3) = -1; with the roles swapped: -mean(Q2) / mean|Q1| = -(-1) / 3.
    loss = normalised_q_loss(q_values, numerator=0)
    assert loss.item() == pytest.approx(-1.0)
    assert normalised_q_loss(q_values, numerator=1).item() == pytest.approx(1.0 / 3.0)
    loss.backward()
    # The denominator is detached: only the numerator's column gets a gradient, -1 / (batch * 3).
    assert q_values.grad is not None
    np.testing.assert_allclose(q_values.grad.numpy(), [[-1.0 / 6.0, 0.0], [-1.0 / 6.0, 0.0]])


def test_choose_candidates_best_and_softmax() -> None:
    q_values = th.tensor([[0.0, float(np.log(3.0))], [5.0, -5.0]])
    np.testing.assert_array_equal(choose_candidates(q_values, "best").numpy(), [1, 0])
    generator = th.Generator().manual_seed(0)
    draws = th.stack([choose_candidates(q_values, "softmax", generator) for _ in range(4000)])
    # softmax([0, log 3]) = [1/4, 3/4]; the second row's probabilities are [1 - 4.5e-5, 4.5e-5].
    assert draws[:, 0].float().mean().item() == pytest.approx(0.75, abs=0.025)
    assert draws[:, 1].float().mean().item() < 0.002
    with pytest.raises(ValueError, match="action_selection"):
        choose_candidates(q_values, "greedy")


def test_actor_loss_is_denoising_plus_eta_times_normalised_q() -> None:
    model = make(eta=2.5)
    fill_with_uniform_actions(model, 64)
    data = model.replay_buffer.sample(16)
    # By hand, before the step, with the draws _actor_step will take: the denoising error, a0 through
    # the chain, then the coin that picks the numerator's critic.
    th.manual_seed(3)
    with th.no_grad():
        features = model.actor.extract_features(data.observations, model.actor.features_extractor)
        bc_loss = model.actor.denoising_errors(data.actions, features).mean()
        q_values = q_values_per_network(model.critic, features, model.actor.sample(features))
        q_loss = normalised_q_loss(q_values, int(th.rand(()).item() > 0.5))
    th.manual_seed(3)
    stats = model._actor_step(data)
    assert stats["bc_loss"].item() == pytest.approx(bc_loss.item(), rel=1e-5)
    assert stats["q_loss"].item() == pytest.approx(q_loss.item(), rel=1e-5)
    assert stats["actor_loss"].item() == pytest.approx(bc_loss.item() + 2.5 * q_loss.item(), rel=1e-5)


def test_eta_zero_is_behaviour_cloning_whatever_the_critic() -> None:
    """With eta = 0 the actor step is the denoising loss alone: the critic does not change it."""
    actors = []
    for critic_shift in (0.0, 5.0):
        model = make(eta=0.0, seed=0)
        fill_with_uniform_actions(model, 64)
        with th.no_grad():
            for parameter in model.critic.parameters():
                parameter.add_(critic_shift)
        data = model.replay_buffer.sample(16)
        th.manual_seed(3)
        features = model.actor.extract_features(data.observations, model.actor.features_extractor)
        expected_bc = model.actor.denoising_errors(data.actions, features).mean().item()
        th.manual_seed(3)
        stats = model._actor_step(data)
        assert stats["q_loss"].item() == 0.0
        assert stats["actor_loss"].item() == pytest.approx(expected_bc, rel=1e-6)
        actors.append([parameter.detach().clone() for parameter in model.actor.parameters()])
    for first, second in zip(*actors, strict=True):
        th.testing.assert_close(first, second, rtol=0, atol=0)


def test_actor_gradient_reaches_the_whole_chain_and_matches_the_loss() -> None:
    """The Q term is differentiated through every reverse step: with eta > 0 the first layer's gradient changes."""
    model = make()
    fill_with_uniform_actions(model, 64)
    data = model.replay_buffer.sample(16)
    gradients = {}
    for eta in (0.0, 1.0):
        th.manual_seed(0)
        features = model.actor.extract_features(data.observations, model.actor.features_extractor)
        bc_loss = model.actor.denoising_errors(data.actions, features).mean()
        new_actions = model.actor.sample(features)
        q_values = q_values_per_network(model.critic, features, new_actions)
        loss = bc_loss + eta * normalised_q_loss(q_values, 0)
        model.actor.optimizer.zero_grad()
        loss.backward()
        gradients[eta] = model.actor.noise_net.body[0].weight.grad.clone()  # type: ignore[union-attr]
    assert not th.allclose(gradients[0.0], gradients[1.0])


@pytest.mark.parametrize("max_q_backup", [False, True])
def test_td_target_uses_the_ema_actor_and_target_critics(max_q_backup: bool) -> None:
    model = make(max_q_backup=max_q_backup, n_backup_samples=4)
    fill_with_uniform_actions(model, 64)
    next_obs = model.replay_buffer.sample(8).next_observations
    th.manual_seed(1)
    next_q = model._next_actions_q(next_obs)
    th.manual_seed(1)
    n = 4 if max_q_backup else 1
    actions = model.actor_target.sample(next_obs, n_per_state=n)  # type: ignore[union-attr]
    q_values = q_values_per_network(model.critic_target, next_obs.repeat_interleave(n, dim=0), actions)
    expected = q_values.view(8, n, 2).max(dim=1).values.min(dim=1).values  # max over samples, then min over critics
    th.testing.assert_close(next_q, expected)


def test_ema_actor_starts_late_and_follows_every_interval() -> None:
    model = make(ema_start_update=4, ema_update_interval=3, ema_decay=0.5, learning_starts=0)
    model.set_logger(configure(None, [""]))
    fill_with_uniform_actions(model, 64)
    initial = [p.detach().clone() for p in model.actor_target.parameters()]  # type: ignore[union-attr]
    for update in range(8):
        before = [p.detach().clone() for p in model.actor_target.parameters()]  # type: ignore[union-attr]
        model.train(gradient_steps=1, batch_size=16)
        after = list(model.actor_target.parameters())  # type: ignore[union-attr]
        expected = [0.5 * b + 0.5 * a.detach() for b, a in zip(before, model.actor.parameters(), strict=True)]
        moved = update >= 4 and update % 3 == 0  # updates 6 (and 9, ...): after the start, on the interval
        for got, old, want in zip(after, before, expected, strict=True):
            th.testing.assert_close(got.detach(), want if moved else old)
    assert model._dql_updates == 8
    assert not all(th.equal(a, b) for a, b in zip(initial, model.actor_target.parameters(), strict=True))  # type: ignore[union-attr]


def test_predict_draws_from_softmax_of_the_target_critic(tmp_path: Path) -> None:
    model = make(policy_kwargs=dict(net_arch=[32, 32], n_diffusion_steps=5, n_eval_samples=7))
    obs = np.stack([AsymmetricBoxEnv().observation_space.sample() for _ in range(3)])
    action, _ = model.predict(obs, deterministic=True)
    # By hand: the same generator draws the 7 candidates, then the softmax choice, scored by the target critic.
    generator = th.Generator().manual_seed(model.policy.eval_seed)
    obs_tensor = th.as_tensor(obs)
    with th.no_grad():
        candidates = model.actor.sample(obs_tensor, generator, n_per_state=7)
        q_values = q_values_per_network(model.critic_target, obs_tensor.repeat_interleave(7, dim=0), candidates)
        chosen = choose_candidates(q_values.min(dim=1).values.view(3, 7), "softmax", generator)
    expected = model.policy.unscale_action(candidates.view(3, 7, -1)[th.arange(3), chosen].numpy())
    np.testing.assert_allclose(action, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(action, model.predict(obs, deterministic=True)[0])


class CountingCallback(BaseCallback):
    def _on_step(self) -> bool:
        return True


def test_learn_offline_with_eval_and_checkpoint_callbacks(tmp_path: Path) -> None:
    model = make(learning_starts=0)
    fill_with_uniform_actions(model, 200)
    stored = model.replay_buffer.size()
    evaluation = EvalCallback(AsymmetricBoxEnv(), eval_freq=10, n_eval_episodes=2, log_path=str(tmp_path / "eval"))
    checkpoints = CheckpointCallback(save_freq=15, save_path=str(tmp_path / "checkpoints"))
    counter = CountingCallback()
    model.learn_offline(30, callback=[evaluation, checkpoints, counter], log_interval=10, progress_bar=True)
    assert model.num_timesteps == 30 and model._n_updates == 30 and model._dql_updates == 30
    assert counter.n_calls == 30
    assert model.replay_buffer.size() == stored  # the environment was never stepped
    assert evaluation.evaluations_timesteps == [10, 20, 30]
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == [
        "rl_model_15_steps.zip",
        "rl_model_30_steps.zip",
    ]
    loaded = DiffusionQL.load(tmp_path / "checkpoints" / "rl_model_30_steps.zip", env=AsymmetricBoxEnv())
    assert loaded._dql_updates == 30
    obs = np.zeros((2, 3), np.float32)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    # Then online fine-tuning continues with the same model and buffer.
    model.learn(20)
    assert model.replay_buffer.size() == stored + 20 and model._n_updates == 50


def test_offline_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    """learn_offline(20) + save/load + learn_offline(20, reset_num_timesteps=False) == learn_offline(40), bitwise."""
    kwargs = baseline_kwargs("DiffusionQL", ema_start_update=5, learning_starts=0)
    reference = DiffusionQL("MlpPolicy", make_env(), seed=0, **kwargs)
    fill_with_uniform_actions(reference, 300)
    reference.learn_offline(40)

    first = DiffusionQL("MlpPolicy", make_env(), seed=0, **kwargs)
    fill_with_uniform_actions(first, 300)
    first.learn_offline(20)
    extra = save_everything(first, tmp_path)  # type: ignore[arg-type]
    del first
    scramble_rngs()
    resumed = resume_everything(tmp_path, extra, DiffusionQL)  # type: ignore[arg-type]
    resumed.learn_offline(20, reset_num_timesteps=False)
    assert resumed._dql_updates == reference._dql_updates == 40
    assert_same_model(resumed, reference)  # type: ignore[arg-type]
    assert_same_buffer(resumed, reference)  # type: ignore[arg-type]


def test_learn_offline_stops_when_a_callback_says_so() -> None:
    class StopAt(BaseCallback):
        def _on_step(self) -> bool:
            return self.n_calls < 7

    model = make(learning_starts=0)
    fill_with_uniform_actions(model, 64)
    model.learn_offline(50, callback=StopAt())
    assert model._n_updates == 7


def test_learn_offline_needs_a_dataset_and_a_positive_count() -> None:
    model = make()
    with pytest.raises(ValueError, match="replay buffer, which is empty"):
        model.learn_offline(10)
    fill_with_uniform_actions(model, 10)
    with pytest.raises(ValueError, match="total_gradient_steps"):
        model.learn_offline(0)


def test_load_dataset_from_minari_and_d4rl_then_offline_then_online(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    collect_random("Pendulum-v1", "pendulum/random-v0", n_episodes=2, seed=0)
    model = DiffusionQL("MlpPolicy", "Pendulum-v1", **baseline_kwargs("DiffusionQL", buffer_size=1000))
    buffer = model.load_dataset("pendulum/random-v0")
    assert buffer is model.replay_buffer and buffer.size() == 400 and buffer.buffer_size == 1000
    transitions = load_minari("pendulum/random-v0")
    np.testing.assert_array_equal(buffer.observations[:400, 0], transitions.observations)
    np.testing.assert_allclose(buffer.actions[:400, 0], transitions.actions / 2.0, atol=1e-6)  # Pendulum's bound is 2
    model.learn_offline(5)
    model.learn(60)
    assert buffer.size() == 460 and model._n_updates == 5 + 10  # 50 random steps first, then one update per step

    # The same transitions written as a D4RL file (with next_observations): by default d4rl's
    # qlearning_dataset rows, i.e. without the two episodes' last (timeout) rows; with
    # keep_timeout_rows=True the same buffer as the Minari dataset's.
    path = tmp_path / "pendulum.hdf5"
    with h5py.File(path, "w") as file:
        for key in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations"):
            file[key] = getattr(transitions, key)
    assert np.flatnonzero(transitions.timeouts).tolist() == [199, 399]
    other = DiffusionQL("MlpPolicy", "Pendulum-v1", **baseline_kwargs("DiffusionQL"))
    other.load_dataset(path, buffer_size=0)
    assert other.replay_buffer.buffer_size == 398 and other.replay_buffer.full
    kept = np.r_[0:199, 200:399]
    np.testing.assert_array_equal(other.replay_buffer.actions[:, 0], buffer.actions[kept, 0])
    np.testing.assert_array_equal(other.replay_buffer.dones[:, 0], buffer.dones[kept, 0])
    other.load_dataset(load_d4rl_hdf5(path, keep_timeout_rows=True), buffer_size=0)
    assert other.replay_buffer.buffer_size == 400 and other.replay_buffer.full
    np.testing.assert_array_equal(other.replay_buffer.actions[:, 0], buffer.actions[:400, 0])
    np.testing.assert_array_equal(other.replay_buffer.dones[:, 0], buffer.dones[:400, 0])


def test_load_dataset_refuses_a_dataset_of_another_env_and_keeps_its_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    collect_random("Pendulum-v1", "pendulum/random-v0", n_episodes=1, seed=0)
    model = make()  # AsymmetricBoxEnv: 3-dimensional observations, Pendulum's are 3-dimensional too, actions differ
    own = model.replay_buffer
    with pytest.raises(ValueError, match="action"):
        model.load_dataset("pendulum/random-v0")
    assert model.replay_buffer is own
    with pytest.raises(FileNotFoundError):
        model.load_dataset(tmp_path / "missing.hdf5")
    assert model.replay_buffer is own


def test_load_dataset_needs_one_environment() -> None:
    model = DiffusionQL("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=2), **baseline_kwargs("DiffusionQL"))
    with pytest.raises(ValueError, match="one environment"):
        model.load_dataset(TransitionSet.__new__(TransitionSet))


@pytest.mark.slow
def test_learns_better_than_the_dataset_on_the_bandit() -> None:
    """Offline, from uniformly random actions on the multi-peak bandit: the policy's reward beats the data's."""
    env = MultiPeakBanditEnv(sigma=0.3)
    results = []
    for seed in (0, 1):
        model = DiffusionQL(
            "MlpPolicy",
            env,
            batch_size=64,
            buffer_size=1000,
            learning_rate=1e-3,
            actor_learning_rate=1e-3,
            ema_start_update=50,
            policy_kwargs=dict(net_arch=[64, 64]),
            seed=seed,
        )
        dataset_mean = fill_with_uniform_actions(model, 1000, seed=seed)
        model.learn_offline(1000)
        actions, _ = model.predict(np.zeros((200, 1), np.float32), deterministic=False)
        assert np.all(np.abs(actions) <= 2.5)
        results.append((float(env.reward(actions).mean()), dataset_mean))
    for policy_mean, dataset_mean in results:
        assert policy_mean > 3.0 * dataset_mean, results
