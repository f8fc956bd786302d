"""
DIPO's diffusion memory (``agent/replay_memory.py`` ``DiffusionMemory``): a copy of every replay
action that action-gradient steps improve in place, so improvements accumulate over updates.

Here it is one more array on SB3's own replay buffers, indexed like their actions (position, env):
it is saved and loaded with ``save_replay_buffer`` / ``load_replay_buffer`` and works with any
``n_envs``. Its observations are the buffer's, so they are not stored twice.
"""

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.vec_env import VecNormalize
from stable_baselines3.her.her_replay_buffer import HerReplayBuffer

MemoryIndices = tuple[np.ndarray, np.ndarray]


class DiffusionMemory:
    """
    Mixin for SB3 replay buffers: ``memory_actions`` mirrors ``actions`` when a transition is
    added; :meth:`sample_memory` draws (observation, memory action) pairs with their indices, and
    :meth:`write_memory` stores improved actions back.
    """

    memory_actions: np.ndarray
    # Provided by the replay buffer this is mixed into.
    actions: np.ndarray
    observations: Any  # an array, or a dict of arrays (Dict and HER buffers)
    pos: int
    full: bool
    buffer_size: int
    n_envs: int
    optimize_memory_usage: bool

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.memory_actions = np.zeros_like(self.actions)

    def add(self, *args: Any, **kwargs: Any) -> None:
        position = self.pos
        super().add(*args, **kwargs)  # type: ignore[misc]
        self.memory_actions[position] = self.actions[position]

    def _memory_indices(self, batch_size: int) -> MemoryIndices:
        if self.full and self.optimize_memory_usage:
            # Row ``pos`` holds the newest next-observation, not an observation of its action (SB3's rule).
            positions = (np.random.randint(1, self.buffer_size, size=batch_size) + self.pos) % self.buffer_size
        elif self.full:
            positions = np.random.randint(0, self.buffer_size, size=batch_size)
        elif self.pos > 0:
            positions = np.random.randint(0, self.pos, size=batch_size)
        else:
            raise RuntimeError("The diffusion memory is empty: add transitions before sampling it")
        return positions, np.random.randint(0, self.n_envs, size=batch_size)

    def sample_memory(
        self, batch_size: int, env: VecNormalize | None = None
    ) -> tuple[th.Tensor | dict[str, th.Tensor], th.Tensor, MemoryIndices]:
        """Uniformly drawn (observations, memory actions, indices), observations normalised by ``env`` like SB3's samples."""
        positions, envs = self._memory_indices(batch_size)
        buffer: Any = self  # the replay buffer's own normalisation and tensor conversion
        observations: th.Tensor | dict[str, th.Tensor]
        if isinstance(self.observations, dict):
            normalized = buffer._normalize_obs({key: obs[positions, envs] for key, obs in self.observations.items()}, env)
            observations = {key: buffer.to_torch(obs) for key, obs in normalized.items()}
        else:
            observations = buffer.to_torch(buffer._normalize_obs(self.observations[positions, envs], env))
        return observations, buffer.to_torch(self.memory_actions[positions, envs]), (positions, envs)

    def write_memory(self, indices: MemoryIndices, actions: np.ndarray) -> None:
        """Store improved actions (in [-1, 1]) at ``indices``; with repeated indices the last write wins, as in DIPO."""
        positions, envs = indices
        self.memory_actions[positions, envs] = actions


class DiffusionMemoryReplayBuffer(DiffusionMemory, ReplayBuffer):
    """SB3's ReplayBuffer with DIPO's diffusion memory."""


class DictDiffusionMemoryReplayBuffer(DiffusionMemory, DictReplayBuffer):
    """SB3's DictReplayBuffer with DIPO's diffusion memory."""


class HerDiffusionMemoryReplayBuffer(DiffusionMemory, HerReplayBuffer):
    """
    SB3's HerReplayBuffer with DIPO's diffusion memory. The critic learns from relabelled goals as
    usual; the memory holds the real transitions (stored goals) only.
    """


MEMORY_BUFFERS: dict[type[ReplayBuffer], type[ReplayBuffer]] = {
    ReplayBuffer: DiffusionMemoryReplayBuffer,
    DictReplayBuffer: DictDiffusionMemoryReplayBuffer,
    HerReplayBuffer: HerDiffusionMemoryReplayBuffer,
}


def memory_buffer_class(replay_buffer_class: type[ReplayBuffer] | None, observation_space: spaces.Space) -> type[ReplayBuffer]:
    """The version of ``replay_buffer_class`` with a diffusion memory (None: chosen by the observation space)."""
    if replay_buffer_class is None:
        return DictDiffusionMemoryReplayBuffer if isinstance(observation_space, spaces.Dict) else DiffusionMemoryReplayBuffer
    if issubclass(replay_buffer_class, DiffusionMemory):
        return replay_buffer_class
    if replay_buffer_class in MEMORY_BUFFERS:
        return MEMORY_BUFFERS[replay_buffer_class]
    raise ValueError(
        f"DIPO keeps its diffusion memory in the replay buffer and has no version of {replay_buffer_class.__name__}: "
        f"use one of {[cls.__name__ for cls in MEMORY_BUFFERS]} (or a subclass of DiffusionMemory)"
    )
