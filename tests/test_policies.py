"""QVPOPolicy: best-of-K action selection, predict() and the target networks."""

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from helpers import AsymmetricBoxEnv, GoalDictEnv, tiny_kwargs
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sb3_qvpo import QVPO, MultiInputPolicy, QVPOPolicy
from sb3_qvpo.diffusion import DiffusionSchedule, NoisePredictionNet
from sb3_qvpo.qvpo.policies import DiffusionActor, best_of_k, min_q_values

OBS_SPACE = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
ACTION_SPACE = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)


class Square(nn.Module):
    def forward(self, x: th.Tensor) -> th.Tensor:
        return x**2


def distance_q(features_dim: int, action_dim: int, offset: float = 0.0) -> nn.Sequential:
    """
    Q(s, a) = -||a - (s[:action_dim] + offset)||^2 on the critic's input cat(features, actions),
    built as a Linear-first Sequential like the Q networks it replaces.
    """
    first = nn.Linear(features_dim + action_dim, action_dim)
    last = nn.Linear(action_dim, 1)
    with th.no_grad():
        first.weight.zero_()
        first.weight[:, :action_dim] = -th.eye(action_dim)
        first.weight[:, features_dim:] = th.eye(action_dim)
        first.bias.fill_(-offset)
        last.weight.fill_(-1.0)
        last.bias.zero_()
    return nn.Sequential(first, Square(), last)


def set_q_networks(critic: ContinuousCritic, q_networks: list[nn.Module]) -> None:
    assert len(q_networks) == len(critic.q_networks)
    for idx, q_net in enumerate(q_networks):
        critic.q_networks[idx] = q_net
        setattr(critic, f"qf{idx}", q_net)


def make_policy(**kwargs: Any) -> QVPOPolicy:
    th.manual_seed(0)
    defaults: dict[str, Any] = dict(net_arch=[32, 32], n_diffusion_steps=5, n_behavior_samples=4, n_eval_samples=8)
    defaults.update(kwargs)
    return QVPOPolicy(OBS_SPACE, ACTION_SPACE, lr_schedule=lambda _: 1e-3, **defaults)


def test_policy_structure() -> None:
    policy = make_policy(n_critics=3)
    assert isinstance(policy.actor, DiffusionActor)
    assert isinstance(policy.actor.noise_net, NoisePredictionNet)
    assert isinstance(policy.actor.schedule, DiffusionSchedule)
    assert policy.actor.schedule.n_steps == 5
    assert policy.actor.action_dim == 2
    assert len(policy.critic.q_networks) == 3
    # Time MLP as wide as the first hidden layer.
    assert policy.actor.noise_net.time_mlp[1].out_features == 32
    # Adam with the release's eps.
    assert isinstance(policy.actor.optimizer, th.optim.Adam)
    assert policy.actor.optimizer.param_groups[0]["eps"] == 1e-5
    assert policy.critic.optimizer.param_groups[0]["eps"] == 1e-5


def test_separate_actor_and_critic_architectures() -> None:
    policy = make_policy(net_arch=dict(pi=[16, 24], qf=[8]))
    linear_widths = [m.out_features for m in policy.actor.noise_net.body if isinstance(m, nn.Linear)]
    assert linear_widths == [16, 24, 2]
    critic_widths = [m.out_features for m in policy.critic.q_networks[0] if isinstance(m, nn.Linear)]
    assert critic_widths == [8, 1]


@pytest.mark.parametrize("bad", [dict(n_critics=0), dict(n_behavior_samples=0), dict(n_eval_samples=-1)])
def test_policy_rejects_bad_counts(bad: dict[str, int]) -> None:
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        make_policy(**bad)


def test_min_q_values() -> None:
    policy = make_policy()
    set_q_networks(policy.critic, [distance_q(3, 2, 0.0), distance_q(3, 2, 0.5)])
    features = th.randn(10, 3)
    actions = 2 * th.rand(10, 2) - 1
    q1 = -((actions - features[:, :2]) ** 2).sum(dim=1)
    q2 = -((actions - features[:, :2] - 0.5) ** 2).sum(dim=1)
    values = min_q_values(policy.critic, features, actions)
    assert values.shape == (10,)
    th.testing.assert_close(values, th.minimum(q1, q2))


@pytest.mark.parametrize("n_samples", [1, 5])
def test_best_of_k_picks_the_highest_min_q(monkeypatch: pytest.MonkeyPatch, n_samples: int) -> None:
    policy = make_policy()
    set_q_networks(policy.critic, [distance_q(3, 2, 0.0), distance_q(3, 2, 0.3)])
    n_obs = 7
    obs = 2 * th.rand(n_obs, 3) - 1
    candidates = 2 * th.rand(n_obs * n_samples, 2) - 1
    seen: list[th.Tensor] = []

    def sample(features: th.Tensor, generator: th.Generator | None = None, n_per_state: int = 1) -> th.Tensor:
        seen.append(features.repeat_interleave(n_per_state, dim=0))
        return candidates.clone()

    monkeypatch.setattr(policy.actor, "sample", sample)
    actions, best_q = best_of_k(policy.actor, policy.critic, obs, n_samples)

    th.testing.assert_close(seen[0], obs.repeat_interleave(n_samples, dim=0))
    grouped = candidates.view(n_obs, n_samples, 2)
    target = obs[:, None, :2]
    q = th.minimum(-((grouped - target) ** 2).sum(-1), -((grouped - target - 0.3) ** 2).sum(-1))
    expected_index = q.argmax(dim=1)
    assert actions.shape == (n_obs, 2) and best_q.shape == (n_obs,)
    assert th.equal(actions, grouped[th.arange(n_obs), expected_index])
    th.testing.assert_close(best_q, q.max(dim=1).values)


