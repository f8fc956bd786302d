"""
The policy shared by QVPO, QSM and DIPO: a diffusion actor, a twin-Q critic, their target copies,
and acting by best-of-K selection (K = 1: a plain diffusion sample), optional Gaussian exploration
noise and a reproducible ``predict(deterministic=True)``.
"""

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, get_actor_critic_arch
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_qvpo.common.actor import DiffusionActor
from sb3_qvpo.common.checks import check_count
from sb3_qvpo.common.compiled_acting import CompiledActing
from sb3_qvpo.common.critic import candidate_min_q
from sb3_qvpo.diffusion import get_weight_init

DEFAULT_NET_ARCH = [256, 256, 256]


def draw_samples(
    actor: DiffusionActor,
    features: th.Tensor,
    generator: th.Generator | None,
    n_per_state: int,
    noise_scale: float,
    n_steps: int | None = None,
) -> th.Tensor:
    """
    ``actor.sample``; the noise scale and the number of steps are passed only when they are not the
    defaults, so that code wrapping ``sample(features, generator, n_per_state)`` (tests, user
    subclasses) keeps working.
    """
    options: dict[str, Any] = {}
    if noise_scale != 1.0:
        options["noise_scale"] = noise_scale
    if n_steps is not None:
        options["n_steps"] = n_steps
    return actor.sample(features, generator, n_per_state=n_per_state, **options)


ACTION_SELECTIONS = ("best", "softmax")


def choose_candidates(q_values: th.Tensor, selection: str, generator: th.Generator | None = None) -> th.Tensor:
    """
    Index of the chosen candidate per state, from (n_states, n_candidates) min-Q values:
    "best" the highest (QVPO's best-of-K); "softmax" one drawn with probabilities softmax(Q)
    (Diffusion-QL's ``sample_action``: ``multinomial(softmax(q))``, no temperature).
    """
    if selection == "best":
        return q_values.argmax(dim=1)
    if selection == "softmax":
        return th.multinomial(th.softmax(q_values, dim=1), 1, generator=generator).squeeze(1)
    raise ValueError(f"Unknown action_selection {selection!r}: expected one of {ACTION_SELECTIONS}")


@th.no_grad()
def best_of_k(
    actor: DiffusionActor,
    critic: ContinuousCritic,
    obs: PyTorchObs,
    n_samples: int,
    generator: th.Generator | None = None,
    noise_scale: float = 1.0,
    selection: str = "best",
) -> tuple[th.Tensor, th.Tensor]:
    """
    Draw ``n_samples`` actions per observation and keep the one with the highest min-Q (or, with
    ``selection="softmax"``, one drawn by :func:`choose_candidates`).

    This is QVPO's K-efficient policy: the behaviour policy (K_b), the evaluation policy
    and, with the target networks, the TD-target policy (K_t). Returns (actions, their min-Q).
    """
    actor_features = actor.extract_features(obs, actor.features_extractor)
    critic_features = critic.extract_features(obs, critic.features_extractor)
    candidates = draw_samples(actor, actor_features, generator, n_samples, noise_scale)
    q_values = candidate_min_q(critic, critic_features, candidates, n_samples, actor.fast_path)
    return pick_candidates(candidates, q_values, selection, generator)


def pick_candidates(
    candidates: th.Tensor, q_values: th.Tensor, selection: str, generator: th.Generator | None = None
) -> tuple[th.Tensor, th.Tensor]:
    """The chosen candidate of each state (:func:`choose_candidates`) and its min-Q; candidates grouped by state."""
    n_obs, n_samples = q_values.shape
    chosen = choose_candidates(q_values, selection, generator)
    rows = th.arange(n_obs, device=candidates.device)
    return candidates.view(n_obs, n_samples, -1)[rows, chosen], q_values[rows, chosen]


@th.no_grad()
def select_actions(
    actor: DiffusionActor,
    critic: ContinuousCritic,
    obs: PyTorchObs,
    n_samples: int,
    generator: th.Generator | None = None,
    noise_scale: float = 1.0,
    selection: str = "best",
) -> th.Tensor:
    """:func:`best_of_k`'s actions; with one sample the critic is not consulted (same action, less work)."""
    if n_samples > 1:
        return best_of_k(actor, critic, obs, n_samples, generator, noise_scale, selection)[0]
    return draw_samples(actor, actor.extract_features(obs, actor.features_extractor), generator, 1, noise_scale)


