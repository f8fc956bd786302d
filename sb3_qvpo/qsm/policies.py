"""
QSM's policy: the shared diffusion policy with the official code's networks and acting rule
(github Alescontrela/score_matching_rl, ``score_matching_learner.py`` ``create`` and
``sample_actions``; ``examples/states/configs/score_matching_config.py``).
"""

from typing import Any

from gymnasium import spaces
from stable_baselines3.common.torch_layers import CombinedExtractor, NatureCNN
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from sb3_qvpo.common.policies import DiffusionPolicy, with_default_extractor


def qsm_policy_defaults() -> dict[str, Any]:
    """The official settings, as :class:`~sb3_qvpo.common.policies.DiffusionPolicy` keyword arguments."""
    return dict(
        net_arch=[512, 512],  # config: actor_hidden_dims = critic_hidden_dims = (512, 512)
        activation_fn=nn.Mish,  # the DDPM's reverse MLP
        critic_activation_fn=nn.ReLU,  # jaxrl5 MLP's default activation
        n_diffusion_steps=5,
        beta_schedule="vp",
        time_embedding="fourier",  # FourierFeatures(64, learnable=True) ...
        time_embedding_dim=64,
        time_hidden_dim=128,  # ... then MLP((128, 128), mish)
        time_features_dim=128,
        weight_init="xavier_uniform",  # jaxrl5 default_init, zero biases
        reverse_process="xt_clipped",  # ddpm_sampler: x_t clipped after every step, variance beta_t
        n_behavior_samples=1,  # one DDPM sample ...
        exploration_noise=0.1,  # ... plus N(0, 0.1), clipped, while collecting
        n_eval_samples=1,  # eval_actions: one sample, no best-of-N
        use_actor_target=False,  # no target score model
        optimizer_kwargs={},  # optax.adam's defaults (eps 1e-8)
    )


class QSMPolicy(DiffusionPolicy):
    """
    Diffusion actor (2x512 Mish, T = 5 vp, learned Fourier time features), twin ReLU critic
    (2x512) and its target; no actor target. Acting: one sample plus N(0, 0.1) exploration noise;
    ``predict(deterministic=True)``: one sample from a fixed-seed generator. Any keyword of
    :class:`~sb3_qvpo.common.policies.DiffusionPolicy` overrides these defaults.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Box, lr_schedule: Schedule, **kwargs: Any):
        super().__init__(observation_space, action_space, lr_schedule, **{**qsm_policy_defaults(), **kwargs})


MlpPolicy = QSMPolicy
CnnPolicy = with_default_extractor(QSMPolicy, NatureCNN, "CnnPolicy", __name__)
MultiInputPolicy = with_default_extractor(QSMPolicy, CombinedExtractor, "MultiInputPolicy", __name__)
