"""Q-weight transforms, the entropy (uniform-action) term of the actor loss, and entropy schedules."""

import math
import pickle
from typing import Any

import numpy as np
import pytest
import torch as th
from helpers import AsymmetricBoxEnv, tiny_kwargs

import sb3_qvpo.qvpo.qvpo as qvpo_module
from sb3_qvpo import QVPO
from sb3_qvpo.qvpo.entropy import FlooredLinearSchedule, make_entropy_schedule
from sb3_qvpo.qvpo.policies import min_q_values
from sb3_qvpo.qvpo.weights import WEIGHT_TRANSFORMS, best_sample_weights

# --- best_sample_weights -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_qadv_matches_hand_computation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(7, 9)) * 3.0
    index, weights = best_sample_weights(th.as_tensor(q, dtype=th.float32), "qadv")
    assert index.shape == (7,) and weights.shape == (7,)
    assert index.dtype == th.int64
    np.testing.assert_array_equal(index.numpy(), q.argmax(axis=1))
    expected = np.maximum(q.max(axis=1) - q.mean(axis=1), 0.0)
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert th.all(weights >= 0)


def test_qadv_equal_q_gives_zero_weight() -> None:
    q = th.full((4, 6), 2.5)
    q[1] = -1.0
    _, weights = best_sample_weights(q, "qadv")
    assert th.equal(weights, th.zeros(4))


def test_qadv_single_best_sample() -> None:
    q = th.tensor([[0.0, 0.0, 3.0, 0.0], [1.0, 5.0, 1.0, 1.0]])
    index, weights = best_sample_weights(q, "qadv")
    assert index.tolist() == [2, 1]
    th.testing.assert_close(weights, th.tensor([3.0 - 0.75, 5.0 - 2.0]))


def test_qadv_with_one_sample_is_zero() -> None:
    _, weights = best_sample_weights(th.randn(5, 1), "qadv")
    assert th.equal(weights, th.zeros(5))


def test_qcut() -> None:
    q = th.tensor([[0.2, 3.0, -1.0], [0.5, 0.1, 0.9], [1.0, 0.0, 0.0], [-5.0, -4.0, -6.0]])
    index, weights = best_sample_weights(q, "qcut", qcut_threshold=1.0)
    assert index.tolist() == [1, 2, 0, 1]
    # The release's QCut: max(Q_best, cut); a best Q below the cut is weighted by the cut itself.
    th.testing.assert_close(weights, th.tensor([3.0, 1.0, 1.0, 1.0]))

    _, weights = best_sample_weights(q, "qcut", qcut_threshold=0.5)
    th.testing.assert_close(weights, th.tensor([3.0, 0.9, 1.0, 0.5]))


