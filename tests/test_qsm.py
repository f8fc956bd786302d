"""QSM's update rule against closed forms, its acting rule, its TD target and its official defaults."""

import math
from typing import Any

import numpy as np
import pytest
import torch as th
from helpers import AsymmetricBoxEnv, baseline_kwargs
from torch import nn

from sb3_qvpo import QSM
from sb3_qvpo.common.critic import min_q_values, q_action_gradient
from sb3_qvpo.diffusion import add_noise
from sb3_qvpo.qsm.qsm import q_score_matching_loss
from sb3_qvpo.qsm.schedules import CosineDecayOverGradientSteps, CosineDecaySchedule


class QuadraticQ(nn.Module):
    """Q(s, a) = -scale * |a - center|^2, whatever the state (the action is the last columns of the input)."""

    def __init__(self, center: list[float], scale: float = 1.0):
        super().__init__()
        self.center = th.tensor(center)
        self.scale = scale

    def forward(self, q_input: th.Tensor) -> th.Tensor:
        actions = q_input[:, -len(self.center) :]
        return -self.scale * (actions - self.center).pow(2).sum(dim=1, keepdim=True)


def with_quadratic_critic(model: QSM, centers: list[list[float]]) -> None:
    model.critic.q_networks = [QuadraticQ(center) for center in centers]  # type: ignore[assignment]


def tiny_model(**overrides: Any) -> QSM:
    model = QSM("MlpPolicy", AsymmetricBoxEnv(), seed=0, **baseline_kwargs("QSM", **overrides))
    model.learn(60)  # fills the buffer past learning_starts and sets up the logger
    return model


def test_q_action_gradient_closed_form() -> None:
    critic = QSM("MlpPolicy", AsymmetricBoxEnv(), **baseline_kwargs("QSM")).critic
    critic.q_networks = [QuadraticQ([0.5, -0.5]), QuadraticQ([-0.1, 0.3], scale=2.0)]  # type: ignore[assignment]
    actions = th.tensor([[0.2, 0.1], [-0.9, 0.9]])
    features = th.zeros(2, 3)
    mean_gradient = q_action_gradient(critic, features, actions, reduce="mean")
    expected_1 = -2 * (actions - th.tensor([0.5, -0.5]))
    expected_2 = -4 * (actions - th.tensor([-0.1, 0.3]))
    th.testing.assert_close(mean_gradient, (expected_1 + expected_2) / 2)
    q1 = -(actions - th.tensor([0.5, -0.5])).pow(2).sum(1)
    q2 = -2 * (actions - th.tensor([-0.1, 0.3])).pow(2).sum(1)
    min_gradient = q_action_gradient(critic, features, actions, reduce="min")
    th.testing.assert_close(min_gradient, th.where((q1 <= q2).unsqueeze(1), expected_1, expected_2))
    assert not actions.requires_grad  # the caller's tensor is untouched
    with pytest.raises(ValueError, match="'max'"):
        q_action_gradient(critic, features, actions, reduce="max")


def test_actor_loss_on_a_quadratic_q_matches_the_closed_form() -> None:
    model = tiny_model(q_score_scale=7.0)
    center = [0.3, -0.6]
    with_quadratic_critic(model, [center, center])
    replay_data = model.replay_buffer.sample(16)  # type: ignore[union-attr]
    observations, actions = replay_data.observations, replay_data.actions
    schedule, noise_net = model.actor.schedule, model.actor.noise_net
    with th.no_grad():
        th.manual_seed(11)  # the draws _actor_step takes: t, then the forward noise
        t = th.randint(0, schedule.n_steps, (16,))
        noise = th.randn(16, 2)
        noisy = add_noise(schedule, actions, t, noise)
        predicted = noise_net(
            noisy, noise_net.embed_time(t), model.actor.extract_features(observations, model.actor.features_extractor)
        )
        # grad_a Q = -2 (a_t - c); the noise network regresses on -M_q grad_a Q = 2 M_q (a_t - c).
        expected = (2 * 7.0 * (noisy - th.tensor(center)) - predicted).pow(2).mean()
    th.manual_seed(11)
    stats = model._actor_step(replay_data)
    assert stats["actor_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert stats["q_gradient_norm"].item() == pytest.approx(
        (2 * (noisy - th.tensor(center))).norm(dim=1).mean().item(), rel=1e-5
    )
    # The loss's gradient with respect to the prediction is the closed form 2 (eps - target) / (B * A).
    prediction = predicted.clone().requires_grad_(True)
    gradient = -2 * (noisy - th.tensor(center))
    q_score_matching_loss(prediction, gradient, 7.0).backward()
    th.testing.assert_close(prediction.grad, 2 * (prediction.detach() + 7.0 * gradient) / prediction.numel())


