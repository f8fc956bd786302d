"""Noise schedules of the DDPM forward process, and the per-step coefficients derived from them."""

import math
from collections.abc import Sequence

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


def strided_timesteps(n_steps: int, n_sampling_steps: int) -> list[int]:
    """
    ``n_sampling_steps`` of the steps 0 .. T-1, evenly spaced and rounded, from 0 to T-1 (one step:
    T-1 alone), increasing. Improved DDPM's (Nichol & Dhariwal, 2021) evenly spaced respacing.
    """
    check_count("n_sampling_steps", n_sampling_steps)
    if n_sampling_steps > n_steps:
        raise ValueError(f"A chain of T={n_steps} steps cannot be sampled with {n_sampling_steps} steps (at most T)")
    if n_sampling_steps == 1:
        return [n_steps - 1]
    return [round(index * (n_steps - 1) / (n_sampling_steps - 1)) for index in range(n_sampling_steps)]


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

    With ``timesteps`` (a strictly increasing subset of 0 .. T-1), the schedule is the same forward
    process seen at those steps only: a chain of ``len(timesteps)`` steps whose alpha_bar at step i
    is the T-step schedule's at ``timesteps[i]`` (beta_i = 1 - abar(tau_i) / abar(tau_{i-1})), the
    noise network being asked for step ``timesteps[i]`` (:meth:`network_steps`). Its ancestral
    sampler is DDIM's with eta = 1 (Song et al., 2021) on the trained schedule: fewer denoising
    steps at acting time, no retraining. Such a schedule is for sampling only (:meth:`strided`).
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

    def __init__(self, n_steps: int, beta_schedule: str = "cosine", timesteps: Sequence[int] | None = None):
        super().__init__()
        check_count("n_diffusion_steps", n_steps)
        self.trained_steps = n_steps  # T, the chain the noise network was trained on
        self.beta_schedule = beta_schedule

        betas = make_betas(beta_schedule, n_steps).double()
        if timesteps is None:
            self.timesteps = list(range(n_steps))
        else:
            self.timesteps = [int(step) for step in timesteps]
            if not self.timesteps or any(
                later <= earlier for earlier, later in zip(self.timesteps, self.timesteps[1:], strict=False)
            ):
                raise ValueError(f"timesteps must be a non-empty increasing sequence, got {list(timesteps)!r}")
            if self.timesteps[0] < 0 or self.timesteps[-1] >= n_steps:
                raise ValueError(f"timesteps must lie in [0, T-1={n_steps - 1}], got {list(timesteps)!r}")
            seen = th.cumprod(1.0 - betas, dim=0)[self.timesteps]
            betas = 1.0 - seen / th.cat([th.ones(1, dtype=th.float64), seen[:-1]])
        self.n_steps = len(self.timesteps)  # the chain's length
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

    @property
    def is_strided(self) -> bool:
        return self.n_steps != self.trained_steps

    def network_steps(self, device: th.device | str | None = None) -> th.Tensor:
        """The step index the noise network is given at each of the chain's steps (0 .. T-1, or the strided subset)."""
        return th.tensor(self.timesteps, device=device)

    def strided(self, n_sampling_steps: int) -> "DiffusionSchedule":
        """
        This schedule sampled in ``n_sampling_steps`` evenly spaced steps (:func:`strided_timesteps`);
        itself when that is all of its steps, so S = T keeps the T-step chain bit for bit.
        """
        if self.is_strided:
            raise ValueError("A strided schedule cannot be strided again: stride the trained one")
        if n_sampling_steps == self.n_steps:
            return self
        timesteps = strided_timesteps(self.n_steps, n_sampling_steps)
        return DiffusionSchedule(self.n_steps, self.beta_schedule, timesteps).to(self.betas.device)

    def extra_repr(self) -> str:
        strided = f", timesteps={self.timesteps}" if self.is_strided else ""
        return f"n_steps={self.n_steps}, beta_schedule={self.beta_schedule!r}{strided}"
