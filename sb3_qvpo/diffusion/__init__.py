"""Diffusion machinery, independent of RL: schedules, noise network, sampler."""

from sb3_qvpo.diffusion.fast_sampler import sample_actions_fast
from sb3_qvpo.diffusion.noise_net import NoisePredictionNet, SinusoidalTimeEmbedding, truncated_normal_init
from sb3_qvpo.diffusion.sampler import add_noise, denoising_errors, sample_actions
from sb3_qvpo.diffusion.schedules import BETA_SCHEDULES, DiffusionSchedule, make_betas

__all__ = [
    "BETA_SCHEDULES",
    "DiffusionSchedule",
    "NoisePredictionNet",
    "SinusoidalTimeEmbedding",
    "add_noise",
    "denoising_errors",
    "make_betas",
    "sample_actions",
    "sample_actions_fast",
    "truncated_normal_init",
]
