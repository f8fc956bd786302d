"""
Write an SB3 replay buffer (``model.save_replay_buffer``) as a Minari dataset.

SB3 stores, per environment column, raw observations, the next observation, actions scaled to
[-1, 1], ``dones`` (terminated or truncated) and ``timeouts`` (truncated). Each column is read in
time order (oldest first when the buffer has wrapped) and cut into episodes at each ``done``, and
also wherever a next observation is not the following row's observation (an episode left unfinished
when training restarted). Actions are unscaled back to environment units.
"""

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from minari.data_collector import EpisodeBuffer
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.save_util import load_from_pkl

from sb3_qvpo.offline.buffer import unscale_actions
from sb3_qvpo.offline.recording import CollectionSummary, check_new_dataset_id, summarize, write_minari_dataset


def _time_order(buffer: ReplayBuffer) -> np.ndarray:
    """Rows of the buffer from oldest to newest."""
    if buffer.full:
        return np.concatenate([np.arange(buffer.pos, buffer.buffer_size), np.arange(buffer.pos)])
    return np.arange(buffer.pos)


def _check_buffer(buffer: Any, observation_space: spaces.Space, action_space: spaces.Space) -> ReplayBuffer:
    if isinstance(buffer, DictReplayBuffer) or not isinstance(buffer, ReplayBuffer):
        raise ValueError(f"Only SB3 ReplayBuffers of Box observations are supported, got {type(buffer).__name__}")
    if not isinstance(observation_space, spaces.Box) or not isinstance(action_space, spaces.Box):
        raise ValueError(f"Only Box observation and action spaces are supported, got {observation_space} and {action_space}")
    if buffer.optimize_memory_usage:
        raise ValueError(
            "This replay buffer was made with optimize_memory_usage=True: it does not keep the last observation "
            "of each episode, so its episodes cannot be rebuilt"
        )
    if buffer.obs_shape != observation_space.shape or buffer.action_dim != int(np.prod(action_space.shape)):
        raise ValueError(
            f"Replay buffer holds observations of shape {buffer.obs_shape} and actions of size {buffer.action_dim}; "
            f"the environment has {observation_space.shape} and {action_space.shape}"
        )
    if buffer.size() == 0:
        raise ValueError("The replay buffer is empty: it holds no transitions")
    return buffer


def replay_buffer_episodes(
    buffer: ReplayBuffer, observation_space: spaces.Box, action_space: spaces.Box
) -> tuple[list[EpisodeBuffer], list[bool]]:
    """The buffer's episodes, and whether each ended on its own (done) rather than at the buffer's end or a restart."""
    episodes: list[EpisodeBuffer] = []
    complete: list[bool] = []
    rows = _time_order(buffer)
    for column in range(buffer.n_envs):
        observations = buffer.observations[rows, column]
        next_observations = buffer.next_observations[rows, column]
        dones = buffer.dones[rows, column].astype(bool)
        timeouts = buffer.timeouts[rows, column].astype(bool) & dones
        actions = unscale_actions(buffer.actions[rows, column].reshape(len(rows), *action_space.shape), action_space)
        actions = actions.astype(action_space.dtype)
        rewards = buffer.rewards[rows, column].astype(np.float64)
        continues = np.zeros(len(rows), dtype=bool)
        same = next_observations[:-1] == observations[1:]
        continues[:-1] = same.all(axis=tuple(range(1, same.ndim)))
        ends = np.flatnonzero(dones | ~continues)
        starts = np.concatenate([[0], ends[:-1] + 1])
        for start, end in zip(starts, ends, strict=True):
            steps = slice(start, end + 1)
            terminations = dones[steps] & ~timeouts[steps]
            truncations = timeouts[steps].copy()
            if not terminations[-1]:
                truncations[-1] = True  # cut short: by the time limit, the buffer's end or a restart
            episodes.append(
                EpisodeBuffer(
                    id=len(episodes),
                    observations=np.concatenate([observations[steps], next_observations[end : end + 1]]),
                    actions=actions[steps],
                    rewards=rewards[steps],
                    terminations=terminations,
                    truncations=truncations,
                )
            )
            complete.append(bool(dones[end]))
    return episodes, complete


def replay_buffer_to_minari(
    replay_buffer: ReplayBuffer | str | os.PathLike[str],
    dataset_id: str,
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    algorithm_name: str | None = None,
    author: str | None = None,
    description: str | None = None,
) -> CollectionSummary:
    """
    Write a replay buffer (or the pickle ``model.save_replay_buffer`` wrote) as Minari dataset
    ``dataset_id`` for environment ``env_id`` (whose spaces it must match).
    """
    check_new_dataset_id(dataset_id)
    if isinstance(replay_buffer, str | os.PathLike):
        path = Path(replay_buffer)
        if not path.is_file():
            raise FileNotFoundError(f"Replay buffer file {path} does not exist")
        source = f"replay buffer {path}"
        replay_buffer = load_from_pkl(path)
    else:
        source = "a replay buffer"
    env = gym.make(env_id, **(env_kwargs or {}))
    try:
        observation_space, action_space, env_spec = env.observation_space, env.action_space, env.unwrapped.spec
    finally:
        env.close()
    buffer = _check_buffer(replay_buffer, observation_space, action_space)
    assert isinstance(observation_space, spaces.Box) and isinstance(action_space, spaces.Box)  # checked above
    episodes, complete = replay_buffer_episodes(buffer, observation_space, action_space)
    summary = summarize(dataset_id, source, episodes, complete)
    write_minari_dataset(
        summary,
        episodes,
        env_spec,
        observation_space,
        action_space,
        algorithm_name=algorithm_name,
        author=author,
        description=description,
    )
    return summary
