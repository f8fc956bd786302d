"""The guided reverse chain (CGPO Algorithm 2, DSG steps) against its closed forms and a quadratic value."""

import math

import pytest
import torch as th

from sb3_qvpo.diffusion import DiffusionSchedule, NoisePredictionNet, dsg_step, sample_actions, sample_actions_guided


def make_net(action_dim: int = 3, features_dim: int = 4) -> NoisePredictionNet:
    th.manual_seed(0)
    return NoisePredictionNet(action_dim, features_dim, [32, 32])


@pytest.mark.parametrize("rho", [0.0, 0.35, 0.95, 1.0])
def test_each_dsg_step_lies_sqrt_d_sigma_from_the_mean(rho: float) -> None:
    generator = th.Generator().manual_seed(1)
    mean, noise, gradient = (th.randn(64, 5, generator=generator) for _ in range(3))
    std = 0.37
    step = dsg_step(mean, std, noise, gradient, rho)
    th.testing.assert_close((step - mean).norm(dim=1), th.full((64,), math.sqrt(5) * std))
    direction = (step - mean) / (math.sqrt(5) * std)
    if rho == 1.0:  # steepest descent of the loss: along -g / ||g||
        th.testing.assert_close(direction, -gradient / gradient.norm(dim=1, keepdim=True), rtol=1e-5, atol=1e-6)
    if rho == 0.0:  # the plain step's direction
        th.testing.assert_close(direction, noise / noise.norm(dim=1, keepdim=True))
    # With rho = 1 and no gradient at all, the step falls back to the noise direction (no NaN).
    flat = dsg_step(mean, std, noise, th.zeros_like(gradient), 1.0)
    assert th.isfinite(flat).all()


@pytest.mark.parametrize("rho", [0.0, 0.95, 1.0])
def test_a_zero_noise_draw_with_no_gradient_stays_at_the_mean(rho: float) -> None:
    # One action dimension, a clamped x0 (gradient 0) and randn returning exactly 0.0: d_m and the
    # noise both vanish. A CGPO Pendulum-v1 run got a NaN target there (0 / 0) and diverged.
    mean = th.tensor([[0.7], [0.2]])
    noise = th.tensor([[0.0], [-0.5]])
    step = dsg_step(mean, 0.33, noise, th.zeros_like(mean), rho)
    assert th.isfinite(step).all()
    assert step[0].item() == pytest.approx(0.7)  # the plain step with zero noise: mu
    assert step[1].item() == pytest.approx(0.2 - 0.33)  # the noise direction at radius sigma


def test_no_guided_steps_is_the_plain_chain_bit_for_bit() -> None:
    net, schedule = make_net(), DiffusionSchedule(10, "cosine")
    features = th.randn(16, 4)
    plain = sample_actions(net, schedule, features, th.Generator().manual_seed(3))
    calls: list[int] = []

    def value(x0: th.Tensor) -> th.Tensor:
        calls.append(1)
        return -x0.pow(2).sum(dim=1)

    guided = sample_actions_guided(net, schedule, features, value, 0, 0.95, th.Generator().manual_seed(3))
    assert th.equal(plain, guided) and not calls
    # Guided steps use the same draws: with G > 0 only the last steps differ, and the value is consulted G - 1 times
    # (the last step has no noise, so nothing to steer).
    sample_actions_guided(net, schedule, features, value, 4, 0.95, th.Generator().manual_seed(3))
    assert len(calls) == 3
    for bad_g in (-1, 11):
        with pytest.raises(ValueError, match="n_guided_steps"):
            sample_actions_guided(net, schedule, features, value, bad_g, 0.5)
    with pytest.raises(ValueError, match="guidance_rate"):
        sample_actions_guided(net, schedule, features, value, 2, 1.5)


def test_guidance_raises_a_quadratic_value_and_moves_toward_its_argmax_as_rho_grows() -> None:
    net, schedule = make_net(2, 4), DiffusionSchedule(20, "cosine")
    features = th.randn(512, 4)
    target = th.tensor([0.6, -0.4])

    def value(x0: th.Tensor) -> th.Tensor:
        return -(x0 - target).pow(2).sum(dim=1)

    distances = []
    for rho in (0.0, 0.2, 0.35, 0.5):
        samples = sample_actions_guided(net, schedule, features, value, 10, rho, th.Generator().manual_seed(5))
        distances.append((samples - target).norm(dim=1).mean().item())
        assert samples.abs().max() <= 1.0
    plain = sample_actions(net, schedule, features, th.Generator().manual_seed(5))
    plain_distance = (plain - target).norm(dim=1).mean().item()
    guided = sample_actions_guided(net, schedule, features, value, 10, 0.95, th.Generator().manual_seed(5))
    assert value(guided).mean() > value(plain).mean()
    assert distances == sorted(distances, reverse=True) and distances[-1] < 0.5 * plain_distance
    # Near rho = 1 every guided step still moves the full sqrt(d) sigma_t, now straight along the gradient, so
    # it overshoots a point optimum (here: farther than at rho = 0.5, still far closer than no guidance).
    assert distances[-1] < (guided - target).norm(dim=1).mean().item() < 0.7 * plain_distance
    # The network's parameters receive no gradient from the guidance.
    assert all(parameter.grad is None for parameter in net.parameters())
