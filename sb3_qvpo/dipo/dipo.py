"""
DIPO: Policy Representation via Diffusion Probability Model for RL (Yang et al., 2023,
arXiv 2305.13122) for Stable-Baselines3.

Follows the official code, github BellmanTimeHut/DIPO, ``agent/DiPo.py`` (``action_gradient``,
``train``) with the defaults of ``main.py`` and the per-task settings of its README.
"""

import io
import math
import pathlib
from typing import Any, ClassVar

import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.type_aliases import GymEnv, PyTorchObs, ReplayBufferSamples

from sb3_qvpo.common.checks import check_count
from sb3_qvpo.common.critic import min_q_values, q_action_gradient
from sb3_qvpo.common.off_policy import DiffusionOffPolicyAlgorithm
from sb3_qvpo.common.schedules import LearningRate
from sb3_qvpo.dipo.buffers import DiffusionMemory, memory_buffer_class
from sb3_qvpo.dipo.policies import CnnPolicy, DIPOPolicy, MlpPolicy, MultiInputPolicy


def improve_actions(
    critic: ContinuousCritic,
    critic_features: th.Tensor,
    actions: th.Tensor,
    learning_rate: float,
    n_steps: int,
    max_grad_norm: float,
) -> th.Tensor:
    """
    DIPO's action gradient (``action_gradient``): ``n_steps`` Adam steps (lr ``learning_rate``,
    eps 1e-5, a fresh optimiser per call) on the actions themselves, maximising min(Q1, Q2). The
    gradient of the whole batch is clipped to norm ``max_grad_norm`` (``clip_grad_norm_`` on the
    one (batch, action_dim) tensor; <= 0: no clipping) and the actions are clamped to [-1, 1]
    after each step. The critic's parameters receive no gradient.
    """
    actions = actions.detach().clone().requires_grad_(True)
    optimizer = th.optim.Adam([actions], lr=learning_rate, eps=1e-5)
    for _ in range(n_steps):
        # The loss is -sum min-Q: its gradient is minus the ascent direction.
        actions.grad = -q_action_gradient(critic, critic_features, actions, reduce="min")
        if max_grad_norm > 0:
            th.nn.utils.clip_grad_norm_([actions], max_grad_norm)
        optimizer.step()
        with th.no_grad():
            actions.clamp_(-1.0, 1.0)
    return actions.detach()