class DiffusionPolicy(BasePolicy):
    """
    Diffusion actor, twin-Q critic and the target copies of both (the actor's is optional).

    The defaults are QVPO's release; :class:`~sb3_qvpo.qsm.policies.QSMPolicy` and
    :class:`~sb3_qvpo.dipo.policies.DIPOPolicy` change them to their official code's.

    :param net_arch: hidden layers, a list for both networks or ``dict(pi=[...], qf=[...])``
    :param activation_fn: activation of the actor (and of the critic unless ``critic_activation_fn``)
    :param n_diffusion_steps: T
    :param beta_schedule: "cosine", "linear" or "vp"
    :param time_embedding_dim: size of the raw step features
    :param n_critics: number of Q networks, the min of which scores actions
    :param n_behavior_samples: candidates per observation for ``predict(deterministic=False)``
        (1: a plain sample, the critic is not consulted)
    :param n_eval_samples: candidates per observation for ``predict(deterministic=True)``
    :param eval_seed: seed of the private generator used by ``predict(deterministic=True)``, so the
        same observation and weights always give the same action
    :param optimizer_kwargs: defaults to Adam's ``eps=1e-5`` (QVPO's and DIPO's release)
    :param fast_path: sample and score candidates with the gradient-free fast path (same functions, less work)
    :param critic_activation_fn: the critic's activation (None: ``activation_fn``)
    :param time_embedding: "sinusoidal" or "fourier" (learned frequencies, QSM)
    :param time_hidden_dim: hidden width of the time MLP (None: the actor's first width)
    :param time_features_dim: output size of the time MLP (None: ``time_embedding_dim``)
    :param weight_init: init of every Linear of both networks: "truncated_normal", "normal",
        "xavier_uniform" or "pytorch_default"
    :param reverse_process: "x0_clipped" or "xt_clipped" (see :mod:`sb3_qvpo.diffusion.reverse`)
    :param exploration_noise: std of Gaussian noise added to ``predict(deterministic=False)``'s
        actions in [-1, 1], then clipped (QSM: 0.1)
    :param eval_noise_scale: noise scale of the reverse chain in ``predict(deterministic=True)``
        (DIPO: 0, a noise-free chain)
    :param use_actor_target: keep a Polyak-averaged copy of the actor (QSM has none)
    :param action_selection: how ``predict`` picks among its candidates: "best" (highest min-Q) or
        "softmax" (drawn with probabilities softmax(min-Q), Diffusion-QL)
    :param score_with_target_critic: score ``predict``'s candidates with the target critic
        (Diffusion-QL) instead of the critic
    :param compile_acting_after: once ``predict`` (or collection) has acted this many times on one
        batch size, it samples and scores through one compiled function
        (:mod:`sb3_qvpo.common.compiled_acting`; seconds to compile, then several times less
        overhead per call); 0 compiles at the first call, None never
    :param compile_in_background: on the CPU, a child process compiles the acting path ahead of time
        (from a tenth of ``compile_acting_after`` calls on) into a package kept on disk while acting
        goes on eagerly, and the call after ``compile_acting_after`` switches to it without
        compiling, waiting only if the build is still running; a package an earlier process built
        for the same sizes is reused (:mod:`sb3_qvpo.common.acting_packages`). False: that call
        compiles in the calling thread and waits (always so on CUDA)
    :param compiled_acting_when_ready: with ``compile_in_background``, switch to the compiled path as
        soon as its package is ready (at the first call if an earlier process built it), never
        waiting: fast from the first call, but the call that switches then depends on timing and on
        the disk cache, and since compiled and eager actions differ by float rounding, seeded runs
        that cross it are not bitwise reproducible (False, default: the switch is at a fixed call)
    :param n_acting_steps: denoising steps of ``predict``'s chains (behaviour, evaluation, export):
        None (default) the trained T; S < T samples the trained schedule at S evenly spaced steps
        (:meth:`~sb3_qvpo.diffusion.DiffusionSchedule.strided`, DDIM with eta = 1), for faster acting
        without retraining. Training's own chains (targets, candidates) always take T steps.
        Settable on a trained or loaded policy: ``model.policy.n_acting_steps = 5``.
    """

    actor: DiffusionActor
    actor_target: DiffusionActor | None
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
        critic_activation_fn: type[nn.Module] | None = None,
        time_embedding: str = "sinusoidal",
        time_hidden_dim: int | None = None,
        time_features_dim: int | None = None,
        weight_init: str = "truncated_normal",
        reverse_process: str = "x0_clipped",
        exploration_noise: float = 0.0,
        eval_noise_scale: float = 1.0,
        use_actor_target: bool = True,
        action_selection: str = "best",
        score_with_target_critic: bool = False,
        compile_acting_after: int | None = 10_000,
        compile_in_background: bool = True,
        compiled_acting_when_ready: bool = False,
        n_acting_steps: int | None = None,
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
        for name, scale in (("exploration_noise", exploration_noise), ("eval_noise_scale", eval_noise_scale)):
            if not 0 <= scale < float("inf"):
                raise ValueError(f"{name} must be a finite float >= 0, got {scale!r}")
        get_weight_init(weight_init)  # fail now with the name, not inside a network
        if action_selection not in ACTION_SELECTIONS:
            raise ValueError(f"Unknown action_selection {action_selection!r}: expected one of {ACTION_SELECTIONS}")
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
        self.critic_activation_fn = critic_activation_fn
        self.time_embedding = time_embedding
        self.time_hidden_dim = time_hidden_dim
        self.time_features_dim = time_features_dim
        self.weight_init = weight_init
        self.reverse_process = reverse_process
        self.exploration_noise = exploration_noise
        self.eval_noise_scale = eval_noise_scale
        self.use_actor_target = use_actor_target
        self.action_selection = action_selection
        self.score_with_target_critic = score_with_target_critic
        self.set_compiled_acting(compile_acting_after, compile_in_background, compiled_acting_when_ready)
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
            "time_hidden_dim": time_hidden_dim,
            "time_features_dim": time_features_dim,
            "time_embedding": time_embedding,
            "weight_init": weight_init,
            "reverse_process": reverse_process,
        }
        self.critic_kwargs = {
            "observation_space": self.observation_space,
            "action_space": self.action_space,
            "net_arch": critic_arch,
            "activation_fn": activation_fn if critic_activation_fn is None else critic_activation_fn,
            "normalize_images": normalize_images,
            "n_critics": n_critics,
            "share_features_extractor": share_features_extractor,
        }
        self._build(lr_schedule)
        self.n_acting_steps = n_acting_steps

    @property
    def n_acting_steps(self) -> int | None:
        """Denoising steps of ``predict``'s chains (None: the trained T)."""
        return self._n_acting_steps

    @n_acting_steps.setter
    def n_acting_steps(self, n_steps: int | None) -> None:
        if n_steps is not None and (
            isinstance(n_steps, bool) or not isinstance(n_steps, int) or not 1 <= n_steps <= self.n_diffusion_steps
        ):
            raise ValueError(f"n_acting_steps must be an integer in [1, T={self.n_diffusion_steps}] or None, got {n_steps!r}")
        self._n_acting_steps = n_steps

    def set_compiled_acting(
        self,
        compile_acting_after: int | None,
        compile_in_background: bool = True,
        compiled_acting_when_ready: bool = False,
    ) -> None:
        """
        How acting compiles (the constructor's keywords of the same names), also on a trained or
        loaded policy, e.g. ``set_compiled_acting(0, compiled_acting_when_ready=True)`` for a
        deployed one; the call counts start afresh. A saved model keeps its ``policy_kwargs``.
        """
        self.compiled_acting = CompiledActing(compile_acting_after, compile_in_background, compiled_acting_when_ready)
        self.compile_acting_after = compile_acting_after
        self.compile_in_background = compile_in_background
        self.compiled_acting_when_ready = compiled_acting_when_ready

    def _build(self, lr_schedule: Schedule) -> None:
        self.actor = self.make_actor()
        self.actor.optimizer = self.optimizer_class(self.actor.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]
        self.actor_target = None
        if self.use_actor_target:
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

        if self.actor_target is not None:
            self.actor_target.set_training_mode(False)
        self.critic_target.set_training_mode(False)

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> DiffusionActor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return DiffusionActor(**actor_kwargs).to(self.device)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> ContinuousCritic:
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return self.initialised_critic(ContinuousCritic(**critic_kwargs))

    def initialised_critic(self, critic: Any) -> Any:
        """``critic`` (any critic with ``q_networks``) with ``weight_init`` applied to each Q network, on the device."""
        init = get_weight_init(self.weight_init)
        for q_net in critic.q_networks:
            q_net.apply(init)
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
                critic_activation_fn=self.critic_activation_fn,
                time_embedding=self.time_embedding,
                time_hidden_dim=self.time_hidden_dim,
                time_features_dim=self.time_features_dim,
                weight_init=self.weight_init,
                reverse_process=self.reverse_process,
                exploration_noise=self.exploration_noise,
                eval_noise_scale=self.eval_noise_scale,
                use_actor_target=self.use_actor_target,
                action_selection=self.action_selection,
                score_with_target_critic=self.score_with_target_critic,
                compile_acting_after=self.compile_acting_after,
                compile_in_background=self.compile_in_background,
                compiled_acting_when_ready=self.compiled_acting_when_ready,
                n_acting_steps=self.n_acting_steps,
            )
        )
        return data

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        """
        Best of ``n_behavior_samples`` plus ``exploration_noise`` (stochastic), or best of
        ``n_eval_samples`` drawn from a generator reseeded at each call with the chain's noise
        scaled by ``eval_noise_scale``, so the "deterministic" action is a function of the
        observation and the weights alone.
        """
        if deterministic:
            generator = th.Generator(device=self.device)
            generator.manual_seed(self.eval_seed)
            return self.act(observation, self.n_eval_samples, generator, self.eval_noise_scale)
        actions = self.act(observation, self.n_behavior_samples)
        if self.exploration_noise > 0:
            actions = (actions + self.exploration_noise * th.randn_like(actions)).clamp_(-1.0, 1.0)
        return actions

    @th.no_grad()
    def act(
        self, observation: PyTorchObs, n_samples: int, generator: th.Generator | None = None, noise_scale: float = 1.0
    ) -> th.Tensor:
        """
        :func:`select_actions` with this policy's critic (or target critic) and selection rule; the
        same actions through the compiled acting path once it is on (see ``compile_acting_after``).
        """
        critic = self.acting_critic()
        actor, n_steps = self.actor, self.n_acting_steps
        actor_features = actor.extract_features(observation, actor.features_extractor)
        if n_samples == 1:
            compiled = self.compiled_acting(actor, None, actor_features, None, 1, generator, noise_scale, n_steps)
            if compiled is not None:
                return compiled[0]
            return draw_samples(actor, actor_features, generator, 1, noise_scale, n_steps)
        critic_features = critic.extract_features(observation, critic.features_extractor)
        compiled = self.compiled_acting(
            actor, critic, actor_features, critic_features, n_samples, generator, noise_scale, n_steps
        )
        if compiled is None:
            candidates = draw_samples(actor, actor_features, generator, n_samples, noise_scale, n_steps)
            q_values = self.score_candidates(critic, critic_features, candidates, n_samples, actor.fast_path)
            return pick_candidates(candidates, q_values, self.action_selection, generator)[0]
        compiled_candidates, compiled_q_values, best = compiled
        if self.action_selection == "best" and best is not None:
            return best
        assert compiled_q_values is not None
        return pick_candidates(compiled_candidates, compiled_q_values, self.action_selection, generator)[0]

    def acting_critic(self) -> Any:
        """The critic whose values choose among ``predict``'s candidates (the target critic for Diffusion-QL)."""
        return self.critic_target if self.score_with_target_critic else self.critic

    def score_candidates(
        self, critic: Any, critic_features: th.Tensor, candidates: th.Tensor, n_samples: int, fast_path: bool = True
    ) -> th.Tensor:
        """The values by which acting chooses among ``n_samples`` candidates per state: min-Q, (n_states, n_samples)."""
        assert isinstance(critic, ContinuousCritic)
        return candidate_min_q(critic, critic_features, candidates, n_samples, fast_path)

    def set_training_mode(self, mode: bool) -> None:
        # SB3 calls this at every predict: walking every submodule costs more than a compiled action.
        if self.training == mode and self.actor.training == mode and self.critic.training == mode:
            return
        self.actor.set_training_mode(mode)
        self.critic.set_training_mode(mode)
        self.training = mode


def with_default_extractor(
    policy_class: type[DiffusionPolicy], extractor_class: type[BaseFeaturesExtractor], name: str, module: str
) -> type[DiffusionPolicy]:
    """
    ``policy_class`` whose default features extractor is ``extractor_class`` (SB3's CnnPolicy /
    MultiInputPolicy idiom), defined as ``module.name`` so that saved models find it again.
    """

    def __init__(self: DiffusionPolicy, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", extractor_class)
        policy_class.__init__(self, *args, **kwargs)

    doc = f"{policy_class.__name__} with a {extractor_class.__name__} features extractor by default."
    return type(name, (policy_class,), {"__init__": __init__, "__module__": module, "__qualname__": name, "__doc__": doc})