def test_best_of_k_finds_the_target_with_many_samples() -> None:
    # With the real sampler and many candidates, the chosen action is closer to the critic's optimum
    # than a typical sample.
    policy = make_policy()
    set_q_networks(policy.critic, [distance_q(3, 2), distance_q(3, 2)])
    obs = th.zeros(50, 3)
    obs[:, :2] = 0.2
    with th.no_grad():
        chosen, _ = best_of_k(policy.actor, policy.critic, obs, 64)
        single, _ = best_of_k(policy.actor, policy.critic, obs, 1)
    assert ((chosen - 0.2) ** 2).sum(1).mean() < ((single - 0.2) ** 2).sum(1).mean()


def test_predict_deterministic_is_repeatable_and_leaves_global_rng_alone() -> None:
    policy = make_policy()
    obs = np.random.default_rng(0).uniform(-1, 1, size=(16, 3)).astype(np.float32)
    state = th.get_rng_state()
    first, _ = policy.predict(obs, deterministic=True)
    second, _ = policy.predict(obs, deterministic=True)
    assert th.equal(th.get_rng_state(), state)
    np.testing.assert_array_equal(first, second)
    single, _ = policy.predict(obs[3], deterministic=True)
    assert single.shape == (2,)


def test_eval_seed_changes_the_deterministic_action() -> None:
    obs = np.random.default_rng(0).uniform(-1, 1, size=(16, 3)).astype(np.float32)
    policy = make_policy(eval_seed=0)
    first, _ = policy.predict(obs, deterministic=True)
    policy.eval_seed = 1
    second, _ = policy.predict(obs, deterministic=True)
    assert not np.allclose(first, second)


def test_predict_stochastic_varies() -> None:
    policy = make_policy()
    obs = np.random.default_rng(0).uniform(-1, 1, size=(16, 3)).astype(np.float32)
    first, _ = policy.predict(obs, deterministic=False)
    second, _ = policy.predict(obs, deterministic=False)
    assert first.shape == (16, 2)
    assert not np.allclose(first, second)
    th.manual_seed(5)
    again_first, _ = policy.predict(obs, deterministic=False)
    th.manual_seed(5)
    again_second, _ = policy.predict(obs, deterministic=False)
    np.testing.assert_array_equal(again_first, again_second)


@pytest.mark.parametrize("deterministic", [True, False])
def test_sample_counts_are_respected(monkeypatch: pytest.MonkeyPatch, deterministic: bool) -> None:
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), **tiny_kwargs(n_behavior_samples=3, n_eval_samples=7))
    assert model.policy.n_behavior_samples == 3 and model.policy.n_eval_samples == 7
    rows: list[int] = []
    original = model.actor.sample

    def counting_sample(features: th.Tensor, generator: th.Generator | None = None, **kwargs: Any) -> th.Tensor:
        actions = original(features, generator, **kwargs)
        rows.append(actions.shape[0])
        return actions

    monkeypatch.setattr(model.actor, "sample", counting_sample)
    obs = np.zeros((5, 3), dtype=np.float32)
    model.predict(obs, deterministic=deterministic)
    assert rows == [5 * (7 if deterministic else 3)]


def test_actions_within_asymmetric_bounds() -> None:
    env = AsymmetricBoxEnv()
    model = QVPO("MlpPolicy", env, **tiny_kwargs())
    obs = np.random.default_rng(0).uniform(-1, 1, size=(200, 3)).astype(np.float32)
    for deterministic in (True, False):
        actions, _ = model.predict(obs, deterministic=deterministic)
        assert actions.shape == (200, 2)
        assert np.all(actions >= env.action_space.low) and np.all(actions <= env.action_space.high)
    # Training briefly (random actions then the policy's own) keeps them in bounds too.
    model.learn(120)
    actions, _ = model.predict(obs, deterministic=False)
    assert np.all(actions >= env.action_space.low) and np.all(actions <= env.action_space.high)
    # The replay buffer stores actions scaled to [-1, 1].
    stored = model.replay_buffer.actions[: model.replay_buffer.pos]
    assert np.all(np.abs(stored) <= 1.0)