class DIPO(DiffusionOffPolicyAlgorithm):
    """
    DIPO: the diffusion actor is fitted, with the plain denoising loss, to actions that gradient
    ascent on the critic keeps improving.

    The replay buffer carries a *diffusion memory* (:mod:`sb3_qvpo.dipo.buffers`). One update (``train``):

    - critic: twin Q networks regress on r + gamma (1 - done) min(Q1', Q2')(s', a'), a' one sample
      of the *target* actor (noise on);
    - action gradient: a minibatch of (s, a) drawn from the diffusion memory, independently of the
      critic's, takes ``action_gradient_steps`` Adam steps on a towards higher min-Q
      (:func:`improve_actions`);
    - actor: the denoising (DDPM epsilon) loss on the improved (s, a);
    - targets: the critics' every step, the actor's EMA every ``actor_target_update_interval`` steps.

    By default the memory is the replay buffer's own actions and nothing is written back, which is
    what the official code runs: its ``DiffusionMemory.replace`` writes into a copy
    (``np.copyto(self.best_actions[idxs], ...)``: integer-array indexing copies), so every update
    restarts the ascent from the behaviour actions as collected; DIPO's published numbers (and
    QVPO's Table 1 DIPO row) come from that. ``accumulate_improved_actions=True`` does what that
    code means: the memory is a copy of the actions into which the improved actions are written
    back, so improvement accumulates over updates.

    Acting: one sample of the diffusion actor while collecting; ``predict(deterministic=True)``: one
    sample of the noise-free chain (the official evaluation, ``noise_ratio`` 0).
    Time-limit truncations are not terminals here (SB3's buffers keep them apart); the official
    ``main.py`` treats them as terminals.

    :param policy: "MlpPolicy", "MultiInputPolicy", "CnnPolicy" or a :class:`DIPOPolicy` subclass
    :param env: the environment (or its Gymnasium id); needs a bounded Box action space
    :param learning_rate: critic learning rate (official: 3e-4)
    :param actor_learning_rate: diffusion-actor learning rate (official: 3e-4)
    :param buffer_size: replay buffer (and diffusion memory) size
    :param learning_starts: steps of uniform random actions before learning (official: 10,000)
    :param batch_size: minibatch size of the critic and of the diffusion memory (256)
    :param tau: Polyak / EMA coefficient of the critic and actor targets (0.005)
    :param gamma: discount factor (0.99)
    :param train_freq: update every ``train_freq`` steps, or a tuple ``(n, "step" | "episode")``
    :param gradient_steps: gradient steps per rollout (-1: as many as environment steps)
    :param action_noise: optional extra exploration (SB3's ``ActionNoise``), added to the behaviour
        action while collecting; None (default): the policy's own sampling explores
    :param action_learning_rate: Adam learning rate of the action gradient (official: 0.03)
    :param action_gradient_steps: ascent steps per update (official: 20; HalfCheetah 40)
    :param action_grad_norm_ratio: the batch's action-gradient norm is clipped to
        ``action_dim * ratio`` (official: 0.1; README per task 0.08-0.3; 0: no clipping)
    :param actor_target_update_interval: update the actor's EMA every this many updates (1; HalfCheetah 2)
    :param accumulate_improved_actions: write the improved actions back into a diffusion memory of
        their own, so improvement accumulates (what the official code means); False (default): the
        memory is the replay buffer's actions, never written (what the official code runs). Files
        saved before this option existed load with True, as they trained
    :param max_grad_norm: gradient-norm clipping of actor and critic (official: 2.0; README per task 0.8-2)
    :param replay_buffer_class: None, ``ReplayBuffer``, ``DictReplayBuffer`` or ``HerReplayBuffer``,
        each replaced by its version with a diffusion memory (see :mod:`sb3_qvpo.dipo.buffers`)
    :param replay_buffer_kwargs: keyword arguments of the replay buffer
    :param optimize_memory_usage: SB3's memory-efficient replay buffer
    :param n_steps: must be 1 (the diffusion memory holds one-step transitions)
    :param policy_kwargs: see :class:`DIPOPolicy` (``net_arch``, ``n_diffusion_steps``, ...)
    :param stats_window_size: episodes averaged in the rollout logs
    :param tensorboard_log: TensorBoard log folder (None: no TensorBoard)
    :param verbose: 0 silent, 1 info, 2 debug
    :param seed: seed of the random generators
    :param device: "cpu", "cuda" or "auto"
    :param _init_setup_model: build the networks at construction
    """

    algorithm_name: ClassVar[str] = "DIPO"
    policy_base: ClassVar[type[DIPOPolicy]] = DIPOPolicy
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: DIPOPolicy
    # Files saved before the option existed trained with the write-back memory.
    old_file_defaults: ClassVar[dict[str, Any]] = {"accumulate_improved_actions": True}

    def __init__(
        self,
        policy: str | type[DIPOPolicy],
        env: GymEnv | str,
        learning_rate: LearningRate = 3e-4,
        actor_learning_rate: LearningRate = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 10_000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        action_learning_rate: float = 0.03,
        action_gradient_steps: int = 20,
        action_grad_norm_ratio: float = 0.1,
        actor_target_update_interval: int = 1,
        accumulate_improved_actions: bool = False,
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
        check_count("action_gradient_steps", action_gradient_steps, minimum=0)
        check_count("actor_target_update_interval", actor_target_update_interval)
        for name, value in (
            ("action_learning_rate", action_learning_rate),
            ("action_grad_norm_ratio", action_grad_norm_ratio),
        ):
            if isinstance(value, bool) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
        if not isinstance(accumulate_improved_actions, bool):
            raise ValueError(f"accumulate_improved_actions must be True or False, got {accumulate_improved_actions!r}")
        if n_steps != 1:
            raise ValueError(
                f"DIPO supports n_steps=1 only (its diffusion memory holds one-step transitions), got {n_steps!r}"
            )
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
        self.action_learning_rate = action_learning_rate
        self.action_gradient_steps = action_gradient_steps
        self.action_grad_norm_ratio = action_grad_norm_ratio
        self.actor_target_update_interval = actor_target_update_interval
        self.accumulate_improved_actions = accumulate_improved_actions
        # Updates done, for the actor target's interval (DiPo.train's ``self.step``); saved with the model.
        self._dipo_updates = 0
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self.replay_buffer_class = memory_buffer_class(self.replay_buffer_class, self.observation_space)
        super()._setup_model()
        self.diffusion_memory.set_accumulation(self.accumulate_improved_actions)

    @property
    def diffusion_memory(self) -> DiffusionMemory:
        """The replay buffer, which carries the diffusion memory."""
        assert isinstance(self.replay_buffer, DiffusionMemory)
        return self.replay_buffer

    def _next_actions_q(self, next_observations: PyTorchObs) -> th.Tensor:
        """One target-actor sample at s' (noise on), scored by the target critics' min."""
        assert self.actor_target is not None
        features = self.actor_target.extract_features(next_observations, self.actor_target.features_extractor)
        next_actions = self.actor_target.sample(features)
        critic_features = self.critic_target.extract_features(next_observations, self.critic_target.features_extractor)
        return min_q_values(self.critic_target, critic_features, next_actions)

    def _actor_step(self, batch_size: int) -> dict[str, th.Tensor]:
        """Improve a memory minibatch by action gradient (written back when accumulating), fit the actor to it."""
        memory = self.diffusion_memory
        observations, stored_actions, indices = memory.sample_memory(batch_size, env=self._vec_normalize_env)
        with th.no_grad():
            critic_features = self.critic.extract_features(observations, self.critic.features_extractor)
        improved = improve_actions(
            self.critic,
            critic_features,
            stored_actions,
            self.action_learning_rate,
            self.action_gradient_steps,
            self.action_grad_norm_ratio * stored_actions.shape[1],
        )
        if self.accumulate_improved_actions:
            memory.write_memory(indices, improved.cpu().numpy())
        actor_features = self.actor.extract_features(observations, self.actor.features_extractor)
        actor_loss = self.actor.denoising_errors(improved, actor_features).mean()
        self._optimize(self.actor.optimizer, actor_loss, self.actor.parameters())
        return {"actor_loss": actor_loss.detach(), "action_change": (improved - stored_actions).norm(dim=1).mean()}

    def _gradient_step(self, replay_data: ReplayBufferSamples) -> dict[str, th.Tensor]:
        stats = self._critic_step(replay_data)
        stats.update(self._actor_step(replay_data.rewards.shape[0]))
        self._update_targets(actor=self._dipo_updates % self.actor_target_update_interval == 0)
        self._dipo_updates += 1
        return stats

    def load_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase, truncate_last_traj: bool = True) -> None:
        """
        SB3's; a buffer without a diffusion memory (saved by QVPO or SAC, say) is refused and the
        current one (if any) kept. The memory is put in this model's mode: an accumulating model
        keeps a loaded buffer's improved actions (or starts a copy of its actions), a default one
        reads the buffer's actions (improved actions a loaded buffer holds are dropped).
        """
        current = getattr(self, "replay_buffer", None)
        super().load_replay_buffer(path, truncate_last_traj)
        if not isinstance(self.replay_buffer, DiffusionMemory):
            loaded = type(self.replay_buffer).__name__
            self.replay_buffer = current
            kept = "the current buffer was kept" if current is not None else "the model still has no replay buffer"
            raise TypeError(
                f"The replay buffer in {path} is a {loaded} without DIPO's diffusion memory (saved by another "
                f"algorithm?); {kept}"
            )
        self.replay_buffer.set_accumulation(self.accumulate_improved_actions)
