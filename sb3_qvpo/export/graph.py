"""
A trained policy's ``predict`` as one plain torch module with its randomness as inputs: what the
ONNX exporter traces. It knows nothing of ONNX, so it is also what the tests compare with ``predict``.

``predict`` draws, in this order, from its generator (``predict(deterministic=True)``: a private one
reseeded with ``eval_seed`` at every call; otherwise torch's global one):

1. the reverse chain's T draws (``n_acting_steps`` where set) of shape (batch_size * K, action_dim):
   x_T, then the noise of steps T-1 .. 1 (:func:`~sb3_qvpo.diffusion.draw_chain_noise`; rows grouped by observation);
2. with ``action_selection="softmax"`` and K > 1 (Diffusion-QL), torch's ``multinomial``, which draws
   (batch_size, K) standard exponentials E and takes argmax(softmax(Q) / E);
3. with ``exploration_noise > 0`` (QSM, stochastic only), (batch_size, action_dim) standard normals.

K is ``n_eval_samples`` (deterministic) or ``n_behavior_samples``. :func:`draw_acting_noise` draws
exactly these with torch, so a graph fed with them returns ``predict``'s actions.
"""

from dataclasses import dataclass

import numpy as np
import torch as th
from gymnasium import spaces
from torch import nn

from sb3_qvpo.common.policies import DiffusionPolicy
from sb3_qvpo.diffusion import draw_chain_noise, reverse_chain_from_draws

CHAIN_NOISE = "chain_noise"
SELECTION_NOISE = "selection_noise"
EXPLORATION_NOISE = "exploration_noise"


@dataclass(frozen=True)
class ActingNoise:
    """The shapes of the random inputs of one policy's acting, for ``batch_size`` observations."""

    batch_size: int
    n_samples: int  # K: candidates per observation
    n_steps: int  # T, or the policy's n_acting_steps
    action_dim: int
    softmax_draw: bool  # Diffusion-QL's softmax choice (needs SELECTION_NOISE)
    exploration: bool  # Gaussian exploration noise after the choice (needs EXPLORATION_NOISE)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Input name -> shape, in the order the graph takes them (and torch draws them)."""
        shapes: dict[str, tuple[int, ...]] = {CHAIN_NOISE: (self.n_steps, self.batch_size * self.n_samples, self.action_dim)}
        if self.softmax_draw:
            shapes[SELECTION_NOISE] = (self.batch_size, self.n_samples)
        if self.exploration:
            shapes[EXPLORATION_NOISE] = (self.batch_size, self.action_dim)
        return shapes


def acting_noise(policy: DiffusionPolicy, batch_size: int, deterministic: bool) -> ActingNoise:
    """What ``policy.predict`` draws for ``batch_size`` observations in the given mode."""
    n_samples = policy.n_eval_samples if deterministic else policy.n_behavior_samples
    return ActingNoise(
        batch_size=batch_size,
        n_samples=n_samples,
        n_steps=policy.actor.sampling_schedule(policy.n_acting_steps).n_steps,
        action_dim=policy.actor.action_dim,
        softmax_draw=policy.action_selection == "softmax" and n_samples > 1,
        exploration=not deterministic and policy.exploration_noise > 0,
    )


def draw_acting_noise(
    policy: DiffusionPolicy, batch_size: int, deterministic: bool = False, generator: th.Generator | None = None
) -> dict[str, np.ndarray]:
    """
    The random inputs of the exported graph, drawn as ``predict`` draws them: with ``generator``
    (None: torch's global generator, as ``predict(deterministic=False)`` uses; with
    ``deterministic=True`` and no generator, ``predict``'s own, seeded with ``eval_seed``).
    Returns float32 arrays by input name (see :class:`ActingNoise`).
    """
    noise = acting_noise(policy, batch_size, deterministic)
    device = policy.device
    if generator is None and deterministic:
        generator = th.Generator(device=device)
        generator.manual_seed(policy.eval_seed)
    rows = (batch_size * noise.n_samples, noise.action_dim)
    draws = {CHAIN_NOISE: th.stack(draw_chain_noise(rows, noise.n_steps, generator, device, th.float32))}
    if noise.softmax_draw:
        draws[SELECTION_NOISE] = th.empty(noise.shapes[SELECTION_NOISE], device=device).exponential_(1, generator=generator)
    if noise.exploration:
        draws[EXPLORATION_NOISE] = th.randn(noise.shapes[EXPLORATION_NOISE], device=device, generator=generator)
    return {name: value.cpu().numpy() for name, value in draws.items()}


