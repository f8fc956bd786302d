"""Policies for QVPO: a diffusion actor scored by a twin-Q critic (best-of-K action selection)."""

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    NatureCNN,
    get_actor_critic_arch,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from torch.nn import functional as F

from sb3_qvpo.common.checks import check_count
from sb3_qvpo.diffusion import (
    DiffusionSchedule,
    NoisePredictionNet,
    denoising_errors,
    sample_actions,
    sample_actions_fast,
    truncated_normal_init,
)
from sb3_qvpo.diffusion.fast_ops import LayerRunner, run_layers_, split_linear_by_inputs, state_chunks
from sb3_qvpo.diffusion.fast_sampler import SMALL_BATCH_ROWS, default_chunk_rows

DEFAULT_NET_ARCH = [256, 256, 256]


class DiffusionActor(BasePolicy):
    """
    A DDPM over actions in [-1, 1], conditioned on the observation features.

    :param n_diffusion_steps: T, the length of the denoising chain (release: 20)
    :param beta_schedule: "cosine" (release), "linear" or "vp"
    :param time_embedding_dim: size of the sinusoidal step features (release: 32)
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
        if len(net_arch) == 0:
            raise ValueError("The diffusion actor needs at least one hidden layer: net_arch (or net_arch['pi']) is empty")
        self.action_dim = get_action_dim(action_space)
        self.schedule = DiffusionSchedule(n_diffusion_steps, beta_schedule)
        self.noise_net = NoisePredictionNet(
            self.action_dim,
            features_dim,
            net_arch,
            activation_fn,
            time_embedding_dim,
            # The release's time MLP is as wide as the body (256).
            time_hidden_dim=net_arch[0],
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
            )
        )
        return data

    def sample(self, features: th.Tensor, generator: th.Generator | None = None, n_per_state: int = 1) -> th.Tensor:
        """``n_per_state`` actions in [-1, 1] per row of ``features``, grouped by state."""
        sampler = sample_actions_fast if self.fast_path and not th.is_grad_enabled() else sample_actions
        return sampler(self.noise_net, self.schedule, features, generator, n_per_state)

    def denoising_errors(self, actions: th.Tensor, features: th.Tensor) -> th.Tensor:
        """Per-sample noise-prediction error: weighted and averaged, the variational loss."""
        return denoising_errors(self.noise_net, self.schedule, actions, features)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self.sample(self.extract_features(obs, self.features_extractor))

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self(observation)


def min_q_values(critic: ContinuousCritic, critic_features: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """min over the critic's Q networks, as a flat (n_rows,) tensor; features already extracted."""
    q_input = th.cat([critic_features, actions], dim=1)
    q_values = th.cat([q_net(q_input) for q_net in critic.q_networks], dim=1)
    return q_values.min(dim=1).values


def candidate_min_q(
    critic: ContinuousCritic,
    critic_features: th.Tensor,
    candidates: th.Tensor,
    n_per_state: int,
    fast_path: bool = True,
) -> th.Tensor:
    """
    min-Q of ``n_per_state`` candidates per state, shape (n_states, n_per_state).

    The fast path (gradient-free) computes each Q network's first layer on the state once per
    state instead of once per candidate; it is the same function as :func:`min_q_values`.
    """
    n_states = critic_features.shape[0]
    if not fast_path or th.is_grad_enabled():
        repeated = critic_features.repeat_interleave(n_per_state, dim=0)
        return min_q_values(critic, repeated, candidates).view(n_states, n_per_state)
    grouped = candidates.view(n_states, n_per_state, -1)
    q_values = [_candidate_q(q_net, critic_features, grouped) for q_net in critic.q_networks]
    return th.stack(q_values).min(dim=0).values


