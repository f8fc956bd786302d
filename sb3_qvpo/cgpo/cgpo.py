"""
CGPO: Critic-Guided diffusion Policy Optimization (Ding et al., ICML 2026, arXiv 2605.30056,
"Sample-Efficient Diffusion-based Reinforcement Learning with Critic Guidance") for Stable-Baselines3.

No official code exists: this follows the paper (Algorithms 1-2, eq. 14-19, Tables 4-5); every
choice it leaves open is a keyword here and listed in the README.
"""

import math
from typing import Any, ClassVar

import torch as th
from sb3_contrib.common.utils import quantile_huber_loss
from sb3_contrib.tqc.policies import Critic as QuantileCritic
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, PyTorchObs, ReplayBufferSamples
from torch.nn import functional as F

from sb3_qvpo.cgpo.policies import CGPOPolicy, CnnPolicy, MlpPolicy, MultiInputPolicy, ValueNetwork
from sb3_qvpo.cgpo.quantiles import candidate_q_hat, critic_quantiles, q_hat, truncate_quantiles
from sb3_qvpo.common.actor import weighted_denoising_loss
from sb3_qvpo.common.checks import check_count
from sb3_qvpo.common.off_policy import DiffusionOffPolicyAlgorithm
from sb3_qvpo.common.schedules import LearningRate
from sb3_qvpo.diffusion import sample_actions_guided


