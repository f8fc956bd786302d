"""Diffusion machinery, independent of RL: schedules, noise network, reverse chains, denoising loss."""

from sb3_qvpo.diffusion.fast_sampler import sample_actions_fast
from sb3_qvpo.diffusion.guided_sampler import dsg_step, sample_actions_guided
from sb3_qvpo.diffusion.noise_net import (
    LearnableFourierTimeEmbedding,
    NoisePredictionNet,
    SinusoidalTimeEmbedding,
    get_weight_init,
    truncated_normal_init,
    xavier_uniform_init,
)
from sb3_qvpo.diffusion.reverse import (
    BETA_XT_CLIPPED,
    POSTERIOR_X0_CLIPPED,
    REVERSE_PROCESSES,
    ReverseProcess,
    get_reverse_process,
)
from sb3_qvpo.diffusion.sampler import (
    add_noise,
    denoising_errors,
    draw_chain_noise,
    noise_actions,
    reverse_chain_from_draws,
    sample_actions,
)
from sb3_qvpo.diffusion.schedules import BETA_SCHEDULES, DiffusionSchedule, make_betas

__all__ = [
    "BETA_SCHEDULES",
    "BETA_XT_CLIPPED",
    "POSTERIOR_X0_CLIPPED",
    "REVERSE_PROCESSES",
    "DiffusionSchedule",
    "LearnableFourierTimeEmbedding",
    "NoisePredictionNet",
    "ReverseProcess",
    "SinusoidalTimeEmbedding",
    "add_noise",
    "denoising_errors",
    "draw_chain_noise",
    "dsg_step",
    "get_reverse_process",
    "get_weight_init",
    "make_betas",
    "noise_actions",
    "reverse_chain_from_draws",
    "sample_actions",
    "sample_actions_fast",
    "sample_actions_guided",
    "truncated_normal_init",
    "xavier_uniform_init",
]