@pytest.mark.parametrize("center", [[-0.4, 0.3], [0.4, -0.3]])
def test_actor_learns_to_sample_near_the_argmax_of_a_fixed_q(center: list[float]) -> None:
    # Trained on -M_q grad Q of Q = -|a - c|^2 only, the chain's samples move towards c (in opposite
    # quadrants, so a sign error cannot pass by drifting to one corner).
    model = tiny_model(q_score_scale=1.0, actor_learning_rate=3e-3)
    with_quadratic_critic(model, [center, center])
    obs = th.zeros(256, 3)
    distance_before = (model.actor.sample(obs) - th.tensor(center)).norm(dim=1).mean().item()
    for _ in range(300):
        model._actor_step(model.replay_buffer.sample(64))  # type: ignore[union-attr]
    distance_after = (model.actor.sample(obs) - th.tensor(center)).norm(dim=1).mean().item()
    assert distance_after < 0.5 * distance_before, (distance_before, distance_after)


def test_td_target_uses_the_current_actor_with_clipped_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model(target_noise=0.0)
    observations = th.rand(8, 3) * 2 - 1
    constant = th.full((8, 2), 0.95)
    monkeypatch.setattr(model.actor, "sample", lambda features, *args, **kwargs: constant.clone())
    features = model.critic_target.extract_features(observations, model.critic_target.features_extractor)
    th.testing.assert_close(model._next_actions_q(observations), min_q_values(model.critic_target, features, constant))

    model.target_noise = 0.5
    seen: list[th.Tensor] = []
    original = min_q_values

    def recording(critic: Any, critic_features: th.Tensor, actions: th.Tensor) -> th.Tensor:
        seen.append(actions)
        return original(critic, critic_features, actions)

    monkeypatch.setattr("sb3_qvpo.qsm.qsm.min_q_values", recording)
    model._next_actions_q(observations)
    (actions,) = seen
    assert th.all(actions <= 1.0) and th.all(actions >= -1.0)
    assert (actions == 1.0).any() and not th.allclose(actions, constant)


def test_acting_adds_clipped_exploration_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    model = QSM("MlpPolicy", AsymmetricBoxEnv(), **baseline_kwargs("QSM"))
    monkeypatch.setattr(model.actor, "sample", lambda features, *args, **kwargs: th.zeros(features.shape[0], 2))
    obs = np.zeros((4000, 3), np.float32)
    low, high = model.action_space.low, model.action_space.high  # type: ignore[union-attr]
    middle = (low + high) / 2
    deterministic, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(deterministic, np.broadcast_to(middle, (4000, 2)), atol=1e-6)
    stochastic, _ = model.predict(obs, deterministic=False)
    scaled = 2 * (stochastic - low) / (high - low) - 1
    assert abs(scaled.mean()) < 0.01
    assert scaled.std() == pytest.approx(0.1, rel=0.05)


def test_official_defaults() -> None:
    model = QSM("MlpPolicy", "Pendulum-v1")
    policy = model.policy
    assert (model.q_score_scale, model.target_noise, model.max_grad_norm) == (50.0, 0.1, None)
    assert (model.learning_starts, model.batch_size, model.tau, model.gamma) == (10_000, 256, 0.005, 0.99)
    assert policy.actor_target is None and not any("actor_target" in key for key in policy.state_dict())
    assert (policy.n_behavior_samples, policy.n_eval_samples, policy.exploration_noise) == (1, 1, 0.1)
    actor = policy.actor
    assert (actor.n_diffusion_steps, actor.beta_schedule, actor.reverse_process) == (5, "vp", "xt_clipped")
    widths = [layer.out_features for layer in actor.noise_net.body if isinstance(layer, nn.Linear)]
    assert widths == [512, 512, 1]
    assert actor.noise_net.embed_time(th.arange(5)).shape == (5, 128)
    q_layers = list(policy.critic.q_networks[0])
    assert [layer.out_features for layer in q_layers if isinstance(layer, nn.Linear)] == [512, 512, 1]
    assert any(isinstance(layer, nn.ReLU) for layer in q_layers)
    assert actor.optimizer.defaults["eps"] == 1e-8
    # Actor learning rate: optax.cosine_decay_schedule(3e-4, 2e6) over actor updates (tested below).
    assert isinstance(model.actor_learning_rate, CosineDecayOverGradientSteps)
    assert (model.actor_learning_rate.initial_value, model.actor_learning_rate.decay_steps) == (3e-4, 2_000_000)
    assert actor.optimizer.param_groups[0]["lr"] == 3e-4


