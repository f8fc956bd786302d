"""
What QVPO, QSM and DIPO share as SB3 off-policy algorithms: argument and input checks, separate
actor and critic learning rates, the TD step of the twin critic, target updates, the training
loop with its logging, and save/load. Each algorithm adds its TD-target action and its actor update.
"""

import io
import math
import os
import pathlib
import time
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback, ProgressBarCallback
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs, ReplayBufferSamples, Schedule
from stable_baselines3.common.utils import FloatSchedule, get_parameters_by_name, polyak_update, update_learning_rate
from torch.nn import functional as F

from sb3_qvpo.common.actor import DiffusionActor
from sb3_qvpo.common.checks import check_action_space, check_count, check_finite, check_model_archive
from sb3_qvpo.common.policies import DiffusionPolicy
from sb3_qvpo.common.schedules import GradientStepSchedule, LearningRate

if TYPE_CHECKING:
    from sb3_qvpo.offline.transitions import TransitionSet

SelfDiffusionAlgorithm = TypeVar("SelfDiffusionAlgorithm", bound="DiffusionOffPolicyAlgorithm")


class DiffusionOffPolicyAlgorithm(OffPolicyAlgorithm):
    """
    Base of the diffusion-policy actor-critics. Subclasses set :attr:`algorithm_name` and
    :attr:`policy_base`, and implement :meth:`_next_actions_q` (the TD target's min-Q at s') and
    :meth:`_gradient_step` (one update from one minibatch).

    :param action_noise: optional extra exploration, as in SB3: noise added to the behaviour
        action (in [-1, 1], then clipped) while collecting; not used by ``predict``
    :param max_grad_norm: gradient-norm clipping of actor and critic (None: no clipping)
    """

    algorithm_name: ClassVar[str]
    policy_base: ClassVar[type[DiffusionPolicy]]
    # Parameters added after files were saved without them, with the value such a file trained
    # with: ``load`` passes it when the file lacks the key (and the caller did not set it).
    old_file_defaults: ClassVar[dict[str, Any]] = {}
    policy: DiffusionPolicy
    actor: DiffusionActor
    actor_target: DiffusionActor | None
    critic: ContinuousCritic
    critic_target: ContinuousCritic

    def __init__(
        self,
        policy: str | type[DiffusionPolicy],
        env: GymEnv | str,
        learning_rate: LearningRate,
        actor_learning_rate: LearningRate,
        buffer_size: int,
        learning_starts: int,
        batch_size: int,
        tau: float,
        gamma: float,
        train_freq: int | tuple[int, str],
        gradient_steps: int,
        action_noise: ActionNoise | None,
        max_grad_norm: float | None,
        replay_buffer_class: type[ReplayBuffer] | None,
        replay_buffer_kwargs: dict[str, Any] | None,
        optimize_memory_usage: bool,
        n_steps: int,
        policy_kwargs: dict[str, Any] | None,
        stats_window_size: int,
        tensorboard_log: str | None,
        verbose: int,
        seed: int | None,
        device: th.device | str,
    ):
        check_count("batch_size", batch_size)
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 (or None: no clipping), got {max_grad_norm!r}")
        if env is not None:
            env = maybe_make_env(env, verbose)
            check_action_space(env.action_space, self.algorithm_name)
        super().__init__(
            policy,
            env,
            cast(float | Schedule, learning_rate),
            buffer_size,
            learning_starts,
            batch_size,
            tau,
            gamma,
            train_freq,
            gradient_steps,
            action_noise=action_noise,
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
        self.max_grad_norm = max_grad_norm

    def _setup_model(self) -> None:
        if not (isinstance(self.policy_class, type) and issubclass(self.policy_class, self.policy_base)):
            raise TypeError(
                f"{self.algorithm_name} needs a {self.policy_base.__name__} "
                f'("MlpPolicy", "MultiInputPolicy" or a subclass), got {self.policy_class!r}. '
                f"A model saved by another algorithm (SAC, TD3, PPO, ...) cannot be loaded with {self.algorithm_name}.load"
            )
        super()._setup_model()
        self.actor = self.policy.actor
        self.actor_target = self.policy.actor_target
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target
        # Running statistics of BatchNorm layers are buffers, not parameters: copied to the targets
        # at every target update, as SAC and TD3 do.
        self.critic_batch_norm_stats = get_parameters_by_name(self.critic, ["running_"])
        self.critic_batch_norm_stats_target = get_parameters_by_name(self.critic_target, ["running_"])
        self.actor_batch_norm_stats = get_parameters_by_name(self.actor, ["running_"])
        self.actor_batch_norm_stats_target = (
            [] if self.actor_target is None else get_parameters_by_name(self.actor_target, ["running_"])
        )
        # (A GradientStepSchedule is never called through these SB3 schedules: see _rate_at.)
        self.actor_lr_schedule = FloatSchedule(cast(Schedule, self.actor_learning_rate))
        self._set_learning_rates(gradient_steps_done=self._n_updates, progress_remaining=1.0)

    def _rate_at(self, rate: LearningRate, progress_schedule: Schedule, gradient_steps_done: int, progress: float) -> float:
        """A gradient-step schedule's value at this count, anything else's (through its SB3 schedule) at this progress."""
        return float(rate(gradient_steps_done)) if isinstance(rate, GradientStepSchedule) else progress_schedule(progress)

    def _set_learning_rates(self, gradient_steps_done: int, progress_remaining: float) -> tuple[float, float]:
        """The critic's and the actor's learning rates now, set on their optimisers."""
        critic_lr = self._rate_at(self.learning_rate, self.lr_schedule, gradient_steps_done, progress_remaining)
        actor_lr = self._rate_at(self.actor_learning_rate, self.actor_lr_schedule, gradient_steps_done, progress_remaining)
        update_learning_rate(self.critic.optimizer, critic_lr)
        update_learning_rate(self.actor.optimizer, actor_lr)
        return critic_lr, actor_lr

    def _has_gradient_step_schedule(self) -> bool:
        return any(isinstance(rate, GradientStepSchedule) for rate in (self.learning_rate, self.actor_learning_rate))

    def _update_learning_rates(self) -> None:
        critic_lr, actor_lr = self._set_learning_rates(self._n_updates, self._current_progress_remaining)
        self.logger.record("train/learning_rate", critic_lr)
        self.logger.record("train/actor_learning_rate", actor_lr)

    def _optimize(self, optimizer: th.optim.Optimizer, loss: th.Tensor, parameters: Any) -> None:
        """One optimiser step on ``loss``, the gradient norm of ``parameters`` clipped to ``max_grad_norm``."""
        optimizer.zero_grad()
        loss.backward()
        if self.max_grad_norm is not None:
            th.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
        optimizer.step()

    def _next_actions_q(self, next_observations: PyTorchObs) -> th.Tensor:
        """min-Q of the target critics at s' and the algorithm's next action, shape (batch,)."""
        raise NotImplementedError

    def _critic_step(self, replay_data: ReplayBufferSamples) -> dict[str, th.Tensor]:
        """TD regression of every Q network on r + gamma * (1 - done) * min-Q'(s', a')."""
        discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
        with th.no_grad():
            next_q = self._next_actions_q(replay_data.next_observations)
            target_q = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q.unsqueeze(1)
        current_q = self.critic(replay_data.observations, replay_data.actions)
        critic_loss = th.stack([F.mse_loss(q, target_q) for q in current_q]).sum()
        self._optimize(self.critic.optimizer, critic_loss, self.critic.parameters())
        return {"critic_loss": critic_loss.detach(), "q_values": current_q[0].detach().mean(), "target_q": target_q.mean()}

    def _update_targets(self, actor: bool = True, actor_tau: float | None = None) -> None:
        """
        Polyak update of the critic target, and of the actor target when ``actor`` (and one exists)
        with ``actor_tau`` (None: ``tau``); BatchNorm running statistics are copied (SB3's rule,
        also with tau = 0).
        """
        polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
        polyak_update(self.critic_batch_norm_stats, self.critic_batch_norm_stats_target, 1.0)
        if actor and self.actor_target is not None:
            actor_tau = self.tau if actor_tau is None else actor_tau
            polyak_update(self.actor.parameters(), self.actor_target.parameters(), actor_tau)
            polyak_update(self.actor_batch_norm_stats, self.actor_batch_norm_stats_target, 1.0)

    def _before_gradient_steps(self) -> None:
        """Per-``train`` preparations (schedules); called after the learning rates are updated."""

    def _gradient_step(self, replay_data: ReplayBufferSamples) -> dict[str, th.Tensor]:
        """One update from one minibatch; returns the statistics to log (means over the rollout)."""
        raise NotImplementedError

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rates()
        self._before_gradient_steps()
        stats: dict[str, list[th.Tensor]] = {}
        per_step_rates = self._has_gradient_step_schedule()
        for step in range(gradient_steps):
            if per_step_rates and step > 0:  # step 0's rates were set above
                self._set_learning_rates(self._n_updates + step, self._current_progress_remaining)
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            for key, value in self._gradient_step(replay_data).items():
                stats.setdefault(key, []).append(value)

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, values in stats.items():
            # One device sync per rollout rather than one per statistic and step.
            mean = th.stack(values).mean().item()
            self.logger.record(f"train/{key}", mean)
            if key in ("critic_loss", "actor_loss") and not math.isfinite(mean):
                raise FloatingPointError(
                    f"{self.algorithm_name}'s {key} is {mean} at update {self._n_updates}: the weights are no longer "
                    "finite. The Q-values diverged (try a smaller learning_rate or rescaled rewards, e.g. VecNormalize)"
                )

    def learn(
        self: SelfDiffusionAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfDiffusionAlgorithm:
        """SB3's ``learn``; TensorBoard runs are named after the algorithm unless ``tb_log_name`` is given."""
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=self.algorithm_name if tb_log_name is None else tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def load_dataset(self, dataset: "TransitionSet | str | os.PathLike[str]", buffer_size: int | None = None) -> ReplayBuffer:
        """
        Replace the replay buffer with a dataset: a :class:`~sb3_qvpo.offline.TransitionSet`, a
        D4RL-layout HDF5 file (.hdf5 / .h5) or a local Minari dataset id or folder. Everything is
        checked against this model's spaces first (a mismatch, NaN/inf or out-of-bounds actions
        raise a ValueError naming the problem, and the current buffer stays). Actions are stored
        scaled to [-1, 1], as the model stores its own. The buffer holds at least ``buffer_size``
        transitions (default: the model's ``buffer_size``), so online fine-tuning has room.
        """
        from sb3_qvpo.offline.buffer import fill_model_replay_buffer
        from sb3_qvpo.offline.sources import load_transitions
        from sb3_qvpo.offline.transitions import TransitionSet

        if self.n_envs != 1:
            raise ValueError(
                f"load_dataset fills the replay buffer as one stream of transitions: it needs a model with one "
                f"environment, this one has {self.n_envs} (fine-tune with n_envs=1)"
            )
        transitions = dataset if isinstance(dataset, TransitionSet) else load_transitions(dataset)
        return fill_model_replay_buffer(self, transitions, self.buffer_size if buffer_size is None else buffer_size)

    def learn_offline(
        self: SelfDiffusionAlgorithm,
        total_gradient_steps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1000,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfDiffusionAlgorithm:
        """
        Train from what the replay buffer holds (a dataset, see ``load_dataset``), never stepping
        the environment: ``total_gradient_steps`` updates of the algorithm's own rule.

        It runs as ``learn`` does, with one gradient step in place of one environment step:
        ``num_timesteps`` counts gradient steps, callbacks are called after every one (so
        ``EvalCallback(eval_freq=k)`` evaluates every k updates and ``CheckpointCallback`` saves
        as usual), the logger is dumped every ``log_interval`` updates, and learning-rate
        schedules see the progress of this call. ``learn`` then fine-tunes online with the same
        model and buffer.
        """
        check_count("total_gradient_steps", total_gradient_steps)
        if self.replay_buffer is None or self.replay_buffer.size() == 0:
            raise ValueError(
                f"{self.algorithm_name}.learn_offline trains from the replay buffer, which is empty: "
                "load a dataset first (model.load_dataset(...))"
            )
        if progress_bar:
            callbacks = callback if isinstance(callback, list) else [] if callback is None else [callback]
            callback = [*callbacks, GradientStepProgressBar()]
        total_timesteps, callback = self._setup_learn(
            total_gradient_steps,
            callback,
            reset_num_timesteps,
            self.algorithm_name if tb_log_name is None else tb_log_name,
            progress_bar=False,
        )
        callback.on_training_start(locals(), globals())
        start_updates = self.num_timesteps
        while self.num_timesteps < total_timesteps:
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            self.train(gradient_steps=1, batch_size=self.batch_size)
            self.num_timesteps += 1
            callback.update_locals(locals())
            if not callback.on_step():
                break
            if log_interval > 0 and self.num_timesteps % log_interval == 0:
                self._dump_offline_logs(self.num_timesteps - start_updates)
        callback.on_training_end()
        return self

    def _dump_offline_logs(self, updates_this_call: int) -> None:
        elapsed = max((time.time_ns() - self.start_time) / 1e9, 1e-9)
        self.logger.record("time/gradient_steps", self.num_timesteps, exclude="tensorboard")
        self.logger.record("time/updates_per_second", int(updates_this_call / elapsed))
        self.logger.record("time/time_elapsed", int(elapsed), exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        check_finite("observation", self._last_obs, self.num_timesteps, self.algorithm_name)  # type: ignore[arg-type]
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
        name = self.algorithm_name
        check_finite("observation", new_obs, self.num_timesteps, name)
        check_finite("reward", reward, self.num_timesteps, name)
        for done, info in zip(dones, infos, strict=True):
            if done and info.get("terminal_observation") is not None:
                check_finite("terminal observation", info["terminal_observation"], self.num_timesteps, name)
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    @classmethod
    def load(
        cls: type[SelfDiffusionAlgorithm],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfDiffusionAlgorithm:
        """SB3's ``load``; a file saved before a parameter in :attr:`old_file_defaults` existed keeps training as it did."""
        check_model_archive(path)  # a clear error for a bad file before the peek below
        if missing := [name for name in cls.old_file_defaults if name not in kwargs]:
            saved = saved_data_keys(path)
            kwargs.update({name: cls.old_file_defaults[name] for name in missing if name not in saved})
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
            "critic_batch_norm_stats",
            "critic_batch_norm_stats_target",
            "actor_batch_norm_stats",
            "actor_batch_norm_stats_target",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "actor.optimizer", "critic.optimizer"], []


def saved_data_keys(path: str | pathlib.Path | io.BufferedIOBase) -> set[str]:
    """The attribute names stored in a saved model's ``data`` (a file object's position is restored)."""
    position = path.tell() if isinstance(path, io.BufferedIOBase) else None
    try:
        data, _, _ = load_from_zip_file(path, load_data=True)
    finally:
        if position is not None:
            path.seek(position)  # type: ignore[union-attr]
    return set(data or {})


class GradientStepProgressBar(ProgressBarCallback):
    """SB3's progress bar, advanced by one per gradient step (its own counts environment steps)."""

    def _on_step(self) -> bool:
        self.pbar.update(1)
        return True
