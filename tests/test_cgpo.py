"""CGPO's pieces against hand computations: Qhat (eq. 14), the DDQN truncated target, V_phi, the weights, guidance."""

from typing import Any

import numpy as np
import pytest
import torch as th
from helpers import AsymmetricBoxEnv, baseline_kwargs
from torch import nn

from sb3_qvpo import CGPO, QVPO
from sb3_qvpo.cgpo.quantiles import candidate_q_hat, truncated_q


def tiny_model(**overrides: Any) -> CGPO:
    model = CGPO("MlpPolicy", AsymmetricBoxEnv(), seed=0, **baseline_kwargs("CGPO", **overrides))
    model.learn(60)
    return model


class QuadraticQuantiles(nn.Module):
    """M quantiles -|a - center|^2 * scale + offsets (the state ignored): a quantile critic with a known argmax."""

    def __init__(self, center: list[float], offsets: list[float], scale: float = 1.0):
        super().__init__()
        self.center, self.offsets, self.scale = th.tensor(center), th.tensor(offsets), scale

    def forward(self, q_input: th.Tensor) -> th.Tensor:
        actions = q_input[:, -len(self.center) :]
        return -self.scale * (actions - self.center).pow(2).sum(dim=1, keepdim=True) + self.offsets


def test_q_hat_is_the_mean_over_nets_of_each_nets_truncated_mean() -> None:
    # Two nets, five quantiles each (unsorted), two dropped per net.
    quantiles = th.tensor([[[5.0, 1.0, 3.0, 2.0, 4.0], [10.0, -2.0, 0.0, 6.0, 8.0]]])
    # Net 1 keeps 1, 2, 3 (mean 2); net 2 keeps -2, 0, 6 (mean 4/3); Qhat = (2 + 4/3) / 2.
    assert truncated_q(quantiles, 2).item() == pytest.approx((2 + 4 / 3) / 2)
    assert truncated_q(quantiles, 0).item() == pytest.approx((3 + 22 / 5) / 2)


