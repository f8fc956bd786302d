"""
Record episodes and write them as a local Minari dataset.

:class:`EpisodeRecorder` follows ``minari.DataCollector``'s episode rules (an episode ends when a step
is terminated or truncated; a reset in mid-episode closes it as truncated), but keeps numpy lists:
``DataCollector`` appends steps with jax (``minari[create]``, a large install) and nothing else here
needs it. The episodes are written with ``minari.create_dataset_from_buffers``.
"""

import dataclasses
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, SupportsFloat

import gymnasium as gym
import minari
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec
from minari.data_collector import EpisodeBuffer
from minari.dataset.minari_dataset import parse_dataset_id
from minari.storage.datasets_root_dir import get_dataset_path
from stable_baselines3.common.monitor import Monitor

# The metadata key under which a dataset written here keeps its CollectionSummary.
METADATA_KEY = "sb3_qvpo_collection"


@dataclass
class CollectionSummary:
    """What was written: counts and the mean return of the episodes that ended on their own."""

    dataset_id: str
    source: str
    n_episodes: int
    n_transitions: int
    # Episodes that ended by termination or by the environment's time limit (not cut by the recording budget).
    n_complete_episodes: int
    mean_return: float | None

    def describe(self) -> str:
        mean = "n/a" if self.mean_return is None else f"{self.mean_return:.2f}"
        return (
            f"{self.n_episodes} episodes ({self.n_complete_episodes} complete), {self.n_transitions} transitions, "
            f"mean return of complete episodes {mean}; recorded from {self.source}"
        )


class EpisodeRecorder(gym.Wrapper):
    """Keep every step of the wrapped env as Minari episode buffers (observations T + 1 rows, the rest T)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.episodes: list[EpisodeBuffer] = []
        # Whether each finished episode ended on its own (terminated, or truncated by the env) rather than cut by us.
        self.episode_complete: list[bool] = []
        self._steps: dict[str, list[Any]] | None = None
        self._seed: int | None = None

    @property
    def n_transitions(self) -> int:
        current = 0 if self._steps is None else len(self._steps["rewards"])
        return sum(len(episode.rewards) for episode in self.episodes) + current

    @property
    def n_finished_episodes(self) -> int:
        return len(self.episodes)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self._close_episode(complete=False)
        observation, info = self.env.reset(seed=seed, options=options)
        self._seed = seed
        self._steps = {"observations": [observation], "actions": [], "rewards": [], "terminations": [], "truncations": []}
        return observation, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        if self._steps is None:
            raise RuntimeError("EpisodeRecorder: step() called before reset()")
        self._steps["observations"].append(observation)
        self._steps["actions"].append(np.asarray(action, dtype=self.action_space.dtype))
        self._steps["rewards"].append(float(reward))
        self._steps["terminations"].append(bool(terminated))
        self._steps["truncations"].append(bool(truncated))
        if terminated or truncated:
            self._close_episode(complete=True)
        return observation, reward, terminated, truncated, info

    def finish(self) -> list[EpisodeBuffer]:
        """Close the episode in progress (as truncated, like ``DataCollector``) and return all episodes."""
        self._close_episode(complete=False)
        return self.episodes

    def _close_episode(self, complete: bool) -> None:
        steps, self._steps = self._steps, None
        if steps is None or not steps["rewards"]:
            return
        if not steps["terminations"][-1]:
            steps["truncations"][-1] = True
        self.episodes.append(
            EpisodeBuffer(
                id=len(self.episodes),
                seed=self._seed,
                observations=np.array(steps["observations"]),
                actions=np.array(steps["actions"]),
                rewards=np.array(steps["rewards"]),
                terminations=np.array(steps["terminations"]),
                truncations=np.array(steps["truncations"]),
            )
        )
        self.episode_complete.append(complete)


def recorded_env_spec(recorder: EpisodeRecorder) -> EnvSpec | None:
    """
    The spec of the environment as recorded (``gym.make`` kwargs, time limit, the agent's env
    wrappers), less the wrappers only the recording added (SB3's Monitor, the recorder), so that
    ``MinariDataset.recover_environment`` makes the environment the data came from.
    """
    spec = recorder.spec
    if spec is None:
        return None
    recording_only = {f"{Monitor.__module__}:{Monitor.__name__}", f"{EpisodeRecorder.__module__}:{EpisodeRecorder.__name__}"}
    kept = tuple(wrapper for wrapper in spec.additional_wrappers if wrapper.entry_point not in recording_only)
    return dataclasses.replace(spec, additional_wrappers=kept)


def check_new_dataset_id(dataset_id: str) -> None:
    """Fail before recording, not after: a malformed id, or one that exists (Minari never overwrites)."""
    parse_dataset_id(dataset_id)  # ValueError naming the expected form
    if get_dataset_path(dataset_id).exists():
        raise ValueError(
            f"A Minari dataset {dataset_id!r} already exists at {get_dataset_path(dataset_id)}: "
            "choose another id (e.g. a higher -vN) or delete it with `minari delete`"
        )


def summarize(dataset_id: str, source: str, episodes: list[EpisodeBuffer], complete: list[bool]) -> CollectionSummary:
    returns = [float(np.sum(episode.rewards)) for episode, done in zip(episodes, complete, strict=True) if done]
    return CollectionSummary(
        dataset_id=dataset_id,
        source=source,
        n_episodes=len(episodes),
        n_transitions=sum(len(episode.rewards) for episode in episodes),
        n_complete_episodes=len(returns),
        mean_return=float(np.mean(returns)) if returns else None,
    )


def write_minari_dataset(
    summary: CollectionSummary,
    episodes: list[EpisodeBuffer],
    env_spec: EnvSpec | None,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    algorithm_name: str | None = None,
    author: str | None = None,
    description: str | None = None,
) -> minari.MinariDataset:
    """
    Write the episodes with ``minari.create_dataset_from_buffers``, add the per-episode reward
    statistics ``DataCollector`` writes, and keep ``summary`` in the dataset's metadata.
    """
    if not episodes:
        raise ValueError(f"Nothing to write to Minari dataset {summary.dataset_id!r}: no episode was recorded")
    with warnings.catch_warnings():
        # Minari warns for each metadata field left empty (code link, e-mail, eval env...): not actionable here.
        warnings.filterwarnings("ignore", message=r"`\w+` is set to None", category=UserWarning)
        dataset = minari.create_dataset_from_buffers(
            dataset_id=summary.dataset_id,
            buffer=episodes,
            env=env_spec,
            observation_space=observation_space,
            action_space=action_space,
            algorithm_name=algorithm_name,
            author=author,
            description=description or summary.describe(),
        )
    storage = dataset.storage
    storage.update_episode_metadata(storage.apply(minari.EpisodeMetadataCallback()))
    metadata = asdict(summary)
    if metadata["mean_return"] is not None and not math.isfinite(metadata["mean_return"]):
        metadata["mean_return"] = None
    storage.update_metadata({METADATA_KEY: metadata})
    return dataset
