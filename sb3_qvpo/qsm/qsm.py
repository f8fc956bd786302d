"""
QSM: Q-Score Matching (Psenka, Escontrela, Abbeel, Ma; ICML 2024, arXiv 2312.11752) for Stable-Baselines3.

Follows the official code, github Alescontrela/score_matching_rl,
``jaxrl5/agents/score_matching/score_matching_learner.py`` (``update_q``, ``update_actor``,
``update``) with the defaults of ``examples/states/configs/score_matching_config.py``.
"""

import math
from typing import Any, ClassVar

import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, PyTorchObs, ReplayBufferSamples

from sb3_qvpo.common.critic import min_q_values, q_action_gradient
from sb3_qvpo.common.off_policy import DiffusionOffPolicyAlgorithm
from sb3_qvpo.common.schedules import LearningRate
from sb3_qvpo.diffusion import noise_actions
from sb3_qvpo.qsm.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, QSMPolicy
from sb3_qvpo.qsm.schedules import CosineDecayOverGradientSteps


def q_score_matching_loss(predicted_noise: th.Tensor, q_gradient: th.Tensor, q_score_scale: float) -> th.Tensor:
    """
    || -M_q grad_a Q(s, a_t) - eps_theta(s, a_t, t) ||^2, averaged over rows and action dimensions
    (``update_actor``: ``jnp.power(-M_q * sg(critic_jacobian) - eps_pred, 2).mean(-1)``, then the
    batch mean). The noise network predicts the *negative* of the scaled Q-score, so the reverse
    chain, which subtracts the predicted noise, climbs Q. (The paper's Algorithm 1 writes
    eps_theta - alpha grad Q at the denoised action; the code, followed here, differs in both.)
    """
    return (-q_score_scale * q_gradient.detach() - predicted_noise).pow(2).mean()


