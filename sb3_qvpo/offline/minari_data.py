"""
Read a local Minari dataset (by id, or by the path of its folder) into a :class:`TransitionSet`.

Minari stores whole episodes: ``observations`` has T + 1 rows (the reset observation first), and
``actions``, ``rewards``, ``terminations`` and ``truncations`` T rows, so step t's next observation is
row t + 1 and no step has to be dropped. Nothing is downloaded: a missing dataset is an error.
"""

import os
from pathlib import Path

import minari
import numpy as np
from minari.storage.datasets_root_dir import get_dataset_path

from sb3_qvpo.offline.transitions import TransitionSet, check_box_space

COLLECT_COMMAND = "python -m sb3_qvpo.offline.collect --env ENV_ID --dataset-id {dataset_id} --n-episodes N"


def open_minari_dataset(dataset_id_or_path: str | os.PathLike[str]) -> minari.MinariDataset:
    """
    A folder that holds a Minari dataset (the dataset's folder or its ``data`` folder) is opened from
    there; anything else is a dataset id looked up under ``$MINARI_DATASETS_PATH`` (default
    ``~/.minari/datasets``), as :func:`minari.load_dataset` does, with ``download=False``.
    """
    path = Path(dataset_id_or_path)
    for data_path in (path / "data", path):
        if (data_path / "metadata.json").is_file():
            return _read(data_path, str(path))
    dataset_id = str(dataset_id_or_path)
    try:
        return minari.load_dataset(dataset_id, download=False)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"Minari dataset {dataset_id!r} is not downloaded: there is no {get_dataset_path(dataset_id)} "
            "(the folder comes from $MINARI_DATASETS_PATH, default ~/.minari/datasets). "
            f"Record one with `{COLLECT_COMMAND.format(dataset_id=dataset_id)}`, "
            f"or download a published one with `minari download {dataset_id}`"
        ) from error
    except OSError as error:
        raise ValueError(f"Minari dataset {dataset_id!r} cannot be read (truncated or corrupt file?): {error}") from error


def _read(data_path: Path, name: str) -> minari.MinariDataset:
    try:
        return minari.MinariDataset(data_path)
    except OSError as error:
        raise ValueError(f"Minari dataset {name} cannot be read (truncated or corrupt file?): {error}") from error


def load_minari(dataset_id_or_path: str | os.PathLike[str]) -> TransitionSet:
    """All episodes of a local Minari dataset as one :class:`TransitionSet` (see :func:`open_minari_dataset`)."""
    dataset = open_minari_dataset(dataset_id_or_path)
    source = f"Minari dataset {dataset.id!r}"
    check_box_space(dataset.observation_space, "observation")
    check_box_space(dataset.action_space, "action")
    columns: dict[str, list[np.ndarray]] = {
        "observations": [],
        "next_observations": [],
        "actions": [],
        "rewards": [],
        "terminals": [],
        "timeouts": [],
    }
    returns = []
    try:
        episodes = list(dataset.iterate_episodes())
    except OSError as error:
        raise ValueError(f"{source} cannot be read (truncated or corrupt file?): {error}") from error
    for episode in episodes:
        n_steps = len(episode.rewards)
        if len(episode.observations) != n_steps + 1 or len(episode.actions) != n_steps:
            raise ValueError(
                f"{source}: episode {episode.id} has {len(episode.observations)} observations and "
                f"{len(episode.actions)} actions for {n_steps} rewards (expected {n_steps + 1} and {n_steps})"
            )
        columns["observations"].append(episode.observations[:-1])
        columns["next_observations"].append(episode.observations[1:])
        columns["actions"].append(episode.actions)
        columns["rewards"].append(episode.rewards)
        columns["terminals"].append(episode.terminations)
        columns["timeouts"].append(episode.truncations)
        returns.append(float(np.sum(episode.rewards)))
    if sum(len(rewards) for rewards in columns["rewards"]) == 0:
        raise ValueError(f"{source}: empty dataset, it holds no transitions")
    return TransitionSet(
        **{name: np.concatenate(parts) for name, parts in columns.items()},
        episode_returns=np.array(returns),
        source=source,
    )