def _candidate_q(q_net: nn.Module, critic_features: th.Tensor, grouped: th.Tensor) -> th.Tensor:
    """One Q network on (n_states, n_per_state, action_dim) candidates, its first layer split by input."""
    assert isinstance(q_net, nn.Sequential)
    layers = list(q_net)
    first = layers[0]
    assert isinstance(first, nn.Linear)
    n_states, n_per_state, action_dim = grouped.shape
    w_state, w_action = split_linear_by_inputs(first, [critic_features.shape[1], action_dim])
    state_term = F.linear(critic_features, w_state, first.bias).unsqueeze(1)
    if n_states * n_per_state <= SMALL_BATCH_ROWS:
        # Acting and TD targets: few rows, per-operation overhead dominates; no chunks or buffers.
        hidden = th.matmul(grouped, w_action.t()).add_(state_term)
        return run_layers_(layers[1:], hidden).squeeze(-1)
    chunks = state_chunks(n_states, n_per_state, default_chunk_rows(grouped.device))
    run_tail = LayerRunner(layers[1:], (chunks[0].stop - chunks[0].start) * n_per_state, grouped)
    q_values = th.empty(n_states, n_per_state, device=grouped.device, dtype=grouped.dtype)
    # Chunks of rows keep the hidden activations in cache (see sample_actions_fast).
    for states in chunks:
        hidden = th.matmul(grouped[states], w_action.t()).add_(state_term[states])
        q_values[states] = run_tail(hidden.view(-1, hidden.shape[-1])).view(-1, n_per_state)
    return q_values


@th.no_grad()
def best_of_k(
    actor: DiffusionActor,
    critic: ContinuousCritic,
    obs: PyTorchObs,
    n_samples: int,
    generator: th.Generator | None = None,
) -> tuple[th.Tensor, th.Tensor]:
    """
    Draw ``n_samples`` actions per observation and keep the one with the highest min-Q.

    This is the paper's K-efficient policy: the behaviour policy (K_b), the evaluation policy
    and, with the target networks, the TD-target policy (K_t). Returns (actions, their min-Q).
    """
    actor_features = actor.extract_features(obs, actor.features_extractor)
    critic_features = critic.extract_features(obs, critic.features_extractor)
    n_obs = actor_features.shape[0]
    candidates = actor.sample(actor_features, generator, n_per_state=n_samples)
    q_values = candidate_min_q(critic, critic_features, candidates, n_samples, actor.fast_path)
    best_q, best_index = q_values.max(dim=1)
    best_actions = candidates.view(n_obs, n_samples, -1)[th.arange(n_obs, device=candidates.device), best_index]
    return best_actions, best_q