def official_actor_rate(k: int, initial: float = 3e-4, decay_steps: int = 2_000_000) -> float:
    return initial * 0.5 * (1 + math.cos(math.pi * min(k, decay_steps) / decay_steps))


@pytest.mark.parametrize("gradient_steps", [1, 3])
def test_actor_rate_is_the_official_cosine_of_the_update_count(monkeypatch: pytest.MonkeyPatch, gradient_steps: int) -> None:
    # A short decay so that the rate moves measurably: update k must get 3e-4 * (1 + cos(pi k / D)) / 2 from k = 0.
    decay_steps = 40
    model = QSM(
        "MlpPolicy",
        AsymmetricBoxEnv(),
        seed=0,
        **baseline_kwargs(
            "QSM",
            actor_learning_rate=CosineDecayOverGradientSteps(3e-4, decay_steps),
            train_freq=gradient_steps,
            gradient_steps=gradient_steps,
        ),
    )
    rates: list[float] = []
    original = model._actor_step

    def recording(replay_data: Any) -> Any:
        rates.append(model.actor.optimizer.param_groups[0]["lr"])
        return original(replay_data)

    monkeypatch.setattr(model, "_actor_step", recording)
    model.learn(model.learning_starts + 60)
    assert len(rates) == model._n_updates >= 50
    np.testing.assert_allclose(rates, [official_actor_rate(k, 3e-4, decay_steps) for k in range(len(rates))], rtol=1e-12)
    assert rates[0] == 3e-4 and rates[-1] == 0.0
    # The critic's constant rate is untouched.
    assert model.critic.optimizer.param_groups[0]["lr"] == model.learning_rate


def test_progress_schedule_stays_reachable_and_saved_schedules_load(tmp_path: Any) -> None:
    # QSM's default before 0.2, a schedule of the run's progress: lags the official one by the random steps.
    model = tiny_model(actor_learning_rate=CosineDecaySchedule(3e-4, horizon=2.0))
    # The last update ran at the end of the run: progress 0, half the horizon, half the initial rate.
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1.5e-4)
    model.save(tmp_path / "model.zip")
    loaded = QSM.load(tmp_path / "model.zip")
    assert isinstance(loaded.actor_learning_rate, CosineDecaySchedule)
    assert loaded.actor_lr_schedule(0.0) == pytest.approx(1.5e-4)
    # On a 1e6-step run with 10,000 random steps it ends 1.5% under the official rate at the same update.
    lagging, official = CosineDecaySchedule(3e-4, 2.0)(0.0), official_actor_rate(1_000_000 - 10_000)
    assert lagging / official == pytest.approx(0.985, abs=0.001)
    step_model = tiny_model(actor_learning_rate=CosineDecayOverGradientSteps(3e-4, 100))
    step_model.save(tmp_path / "steps.zip")
    reloaded = QSM.load(tmp_path / "steps.zip", env=AsymmetricBoxEnv())
    reloaded.learn(20, reset_num_timesteps=False)
    assert reloaded.actor.optimizer.param_groups[0]["lr"] == pytest.approx(
        official_actor_rate(reloaded._n_updates - 1, 3e-4, 100)
    )


@pytest.mark.parametrize(
    ("horizon", "progress", "expected"), [(2.0, 0.5, 0.5 * (1 + math.cos(math.pi / 4))), (1.0, 0.0, 0.0), (1.0, 0.5, 0.5)]
)
def test_cosine_decay_schedule(horizon: float, progress: float, expected: float) -> None:
    assert CosineDecaySchedule(2.0, horizon)(progress) == pytest.approx(2.0 * expected)
    with pytest.raises(ValueError, match="horizon"):
        CosineDecaySchedule(1.0, 0.0)
