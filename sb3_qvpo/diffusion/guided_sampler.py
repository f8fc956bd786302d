"""
A reverse chain steered by the gradient of a value of the predicted clean sample: plain DDPM steps,
then DSG steps (diffusion with spherical Gaussian constraint, Yang et al., ICML 2024) in the last
``n_guided_steps``. CGPO (Ding et al., ICML 2026, Algorithm 2) makes its actor's training targets
this way; the function knows nothing of critics or states, only a value of x0 to increase.
"""

import math
from collections.abc import Callable

import torch as th

from sb3_qvpo.diffusion.noise_net import NoisePredictionNet
from sb3_qvpo.diffusion.reverse import POSTERIOR_X0_CLIPPED, ReverseProcess
from sb3_qvpo.diffusion.schedules import DiffusionSchedule

# Rows of predicted x0 (n_rows, dim) -> the value of each row (n_rows,) that guidance increases.
ValueOfX0 = Callable[[th.Tensor], th.Tensor]


def dsg_step(
    mean: th.Tensor, std: float, noise: th.Tensor, loss_gradient: th.Tensor, guidance_rate: float, eps: float = 1e-8
) -> th.Tensor:
    """
    One DSG step from the posterior mean ``mean`` (CGPO Algorithm 2):
    d* = -sqrt(d) sigma g / (||g|| + eps), d_m = sigma eps_t + rho (d* - sigma eps_t),
    x_{t-1} = mu + sqrt(d) sigma d_m / ||d_m||, norms per row, g = ``loss_gradient`` (of the loss,
    -value), eps_t = ``noise``, rho = ``guidance_rate``. The step always lies on the sphere of radius
    sqrt(d) sigma around mu, where a Gaussian step of std sigma concentrates; rho = 0 is the
    plain step's direction, rho = 1 steepest descent of the loss. A row whose d_m vanishes takes its
    noise direction: g = 0 (a clamped x0 has no gradient) with rho = 1, or with any rho when the
    noise draw is zero too (action dimension 1 and ``randn`` returning exactly 0.0: a CGPO Pendulum
    run got NaN targets there at update 14,347); when the noise is zero as well, the row stays at mu,
    as the plain step would.
    """
    radius = math.sqrt(mean.shape[-1]) * std
    steepest = -radius * loss_gradient / (loss_gradient.norm(dim=-1, keepdim=True) + eps)
    plain = std * noise
    mixed = plain + guidance_rate * (steepest - plain)
    mixed_norm = mixed.norm(dim=-1, keepdim=True)
    noise_direction = noise / noise.norm(dim=-1, keepdim=True).clamp_min(1e-30)  # 0 where the noise is 0
    direction = th.where(mixed_norm > 0, mixed / mixed_norm.clamp_min(1e-30), noise_direction)
    return mean + radius * direction


def sample_actions_guided(
    noise_net: NoisePredictionNet,
    schedule: DiffusionSchedule,
    features: th.Tensor,
    value_of_x0: ValueOfX0,
    n_guided_steps: int,
    guidance_rate: float,
    generator: th.Generator | None = None,
    process: ReverseProcess = POSTERIOR_X0_CLIPPED,
    eps: float = 1e-8,
) -> th.Tensor:
    """
    One sample per row of ``features``: the reverse chain of :func:`~sb3_qvpo.diffusion.sample_actions`
    (same draws in the same order, so ``n_guided_steps=0`` gives its samples bit for bit) whose last
    ``n_guided_steps`` steps are :func:`dsg_step`\\ s. At a guided step, x0_hat(x_t) = (x_t -
    sqrt(1 - abar_t) eps_theta(x_t)) / sqrt(abar_t) (clamped to [-1, 1] as the process clamps it)
    and g = grad_{x_t} of -value_of_x0(x0_hat(x_t)), differentiated through the noise network
    (no gradient reaches its parameters). The last step has no noise (sigma = 0), so the result is
    x0_hat there, as in Algorithm 2. The returned samples carry no graph.
    """
    n_steps = schedule.n_steps
    if not 0 <= n_guided_steps <= n_steps:
        raise ValueError(f"n_guided_steps (G) must be in [0, T={n_steps}], got {n_guided_steps!r}")
    if not 0.0 <= guidance_rate <= 1.0:
        raise ValueError(f"guidance_rate (rho) must be in [0, 1], got {guidance_rate!r}")
    features = features.detach()
    shape = (features.shape[0], noise_net.action_dim)
    x = th.randn(shape, device=features.device, dtype=features.dtype, generator=generator)
    steps = schedule.network_steps(features.device)
    coefficients = schedule.reverse_steps(process.variance)
    for t in reversed(range(n_steps)):
        recip, recipm1, coef_x0, coef_xt, std = coefficients[t]
        time_features = noise_net.embed_time(steps[t : t + 1])
        guided = t < n_guided_steps and t > 0 and std > 0
        if guided:
            with th.enable_grad():
                x_in = x.detach().requires_grad_(True)
                x0 = recip * x_in - recipm1 * noise_net(x_in, time_features, features)
                if process.clip_x0:
                    x0 = x0.clamp(-1.0, 1.0)
                (loss_gradient,) = th.autograd.grad(-value_of_x0(x0).sum(), x_in)
            x0 = x0.detach()
        else:
            with th.no_grad():
                x0 = recip * x - recipm1 * noise_net(x, time_features, features)
                if process.clip_x0:
                    x0 = x0.clamp(-1.0, 1.0)
        x = coef_x0 * x0 + coef_xt * x
        if t > 0:
            noise = th.randn(shape, device=features.device, dtype=features.dtype, generator=generator)
            x = dsg_step(x, std, noise, loss_gradient, guidance_rate, eps) if guided else x + std * noise
        if process.clip_xt:
            x = x.clamp(-1.0, 1.0)
    return x.clamp_(-1.0, 1.0).detach()