class QVPOPolicy(BasePolicy):
    """
    Diffusion actor, twin-Q critic and the target copies of both.

    :param net_arch: hidden layers, a list for both networks or ``dict(pi=[...], qf=[...])``
        (release: three layers of 256 for both; the paper's Table 2 says two)
    :param activation_fn: activation of both networks (release: Mish)
    :param n_diffusion_steps: T (release: 20)
    :param beta_schedule: "cosine" (release), "linear" or "vp"
    :param time_embedding_dim: size of the sinusoidal step features (release: 32)
    :param n_critics: number of Q networks, the min of which scores actions (release: 2)
    :param n_behavior_samples: K_b, candidates per observation for ``predict(deterministic=False)``
    :param n_eval_samples: candidates per observation for ``predict(deterministic=True)``
    :param eval_seed: seed of the private generator used by ``predict(deterministic=True)``, so the
        same observation and weights always give the same action
    :param optimizer_kwargs: defaults to Adam's ``eps=1e-5`` (release)
    :param fast_path: sample and score candidates with the gradient-free fast path (first layers
        split by input, cache-sized chunks, fused Mish): the same functions with less work.
        False runs the plain reference modules.
    """

    actor: DiffusionActor
    actor_target: DiffusionActor
    critic: ContinuousCritic
    critic_target: ContinuousCritic

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Mish,
        n_diffusion_steps: int = 20,
        beta_schedule: str = "cosine",
        time_embedding_dim: int = 32,
        n_critics: int = 2,
        n_behavior_samples: int = 4,
        n_eval_samples: int = 32,
        eval_seed: int = 0,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = False,
        fast_path: bool = True,
    ):
        if optimizer_kwargs is None and optimizer_class is th.optim.Adam:
            optimizer_kwargs = {"eps": 1e-5}
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            squash_output=True,
            normalize_images=normalize_images,
        )
        for name, value in (
            ("n_critics", n_critics),
            ("n_behavior_samples", n_behavior_samples),
            ("n_eval_samples", n_eval_samples),
        ):
            check_count(name, value)
        if net_arch is None:
            net_arch = list(DEFAULT_NET_ARCH)
        actor_arch, critic_arch = get_actor_critic_arch(net_arch)

        self.net_arch = net_arch
        self.activation_fn = activation_fn
        self.n_diffusion_steps = n_diffusion_steps
        self.beta_schedule = beta_schedule
        self.time_embedding_dim = time_embedding_dim
        self.n_critics = n_critics
        self.n_behavior_samples = n_behavior_samples
        self.n_eval_samples = n_eval_samples
        self.eval_seed = eval_seed
        self.share_features_extractor = share_features_extractor
        self.fast_path = fast_path
        self.actor_kwargs = {
            "observation_space": self.observation_space,
            "action_space": self.action_space,
            "net_arch": actor_arch,
            "activation_fn": activation_fn,
            "n_diffusion_steps": n_diffusion_steps,
            "beta_schedule": beta_schedule,
            "time_embedding_dim": time_embedding_dim,
            "normalize_images": normalize_images,
            "fast_path": fast_path,
        }
        self.critic_kwargs = {
            "observation_space": self.observation_space,
            "action_space": self.action_space,
            "net_arch": critic_arch,
            "activation_fn": activation_fn,
            "normalize_images": normalize_images,
            "n_critics": n_critics,
            "share_features_extractor": share_features_extractor,
        }
        self._build(lr_schedule)

    def _build(self, lr_schedule: Schedule) -> None:
        self.actor = self.make_actor()
        self.actor.optimizer = self.optimizer_class(self.actor.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]
        self.actor_target = self.make_actor()
        self.actor_target.load_state_dict(self.actor.state_dict())

        if self.share_features_extractor:
            self.critic = self.make_critic(features_extractor=self.actor.features_extractor)
            # The shared extractor learns from the actor loss only.
            critic_parameters = [p for name, p in self.critic.named_parameters() if "features_extractor" not in name]
        else:
            self.critic = self.make_critic()
            critic_parameters = list(self.critic.parameters())
        self.critic.optimizer = self.optimizer_class(critic_parameters, lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]
        self.critic_target = self.make_critic()
        self.critic_target.load_state_dict(self.critic.state_dict())

        self.actor_target.set_training_mode(False)
        self.critic_target.set_training_mode(False)

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> DiffusionActor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return DiffusionActor(**actor_kwargs).to(self.device)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> ContinuousCritic:
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        critic = ContinuousCritic(**critic_kwargs)
        for q_net in critic.q_networks:
            q_net.apply(truncated_normal_init)
        return critic.to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                n_diffusion_steps=self.n_diffusion_steps,
                beta_schedule=self.beta_schedule,
                time_embedding_dim=self.time_embedding_dim,
                n_critics=self.n_critics,
                n_behavior_samples=self.n_behavior_samples,
                n_eval_samples=self.n_eval_samples,
                eval_seed=self.eval_seed,
                lr_schedule=self._dummy_schedule,
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
                share_features_extractor=self.share_features_extractor,
                fast_path=self.fast_path,
            )
        )
        return data

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        """
        Best of ``n_behavior_samples`` (stochastic), or of ``n_eval_samples`` drawn from a
        generator reseeded at each call, so the "deterministic" action is a function of the
        observation and the weights alone (the paper evaluates with best-of-N, not a noise-free chain).
        """
        if deterministic:
            generator = th.Generator(device=self.device)
            generator.manual_seed(self.eval_seed)
            actions, _ = best_of_k(self.actor, self.critic, observation, self.n_eval_samples, generator)
        else:
            actions, _ = best_of_k(self.actor, self.critic, observation, self.n_behavior_samples)
        return actions

    def set_training_mode(self, mode: bool) -> None:
        self.actor.set_training_mode(mode)
        self.critic.set_training_mode(mode)
        self.training = mode


MlpPolicy = QVPOPolicy


class CnnPolicy(QVPOPolicy):
    """QVPO policy for image observations: a NatureCNN features extractor by default."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN,
        **kwargs: Any,
    ):
        super().__init__(
            observation_space, action_space, lr_schedule, features_extractor_class=features_extractor_class, **kwargs
        )


class MultiInputPolicy(QVPOPolicy):
    """QVPO policy for Dict observation spaces (goal-conditioned tasks, HER): a CombinedExtractor by default."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor,
        **kwargs: Any,
    ):
        super().__init__(
            observation_space, action_space, lr_schedule, features_extractor_class=features_extractor_class, **kwargs
        )