@pytest.mark.parametrize(("value", "expected"), [(1.0, [2.0, 5.0]), (-1.0, [0.0, -3.0]), (0.0, [1.0, 1.0])])
def test_actions_are_unscaled_to_the_box(monkeypatch: pytest.MonkeyPatch, value: float, expected: list[float]) -> None:
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), **tiny_kwargs())

    def constant_sample(features: th.Tensor, generator: th.Generator | None = None, n_per_state: int = 1) -> th.Tensor:
        return th.full((features.shape[0] * n_per_state, 2), value)

    monkeypatch.setattr(model.actor, "sample", constant_sample)
    for deterministic in (True, False):
        actions, _ = model.predict(np.zeros((4, 3), dtype=np.float32), deterministic=deterministic)
        np.testing.assert_allclose(actions, np.tile(expected, (4, 1)), atol=1e-6)


def test_targets_start_equal_and_independent() -> None:
    policy = make_policy()
    for online, target in ((policy.actor, policy.actor_target), (policy.critic, policy.critic_target)):
        online_state, target_state = online.state_dict(), target.state_dict()
        assert online_state.keys() == target_state.keys()
        for key, value in online_state.items():
            assert th.equal(value, target_state[key]), key
        online_ids = {id(p) for p in online.parameters()}
        assert not online_ids & {id(p) for p in target.parameters()}
        assert not target.training
    # The target networks are not optimised.
    optimised = {id(p) for group in policy.actor.optimizer.param_groups for p in group["params"]}
    optimised |= {id(p) for group in policy.critic.optimizer.param_groups for p in group["params"]}
    assert optimised.isdisjoint(id(p) for p in policy.actor_target.parameters())
    assert optimised.isdisjoint(id(p) for p in policy.critic_target.parameters())
    assert optimised == {id(p) for p in policy.actor.parameters()} | {id(p) for p in policy.critic.parameters()}


def test_set_training_mode() -> None:
    policy = make_policy()
    policy.set_training_mode(True)
    assert policy.actor.training and policy.critic.training
    assert not policy.actor_target.training and not policy.critic_target.training
    policy.set_training_mode(False)
    assert not policy.actor.training and not policy.critic.training


class LinearExtractor(BaseFeaturesExtractor):
    """A features extractor with parameters, to test sharing."""

    def __init__(self, observation_space: gym.Space, features_dim: int = 4):
        super().__init__(observation_space, features_dim)
        self.linear = nn.Linear(int(np.prod(observation_space.shape)), features_dim)

    def forward(self, obs: th.Tensor) -> th.Tensor:
        return th.tanh(self.linear(obs))


@pytest.mark.parametrize("share", [False, True])
def test_features_extractor_sharing(share: bool) -> None:
    policy = make_policy(features_extractor_class=LinearExtractor, share_features_extractor=share)
    actor_extractor = {id(p) for p in policy.actor.features_extractor.parameters()}
    critic_optimised = {id(p) for group in policy.critic.optimizer.param_groups for p in group["params"]}
    assert actor_extractor
    assert (policy.critic.features_extractor is policy.actor.features_extractor) == share
    # A shared extractor is trained by the actor loss only.
    if share:
        assert critic_optimised.isdisjoint(actor_extractor)
    else:
        critic_extractor = {id(p) for p in policy.critic.features_extractor.parameters()}
        assert critic_extractor <= critic_optimised
        assert critic_extractor.isdisjoint(actor_extractor)
    assert policy.actor.noise_net.body[0].in_features == 2 + 32 + 4
    actions, _ = policy.predict(np.zeros((3, 3), dtype=np.float32), deterministic=True)
    assert actions.shape == (3, 2)


def test_multi_input_policy() -> None:
    env = GoalDictEnv()
    policy = MultiInputPolicy(
        env.observation_space, env.action_space, lr_schedule=lambda _: 1e-3, net_arch=[16], n_diffusion_steps=3
    )
    # CombinedExtractor: 3 + 2 features.
    assert policy.actor.features_dim == 5
    obs = {"observation": np.zeros((4, 3), np.float32), "desired_goal": np.ones((4, 2), np.float32)}
    actions, _ = policy.predict(obs, deterministic=True)
    assert actions.shape == (4, 2)
    assert np.all(np.abs(actions) <= 1.0)


def test_actor_forward_samples_in_unit_box() -> None:
    policy = make_policy()
    with th.no_grad():
        actions = policy.actor(th.zeros(20, 3))
    assert actions.shape == (20, 2)
    assert th.all(actions.abs() <= 1.0)


def test_policy_save_load_keeps_constructor_parameters(tmp_path: Any) -> None:
    policy = make_policy(n_behavior_samples=3, n_eval_samples=6, eval_seed=11, n_critics=3, beta_schedule="linear")
    policy.save(str(tmp_path / "policy.pth"))
    loaded = QVPOPolicy.load(str(tmp_path / "policy.pth"))
    assert (loaded.n_behavior_samples, loaded.n_eval_samples, loaded.eval_seed) == (3, 6, 11)
    assert loaded.n_critics == 3 and len(loaded.critic.q_networks) == 3
    assert loaded.actor.schedule.beta_schedule == "linear" and loaded.actor.schedule.n_steps == 5
    obs = np.random.default_rng(0).uniform(-1, 1, size=(8, 3)).astype(np.float32)
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
