"""
CGPO's policy: the shared diffusion actor (and its target), sb3-contrib's TQC quantile critics in
place of the twin-Q critic, and the value-calibrated network V_phi(s) (Ding et al., ICML 2026,
eq. 14-17). There is no official code: the choices the paper leaves open are listed in the README.
"""

from typing import Any

import torch as th
from gymnasium import spaces
from sb3_contrib.tqc.policies import Critic as QuantileCritic
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, NatureCNN, create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_qvpo.cgpo.quantiles import candidate_q_hat
from sb3_qvpo.common.checks import check_count
from sb3_qvpo.common.policies import DiffusionPolicy, draw_samples, pick_candidates, with_default_extractor
from sb3_qvpo.diffusion import get_weight_init


class ValueNetwork(BaseModel):
    """V_phi(s): an MLP on the observation's features, one value per row (eq. 16-17)."""

    features_extractor: BaseFeaturesExtractor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.Mish,
        normalize_images: bool = True,
    ):
        super().__init__(
            observation_space, action_space, features_extractor=features_extractor, normalize_images=normalize_images
        )
        self.net = nn.Sequential(*create_mlp(features_dim, 1, net_arch, activation_fn))

    def forward(self, obs: PyTorchObs) -> th.Tensor:
        return self.net(self.extract_features(obs, self.features_extractor)).squeeze(-1)


def cgpo_policy_defaults() -> dict[str, Any]:
    """Tables 4-5 where they differ from the shared (QVPO release) defaults, and what acting needs."""
    return dict(
        net_arch=[256, 256],  # Table 4: 2 x 256, Mish
        weight_init="normal",  # not given; as QVPO's release runs (its authors' previous code)
        n_behavior_samples=4,  # K_b
        n_eval_samples=32,  # not given; QVPO's evaluation
        # The compiled acting path scores with a twin-Q critic; CGPO's quantile critic acts eagerly.
        compile_acting_after=None,
    )


class CGPOPolicy(DiffusionPolicy):
    """
    Diffusion actor (2x256 Mish, T = 20 cosine) with a Polyak target, ``n_critics`` TQC quantile
    critics of ``n_quantiles`` each (and their target), and V_phi. Acting: the best by Qhat (eq. 14)
    of ``n_behavior_samples`` unguided samples (``n_eval_samples`` for ``predict(deterministic=True)``,
    from a generator reseeded at each call). Any keyword of
    :class:`~sb3_qvpo.common.policies.DiffusionPolicy` overrides these defaults.

    :param n_quantiles: M, quantiles per critic net (TQC's 25)
    :param top_quantiles_to_drop_per_net: k, the highest quantiles of each net left out of Qhat
        and of the TD target (TQC's 2)
    :param value_net_arch: V_phi's hidden layers (None: the critic's)
    """

    critic: QuantileCritic  # type: ignore[assignment]
    critic_target: QuantileCritic  # type: ignore[assignment]
    value_net: ValueNetwork

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        n_quantiles: int = 25,
        top_quantiles_to_drop_per_net: int = 2,
        value_net_arch: list[int] | None = None,
        **kwargs: Any,
    ):
        check_count("n_quantiles", n_quantiles)
        check_count("top_quantiles_to_drop_per_net", top_quantiles_to_drop_per_net, minimum=0)
        if top_quantiles_to_drop_per_net >= n_quantiles:
            raise ValueError(
                f"top_quantiles_to_drop_per_net (k={top_quantiles_to_drop_per_net}) must be below n_quantiles "
                f"(M={n_quantiles}): Qhat averages the M - k lowest quantiles of each net"
            )
        # Read by _build, which the base class's __init__ calls.
        self.n_quantiles = n_quantiles
        self.top_quantiles_to_drop_per_net = top_quantiles_to_drop_per_net
        self.value_net_arch = value_net_arch
        super().__init__(observation_space, action_space, lr_schedule, **{**cgpo_policy_defaults(), **kwargs})

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        critic_kwargs: dict[str, Any] = self.critic_kwargs
        value_arch = list(critic_kwargs["net_arch"] if self.value_net_arch is None else self.value_net_arch)
        features_extractor = self.make_features_extractor()
        self.value_net = ValueNetwork(
            self.observation_space,
            self.action_space,  # type: ignore[arg-type]
            value_arch,
            features_extractor,
            features_extractor.features_dim,
            critic_kwargs["activation_fn"],
            self.normalize_images,
        ).to(self.device)
        self.value_net.net.apply(get_weight_init(self.weight_init))
        self.value_net.optimizer = self.optimizer_class(
            self.value_net.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )  # type: ignore[call-arg]

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> QuantileCritic:  # type: ignore[override]
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return self.initialised_critic(QuantileCritic(**critic_kwargs, n_quantiles=self.n_quantiles))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            n_quantiles=self.n_quantiles,
            top_quantiles_to_drop_per_net=self.top_quantiles_to_drop_per_net,
            value_net_arch=self.value_net_arch,
        )
        return data

    @th.no_grad()
    def act(
        self, observation: PyTorchObs, n_samples: int, generator: th.Generator | None = None, noise_scale: float = 1.0
    ) -> th.Tensor:
        """The best by Qhat of ``n_samples`` unguided samples per observation (one sample: the critic is not consulted)."""
        actor = self.actor
        actor_features = actor.extract_features(observation, actor.features_extractor)
        candidates = draw_samples(actor, actor_features, generator, n_samples, noise_scale, self.n_acting_steps)
        if n_samples == 1:
            return candidates
        critic = self.acting_critic()
        critic_features = critic.extract_features(observation, critic.features_extractor)
        q_values = self.score_candidates(critic, critic_features, candidates, n_samples)
        return pick_candidates(candidates, q_values, self.action_selection, generator)[0]

    def score_candidates(
        self, critic: Any, critic_features: th.Tensor, candidates: th.Tensor, n_samples: int, fast_path: bool = True
    ) -> th.Tensor:
        """Qhat (eq. 14) of ``n_samples`` candidates per state, (n_states, n_samples); one path, fast or not."""
        assert isinstance(critic, QuantileCritic)
        return candidate_q_hat(critic, critic_features, candidates, n_samples, self.top_quantiles_to_drop_per_net)

    def set_training_mode(self, mode: bool) -> None:
        if self.training != mode or self.value_net.training != mode:
            self.value_net.set_training_mode(mode)
        super().set_training_mode(mode)


MlpPolicy = CGPOPolicy
CnnPolicy = with_default_extractor(CGPOPolicy, NatureCNN, "CnnPolicy", __name__)
MultiInputPolicy = with_default_extractor(CGPOPolicy, CombinedExtractor, "MultiInputPolicy", __name__)
