"""The continuous bandit of the paper's Figure 2: one state, one step, a reward with separated peaks."""

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# Centres of the three peaks in the paper (w = 1.5, sigma = 0.1 for each).
PAPER_PEAK_CENTERS = ((-1.35, 0.65), (-0.65, 1.35), (-1.61, 1.61))


def multi_peak_reward(actions: np.ndarray, centers: np.ndarray, weight: float, sigma: float) -> np.ndarray:
    """R(x) = sum_i w / (2 pi sigma^2) exp(-|x - mu_i|^2 / (2 sigma^2)), for a batch of 2-D actions."""
    squared_distances = ((actions[..., None, :] - centers) ** 2).sum(axis=-1)
    return (weight / (2.0 * np.pi * sigma**2) * np.exp(-squared_distances / (2.0 * sigma**2))).sum(axis=-1)


class MultiPeakBanditEnv(gym.Env):
    """
    Every episode is one step from the same constant observation; the reward depends on the 2-D action.

    A policy that finds a peak earns far more than a uniform one, and one that covers several peaks
    shows the multimodality a Gaussian policy lacks.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium declares it as an instance attribute)
    action_space: spaces.Box

    def __init__(
        self,
        centers: tuple[tuple[float, float], ...] = PAPER_PEAK_CENTERS,
        weight: float = 1.5,
        sigma: float = 0.1,
        action_bound: float = 2.5,
    ):
        super().__init__()
        self.centers = np.asarray(centers, dtype=np.float64)
        self.weight = weight
        self.sigma = sigma
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-action_bound, action_bound, shape=(2,), dtype=np.float32)

    def reward(self, actions: np.ndarray) -> np.ndarray:
        return multi_peak_reward(np.asarray(actions, dtype=np.float64), self.centers, self.weight, self.sigma)

    def uniform_mean_reward(self, n_samples: int = 200_000, seed: int = 0) -> float:
        """Expected reward of the uniform random policy, by Monte Carlo."""
        rng = np.random.default_rng(seed)
        actions = rng.uniform(self.action_space.low, self.action_space.high, size=(n_samples, 2))
        return float(self.reward(actions).mean())

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        clipped = np.clip(action, self.action_space.low, self.action_space.high)
        return np.zeros(1, dtype=np.float32), float(self.reward(clipped)), True, False, {}
