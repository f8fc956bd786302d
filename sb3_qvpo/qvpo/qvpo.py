"""QVPO: Q-weighted Variational Policy Optimization (Ding et al., NeurIPS 2024) for Stable-Baselines3."""

import io
import pathlib
from typing import Any, ClassVar, TypeVar

import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, PyTorchObs, ReplayBufferSamples

from sb3_qvpo.common.actor import weighted_denoising_loss
from sb3_qvpo.common.checks import check_count
from sb3_qvpo.common.off_policy import DiffusionOffPolicyAlgorithm
from sb3_qvpo.common.schedules import LearningRate
from sb3_qvpo.qvpo.entropy import EntropyCoef, make_entropy_schedule
from sb3_qvpo.qvpo.policies import (
    CnnPolicy,
    MlpPolicy,
    MultiInputPolicy,
    QVPOPolicy,
    best_of_k,
    candidate_min_q,
)
from sb3_qvpo.qvpo.weights import WEIGHT_TRANSFORMS, best_sample_weights

SelfQVPO = TypeVar("SelfQVPO", bound="QVPO")

# Policy kwargs that QVPO sets from its own parameters.
_ALGORITHM_OWNED_POLICY_KWARGS = ("n_behavior_samples", "n_eval_samples")


class QVPO(DiffusionOffPolicyAlgorithm):
    """
    Q-weighted Variational Policy Optimization: an off-policy actor-critic whose actor is a diffusion model.

    Each update trains a twin-Q critic on TD targets from the best of ``n_target_samples`` target-actor
    samples, then trains the actor with a denoising loss on the best of ``n_action_samples`` current
    samples per state, weighted by its clipped advantage, plus ``n_uniform_samples`` uniform actions per
    state weighted by ``entropy_coef`` times that weight (the diffusion entropy regulariser).
    Paper: https://arxiv.org/abs/2405.16173. Defaults follow the authors' release where it differs
    from the paper's text (noted per parameter).

    :param policy: "MlpPolicy", "MultiInputPolicy" or a :class:`QVPOPolicy` subclass
    :param env: the environment (or its Gymnasium id); needs a bounded Box action space
    :param learning_rate: critic learning rate, a float or a schedule (release and paper: 3e-4)
    :param actor_learning_rate: diffusion-actor learning rate (release: 1e-4; the paper's table says 3e-4)
    :param buffer_size: replay buffer size
    :param learning_starts: steps of uniform random actions before learning (release: 10,000)
    :param batch_size: minibatch size (256)
    :param tau: Polyak coefficient for the critic and actor targets (0.005)
    :param gamma: discount factor (0.99)
    :param train_freq: update every ``train_freq`` steps, or a tuple ``(n, "step" | "episode")``
    :param gradient_steps: gradient steps per rollout (-1: as many as environment steps)
    :param action_noise: optional extra exploration (SB3's ``ActionNoise``), added to the behaviour
        action while collecting; None (default): the policy's own sampling explores
    :param n_action_samples: N_d, actions sampled per state for the actor loss (64)
    :param n_uniform_samples: N_e, uniform actions per state for the entropy term (10; 0 disables it)
    :param n_behavior_samples: K_b, candidates per step when collecting and in
        ``predict(deterministic=False)`` (4)
    :param n_target_samples: K_t, target-actor candidates per next state for the TD target
        (release: 1 for Hopper, 2 for Walker2d/Ant/Humanoid, 4 for HalfCheetah; default 1)
    :param n_eval_samples: candidates per observation for ``predict(deterministic=True)``, which
        EvalCallback and rl-zoo3 use (release: 32)
    :param weight_transform: "qadv" (release and paper's choice) or "qcut"
    :param qcut_threshold: the cut of "qcut": weight = max(Q_best, cut) (release: 1.0)
    :param entropy_coef: omega_ent: a float, a schedule of the remaining progress, or
        "lin_<start>[_<floor>]". Default "lin_0.02_0.002", the release's linear decay from 0.02
        to 0 over the run, floored at 0.002 (the paper's text: constant 0.01)
    :param independent_actor_batch: train the actor on a second minibatch drawn independently of the
        critic's, as the release does (``action_aug`` samples its own; default); False: the
        critic's minibatch (the default before 0.2; a model saved then keeps it when loaded)
    :param max_grad_norm: gradient-norm clipping of actor and critic (release: 2.0; None: no clipping)
    :param replay_buffer_class: e.g. ``HerReplayBuffer``; chosen from the observation space if None
    :param replay_buffer_kwargs: keyword arguments of the replay buffer
    :param optimize_memory_usage: SB3's memory-efficient replay buffer
    :param n_steps: n-step returns (only with the default replay buffer)
    :param policy_kwargs: ``net_arch``, ``activation_fn``, ``n_diffusion_steps``, ``beta_schedule``,
        ``time_embedding_dim``, ``n_critics``, ... (see :class:`QVPOPolicy`)
    :param stats_window_size: episodes averaged in the rollout logs
    :param tensorboard_log: TensorBoard log folder (None: no TensorBoard)
    :param verbose: 0 silent, 1 info, 2 debug
    :param seed: seed of the random generators
    :param device: "cpu", "cuda" or "auto"
    :param _init_setup_model: build the networks at construction
    """

    algorithm_name: ClassVar[str] = "QVPO"
    policy_base: ClassVar[type[QVPOPolicy]] = QVPOPolicy
    old_file_defaults: ClassVar[dict[str, Any]] = {"independent_actor_batch": False}  # files saved before 0.2
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: QVPOPolicy

    def __init__(
        self,
        policy: str | type[QVPOPolicy],
        env: GymEnv | str,
        learning_rate: LearningRate = 3e-4,
        actor_learning_rate: LearningRate = 1e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 10_000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        n_action_samples: int = 64,
        n_uniform_samples: int = 10,
        n_behavior_samples: int = 4,
        n_target_samples: int = 1,
        n_eval_samples: int = 32,
        weight_transform: str = "qadv",
        qcut_threshold: float = 1.0,
        entropy_coef: EntropyCoef = "lin_0.02_0.002",
        independent_actor_batch: bool = True,
        max_grad_norm: float | None = 2.0,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        policy_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        for name, value in (
            ("n_action_samples", n_action_samples),
            ("n_behavior_samples", n_behavior_samples),
            ("n_target_samples", n_target_samples),
            ("n_eval_samples", n_eval_samples),
        ):
            check_count(name, value)
        check_count("n_uniform_samples", n_uniform_samples, minimum=0)
        if weight_transform not in WEIGHT_TRANSFORMS:
            raise ValueError(f"Unknown weight_transform {weight_transform!r}: expected one of {WEIGHT_TRANSFORMS}")
        make_entropy_schedule(entropy_coef)  # fail now, not at the first update

        policy_kwargs = dict(policy_kwargs or {})
        for key in _ALGORITHM_OWNED_POLICY_KWARGS:
            if key in policy_kwargs:
                raise ValueError(f"Set {key} as a QVPO parameter, not in policy_kwargs")

        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            actor_learning_rate=actor_learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            action_noise=action_noise,
            max_grad_norm=max_grad_norm,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            seed=seed,
            device=device,
        )
        self.n_action_samples = n_action_samples
        self.n_uniform_samples = n_uniform_samples
        # Handed to the policy when it is built; afterwards the policy's values are the ones used (see the properties).
        self._n_behavior_samples = n_behavior_samples
        self.n_target_samples = n_target_samples
        self._n_eval_samples = n_eval_samples
        self.weight_transform = weight_transform
        self.qcut_threshold = qcut_threshold
        self.entropy_coef = entropy_coef
        self.independent_actor_batch = independent_actor_batch

        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self._adopt_sample_counts()
        # The counts reach the policy without entering ``policy_kwargs``, which stays as the user gave
        # it (so ``load(..., policy_kwargs=<the same dict>)`` passes SB3's equality check).
        user_policy_kwargs = self.policy_kwargs
        self.policy_kwargs = {
            **user_policy_kwargs,
            "n_behavior_samples": self._n_behavior_samples,
            "n_eval_samples": self._n_eval_samples,
        }
        try:
            super()._setup_model()
        finally:
            self.policy_kwargs = user_policy_kwargs
        self.entropy_coef_schedule = make_entropy_schedule(self.entropy_coef)

    def _adopt_sample_counts(self) -> None:
        """
        Take the sample counts that ``load`` put straight into ``__dict__`` (its keyword overrides,
        ``custom_objects``, and files saved before the counts became properties, which also kept them
        in ``policy_kwargs``) as the ones to use.
        """
        self.policy_kwargs = dict(self.policy_kwargs)
        for name in _ALGORITHM_OWNED_POLICY_KWARGS:
            stored = self.policy_kwargs.pop(name, None)
            value = self.__dict__.pop(name, stored)
            if value is not None:
                check_count(name, value)
                setattr(self, f"_{name}", value)

    def _policy_count(self, name: str) -> int:
        policy = self.__dict__.get("policy")
        return getattr(policy, name) if isinstance(policy, QVPOPolicy) else getattr(self, f"_{name}")

    def _set_policy_count(self, name: str, value: int) -> None:
        check_count(name, value)
        setattr(self, f"_{name}", value)
        policy = self.__dict__.get("policy")
        if isinstance(policy, QVPOPolicy):
            setattr(policy, name, value)

    @property
    def n_behavior_samples(self) -> int:
        """K_b: the policy's, so setting it on the model or on ``model.policy`` is the same."""
        return self._policy_count("n_behavior_samples")

    @n_behavior_samples.setter
    def n_behavior_samples(self, value: int) -> None:
        self._set_policy_count("n_behavior_samples", value)

    @property
    def n_eval_samples(self) -> int:
        """Candidates of ``predict(deterministic=True)``: the policy's, as ``n_behavior_samples``."""
        return self._policy_count("n_eval_samples")

    @n_eval_samples.setter
    def n_eval_samples(self, value: int) -> None:
        self._set_policy_count("n_eval_samples", value)

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfQVPO],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfQVPO:
        """
        SB3's ``load``; the sample counts can be overridden by keyword or through ``custom_objects``.
        A file saved before ``independent_actor_batch`` existed keeps training as it did (shared
        minibatch, :attr:`old_file_defaults`).
        """
        custom_objects = dict(custom_objects or {})
        for name in _ALGORITHM_OWNED_POLICY_KWARGS:
            if name in custom_objects:
                kwargs.setdefault(name, custom_objects.pop(name))
        return super().load(
            path,
            env=env,
            device=device,
            custom_objects=custom_objects or None,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )

    def save(self, *args: Any, **kwargs: Any) -> None:
        # The policy may have been changed directly (model.policy.n_eval_samples = ...): store its values.
        self._n_behavior_samples, self._n_eval_samples = self.n_behavior_samples, self.n_eval_samples
        super().save(*args, **kwargs)

    def _next_actions_q(self, next_observations: PyTorchObs) -> th.Tensor:
        """min-Q' of the best of K_t target-actor samples, scored by the target critics."""
        assert self.actor_target is not None
        return best_of_k(self.actor_target, self.critic_target, next_observations, self.n_target_samples)[1]

    def _actor_step(self, observations: Any, entropy_coef: float) -> dict[str, th.Tensor]:
        """Q-weighted denoising loss on the best of N_d samples per state, plus the uniform-action entropy term."""
        n_samples, n_uniform = self.n_action_samples, self.n_uniform_samples
        actor_features = self.actor.extract_features(observations, self.actor.features_extractor)
        n_states = actor_features.shape[0]
        with th.no_grad():
            critic_features = self.critic.extract_features(observations, self.critic.features_extractor)
            samples = self.actor.sample(actor_features.detach(), n_per_state=n_samples)
            sample_q = candidate_min_q(self.critic, critic_features, samples, n_samples, self.actor.fast_path)
            best_index, weights = best_sample_weights(sample_q, self.weight_transform, self.qcut_threshold)
            best_actions = samples.view(n_states, n_samples, -1)[th.arange(n_states, device=samples.device), best_index]
        actor_loss = weighted_denoising_loss(self.actor, actor_features, best_actions, weights, n_uniform, entropy_coef)
        self._optimize(self.actor.optimizer, actor_loss, self.actor.parameters())
        return {
            "actor_loss": actor_loss.detach(),
            "sample_q_mean": sample_q.mean(),
            "sample_q_best": sample_q.max(dim=1).values.mean(),
            # Delta_Q of CGPO's eq. 9: best minus mean min-Q of the N_d candidates (its Figure 9)
            "critic_contrast": (sample_q.max(dim=1).values - sample_q.mean(dim=1)).mean(),
            "weight_mean": weights.mean(),
            "positive_weight_fraction": (weights > 0).float().mean(),
        }

    def _before_gradient_steps(self) -> None:
        self._entropy_coef_now = float(self.entropy_coef_schedule(self._current_progress_remaining))
        self.logger.record("train/entropy_coef", self._entropy_coef_now)

    def _gradient_step(self, replay_data: ReplayBufferSamples) -> dict[str, th.Tensor]:
        """Critic first, then actor, as in the release; both targets follow every step."""
        stats = self._critic_step(replay_data)
        actor_observations = replay_data.observations
        if self.independent_actor_batch:
            # Drawn after the critic step, as the release's action_aug does.
            actor_data = self.replay_buffer.sample(replay_data.rewards.shape[0], env=self._vec_normalize_env)  # type: ignore[union-attr]
            actor_observations = actor_data.observations
        stats.update(self._actor_step(actor_observations, self._entropy_coef_now))
        self._update_targets()
        return stats

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "entropy_coef_schedule", "_entropy_coef_now"]
