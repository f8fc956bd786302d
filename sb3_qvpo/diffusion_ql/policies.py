"""
Diffusion-QL's policy: the shared diffusion policy with the official code's networks and action
selection (github Zhendong-Wang/Diffusion-Policies-for-Offline-RL, ``agents/model.py`` ``MLP``,
``agents/ql_diffusion.py`` ``Critic`` and ``Diffusion_QL.sample_action``, ``main.py``).
"""

from typing import Any

from gymnasium import spaces
from stable_baselines3.common.torch_layers import CombinedExtractor, NatureCNN
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from sb3_qvpo.common.policies import DiffusionPolicy, with_default_extractor


def diffusion_ql_policy_defaults() -> dict[str, Any]:
    """The official settings, as :class:`~sb3_qvpo.common.policies.DiffusionPolicy` keyword arguments."""
    return dict(
        net_arch=[256, 256, 256],  # MLP's mid_layer and Critic: 3x256 Mish
        activation_fn=nn.Mish,
        n_diffusion_steps=5,  # main.py --T
        beta_schedule="vp",  # main.py --beta_schedule
        time_embedding_dim=16,  # MLP(t_dim=16): SinusoidalPosEmb(16) ...
        time_hidden_dim=32,  # ... Linear(16, 32), Mish, Linear(32, 16)
        time_features_dim=16,
        weight_init="pytorch_default",  # no init of its own
        reverse_process="x0_clipped",  # p_sample: clipped x0, posterior mean and variance
        n_behavior_samples=50,  # sample_action: the state repeated 50 times ...
        n_eval_samples=50,
        action_selection="softmax",  # ... one drawn by multinomial(softmax(Q)) ...
        score_with_target_critic=True,  # ... Q = critic_target.q_min
        optimizer_kwargs={},  # torch.optim.Adam's defaults (eps 1e-8)
    )


class DiffusionQLPolicy(DiffusionPolicy):
    """
    Diffusion actor (3x256 Mish, T = 5 vp, 16-dim sinusoidal time features) with an EMA target,
    twin 3x256 Mish critic and its target. Acting and ``predict(deterministic=True)``: 50
    samples, one drawn with probabilities softmax(min-Q of the target critic); the deterministic
    draw comes from a fixed-seed generator, so it is reproducible. Any keyword of
    :class:`~sb3_qvpo.common.policies.DiffusionPolicy` overrides these defaults.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Box, lr_schedule: Schedule, **kwargs: Any):
        super().__init__(observation_space, action_space, lr_schedule, **{**diffusion_ql_policy_defaults(), **kwargs})


MlpPolicy = DiffusionQLPolicy
CnnPolicy = with_default_extractor(DiffusionQLPolicy, NatureCNN, "CnnPolicy", __name__)
MultiInputPolicy = with_default_extractor(DiffusionQLPolicy, CombinedExtractor, "MultiInputPolicy", __name__)