class CGPO(DiffusionOffPolicyAlgorithm):
    """
    CGPO: QVPO's weighted diffusion loss with one critic-guided target per state in place of the
    best of N_d candidates, a distributional critic and a value-calibrated baseline.

    One update (``train``), on one minibatch, in Algorithm 1's order (actor, then critic):

    - actor: a^g(s) from the reverse chain of the current actor whose last ``n_guided_steps`` (G)
      steps are DSG steps up the gradient of Qhat(s, x0_hat) (Algorithm 2,
      :func:`~sb3_qvpo.diffusion.sample_actions_guided`); w(s) = max(Qhat(s, a^g) - V_phi(s), 0)
      (eq. 15); loss = mean of w(s) times the denoising error of a^g at a uniform t, plus
      ``n_uniform_samples`` (N_e) uniform actions per state weighted ``entropy_coef`` * w(s) (eq. 18-19);
    - critic: TQC's quantile Huber loss (sb3-contrib) towards r + gamma (1 - done) z, z the target
      critic's quantiles at a', each net's highest ``top_quantiles_to_drop_per_net`` dropped (as in
      eq. 14); a' is chosen "DDQN" style: the best by the *current* critic's Qhat of
      ``n_target_samples`` (K_t) target-actor samples, evaluated by the target critic;
    - V_phi: MSE to Qhat(s, a~) (eq. 16-17, the critic just updated), a~ an unguided sample of the
      current actor (the one drawn for the actor step);
    - targets: Polyak averaging of the critic and the actor (``tau``).

    Guidance is used for the training targets only: acting and evaluation take the best by Qhat of
    K_b / ``n_eval_samples`` unguided samples (:class:`CGPOPolicy`).

    :param policy: "MlpPolicy", "MultiInputPolicy", "CnnPolicy" or a :class:`CGPOPolicy` subclass
    :param env: the environment (or its Gymnasium id); needs a bounded Box action space
    :param learning_rate: critic and V_phi learning rate (Table 4: 3e-4)
    :param actor_learning_rate: diffusion-actor learning rate (Table 4: 3e-4)
    :param buffer_size: replay buffer size (1e6)
    :param learning_starts: steps of uniform random actions before learning (not given; 10,000 as QVPO)
    :param batch_size: minibatch size (256)
    :param tau: Polyak coefficient of the critic and actor targets (0.005)
    :param gamma: discount factor (0.99)
    :param train_freq: update every ``train_freq`` steps, or a tuple ``(n, "step" | "episode")``
    :param gradient_steps: gradient steps per rollout (-1: as many as environment steps)
    :param action_noise: optional extra exploration (SB3's ``ActionNoise``); None: the policy's sampling explores
    :param n_guided_steps: G, the guided last steps of the chain, in [0, T] (Table 5: 10 of T = 20)
    :param guidance_rate: rho in [0, 1], the weight of the critic's direction in a DSG step (Table 5: 0.95)
    :param guidance_eps: eps of d* = -sqrt(d) sigma g / (||g|| + eps) (not given: 1e-8)
    :param n_target_samples: K_t, target-actor samples among which the TD target's action is chosen (Table 5: 4)
    :param n_uniform_samples: N_e, uniform actions per state of the entropy term (Table 5: 10)
    :param entropy_coef: lambda_ent, their weight relative to w(s) (Table 5: 0.02, constant)
    :param max_grad_norm: gradient-norm clipping of actor, critic and V_phi (Table 4: none)
    :param replay_buffer_class: e.g. ``HerReplayBuffer``; chosen from the observation space if None
    :param replay_buffer_kwargs: keyword arguments of the replay buffer
    :param optimize_memory_usage: SB3's memory-efficient replay buffer
    :param n_steps: n-step returns (only with the default replay buffer)
    :param policy_kwargs: see :class:`CGPOPolicy` (``net_arch``, ``n_quantiles``,
        ``top_quantiles_to_drop_per_net``, ``n_critics``, ``value_net_arch``, ``n_behavior_samples``, ...)
    :param stats_window_size: episodes averaged in the rollout logs
    :param tensorboard_log: TensorBoard log folder (None: no TensorBoard)
    :param verbose: 0 silent, 1 info, 2 debug
    :param seed: seed of the random generators
    :param device: "cpu", "cuda" or "auto"
    :param _init_setup_model: build the networks at construction
    """

    algorithm_name: ClassVar[str] = "CGPO"
    policy_base: ClassVar[type[CGPOPolicy]] = CGPOPolicy
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: CGPOPolicy
    critic: QuantileCritic  # type: ignore[assignment]
    critic_target: QuantileCritic  # type: ignore[assignment]
    value_net: ValueNetwork

    def __init__(
        self,
        policy: str | type[CGPOPolicy],
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
        n_guided_steps: int = 10,
        guidance_rate: float = 0.95,
        guidance_eps: float = 1e-8,
        n_target_samples: int = 4,
        n_uniform_samples: int = 10,
        entropy_coef: float = 0.02,
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
        check_count("n_guided_steps", n_guided_steps, minimum=0)
        check_count("n_target_samples", n_target_samples)
        check_count("n_uniform_samples", n_uniform_samples, minimum=0)
        if isinstance(guidance_rate, bool) or not 0.0 <= guidance_rate <= 1.0:
            raise ValueError(f"guidance_rate (rho) must be in [0, 1], got {guidance_rate!r}")
        for name, value in (("guidance_eps", guidance_eps), ("entropy_coef", entropy_coef)):
            if isinstance(value, bool) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
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
        self.n_guided_steps = n_guided_steps
        self.guidance_rate = guidance_rate
        self.guidance_eps = guidance_eps
        self.n_target_samples = n_target_samples
        self.n_uniform_samples = n_uniform_samples
        self.entropy_coef = entropy_coef
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        n_steps = self.actor.schedule.n_steps
        if self.n_guided_steps > n_steps:
            raise ValueError(f"n_guided_steps (G) must be in [0, T={n_steps}], got {self.n_guided_steps}")
        self.value_net = self.policy.value_net

    @property
    def n_drop(self) -> int:
        return self.policy.top_quantiles_to_drop_per_net

    def _set_learning_rates(self, gradient_steps_done: int, progress_remaining: float) -> tuple[float, float]:
        """The critic's rate also drives V_phi's."""
        critic_lr, actor_lr = super()._set_learning_rates(gradient_steps_done, progress_remaining)
        for group in self.policy.value_net.optimizer.param_groups:
            group["lr"] = critic_lr
        return critic_lr, actor_lr

    def guided_targets(self, observations: PyTorchObs) -> th.Tensor:
        """a^g(s), one per observation: Algorithm 2 with the current actor and the current critic's Qhat."""
        actor, critic = self.actor, self.critic
        with th.no_grad():
            actor_features = actor.extract_features(observations, actor.features_extractor)
            critic_features = critic.extract_features(observations, critic.features_extractor)

        def value_of_x0(x0: th.Tensor) -> th.Tensor:
            return q_hat(critic, critic_features, x0, self.n_drop)

        return sample_actions_guided(
            actor.noise_net,
            actor.schedule,
            actor_features,
            value_of_x0,
            self.n_guided_steps,
            self.guidance_rate,
            process=actor.process,
            eps=self.guidance_eps,
        )

    def _actor_step(self, observations: PyTorchObs) -> tuple[dict[str, th.Tensor], th.Tensor]:
        """Eq. 15, 18-19 on the guided targets; returns the stats and the unguided samples a~ for V_phi."""
        actor_features = self.actor.extract_features(observations, self.actor.features_extractor)
        guided = self.guided_targets(observations)
        with th.no_grad():
            critic_features = self.critic.extract_features(observations, self.critic.features_extractor)
            guided_q = q_hat(self.critic, critic_features, guided, self.n_drop)
            unguided = self.actor.sample(actor_features)
            unguided_q = q_hat(self.critic, critic_features, unguided, self.n_drop)
            values = self.value_net(observations)
            weights = (guided_q - values).clamp_min(0.0)
        actor_loss = weighted_denoising_loss(
            self.actor, actor_features, guided, weights, self.n_uniform_samples, self.entropy_coef
        )
        self._optimize(self.actor.optimizer, actor_loss, self.actor.parameters())
        stats = {
            "actor_loss": actor_loss.detach(),
            "guided_q": guided_q.mean(),
            "weight_mean": weights.mean(),
            "positive_weight_fraction": (weights > 0).float().mean(),
            # Delta_Q (eq. 9) for CGPO: the guided target's Qhat minus the unguided sample's
            "critic_contrast": (guided_q - unguided_q).mean(),
        }
        return stats, unguided

    def _next_target_quantiles(self, next_observations: PyTorchObs) -> th.Tensor:
        """
        The target critic's truncated quantiles at a', (batch, N * (M - k)): a' is the best by the current
        critic's Qhat of K_t target-actor samples (DDQN: selection and evaluation decoupled).
        """
        assert self.actor_target is not None
        actor_features = self.actor_target.extract_features(next_observations, self.actor_target.features_extractor)
        candidates = self.actor_target.sample(actor_features, n_per_state=self.n_target_samples)
        n_states = actor_features.shape[0]
        if self.n_target_samples > 1:
            online_features = self.critic.extract_features(next_observations, self.critic.features_extractor)
            scores = candidate_q_hat(self.critic, online_features, candidates, self.n_target_samples, self.n_drop)
            rows = th.arange(n_states, device=candidates.device)
            next_actions = candidates.view(n_states, self.n_target_samples, -1)[rows, scores.argmax(dim=1)]
        else:
            next_actions = candidates
        target_features = self.critic_target.extract_features(next_observations, self.critic_target.features_extractor)
        quantiles = critic_quantiles(self.critic_target, target_features, next_actions)
        return truncate_quantiles(quantiles, self.n_drop).reshape(n_states, -1)

    def _critic_step(self, replay_data: ReplayBufferSamples) -> dict[str, th.Tensor]:
        """TQC's quantile regression (sb3-contrib's quantile_huber_loss) on the DDQN, truncated target."""
        discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
        with th.no_grad():
            next_quantiles = self._next_target_quantiles(replay_data.next_observations)
            target_quantiles = replay_data.rewards + (1 - replay_data.dones) * discounts * next_quantiles
        current_quantiles = self.critic(replay_data.observations, replay_data.actions)
        critic_loss = quantile_huber_loss(current_quantiles, target_quantiles.unsqueeze(1), sum_over_quantiles=False)
        self._optimize(self.critic.optimizer, critic_loss, self.critic.parameters())
        return {
            "critic_loss": critic_loss.detach(),
            "q_values": current_quantiles.detach().mean(),
            "target_q": target_quantiles.mean(),
        }

    def _value_step(self, observations: PyTorchObs, unguided: th.Tensor) -> dict[str, th.Tensor]:
        """Eq. 16-17: V_phi(s) regresses on stop-grad Qhat(s, a~)."""
        with th.no_grad():
            critic_features = self.critic.extract_features(observations, self.critic.features_extractor)
            value_targets = q_hat(self.critic, critic_features, unguided, self.n_drop)
        value_loss = F.mse_loss(self.value_net(observations), value_targets)
        self._optimize(self.value_net.optimizer, value_loss, self.value_net.parameters())
        return {"value_loss": value_loss.detach(), "value_target": value_targets.mean()}

    def _gradient_step(self, replay_data: ReplayBufferSamples) -> dict[str, th.Tensor]:
        stats, unguided = self._actor_step(replay_data.observations)
        stats.update(self._critic_step(replay_data))
        stats.update(self._value_step(replay_data.observations, unguided))
        self._update_targets()
        return stats

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "value_net"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, tensors = super()._get_torch_save_params()
        return [*state_dicts, "value_net.optimizer"], tensors
