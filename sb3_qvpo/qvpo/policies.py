"""QVPO's policies: the shared diffusion policy with the release's defaults (best-of-K acting)."""

from stable_baselines3.common.torch_layers import CombinedExtractor, NatureCNN

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
    time features, truncated-normal init, Adam eps 1e-5, best of K_b = 4 candidates when acting
    and of 32 for ``predict(deterministic=True)``. See :class:`~sb3_qvpo.common.policies.DiffusionPolicy`.
    """


MlpPolicy = QVPOPolicy
CnnPolicy = with_default_extractor(QVPOPolicy, NatureCNN, "CnnPolicy", __name__)
MultiInputPolicy = with_default_extractor(QVPOPolicy, CombinedExtractor, "MultiInputPolicy", __name__)
