"""
Diffusion-QL: Diffusion Policies as an Expressive Policy Class for Offline RL (Wang, Hunt, Zhou;
ICLR 2023, arXiv 2208.06193) for Stable-Baselines3.

Follows the official code, github Zhendong-Wang/Diffusion-Policies-for-Offline-RL,
``agents/ql_diffusion.py`` (``Diffusion_QL.train``, ``sample_action``) and ``agents/diffusion.py``,
with the defaults of ``main.py`` (D4RL locomotion: T = 5, vp, eta 1.0, lr 3e-4).
"""

import math
from typing import Any, ClassVar

import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, PyTorchObs, ReplayBufferSamples

from sb3_qvpo.common.checks import check_count
from sb3_qvpo.common.critic import q_values_per_network
from sb3_qvpo.common.off_policy import DiffusionOffPolicyAlgorithm
from sb3_qvpo.common.schedules import LearningRate
from sb3_qvpo.diffusion_ql.policies import CnnPolicy, DiffusionQLPolicy, MlpPolicy, MultiInputPolicy


def normalised_q_loss(q_values: th.Tensor, numerator: int) -> th.Tensor:
    """
    Diffusion-QL's policy-improvement term: ``-mean Q_k(s, a0) / mean |Q_j(s, a0)|`` with the
    denominator detached, for the pair (k, j) = (``numerator``, the other of two critics)
    (``Diffusion_QL.train``: ``q_loss = - q1_new_action.mean() / q2_new_action.abs().mean().detach()``,
    or with q1 and q2 swapped). ``q_values``: shape (batch, 2).
    """
    other = 1 - numerator
    return -q_values[:, numerator].mean() / q_values[:, other].abs().mean().detach()