def test_td_target_is_chosen_by_the_critic_and_evaluated_by_the_target_critic(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model(n_target_samples=3, policy_kwargs=dict(net_arch=[16], n_diffusion_steps=5, n_quantiles=4))
    offsets = [0.0, 1.0, 2.0, 30.0]  # the top quantile (k = 2 drops 2.0 and 30.0) must not count
    # The online critic prefers actions near (0.9, 0.9); the target critic prefers (-0.9, -0.9).
    model.critic.q_networks = [QuadraticQuantiles([0.9, 0.9], offsets) for _ in range(2)]  # type: ignore[assignment]
    model.critic_target.q_networks = [QuadraticQuantiles([-0.9, -0.9], offsets) for _ in range(2)]  # type: ignore[assignment]
    candidates = th.tensor([[-0.9, -0.9], [0.8, 0.8], [0.0, 0.0]]).repeat(4, 1)  # 4 states x 3 candidates
    assert model.actor_target is not None
    monkeypatch.setattr(model.actor_target, "sample", lambda features, *args, **kwargs: candidates.clone())
    next_quantiles = model._next_target_quantiles(th.zeros(4, 3))
    # Chosen: (0.8, 0.8), the online critic's best; valued by the target critic: -(1.7^2 * 2) + [0, 1] per net.
    distance = 2 * 1.7**2
    expected = th.tensor([-distance, 1 - distance] * 2).repeat(4, 1)
    assert next_quantiles.shape == (4, 2 * (4 - 2))
    th.testing.assert_close(next_quantiles, expected)
    # The critic step regresses on r + gamma (1 - done) of those atoms (sb3-contrib's quantile Huber loss).
    scores = candidate_q_hat(model.critic, th.zeros(4, 3), candidates, 3, 2)
    assert th.all(scores.argmax(dim=1) == 1)


def test_value_network_fits_a_fixed_critics_value_of_the_current_actor() -> None:
    model = tiny_model(learning_rate=3e-3)
    offsets = [0.0, 0.5, 1.0, 1.5, 2.0]
    model.critic.q_networks = [QuadraticQuantiles([0.2, -0.4], offsets * 5, 1.0) for _ in range(2)]  # type: ignore[assignment]
    observations = th.rand(32, 3) * 2 - 1
    features = model.actor.extract_features(observations, model.actor.features_extractor)
    # The target of the regression: E[Qhat(s, a~)] over the actor's samples, estimated with many of them.
    with th.no_grad():
        many = model.actor.sample(features, n_per_state=200)
        expected = candidate_q_hat(model.critic, th.zeros(32, 3), many, 200, 2).mean(dim=1)
        error_before = (model.value_net(observations) - expected).abs().mean().item()
    for _ in range(400):
        with th.no_grad():
            unguided = model.actor.sample(features)  # one sample per state, as eq. 16
        model._value_step(observations, unguided)
    with th.no_grad():
        error_after = (model.value_net(observations) - expected).abs().mean().item()
    assert error_after < 0.25 * error_before and error_after < 0.1  # measured: 0.47 -> 0.06


def test_no_weight_and_no_actor_change_when_the_guided_target_is_no_better_than_v(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    monkeypatch.setattr(model.value_net, "forward", lambda obs: th.full((obs.shape[0],), 1e6))
    before = [p.detach().clone() for p in model.actor.parameters()]
    model.actor.optimizer = th.optim.Adam(model.actor.parameters(), lr=1e-3)  # fresh: no momentum from earlier steps
    stats, _ = model._actor_step(th.rand(16, 3) * 2 - 1)
    assert stats["weight_mean"].item() == 0.0 and stats["actor_loss"].item() == 0.0
    assert stats["positive_weight_fraction"].item() == 0.0
    for old, new in zip(before, model.actor.parameters(), strict=True):
        assert th.equal(old, new)


def test_guided_targets_climb_the_critic_and_g0_is_the_plain_chain() -> None:
    model = tiny_model(n_guided_steps=0)
    model.critic.q_networks = [QuadraticQuantiles([0.5, -0.5], [0.0] * 25) for _ in range(2)]  # type: ignore[assignment]
    observations = th.rand(256, 3) * 2 - 1
    features = model.actor.extract_features(observations, model.actor.features_extractor)
    th.manual_seed(7)
    plain_targets = model.guided_targets(observations)
    th.manual_seed(7)
    with th.no_grad():
        plain = model.actor.sample(features)
    th.testing.assert_close(plain_targets, plain, rtol=1e-5, atol=1e-5)  # fast path vs reference: same draws
    model.n_guided_steps = 4
    th.manual_seed(7)
    guided = model.guided_targets(observations)
    critic_features = th.zeros(256, 3)
    guided_q = candidate_q_hat(model.critic, critic_features, guided, 1, 2)
    plain_q = candidate_q_hat(model.critic, critic_features, plain, 1, 2)
    assert guided_q.mean() > plain_q.mean() and guided.abs().max() <= 1.0


def test_logs_and_defaults() -> None:
    model = tiny_model()
    for key in ("critic_loss", "actor_loss", "value_loss", "critic_contrast", "guided_q", "weight_mean", "target_q"):
        assert np.isfinite(model.logger.name_to_value[f"train/{key}"]), key
    qvpo = QVPO("MlpPolicy", AsymmetricBoxEnv(), learning_starts=50, batch_size=16, n_action_samples=4,
                policy_kwargs=dict(net_arch=[8], n_diffusion_steps=3))  # fmt: skip
    qvpo.learn(60)
    assert qvpo.logger.name_to_value["train/critic_contrast"] >= 0  # best minus mean of the N_d candidates
    defaults = CGPO("MlpPolicy", "Pendulum-v1")
    assert (defaults.n_guided_steps, defaults.guidance_rate, defaults.n_target_samples) == (10, 0.95, 4)
    assert (defaults.n_uniform_samples, defaults.entropy_coef, defaults.max_grad_norm) == (10, 0.02, None)
    assert (defaults.batch_size, defaults.gamma, defaults.tau, defaults.learning_rate, defaults.actor_learning_rate) == (
        256, 0.99, 0.005, 3e-4, 3e-4)  # fmt: skip
    policy = defaults.policy
    assert policy.actor.schedule.n_steps == 20 and policy.n_behavior_samples == 4
    assert [layer.out_features for layer in policy.actor.noise_net.body if isinstance(layer, nn.Linear)] == [256, 256, 1]
    assert len(policy.critic.q_networks) == 2 and policy.critic.q_networks[0][-1].out_features == 25
    assert policy.top_quantiles_to_drop_per_net == 2
