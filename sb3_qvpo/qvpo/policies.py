"""QVPO's policies: the shared diffusion policy with the release's defaults (best-of-K acting)."""

from typing import Any

from gymnasium import spaces
from stable_baselines3.common.torch_layers import CombinedExtractor, NatureCNN
from stable_baselines3.common.type_aliases import Schedule

from sb3_qvpo.common.actor import DiffusionActor
from sb3_qvpo.common.critic import candidate_min_q, min_q_values
from sb3_qvpo.common.policies import DEFAULT_NET_ARCH, DiffusionPolicy, best_of_k, with_default_extractor

__all__ = [
    "DEFAULT_NET_ARCH",
    "CnnPolicy",
    "DiffusionActor",
    "MlpPolicy",
    "MultiInputPolicy",
    "QVPOPolicy",
    "best_of_k",
    "candidate_min_q",
    "min_q_values",
]


class QVPOPolicy(DiffusionPolicy):
    """
    Diffusion actor, twin-Q critic and the target copies of both, with the release's defaults:
    3x256 Mish networks (the paper's Table 2 says two layers), T = 20 cosine, 32-dim sinusoidal
    time features, Adam eps 1e-5, best of K_b = 4 candidates when acting and of 32 for
    ``predict(deterministic=True)``. See :class:`~sb3_qvpo.common.policies.DiffusionPolicy`.

    Initialisation (``weight_init``, default "normal"): what the release actually runs, an
    *untruncated* N(0, 1 / (2 sqrt(fan_in))) for every Linear with zero biases. The release's code
    means a normal truncated at 2 std, but its resampling loop rebinds a local name and never writes
    back; ``weight_init="truncated_normal"`` gives that intent (std 0.88x sigma, no weight beyond
    2 std, where the release has about 4.5%).
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Box, lr_schedule: Schedule, **kwargs: Any):
        super().__init__(observation_space, action_space, lr_schedule, **{"weight_init": "normal", **kwargs})


MlpPolicy = QVPOPolicy
CnnPolicy = with_default_extractor(QVPOPolicy, NatureCNN, "CnnPolicy", __name__)
MultiInputPolicy = with_default_extractor(QVPOPolicy, CombinedExtractor, "MultiInputPolicy", __name__)
