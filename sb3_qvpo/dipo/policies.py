"""
DIPO's policy: the shared diffusion policy with the official code's defaults (github
BellmanTimeHut/DIPO, ``agent/model.py`` ``Model`` and ``Critic``, ``agent/diffusion.py``, ``main.py``).
"""

from typing import Any

from gymnasium import spaces
from stable_baselines3.common.torch_layers import CombinedExtractor, NatureCNN
from stable_baselines3.common.type_aliases import Schedule

from sb3_qvpo.common.policies import DiffusionPolicy, with_default_extractor


def dipo_policy_defaults() -> dict[str, Any]:
    """Where DIPO differs from the shared (QVPO release) defaults: 3x256 Mish, 32-dim sinusoidal time, eps 1e-5 are common."""
    return dict(
        n_diffusion_steps=100,  # main.py --n_timesteps, QVPO's Table 3
        beta_schedule="cosine",
        n_behavior_samples=1,  # sample_action(eval=False): one sample, full noise
        n_eval_samples=1,  # sample_action(eval=True): one sample ...
        eval_noise_scale=0.0,  # ... of the noise-free chain (noise_ratio 0)
        # agent/helpers.py init_weights means a 2-std truncated normal, but its resampling loop never
        # writes back: what runs is the untruncated N(0, 1/(2 sqrt(fan_in))) ("truncated_normal": the intent)
        weight_init="normal",
    )


class DIPOPolicy(DiffusionPolicy):
    """
    Diffusion actor (3x256 Mish, T = 100 cosine) with an EMA target, twin 3x256 Mish critic and
    its target, every Linear initialised as the official code runs (untruncated normal; the
    truncated normal it means is ``weight_init="truncated_normal"``). Acting: one sample;
    ``predict(deterministic=True)``: one sample of the noise-free chain. Any keyword of
    :class:`~sb3_qvpo.common.policies.DiffusionPolicy` overrides these defaults.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Box, lr_schedule: Schedule, **kwargs: Any):
        super().__init__(observation_space, action_space, lr_schedule, **{**dipo_policy_defaults(), **kwargs})


MlpPolicy = DIPOPolicy
CnnPolicy = with_default_extractor(DIPOPolicy, NatureCNN, "CnnPolicy", __name__)
MultiInputPolicy = with_default_extractor(DIPOPolicy, CombinedExtractor, "MultiInputPolicy", __name__)
