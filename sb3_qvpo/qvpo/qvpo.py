"""QVPO: Q-weighted Variational Policy Optimization (Ding et al., NeurIPS 2024) for Stable-Baselines3."""

import io
import math
import pathlib
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, polyak_update, update_learning_rate
from torch.nn import functional as F

from sb3_qvpo.common.checks import check_action_space, check_count, check_finite, check_model_archive
from sb3_qvpo.qvpo.entropy import EntropyCoef, make_entropy_schedule
from sb3_qvpo.qvpo.policies import (
    CnnPolicy,
    DiffusionActor,
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


class QVPO(OffPolicyAlgorithm):
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
    :param n_action_samples: N_d, actions sampled per state for the actor loss (64)
    :param n_uniform_samples: N_e, uniform actions per state for the entropy term (10; 0 disables it)
    :param n_behavior_samples: K_b, candidates per step when collecting and in
        ``predict(deterministic=False)`` (4)
    :param n_target_samples: K_t, target-actor candidates per next state for the TD target
        (release: 1 for Hopper, 2 for Walker2d/Ant/Humanoid, 4 for HalfCheetah; default 1)
    :param n_eval_samples: candidates per observation for ``predict(deterministic=True)``, which
        EvalCallback and rl-zoo3 use (release: 32)
    :param weight_transform: "qadv" (release and paper's choice) or "qcut"
    :param qcut_threshold: Q below which "qcut" gives the floor weight (release: 1.0)
    :param entropy_coef: omega_ent: a float, a schedule of the remaining progress, or
        "lin_<start>[_<floor>]". Default "lin_0.02_0.002", the release's linear decay from 0.02
        to 0 over the run, floored at 0.002 (the paper's text: constant 0.01)
    :param max_grad_norm: gradient-norm clipping of actor and critic (release: 2.0)
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

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: QVPOPolicy
    actor: DiffusionActor
    actor_target: DiffusionActor
    critic: ContinuousCritic
    critic_target: ContinuousCritic

    def __init__(
        self,
        policy: str | type[QVPOPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        actor_learning_rate: float | Schedule = 1e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 10_000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        n_action_samples: int = 64,
        n_uniform_samples: int = 10,
        n_behavior_samples: int = 4,
        n_target_samples: int = 1,
        n_eval_samples: int = 32,
        weight_transform: str = "qadv",
        qcut_threshold: float = 1.0,
        entropy_coef: EntropyCoef = "lin_0.02_0.002",
        max_grad_norm: float = 2.0,
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
            ("batch_size", batch_size),
        ):
            check_count(name, value)
        check_count("n_uniform_samples", n_uniform_samples, minimum=0)
        if weight_transform not in WEIGHT_TRANSFORMS:
            raise ValueError(f"Unknown weight_transform {weight_transform!r}: expected one of {WEIGHT_TRANSFORMS}")
        if not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {max_grad_norm!r}")
        make_entropy_schedule(entropy_coef)  # fail now, not at the first update

        policy_kwargs = dict(policy_kwargs or {})
        for key in _ALGORITHM_OWNED_POLICY_KWARGS:
            if key in policy_kwargs:
                raise ValueError(f"Set {key} as a QVPO parameter, not in policy_kwargs")
        policy_kwargs.update(n_behavior_samples=n_behavior_samples, n_eval_samples=n_eval_samples)

        if env is not None:
            env = maybe_make_env(env, verbose)
            check_action_space(env.action_space)

        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size,
            learning_starts,
            batch_size,
            tau,
            gamma,
            train_freq,
            gradient_steps,
            action_noise=None,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            sde_support=False,
            supported_action_spaces=(spaces.Box,),
            support_multi_env=True,
        )
        self.actor_learning_rate = actor_learning_rate
        self.n_action_samples = n_action_samples
        self.n_uniform_samples = n_uniform_samples
        self.n_behavior_samples = n_behavior_samples
        self.n_target_samples = n_target_samples
        self.n_eval_samples = n_eval_samples
        self.weight_transform = weight_transform
        self.qcut_threshold = qcut_threshold
        self.entropy_coef = entropy_coef
        self.max_grad_norm = max_grad_norm

        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        if not (isinstance(self.policy_class, type) and issubclass(self.policy_class, QVPOPolicy)):
            raise TypeError(
                f'QVPO needs a QVPOPolicy ("MlpPolicy", "MultiInputPolicy" or a subclass), got {self.policy_class!r}. '
                "A model saved by another algorithm (SAC, TD3, PPO, ...) cannot be loaded with QVPO.load"
            )
        super()._setup_model()
        self.actor = self.policy.actor
        self.actor_target = self.policy.actor_target
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target
        self.actor_lr_schedule = FloatSchedule(self.actor_learning_rate)
        self.entropy_coef_schedule = make_entropy_schedule(self.entropy_coef)
        update_learning_rate(self.actor.optimizer, self.actor_lr_schedule(1))

    def _update_learning_rates(self) -> None:
        critic_lr = self.lr_schedule(self._current_progress_remaining)
        actor_lr = self.actor_lr_schedule(self._current_progress_remaining)
        self.logger.record("train/learning_rate", critic_lr)
        self.logger.record("train/actor_learning_rate", actor_lr)
        update_learning_rate(self.critic.optimizer, critic_lr)
        update_learning_rate(self.actor.optimizer, actor_lr)

    def _critic_step(self, replay_data: Any) -> dict[str, th.Tensor]:
        """TD regression of every Q network on r + gamma * min-Q' of the best of K_t target-actor samples."""
        discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
        with th.no_grad():
            _, next_q = best_of_k(self.actor_target, self.critic_target, replay_data.next_observations, self.n_target_samples)
            target_q = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q.unsqueeze(1)
        current_q = self.critic(replay_data.observations, replay_data.actions)
        critic_loss = th.stack([F.mse_loss(q, target_q) for q in current_q]).sum()
        self.critic.optimizer.zero_grad()
        critic_loss.backward()
        th.nn.utils.clip_grad_norm_(self.critic.parameters(), self.max_grad_norm)
        self.critic.optimizer.step()
        return {"critic_loss": critic_loss.detach(), "q_values": current_q[0].detach().mean(), "target_q": target_q.mean()}

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
            train_actions = best_actions
            train_weights = weights
            if n_uniform > 0:
                uniform_actions = 2.0 * th.rand((n_states * n_uniform, best_actions.shape[1]), device=samples.device) - 1.0
                train_actions = th.cat([best_actions, uniform_actions])
                train_weights = th.cat([weights, entropy_coef * weights.repeat_interleave(n_uniform)])
        train_features = actor_features
        if n_uniform > 0:
            train_features = th.cat([actor_features, actor_features.repeat_interleave(n_uniform, dim=0)])
        errors = self.actor.denoising_errors(train_actions, train_features)
        actor_loss = (train_weights * errors).mean()
        self.actor.optimizer.zero_grad()
        actor_loss.backward()
        th.nn.utils.clip_grad_norm_(self.actor.parameters(), self.max_grad_norm)
        self.actor.optimizer.step()
        return {
            "actor_loss": actor_loss.detach(),
            "sample_q_mean": sample_q.mean(),
            "sample_q_best": sample_q.max(dim=1).values.mean(),
            "weight_mean": weights.mean(),
            "positive_weight_fraction": (weights > 0).float().mean(),
        }

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rates()
        entropy_coef = float(self.entropy_coef_schedule(self._current_progress_remaining))
        stats: dict[str, list[th.Tensor]] = {}
        for _ in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            step_stats = self._critic_step(replay_data)
            step_stats.update(self._actor_step(replay_data.observations, entropy_coef))
            polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
            polyak_update(self.actor.parameters(), self.actor_target.parameters(), self.tau)
            for key, value in step_stats.items():
                stats.setdefault(key, []).append(value)

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/entropy_coef", entropy_coef)
        for key, values in stats.items():
            # One device sync per rollout rather than one per statistic and step.
            mean = th.stack(values).mean().item()
            self.logger.record(f"train/{key}", mean)
            if key in ("critic_loss", "actor_loss") and not math.isfinite(mean):
                raise FloatingPointError(
                    f"QVPO's {key} is {mean} at update {self._n_updates}: the weights are no longer finite. "
                    "The Q-values diverged (try a smaller learning_rate or rescaled rewards, e.g. VecNormalize)"
                )

    def learn(
        self: SelfQVPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "QVPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfQVPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        check_finite("observation", self._last_obs, self.num_timesteps)  # type: ignore[arg-type]
        return result

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        # Each step's new_obs becomes the next step's last observation: checking it once suffices
        # (the first observation of a run is checked in _setup_learn).
        check_finite("observation", new_obs, self.num_timesteps)
        check_finite("reward", reward, self.num_timesteps)
        for done, info in zip(dones, infos, strict=True):
            if done and info.get("terminal_observation") is not None:
                check_finite("terminal observation", info["terminal_observation"], self.num_timesteps)
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    @classmethod
    def load(
        cls: type[SelfQVPO],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfQVPO:
        check_model_archive(path)
        return super().load(
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "actor",
            "actor_target",
            "critic",
            "critic_target",
            "actor_lr_schedule",
            "entropy_coef_schedule",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "actor.optimizer", "critic.optimizer"], []
