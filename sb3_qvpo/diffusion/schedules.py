"""Noise schedules of the DDPM forward process, and the per-step coefficients derived from them."""

import math

import torch as th
from torch import nn

from sb3_qvpo.common.checks import check_count

BETA_SCHEDULES = ("cosine", "linear", "vp")


def cosine_beta_schedule(n_steps: int, s: float = 0.008) -> th.Tensor:
    """Nichol & Dhariwal's schedule: alpha_bar follows a squared cosine, betas clipped to [0, 0.999]."""
    grid = th.linspace(0, n_steps, n_steps + 1, dtype=th.float64)
    alphas_cumprod = th.cos(((grid / n_steps) + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
    return betas.clamp(0.0, 0.999).float()


def linear_beta_schedule(n_steps: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> th.Tensor:
    return th.linspace(beta_start, beta_end, n_steps, dtype=th.float64).float()


def vp_beta_schedule(n_steps: int, b_min: float = 0.1, b_max: float = 10.0) -> th.Tensor:
    """Discretised variance-preserving SDE (Song et al.), as used by Diffusion-QL for short chains."""
    t = th.arange(1, n_steps + 1, dtype=th.float64)
    alpha = th.exp(-b_min / n_steps - 0.5 * (b_max - b_min) * (2 * t - 1) / n_steps**2)
    return (1 - alpha).float()


def make_betas(name: str, n_steps: int) -> th.Tensor:
    if name == "cosine":
        return cosine_beta_schedule(n_steps)
    if name == "linear":
        return linear_beta_schedule(n_steps)
    if name == "vp":
        return vp_beta_schedule(n_steps)
    raise ValueError(f"Unknown beta_schedule {name!r}: expected one of {BETA_SCHEDULES}")


class DiffusionSchedule(nn.Module):
    """
    Every coefficient of the forward and reverse processes, precomputed once.

    The tensors are non-persistent buffers: they follow ``.to(device)`` but are rebuilt from
    ``(n_steps, beta_schedule)`` rather than stored in checkpoints, so a saved model cannot carry
    a schedule that disagrees with its own hyper-parameters.
    """

    betas: th.Tensor
    alphas_cumprod: th.Tensor
    sqrt_alphas_cumprod: th.Tensor
    sqrt_one_minus_alphas_cumprod: th.Tensor
    sqrt_recip_alphas_cumprod: th.Tensor
    sqrt_recipm1_alphas_cumprod: th.Tensor
    posterior_mean_coef_x0: th.Tensor
    posterior_mean_coef_xt: th.Tensor
    posterior_std: th.Tensor

    def __init__(self, n_steps: int, beta_schedule: str = "cosine"):
        super().__init__()
        check_count("n_diffusion_steps", n_steps)
        self.n_steps = n_steps
        self.beta_schedule = beta_schedule

        betas = make_betas(beta_schedule, n_steps).double()
        alphas = 1.0 - betas
        alphas_cumprod = th.cumprod(alphas, dim=0)
        alphas_cumprod_prev = th.cat([th.ones(1, dtype=th.float64), alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        # log(1e-20) floor as in DDPM implementations: the t = 0 variance is exactly 0.
        posterior_log_variance = th.log(posterior_variance.clamp(min=1e-20))

        coefficients = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1.0).sqrt(),
            "posterior_mean_coef_x0": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            "posterior_mean_coef_xt": (1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod),
            "posterior_std": (0.5 * posterior_log_variance).exp(),
        }
        for name, value in coefficients.items():
            self.register_buffer(name, value.float(), persistent=False)
        # Python copies for the reverse chain, where every row shares one step: scalars avoid
        # indexing (and, on GPU, a device round trip) at each of the T steps.
        self.reverse_coefficients: list[tuple[float, float, float, float, float]] = list(
            zip(
                coefficients["sqrt_recip_alphas_cumprod"].tolist(),
                coefficients["sqrt_recipm1_alphas_cumprod"].tolist(),
                coefficients["posterior_mean_coef_x0"].tolist(),
                coefficients["posterior_mean_coef_xt"].tolist(),
                coefficients["posterior_std"].tolist(),
                strict=True,
            )
        )

        self._beta_stds: list[float] = coefficients["betas"].sqrt().tolist()

    def reverse_steps(
        self, variance: str = "posterior", noise_scale: float = 1.0
    ) -> list[tuple[float, float, float, float, float]]:
        """
        Per step t: (sqrt(1 / abar_t), sqrt(1 / abar_t - 1), posterior coefficients of x0 and x_t,
        noise std), the std being the posterior one or sqrt(beta_t) (see
        :class:`~sb3_qvpo.diffusion.reverse.ReverseProcess`), times ``noise_scale`` (0: a noise-free chain).
        """
        if variance == "posterior":
            stds = [row[4] for row in self.reverse_coefficients]
        elif variance == "beta":
            stds = self._beta_stds
        else:
            raise ValueError(f"Unknown reverse-step variance {variance!r}")
        return [(*row[:4], noise_scale * std) for row, std in zip(self.reverse_coefficients, stds, strict=True)]

    def extra_repr(self) -> str:
        return f"n_steps={self.n_steps}, beta_schedule={self.beta_schedule!r}"
