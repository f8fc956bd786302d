"""The diffusion actor: a DDPM over actions in [-1, 1], conditioned on SB3 observation features."""

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_qvpo.diffusion import (
    DiffusionSchedule,
    NoisePredictionNet,
    denoising_errors,
    get_reverse_process,
    sample_actions,
    sample_actions_fast,
)


class DiffusionActor(BasePolicy):
    """
    A DDPM over actions in [-1, 1], conditioned on the observation features.

    :param n_diffusion_steps: T, the length of the denoising chain (QVPO's release: 20)
    :param beta_schedule: "cosine" (QVPO, DIPO), "linear" or "vp" (QSM, Diffusion-QL)
    :param time_embedding_dim: size of the raw step features (release: 32 sinusoidal)
    :param time_hidden_dim: hidden width of the time MLP (None: the body's first width, as in the release)
    :param time_features_dim: output of the time MLP (None: ``time_embedding_dim``)
    :param time_embedding: "sinusoidal" or "fourier" (QSM's learned frequencies)
    :param weight_init: "truncated_normal" (release) or "xavier_uniform" (QSM)
    :param reverse_process: "x0_clipped" (release, DIPO) or "xt_clipped" (QSM), see
        :mod:`sb3_qvpo.diffusion.reverse`
    :param fast_path: gradient-free sampling through :func:`~sb3_qvpo.diffusion.sample_actions_fast`
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.Mish,
        n_diffusion_steps: int = 20,
        beta_schedule: str = "cosine",
        time_embedding_dim: int = 32,
        normalize_images: bool = True,
        fast_path: bool = True,
        time_hidden_dim: int | None = None,
        time_features_dim: int | None = None,
        time_embedding: str = "sinusoidal",
        weight_init: str = "truncated_normal",
        reverse_process: str = "x0_clipped",
    ):
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
            squash_output=True,
        )
        self.net_arch = net_arch
        self.features_dim = features_dim
        self.activation_fn = activation_fn
        self.n_diffusion_steps = n_diffusion_steps
        self.beta_schedule = beta_schedule
        self.time_embedding_dim = time_embedding_dim
        self.fast_path = fast_path
        self.time_hidden_dim = time_hidden_dim
        self.time_features_dim = time_features_dim
        self.time_embedding = time_embedding
        self.weight_init = weight_init
        self.reverse_process = reverse_process
        self.process = get_reverse_process(reverse_process)
        if len(net_arch) == 0:
            raise ValueError("The diffusion actor needs at least one hidden layer: net_arch (or net_arch['pi']) is empty")
        self.action_dim = get_action_dim(action_space)
        self.schedule = DiffusionSchedule(n_diffusion_steps, beta_schedule)
        self._strided_schedules: dict[int, DiffusionSchedule] = {}
        self.noise_net = NoisePredictionNet(
            self.action_dim,
            features_dim,
            net_arch,
            activation_fn,
            time_embedding_dim,
            # The release's time MLP is as wide as the body (256).
            time_hidden_dim=net_arch[0] if time_hidden_dim is None else time_hidden_dim,
            time_features_dim=time_features_dim,
            time_embedding=time_embedding,
            weight_init=weight_init,
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                features_dim=self.features_dim,
                activation_fn=self.activation_fn,
                n_diffusion_steps=self.n_diffusion_steps,
                beta_schedule=self.beta_schedule,
                time_embedding_dim=self.time_embedding_dim,
                features_extractor=self.features_extractor,
                fast_path=self.fast_path,
                time_hidden_dim=self.time_hidden_dim,
                time_features_dim=self.time_features_dim,
                time_embedding=self.time_embedding,
                weight_init=self.weight_init,
                reverse_process=self.reverse_process,
            )
        )
        return data

    def sampling_schedule(self, n_steps: int | None = None) -> DiffusionSchedule:
        """
        The schedule of a reverse chain of ``n_steps`` denoising steps: the trained T-step one (None
        or T), or it strided to fewer steps (:meth:`~sb3_qvpo.diffusion.DiffusionSchedule.strided`).
        """
        if n_steps is None or n_steps == self.schedule.n_steps:
            return self.schedule
        strided = self._strided_schedules.get(n_steps)
        if strided is None:
            strided = self._strided_schedules[n_steps] = self.schedule.strided(n_steps)
        if strided.betas.device != self.schedule.betas.device:  # not a submodule: the actor moved without it
            strided.to(self.schedule.betas.device)
        return strided

    def sample(
        self,
        features: th.Tensor,
        generator: th.Generator | None = None,
        n_per_state: int = 1,
        noise_scale: float = 1.0,
        n_steps: int | None = None,
    ) -> th.Tensor:
        """
        ``n_per_state`` actions in [-1, 1] per row of ``features``, grouped by state.
        ``noise_scale`` scales the noise of every reverse step (0: DIPO's noise-free evaluation chain);
        ``n_steps`` denoising steps (None: T; fewer: :meth:`sampling_schedule`).
        """
        sampler = sample_actions_fast if self.fast_path and not th.is_grad_enabled() else sample_actions
        schedule = self.sampling_schedule(n_steps)
        return sampler(
            self.noise_net, schedule, features, generator, n_per_state, process=self.process, noise_scale=noise_scale
        )

    def denoising_errors(self, actions: th.Tensor, features: th.Tensor) -> th.Tensor:
        """Per-sample noise-prediction error: weighted and averaged, the variational loss."""
        return denoising_errors(self.noise_net, self.schedule, actions, features)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self.sample(self.extract_features(obs, self.features_extractor))

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self(observation)


def weighted_denoising_loss(
    actor: DiffusionActor,
    actor_features: th.Tensor,
    target_actions: th.Tensor,
    weights: th.Tensor,
    n_uniform: int,
    entropy_coef: float,
) -> th.Tensor:
    """
    QVPO's Q-weighted variational loss (paper eq. 6 and 10), which CGPO also uses (eq. 18-19):
    the mean of ``weights`` times the denoising error of one target action per state, and of
    ``entropy_coef * weights`` times that of ``n_uniform`` uniform actions in [-1, 1]^d per state
    (the diffusion entropy regulariser). ``weights`` and targets are constants (no gradient).
    """
    train_actions, train_weights, train_features = target_actions, weights, actor_features
    if n_uniform > 0:
        n_states, action_dim = target_actions.shape
        with th.no_grad():
            uniform = 2.0 * th.rand((n_states * n_uniform, action_dim), device=target_actions.device) - 1.0
        train_actions = th.cat([target_actions, uniform])
        train_weights = th.cat([weights, entropy_coef * weights.repeat_interleave(n_uniform)])
        train_features = th.cat([actor_features, actor_features.repeat_interleave(n_uniform, dim=0)])
    return (train_weights * actor.denoising_errors(train_actions, train_features)).mean()