@pytest.mark.parametrize("seed", range(3))
def test_qcut_random(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = rng.normal(loc=1.0, size=(20, 5))
    index, weights = best_sample_weights(th.as_tensor(q), "qcut", qcut_threshold=1.2)
    best = q.max(axis=1)
    np.testing.assert_array_equal(index.numpy(), q.argmax(axis=1))
    np.testing.assert_allclose(weights.numpy(), np.maximum(best, 1.2))


def test_unknown_transform() -> None:
    assert set(WEIGHT_TRANSFORMS) == {"qadv", "qcut"}
    with pytest.raises(ValueError, match="'foo'"):
        best_sample_weights(th.randn(3, 4), "foo")


# --- the actor loss: best samples and uniform actions --------------------------------------------

N_STATES = 6
N_SAMPLES = 5


class ActorStepProbe:
    """Replaces the actor's sampler, denoising errors and the weight transform with recorders."""

    def __init__(self, model: QVPO, monkeypatch: pytest.MonkeyPatch, weights: th.Tensor, best_index: th.Tensor):
        self.model = model
        self.weights = weights
        self.best_index = best_index
        action_dim = model.action_space.shape[0]
        # Known candidates in [-1, 1]: row r (state r // N, sample r % N) holds a recognisable value.
        rows = th.arange(N_STATES * N_SAMPLES, dtype=th.float32)
        self.candidates = (rows / rows.numel()).unsqueeze(1).repeat(1, action_dim) * 2.0 - 1.0
        self.calls: dict[str, list[Any]] = {"sample": [], "errors": [], "weights": []}
        anchor = next(model.actor.parameters())

        def sample(features: th.Tensor, generator: th.Generator | None = None, n_per_state: int = 1) -> th.Tensor:
            # Recorded one row per candidate, whether the caller repeats the features or passes n_per_state.
            self.calls["sample"].append(features.repeat_interleave(n_per_state, dim=0))
            return self.candidates.clone()

        def denoising_errors(actions: th.Tensor, features: th.Tensor) -> th.Tensor:
            self.calls["errors"].append((actions.clone(), features.clone()))
            # The per-row error is the state's id (first observation feature) + 1, so the loss
            # reveals which weight each row is paired with; the anchor keeps a graph for backward.
            return features[:, 0] + 1.0 + 0.0 * anchor.sum()

        def weights_fn(q_values: th.Tensor, weight_transform: str, qcut_threshold: float) -> tuple[th.Tensor, th.Tensor]:
            self.calls["weights"].append((q_values.clone(), weight_transform, qcut_threshold))
            return self.best_index.clone(), self.weights.clone()

        monkeypatch.setattr(model.actor, "sample", sample)
        monkeypatch.setattr(model.actor, "denoising_errors", denoising_errors)
        monkeypatch.setattr(qvpo_module, "best_sample_weights", weights_fn)


def observations() -> th.Tensor:
    obs = th.zeros(N_STATES, 3)
    obs[:, 0] = th.arange(N_STATES, dtype=th.float32)  # the state's id
    obs[:, 1:] = th.randn(N_STATES, 2)
    return obs


def make_model(**overrides: Any) -> QVPO:
    kwargs = tiny_kwargs(n_action_samples=N_SAMPLES, n_uniform_samples=3, seed=0)
    kwargs.update(overrides)
    return QVPO("MlpPolicy", AsymmetricBoxEnv(), **kwargs)


@pytest.mark.parametrize("n_uniform", [0, 1, 3])
@pytest.mark.parametrize("entropy_coef", [0.0, 0.5, 1.0])
def test_actor_loss_weights(monkeypatch: pytest.MonkeyPatch, entropy_coef: float, n_uniform: int) -> None:
    model = make_model(n_uniform_samples=n_uniform)
    weights = th.tensor([0.0, 1.0, 2.0, 0.5, 3.0, 0.25])
    best_index = th.tensor([0, 4, 2, 1, 3, 0])
    probe = ActorStepProbe(model, monkeypatch, weights, best_index)
    obs = observations()

    stats = model._actor_step(obs, entropy_coef)

    # The actor is sampled N_d times per state, state-major.
    (sample_features,) = probe.calls["sample"]
    assert sample_features.shape == (N_STATES * N_SAMPLES, 3)
    th.testing.assert_close(sample_features, obs.repeat_interleave(N_SAMPLES, dim=0))

    # The weight transform sees the min-Q of every candidate, shaped (n_states, N_d).
    (q_values, transform, threshold) = probe.calls["weights"][0]
    assert transform == "qadv" and threshold == 1.0
    with th.no_grad():
        expected_q = min_q_values(model.critic, obs.repeat_interleave(N_SAMPLES, dim=0), probe.candidates)
    th.testing.assert_close(q_values, expected_q.view(N_STATES, N_SAMPLES))

    (actions, features) = probe.calls["errors"][0]
    assert actions.shape == (N_STATES * (1 + n_uniform), 2)
    assert features.shape == (N_STATES * (1 + n_uniform), 3)
    assert th.all(actions.abs() <= 1.0)
    # The first n_states rows are the chosen candidates, paired with their own states.
    chosen = probe.candidates.view(N_STATES, N_SAMPLES, -1)[th.arange(N_STATES), best_index]
    th.testing.assert_close(actions[:N_STATES], chosen)
    th.testing.assert_close(features[:N_STATES], obs)
    # Then N_e uniform actions per state, state-major, all distinct.
    th.testing.assert_close(features[N_STATES:], obs.repeat_interleave(n_uniform, dim=0))
    if n_uniform > 0:
        uniform = actions[N_STATES:]
        assert th.unique(uniform).numel() == uniform.numel()

    # loss = mean([w_i e_i] + [c w_i e_i] * N_e) with e_i = id_i + 1.
    errors = obs[:, 0] + 1.0
    expected_loss = (weights * errors).sum() * (1.0 + entropy_coef * n_uniform) / (N_STATES * (1 + n_uniform))
    assert stats["actor_loss"].item() == pytest.approx(expected_loss.item(), rel=1e-6)
    assert stats["weight_mean"].item() == pytest.approx(weights.mean().item())
    assert stats["positive_weight_fraction"].item() == pytest.approx(5 / 6)
    assert stats["sample_q_mean"].item() == pytest.approx(q_values.mean().item(), rel=1e-5, abs=1e-6)
    assert stats["sample_q_best"].item() == pytest.approx(q_values.max(dim=1).values.mean().item(), rel=1e-5, abs=1e-6)


def test_uniform_weights_scale_linearly_with_entropy_coef(monkeypatch: pytest.MonkeyPatch) -> None:
    weights = th.tensor([1.0, 2.0, 0.0, 4.0, 0.5, 1.5])
    best_index = th.zeros(N_STATES, dtype=th.long)
    losses = []
    for entropy_coef in (0.0, 0.5, 1.0):
        model = make_model(n_uniform_samples=4)
        ActorStepProbe(model, monkeypatch, weights, best_index)
        losses.append(model._actor_step(observations(), entropy_coef)["actor_loss"].item())
    # The loss is affine in the coefficient: equal steps from 0 to 0.5 to 1.
    assert losses[1] - losses[0] == pytest.approx(losses[2] - losses[1], rel=1e-6)
    # The uniform rows carry 4 times the best row's total weight at coefficient 1.
    assert losses[2] == pytest.approx(5.0 * losses[0], rel=1e-6)


def test_uniform_actions_cover_the_box(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model(n_uniform_samples=50)
    probe = ActorStepProbe(model, monkeypatch, th.ones(N_STATES), th.zeros(N_STATES, dtype=th.long))
    model._actor_step(observations(), 0.1)
    uniform = probe.calls["errors"][0][0][N_STATES:]
    assert uniform.shape == (N_STATES * 50, 2)
    assert th.all(uniform.abs() <= 1.0)
    # 300 uniform draws on [-1, 1]: both halves of each dimension are used and the mean is near 0.
    assert th.all(uniform.min(dim=0).values < -0.8) and th.all(uniform.max(dim=0).values > 0.8)
    assert th.all(uniform.mean(dim=0).abs() < 0.2)


def test_qcut_settings_reach_the_transform(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model(weight_transform="qcut", qcut_threshold=-2.5)
    probe = ActorStepProbe(model, monkeypatch, th.ones(N_STATES), th.zeros(N_STATES, dtype=th.long))
    model._actor_step(observations(), 0.0)
    _, transform, threshold = probe.calls["weights"][0]
    assert transform == "qcut" and threshold == -2.5


def test_zero_weights_leave_the_actor_unchanged() -> None:
    # qadv with equal Q everywhere gives weight 0: the loss and its gradient vanish.
    model = make_model(n_uniform_samples=2)
    with th.no_grad():
        for q_net in model.critic.q_networks:
            for param in q_net.parameters():
                param.zero_()
    before = [p.clone() for p in model.actor.parameters()]
    stats = model._actor_step(observations(), 1.0)
    assert stats["actor_loss"].item() == 0.0
    assert stats["positive_weight_fraction"].item() == 0.0
    for old, new in zip(before, model.actor.parameters(), strict=True):
        assert th.equal(old, new)


def test_positive_weights_move_the_actor() -> None:
    model = make_model()
    before = [p.clone() for p in model.actor.parameters()]
    stats = model._actor_step(observations(), 0.1)
    assert stats["actor_loss"].item() > 0.0
    assert any(not th.equal(old, new) for old, new in zip(before, model.actor.parameters(), strict=True))


# --- entropy schedules -------------------------------------------------------------------------


def test_constant_entropy_coef() -> None:
    schedule = make_entropy_schedule(0.01)
    assert [schedule(p) for p in (1.0, 0.5, 0.0)] == [0.01, 0.01, 0.01]
    assert make_entropy_schedule(0)(0.3) == 0.0
    assert isinstance(make_entropy_schedule(0)(0.3), float)


def test_linear_entropy_coef() -> None:
    schedule = make_entropy_schedule("lin_0.02")
    assert schedule(1.0) == pytest.approx(0.02)
    assert schedule(0.5) == pytest.approx(0.01)
    assert schedule(0.0) == 0.0


def test_floored_linear_entropy_coef() -> None:
    schedule = make_entropy_schedule("lin_0.02_0.002")
    assert isinstance(schedule, FlooredLinearSchedule)
    assert schedule(1.0) == pytest.approx(0.02)
    assert schedule(0.5) == pytest.approx(0.01)
    assert schedule(0.1) == pytest.approx(0.002)
    assert schedule(0.05) == pytest.approx(0.002)
    assert schedule(0.0) == pytest.approx(0.002)
    assert "0.02" in repr(schedule) and "0.002" in repr(schedule)
    # It pickles, so it can be saved with a model.
    assert pickle.loads(pickle.dumps(schedule))(0.5) == pytest.approx(0.01)


def test_callable_entropy_coef_passthrough() -> None:
    def schedule(progress: float) -> float:
        return 0.3 * progress

    assert make_entropy_schedule(schedule) is schedule


@pytest.mark.parametrize(
    "bad",
    [
        "bogus",
        "lin",
        "lin_",
        "lin_x",
        "lin_0.1_0.01_0.001",
        "exp_0.1",
        "lin_-0.1",
        "lin_0.1_-1",
        "lin_nan",
        "lin_inf",
        "lin_0.1_nan",
    ],
)
def test_bad_entropy_strings(bad: str) -> None:
    with pytest.raises(ValueError, match="entropy_coef"):
        make_entropy_schedule(bad)


@pytest.mark.parametrize("bad", [-1, -0.01, math.nan, math.inf, True, None, [0.1]])
def test_bad_entropy_values(bad: Any) -> None:
    with pytest.raises(ValueError, match="entropy_coef"):
        make_entropy_schedule(bad)


def test_negative_floored_schedule() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        FlooredLinearSchedule(-0.1)
    with pytest.raises(ValueError, match=">= 0"):
        FlooredLinearSchedule(0.1, -0.1)


def test_train_uses_the_entropy_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    # train() evaluates the schedule at the current remaining progress and passes it to _actor_step.
    model = make_model(entropy_coef="lin_0.04_0.001")
    model.learn(60)
    seen: list[float] = []
    original = model._actor_step

    def recording_actor_step(observations: Any, entropy_coef: float) -> dict[str, th.Tensor]:
        seen.append(entropy_coef)
        return original(observations, entropy_coef)

    monkeypatch.setattr(model, "_actor_step", recording_actor_step)
    model._current_progress_remaining = 0.25
    model.train(gradient_steps=2, batch_size=8)
    assert seen == [pytest.approx(0.01), pytest.approx(0.01)]
    model._current_progress_remaining = 0.0
    model.train(gradient_steps=1, batch_size=8)
    assert seen[-1] == pytest.approx(0.001)
