"""Tiny QVPO settings and small test environments shared by the test modules."""

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

TINY_POLICY_KWARGS: dict[str, Any] = dict(net_arch=[32, 32], n_diffusion_steps=5)

TINY_KWARGS: dict[str, Any] = dict(
    learning_starts=50,
    batch_size=32,
    buffer_size=2_000,
    n_action_samples=8,
    n_uniform_samples=2,
    n_behavior_samples=4,
    n_eval_samples=8,
)


def tiny_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs = dict(TINY_KWARGS)
    kwargs["policy_kwargs"] = dict(TINY_POLICY_KWARGS)
    kwargs.update(overrides)
    return kwargs


class AsymmetricBoxEnv(gym.Env):
    """Short episodes, a 2-D action space with asymmetric bounds [0, 2] x [-3, 5]."""

    def __init__(self, episode_length: int = 10):
        super().__init__()
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
        self.action_space = spaces.Box(
            low=np.array([0.0, -3.0], dtype=np.float32), high=np.array([2.0, 5.0], dtype=np.float32), dtype=np.float32
        )
        self.episode_length = episode_length
        self._t = 0

    def _obs(self) -> np.ndarray:
        return self.np_random.uniform(-1.0, 1.0, size=3).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._t += 1
        reward = -float(np.sum((np.asarray(action) - np.array([1.0, 1.0])) ** 2))
        return self._obs(), reward, False, self._t >= self.episode_length, {}


class GoalDictEnv(gym.Env):
    """A goal-conditioned-like env with Dict observations {"observation": Box(3), "desired_goal": Box(2)}."""

    def __init__(self, episode_length: int = 10):
        super().__init__()
        self.observation_space = spaces.Dict(
            {
                "observation": spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32),
                "desired_goal": spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.episode_length = episode_length
        self._t = 0
        self._goal = np.zeros(2, dtype=np.float32)

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "observation": self.np_random.uniform(-1.0, 1.0, size=3).astype(np.float32),
            "desired_goal": self._goal.copy(),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self._t = 0
        self._goal = self.np_random.uniform(-1.0, 1.0, size=2).astype(np.float32)
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        self._t += 1
        reward = -float(np.linalg.norm(np.asarray(action) - self._goal))
        return self._obs(), reward, False, self._t >= self.episode_length, {}


# Tiny settings of the paper's baselines (QSM, DIPO), of Diffusion-QL and of CGPO, as TINY_KWARGS for QVPO.
BASELINE_KWARGS: dict[str, dict[str, Any]] = {
    "QSM": dict(learning_starts=50, batch_size=32, buffer_size=2_000),
    "DIPO": dict(learning_starts=50, batch_size=32, buffer_size=2_000, action_gradient_steps=3),
    # The EMA actor starts following early enough for the short runs to exercise it.
    "DiffusionQL": dict(learning_starts=50, batch_size=32, buffer_size=2_000, ema_start_update=10),
    # G within the tiny T = 5 below; a few uniform actions keep the entropy term in play.
    "CGPO": dict(learning_starts=50, batch_size=32, buffer_size=2_000, n_guided_steps=3, n_uniform_samples=2),
}
BASELINE_POLICY_KWARGS: dict[str, Any] = dict(net_arch=[32, 32], n_diffusion_steps=5)


def baseline_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    kwargs = dict(BASELINE_KWARGS[name])
    kwargs["policy_kwargs"] = dict(BASELINE_POLICY_KWARGS)
    kwargs.update(overrides)
    return kwargs