class QSM(DiffusionOffPolicyAlgorithm):
    """
    Q-Score Matching: an off-policy actor-critic whose diffusion actor's noise prediction is
    matched to the scaled action gradient of the critic, so only the noise network is
    differentiated, never the reverse chain.

    One update (``update``: critic, then actor, same minibatch):

    - critic: twin Q networks regress on r + gamma (1 - done) min(Q1', Q2')(s', a'), with a' one
      sample of the *current* actor plus N(0, ``target_noise``) noise (the noise is not clipped;
      the noisy action is clipped to [-1, 1]);
    - actor: replay actions a are noised to a uniformly drawn step t, a_t = sqrt(abar_t) a +
      sqrt(1 - abar_t) eps, and eps_theta(s, a_t, t) regresses on -M_q * mean_i grad_a Q_i(s, a_t)
      (:func:`q_score_matching_loss`);
    - the critic targets follow by Polyak averaging; there is no actor target.

    Acting (``sample_actions``): one DDPM sample plus unclipped N(0, 0.1) noise (``policy_kwargs``
    ``exploration_noise``), the action then clipped to [-1, 1]; ``predict(deterministic=True)``:
    one sample, drawn from a fixed-seed generator so it is reproducible.

    :param policy: "MlpPolicy", "MultiInputPolicy", "CnnPolicy" or a :class:`QSMPolicy` subclass
    :param env: the environment (or its Gymnasium id); needs a bounded Box action space
    :param learning_rate: critic learning rate (official: 3e-4)
    :param actor_learning_rate: score-model learning rate: a float, an SB3 schedule of the progress,
        or a :class:`~sb3_qvpo.common.schedules.GradientStepSchedule` (default: the official 3e-4
        cosine-decayed over 2e6 gradient steps counted from the first update,
        :class:`~sb3_qvpo.qsm.schedules.CosineDecayOverGradientSteps`; the progress-based
        :class:`~sb3_qvpo.qsm.schedules.CosineDecaySchedule` was the default before 0.2)
    :param buffer_size: replay buffer size
    :param learning_starts: steps of uniform random actions before learning (official: 10,000)
    :param batch_size: minibatch size (256)
    :param tau: Polyak coefficient of the critic targets (0.005)
    :param gamma: discount factor (0.99)
    :param train_freq: update every ``train_freq`` steps, or a tuple ``(n, "step" | "episode")``
    :param gradient_steps: gradient steps per rollout (-1: as many as environment steps)
    :param action_noise: optional extra exploration (SB3's ``ActionNoise``), added to the behaviour
        action while collecting; None (default): the policy's own sampling explores
    :param q_score_scale: M_q, the scale of grad_a Q the noise prediction is matched to (official
        config: 50; its README suggests 120 for humanoid and quadruped)
    :param target_noise: std of the Gaussian noise on the TD target's next action (official: 0.1)
    :param max_grad_norm: gradient-norm clipping of actor and critic (official: None, no clipping)
    :param replay_buffer_class: e.g. ``HerReplayBuffer``; chosen from the observation space if None
    :param replay_buffer_kwargs: keyword arguments of the replay buffer
    :param optimize_memory_usage: SB3's memory-efficient replay buffer
    :param n_steps: n-step returns (only with the default replay buffer)
    :param policy_kwargs: see :class:`QSMPolicy` (``net_arch``, ``exploration_noise``, ``n_diffusion_steps``, ...)
    :param stats_window_size: episodes averaged in the rollout logs
    :param tensorboard_log: TensorBoard log folder (None: no TensorBoard)
    :param verbose: 0 silent, 1 info, 2 debug
    :param seed: seed of the random generators
    :param device: "cpu", "cuda" or "auto"
    :param _init_setup_model: build the networks at construction
    """

    algorithm_name: ClassVar[str] = "QSM"
    policy_base: ClassVar[type[QSMPolicy]] = QSMPolicy
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: QSMPolicy

    def __init__(
        self,
        policy: str | type[QSMPolicy],
        env: GymEnv | str,
        learning_rate: LearningRate = 3e-4,
        actor_learning_rate: LearningRate = CosineDecayOverGradientSteps(3e-4, decay_steps=2_000_000),  # noqa: B008
        buffer_size: int = 1_000_000,
        learning_starts: int = 10_000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        q_score_scale: float = 50.0,
        target_noise: float = 0.1,
        max_grad_norm: float | None = None,
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
        if isinstance(q_score_scale, bool) or not 0 < q_score_scale < math.inf:
            raise ValueError(f"q_score_scale (M_q) must be a finite float > 0, got {q_score_scale!r}")
        if isinstance(target_noise, bool) or not 0 <= target_noise < math.inf:
            raise ValueError(f"target_noise must be a finite float >= 0, got {target_noise!r}")
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
        self.q_score_scale = q_score_scale
        self.target_noise = target_noise
        if _init_setup_model:
            self._setup_model()

    def _next_actions_q(self, next_observations: PyTorchObs) -> th.Tensor:
        """``update_q``: one current-actor sample at s' plus clipped N(0, target_noise), scored by the target critics' min."""
        next_actions = self.actor.sample(self.actor.extract_features(next_observations, self.actor.features_extractor))
        if self.target_noise > 0:
            next_actions = (next_actions + self.target_noise * th.randn_like(next_actions)).clamp_(-1.0, 1.0)
        critic_features = self.critic_target.extract_features(next_observations, self.critic_target.features_extractor)
        return min_q_values(self.critic_target, critic_features, next_actions)

    def _actor_step(self, replay_data: ReplayBufferSamples) -> dict[str, th.Tensor]:
        """``update_actor``: match eps_theta(s, a_t, t) to -M_q grad_a Q(s, a_t) at noised replay actions."""
        observations = replay_data.observations
        actor_features = self.actor.extract_features(observations, self.actor.features_extractor)
        with th.no_grad():
            critic_features = self.critic.extract_features(observations, self.critic.features_extractor)
        t, _, noisy_actions = noise_actions(self.actor.schedule, replay_data.actions)
        q_gradient = q_action_gradient(self.critic, critic_features, noisy_actions, reduce="mean")
        noise_net = self.actor.noise_net
        predicted_noise = noise_net(noisy_actions, noise_net.embed_time(t), actor_features)
        actor_loss = q_score_matching_loss(predicted_noise, q_gradient, self.q_score_scale)
        self._optimize(self.actor.optimizer, actor_loss, self.actor.parameters())
        return {
            "actor_loss": actor_loss.detach(),
            "q_gradient_norm": q_gradient.norm(dim=1).mean(),
            "predicted_noise_norm": predicted_noise.detach().norm(dim=1).mean(),
        }

    def _gradient_step(self, replay_data: ReplayBufferSamples) -> dict[str, th.Tensor]:
        stats = self._critic_step(replay_data)
        stats.update(self._actor_step(replay_data))
        # After the actor step (the same critic targets as right after the critic step, which the
        # official update_q does), so that BatchNorm statistics updated by the actor step reach them.
        self._update_targets(actor=False)
        return stats
