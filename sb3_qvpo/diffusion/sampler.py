"""DDPM sampling (the reverse chain, reference implementation) and the denoising loss, for actions in [-1, 1]."""

from collections.abc import Sequence

import torch as th

from sb3_qvpo.diffusion.noise_net import NoisePredictionNet
from sb3_qvpo.diffusion.reverse import POSTERIOR_X0_CLIPPED, ReverseProcess
from sb3_qvpo.diffusion.schedules import DiffusionSchedule


def draw_chain_noise(
    shape: tuple[int, int], n_steps: int, generator: th.Generator | None, device: th.device, dtype: th.dtype
) -> list[th.Tensor]:
    """
    The chain's random draws in the order the reverse chain takes them: the starting x_T, then the
    noise of steps T-1 .. 1, each of ``shape``.
    """
    return [th.randn(shape, device=device, dtype=dtype, generator=generator) for _ in range(n_steps)]


def sample_actions(
    noise_net: NoisePredictionNet,
    schedule: DiffusionSchedule,
    features: th.Tensor,
    generator: th.Generator | None = None,
    n_per_state: int = 1,
    process: ReverseProcess = POSTERIOR_X0_CLIPPED,
    noise_scale: float = 1.0,
) -> th.Tensor:
    """
    Run the reverse chain ``n_per_state`` times per row of ``features`` (the reference path).

    By default (``process``) the predicted x0 is clamped to [-1, 1] at every step and the chain
    uses the posterior mean q(x_{t-1} | x_t, x0), with no noise added at the last step (t = 0).
    ``noise_scale`` multiplies the noise of every step (0: DIPO's noise-free evaluation chain); the
    draws are taken either way. Rows of the result are grouped by state: rows
    ``i * n_per_state ... (i + 1) * n_per_state - 1`` belong to state i.
    """
    if n_per_state > 1:
        features = features.repeat_interleave(n_per_state, dim=0)
    shape = (features.shape[0], noise_net.action_dim)
    draws = draw_chain_noise(shape, schedule.n_steps, generator, features.device, features.dtype)
    return reverse_chain_from_draws(noise_net, schedule, features, draws, process, noise_scale)


def reverse_chain_from_draws(
    noise_net: NoisePredictionNet,
    schedule: DiffusionSchedule,
    features: th.Tensor,
    draws: Sequence[th.Tensor] | th.Tensor,
    process: ReverseProcess = POSTERIOR_X0_CLIPPED,
    noise_scale: float = 1.0,
) -> th.Tensor:
    """
    The reverse chain of :func:`sample_actions` for one row of ``features`` per sample, its random
    draws given (:func:`draw_chain_noise`'s order): also what an exported graph computes.
    """
    steps = schedule.network_steps(features.device)
    coefficients = schedule.reverse_steps(process.variance, noise_scale)
    x = draws[0]
    for draw_index, t in enumerate(reversed(range(schedule.n_steps)), start=1):
        recip, recipm1, coef_x0, coef_xt, std = coefficients[t]
        eps = noise_net(x, noise_net.embed_time(steps[t : t + 1]), features)
        x0 = recip * x - recipm1 * eps
        if process.clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        x = coef_x0 * x0 + coef_xt * x
        if t > 0:
            x = x + std * draws[draw_index]
        if process.clip_xt:
            x = x.clamp(-1.0, 1.0)
    return x.clamp(-1.0, 1.0)


def add_noise(schedule: DiffusionSchedule, x0: th.Tensor, t: th.Tensor, noise: th.Tensor) -> th.Tensor:
    """Forward process: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
    return schedule.sqrt_alphas_cumprod[t].unsqueeze(-1) * x0 + schedule.sqrt_one_minus_alphas_cumprod[t].unsqueeze(-1) * noise


def noise_actions(
    schedule: DiffusionSchedule, actions: th.Tensor, generator: th.Generator | None = None
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """One uniformly drawn step t per row and its forward sample: returns (t, noise, x_t)."""
    t = th.randint(0, schedule.n_steps, (actions.shape[0],), device=actions.device, generator=generator)
    noise = th.randn(actions.shape, device=actions.device, dtype=actions.dtype, generator=generator)
    return t, noise, add_noise(schedule, actions, t, noise)


def denoising_errors(
    noise_net: NoisePredictionNet,
    schedule: DiffusionSchedule,
    actions: th.Tensor,
    features: th.Tensor,
    generator: th.Generator | None = None,
) -> th.Tensor:
    """
    Per-sample epsilon-prediction error, averaged over action dimensions, at one random step each.

    Weighting these per-sample errors and averaging gives the (Q-weighted) variational loss.
    """
    t, noise, noisy_actions = noise_actions(schedule, actions, generator)
    predicted = noise_net(noisy_actions, noise_net.embed_time(t), features)
    return (predicted - noise).pow(2).mean(dim=-1)