class DiffusionQL(DiffusionOffPolicyAlgorithm):
    """
    Diffusion-QL: a diffusion actor trained with the denoising (behaviour-cloning) loss plus a
    Q-maximisation term back-propagated through the whole reverse chain. Built for offline RL
    (``load_dataset`` then ``learn_offline``); ``learn`` fine-tunes online with the same model.

    One update (``Diffusion_QL.train``, one minibatch):

    - critic: twin Q networks regress on r + gamma (1 - done) min(Q1', Q2')(s', a'), a' one sample
      of the EMA actor (``max_q_backup``: 10 samples, the max over samples of each target critic,
      then the min of the two), gradient norm clipped;
    - actor: L = L_bc + eta * L_q, with L_bc the epsilon-prediction error at a uniform step and
      ``L_q = -Q_k(s, a0) / |Q_j(s, a0)|`` (:func:`normalised_q_loss`; k drawn with probability 1/2),
      a0 a reverse-chain sample *with* gradients;
    - targets: the critics' by Polyak averaging every update, the actor's EMA (decay 0.995) every
      5 updates from update 1,000 on (before that the EMA actor is the initial actor).

    Acting and evaluation (``sample_action``): 50 samples of the actor, one drawn with
    probabilities softmax(min-Q of the target critic); see :class:`DiffusionQLPolicy`.

    :param policy: "MlpPolicy", "MultiInputPolicy", "CnnPolicy" or a :class:`DiffusionQLPolicy` subclass
    :param env: the environment (or its Gymnasium id): its spaces must match the dataset's; it is
        stepped only by ``learn`` (online fine-tuning) and by evaluation callbacks
    :param learning_rate: critic learning rate (official: 3e-4)
    :param actor_learning_rate: actor learning rate (official: 3e-4 for D4RL locomotion)
    :param buffer_size: replay buffer size for online fine-tuning (``load_dataset`` makes it at
        least the dataset's size)
    :param learning_starts: random-action steps before online learning (0: the policy acts from
        the start, as a pre-trained policy should)
    :param batch_size: minibatch size (256)
    :param tau: Polyak coefficient of the critic targets (0.005)
    :param gamma: discount factor (0.99)
    :param train_freq: online: update every ``train_freq`` steps, or a tuple ``(n, "step" | "episode")``
    :param gradient_steps: online: gradient steps per rollout (-1: as many as environment steps)
    :param action_noise: optional extra exploration (SB3's ``ActionNoise``) while collecting online
    :param eta: weight of the Q term (official: 1.0 for locomotion, per task in ``main.py``); 0: behaviour
        cloning (the Q term, multiplied by 0, is not computed)
    :param ema_decay: decay of the actor's EMA (0.995)
    :param ema_start_update: updates before the EMA starts following the actor (1,000)
    :param ema_update_interval: EMA update every this many updates (5)
    :param max_q_backup: TD target with the max over ``n_backup_samples`` next actions (official:
        True for AntMaze only)
    :param n_backup_samples: next actions per state for ``max_q_backup`` (10)
    :param max_grad_norm: gradient-norm clipping of actor and critic (official class default 1.0;
        ``main.py``: 9.0 hopper/halfcheetah-medium, 1.0 walker2d-medium; None: no clipping)
    :param replay_buffer_class: e.g. ``HerReplayBuffer`` for online use; chosen from the observation space if None
    :param replay_buffer_kwargs: keyword arguments of the replay buffer
    :param optimize_memory_usage: SB3's memory-efficient replay buffer
    :param n_steps: n-step returns (only with the default replay buffer)
    :param policy_kwargs: see :class:`DiffusionQLPolicy`
    :param stats_window_size: episodes averaged in the rollout logs
    :param tensorboard_log: TensorBoard log folder (None: no TensorBoard)
    :param verbose: 0 silent, 1 info, 2 debug
    :param seed: seed of the random generators
    :param device: "cpu", "cuda" or "auto"
    :param _init_setup_model: build the networks at construction
    """

    algorithm_name: ClassVar[str] = "DiffusionQL"
    policy_base: ClassVar[type[DiffusionQLPolicy]] = DiffusionQLPolicy
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: DiffusionQLPolicy

    def __init__(
        self,
        policy: str | type[DiffusionQLPolicy],
        env: GymEnv | str,
        learning_rate: LearningRate = 3e-4,
        actor_learning_rate: LearningRate = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 0,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        eta: float = 1.0,
        ema_decay: float = 0.995,
        ema_start_update: int = 1000,
        ema_update_interval: int = 5,
        max_q_backup: bool = False,
        n_backup_samples: int = 10,
        max_grad_norm: float | None = 1.0,
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
        if isinstance(eta, bool) or not 0 <= eta < math.inf:
            raise ValueError(f"eta must be a finite float >= 0, got {eta!r}")
        if isinstance(ema_decay, bool) or not 0 <= ema_decay <= 1:
            raise ValueError(f"ema_decay must be a float in [0, 1], got {ema_decay!r}")
        check_count("ema_start_update", ema_start_update, minimum=0)
        check_count("ema_update_interval", ema_update_interval)
        check_count("n_backup_samples", n_backup_samples)
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
        self.eta = eta
        self.ema_decay = ema_decay
        self.ema_start_update = ema_start_update
        self.ema_update_interval = ema_update_interval
        self.max_q_backup = max_q_backup
        self.n_backup_samples = n_backup_samples
        # Updates done (Diffusion_QL's ``self.step``), for the EMA's start and interval; saved with the model.
        self._dql_updates = 0
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.policy.n_critics != 2 or self.actor_target is None:
            raise ValueError(
                "DiffusionQL needs two Q networks (n_critics=2: its Q term divides one by the other) and an "
                "actor target (use_actor_target=True: the EMA actor gives the TD target's next action)"
            )

    def _next_actions_q(self, next_observations: PyTorchObs) -> th.Tensor:
        """One EMA-actor sample at s' (or the max over ``n_backup_samples``), scored by the target critics' min."""
        assert self.actor_target is not None
        n_samples = self.n_backup_samples if self.max_q_backup else 1
        features = self.actor_target.extract_features(next_observations, self.actor_target.features_extractor)
        next_actions = self.actor_target.sample(features, n_per_state=n_samples)
        critic_features = self.critic_target.extract_features(next_observations, self.critic_target.features_extractor)
        q_values = q_values_per_network(
            self.critic_target, critic_features.repeat_interleave(n_samples, dim=0), next_actions
        )  # (batch * n_samples, n_critics)
        return q_values.view(-1, n_samples, q_values.shape[1]).max(dim=1).values.min(dim=1).values

    def _actor_step(self, replay_data: ReplayBufferSamples) -> dict[str, th.Tensor]:
        """L_bc + eta * L_q, with a0 drawn through the reverse chain with gradients."""
        observations = replay_data.observations
        actor_features = self.actor.extract_features(observations, self.actor.features_extractor)
        bc_loss = self.actor.denoising_errors(replay_data.actions, actor_features).mean()
        if self.eta == 0:
            # Behaviour cloning: the Q term would be multiplied by 0; skip the differentiable chain it needs.
            q_loss = th.zeros((), device=bc_loss.device)
        else:
            new_actions = self.actor.sample(actor_features)  # gradients enabled: the plain, differentiable chain
            critic_features = self.critic.extract_features(observations, self.critic.features_extractor)
            q_new = q_values_per_network(self.critic, critic_features, new_actions)
            numerator = int(th.rand(()).item() > 0.5)
            q_loss = normalised_q_loss(q_new, numerator)
        actor_loss = bc_loss + self.eta * q_loss
        self._optimize(self.actor.optimizer, actor_loss, self.actor.parameters())
        return {"actor_loss": actor_loss.detach(), "bc_loss": bc_loss.detach(), "q_loss": q_loss.detach()}

    def _gradient_step(self, replay_data: ReplayBufferSamples) -> dict[str, th.Tensor]:
        stats = self._critic_step(replay_data)
        stats.update(self._actor_step(replay_data))
        ema_due = self._dql_updates % self.ema_update_interval == 0 and self._dql_updates >= self.ema_start_update
        self._update_targets(actor=ema_due, actor_tau=1.0 - self.ema_decay)
        self._dql_updates += 1
        return stats
