"""
How one reverse (denoising) step is taken: the implementations this package follows differ here.

- QVPO's release, DIPO (``agent/diffusion.py``) and Diffusion-QL: the predicted x0 is clamped to
  [-1, 1], the step moves to the posterior mean q(x_{t-1} | x_t, x0) and adds noise with the
  posterior standard deviation.
- QSM (``jaxrl5/networks/diffusion.py``, ``ddpm_sampler``): x_{t-1} = (x_t - beta_t / sqrt(1 -
  abar_t) eps) / sqrt(alpha_t) + sqrt(beta_t) z, then x_{t-1} itself is clipped to [-1, 1]. The
  mean is the posterior mean with an unclamped x0 (the same expression), so both are one step
  with different clipping and variance.
"""

from dataclasses import dataclass

VARIANCES = ("posterior", "beta")


@dataclass(frozen=True)
class ReverseProcess:
    """
    :param clip_x0: clamp the predicted x0 to [-1, 1] before taking the posterior mean
    :param clip_xt: clamp x_{t-1} to [-1, 1] after every step
    :param variance: "posterior" (beta_t (1 - abar_{t-1}) / (1 - abar_t)) or "beta" (beta_t)
    """

    clip_x0: bool = True
    clip_xt: bool = False
    variance: str = "posterior"

    def __post_init__(self) -> None:
        if self.variance not in VARIANCES:
            raise ValueError(f"Unknown reverse-step variance {self.variance!r}: expected one of {VARIANCES}")


# QVPO's release, DIPO and Diffusion-QL.
POSTERIOR_X0_CLIPPED = ReverseProcess()
# QSM's official sampler.
BETA_XT_CLIPPED = ReverseProcess(clip_x0=False, clip_xt=True, variance="beta")

REVERSE_PROCESSES = {"x0_clipped": POSTERIOR_X0_CLIPPED, "xt_clipped": BETA_XT_CLIPPED}


def get_reverse_process(name: str) -> ReverseProcess:
    """ "x0_clipped" (QVPO's release, DIPO, Diffusion-QL) or "xt_clipped" (QSM)."""
    try:
        return REVERSE_PROCESSES[name]
    except KeyError:
        raise ValueError(f"Unknown reverse_process {name!r}: expected one of {tuple(REVERSE_PROCESSES)}") from None
