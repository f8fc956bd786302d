"""DDPM sampling (the reverse chain, reference implementation) and the denoising loss, for actions in [-1, 1]."""

import torch as th

from sb3_qvpo.diffusion.noise_net import NoisePredictionNet
from sb3_qvpo.diffusion.reverse import POSTERIOR_X0_CLIPPED, ReverseProcess
from sb3_qvpo.diffusion.schedules import DiffusionSchedule


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
    n_rows = features.shape[0]
    shape = (n_rows, noise_net.action_dim)
    x = th.randn(shape, device=features.device, dtype=features.dtype, generator=generator)
    steps = th.arange(schedule.n_steps, device=features.device)
    coefficients = schedule.reverse_steps(process.variance, noise_scale)
    for t in reversed(range(schedule.n_steps)):
        recip, recipm1, coef_x0, coef_xt, std = coefficients[t]
        eps = noise_net(x, noise_net.embed_time(steps[t : t + 1]), features)
        x0 = recip * x - recipm1 * eps
        if process.clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        x = coef_x0 * x0 + coef_xt * x
        if t > 0:
            x = x + std * th.randn(shape, device=features.device, dtype=features.dtype, generator=generator)
        if process.clip_xt:
            x = x.clamp(-1.0, 1.0)
    return x.clamp_(-1.0, 1.0)


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