class ActingGraph(nn.Module):
    """
    ``policy.predict(observation, deterministic)[0]`` for ``batch_size`` observations, as a function
    of the observation and the noise: features, the unrolled reverse chain (the reference sampler's
    operations), the critic's scores of the K candidates, the choice (best, or Diffusion-QL's
    softmax draw), exploration noise, and the actions in the environment's units.

    ``baked_noise`` (e.g. :func:`draw_acting_noise`'s, the deterministic mode's fixed noise) makes
    the noise a constant of the graph, whose inputs are then the observations alone.
    """

    policy: DiffusionPolicy
    action_low: th.Tensor
    action_range: th.Tensor

    def __init__(
        self,
        policy: DiffusionPolicy,
        batch_size: int,
        deterministic: bool,
        baked_noise: dict[str, np.ndarray] | None = None,
    ):
        super().__init__()
        if not isinstance(policy.action_space, spaces.Box):
            raise TypeError(f"Only Box action spaces are exported, got {policy.action_space}")
        self.policy = policy
        self.noise = acting_noise(policy, batch_size, deterministic)
        self.noise_scale = policy.eval_noise_scale if deterministic else 1.0
        self.exploration_noise = 0.0 if deterministic else policy.exploration_noise
        self.observation_keys = (
            list(policy.observation_space.spaces) if isinstance(policy.observation_space, spaces.Dict) else []
        )
        low, high = policy.action_space.low, policy.action_space.high
        self.register_buffer("action_low", th.as_tensor(low, dtype=th.float32), persistent=False)
        self.register_buffer("action_range", th.as_tensor(high - low, dtype=th.float32), persistent=False)
        self.baked: dict[str, th.Tensor] = {}
        if baked_noise is not None:
            if {name: tuple(value.shape) for name, value in baked_noise.items()} != self.noise.shapes:
                raise ValueError(f"baked_noise must have the shapes {self.noise.shapes}")
            self.baked = {name: th.as_tensor(value, device=policy.device) for name, value in baked_noise.items()}

    @property
    def noise_inputs(self) -> dict[str, tuple[int, ...]]:
        """The graph's noise inputs and their shapes (none when the noise is baked in)."""
        return {} if self.baked else self.noise.shapes

    def observation(self, observations: tuple[th.Tensor, ...]) -> th.Tensor | dict[str, th.Tensor]:
        if self.observation_keys:
            return dict(zip(self.observation_keys, observations, strict=True))
        (observation,) = observations
        return observation

    def forward(self, *inputs: th.Tensor) -> th.Tensor:
        """Inputs: the observation (one per key of a Dict space, in the space's order), then :attr:`noise_inputs`."""
        n_observations = max(len(self.observation_keys), 1)
        noise = dict(self.baked) or dict(zip(self.noise.shapes, inputs[n_observations:], strict=True))
        observation = self.observation(inputs[:n_observations])
        policy, actor = self.policy, self.policy.actor
        n_samples = self.noise.n_samples
        actor_features = actor.extract_features(observation, actor.features_extractor)
        candidates = reverse_chain_from_draws(
            actor.noise_net,
            actor.sampling_schedule(policy.n_acting_steps),
            actor_features.repeat_interleave(n_samples, dim=0),
            noise[CHAIN_NOISE],
            actor.process,
            self.noise_scale,
        )
        if n_samples > 1:
            critic = policy.acting_critic()
            critic_features = critic.extract_features(observation, critic.features_extractor)
            scores = policy.score_candidates(critic, critic_features, candidates, n_samples, fast_path=False)
            if self.noise.softmax_draw:
                chosen = (th.softmax(scores, dim=1) / noise[SELECTION_NOISE]).argmax(dim=1)
            else:
                chosen = scores.argmax(dim=1)
            grouped = candidates.view(self.noise.batch_size, n_samples, -1)
            index = chosen.view(-1, 1, 1).expand(-1, 1, grouped.shape[-1])
            actions = th.gather(grouped, 1, index).squeeze(1)
        else:
            actions = candidates
        if self.exploration_noise > 0:
            actions = (actions + self.exploration_noise * noise[EXPLORATION_NOISE]).clamp(-1.0, 1.0)
        # SB3's unscale_action (squashed policies): [-1, 1] -> [low, high].
        return self.action_low + 0.5 * (actions + 1.0) * self.action_range
