"""
DIPO's diffusion memory (``agent/replay_memory.py`` ``DiffusionMemory``): the actions that each
update's action-gradient steps start from, sampled independently of the critic's minibatch.

The official ``DiffusionMemory.replace`` means to write the improved actions back, but
``np.copyto(self.best_actions[idxs], ...)`` writes into the copy that integer-array indexing
returns, so the official memory always holds the behaviour actions as collected. Two modes here:

- default (what the official code runs): the memory *is* the buffer's ``actions`` array (no
  second copy, nothing written back);
- accumulating (``set_accumulation(True)``, what the official code means): a separate copy of
  every stored action, into which improved actions are written, so improvement accumulates.

Either way it lives on SB3's own replay buffers, indexed like their actions (position, env): it is
saved and loaded with ``save_replay_buffer`` / ``load_replay_buffer`` and works with any ``n_envs``.
Its observations are the buffer's, so they are not stored twice.
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
    Mixin for SB3 replay buffers: :meth:`sample_memory` draws (observation, memory action) pairs
    with their indices. ``memory_actions`` is ``actions`` itself unless :meth:`set_accumulation`
    gave it a copy, which mirrors ``actions`` when a transition is added and which
    :meth:`write_memory` updates.
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
        self.memory_actions = self.actions

    @property
    def accumulates(self) -> bool:
        """Whether the memory is a copy that improved actions are written into (else the buffer's own actions)."""
        return self.memory_actions is not self.actions

    def set_accumulation(self, accumulate: bool) -> None:
        """
        Switch modes: accumulating starts from a copy of the stored actions (an existing copy is
        kept); not accumulating drops the copy and reads the buffer's actions again.
        """
        if accumulate and not self.accumulates:
            self.memory_actions = self.actions.copy()
        elif not accumulate:
            self.memory_actions = self.actions

    def add(self, *args: Any, **kwargs: Any) -> None:
        position = self.pos
        super().add(*args, **kwargs)  # type: ignore[misc]
        if self.accumulates:
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
        """Store improved actions (in [-1, 1]) at ``indices`` (accumulating only); repeated indices: the last write wins."""
        if not self.accumulates:
            raise RuntimeError(
                "This diffusion memory is the replay buffer's own actions (DIPO's official behaviour): writing improved "
                "actions into it would change the critic's data. Call set_accumulation(True) first"
            )
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
