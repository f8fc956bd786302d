"""
Read a D4RL-layout HDF5 file into a :class:`TransitionSet`.

The layout is one row per step, episodes one after another: ``observations``, ``actions``,
``rewards`` and ``terminals`` (required), ``timeouts`` (an episode cut by the time limit ends on
this row) and ``next_observations`` (optional).

By default the rows are those of d4rl's ``qlearning_dataset`` (``terminate_on_end=False``), so
scores on D4RL data compare with published ones: every timeout row is dropped (also one flagged
terminal, and also when the file has ``next_observations``), and so is the file's last row; a
kept row's next observation is ``next_observations[i]`` or, without that key, row i + 1 (a
terminal row's is never bootstrapped). ``keep_timeout_rows=True`` keeps every row whose next
observation is known instead: with ``next_observations``, the timeout rows (as time-limit
truncations, bootstrapped from their true next observation; a row flagged both counts as
terminal) and the last row.
"""

import os
import warnings
from pathlib import Path

import h5py
import numpy as np

from sb3_qvpo.offline.transitions import TransitionSet

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
OPTIONAL_KEYS = ("timeouts", "next_observations")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every key we use, read whole; an unreadable file becomes a ValueError naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"D4RL dataset file {path} does not exist")
    try:
        with h5py.File(path, "r") as file:
            missing = [key for key in REQUIRED_KEYS if key not in file]
            if missing:
                raise ValueError(
                    f"D4RL file {path} has no {', '.join(repr(key) for key in missing)} dataset "
                    f"(required: {', '.join(REQUIRED_KEYS)}; found: {', '.join(sorted(file.keys()))})"
                )
            return {key: np.asarray(file[key][()]) for key in REQUIRED_KEYS + OPTIONAL_KEYS if key in file}
    except OSError as error:
        raise ValueError(f"{path} is not a readable HDF5 file (truncated or corrupt?): {error}") from error


def _episode_returns(rewards: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Returns of the complete episodes (those closed by a terminal or timeout row); a trailing open one is left out."""
    end_rows = np.flatnonzero(ends)
    if len(end_rows) == 0:
        return np.zeros(0)
    sums = np.add.reduceat(rewards[: end_rows[-1] + 1].astype(np.float64), np.concatenate([[0], end_rows[:-1] + 1]))
    return sums


def load_d4rl_hdf5(
    path: str | os.PathLike[str], max_episode_steps: int | None = None, keep_timeout_rows: bool = False
) -> TransitionSet:
    """
    The transitions of a D4RL-layout HDF5 file (see the module docstring for which rows are kept).

    ``max_episode_steps`` stands in for a missing ``timeouts`` key as in d4rl's ``qlearning_dataset``
    (its step counter included, see :func:`_timeouts_from_episode_length`). With neither, only
    terminals end episodes (a warning says so), and a time-limited episode's last step would get
    the next episode's first observation as its successor.
    """
    path = Path(path)
    arrays = _read_arrays(path)
    source = f"D4RL file {path}"
    n_rows = len(arrays["rewards"])
    for key, array in arrays.items():
        if array.ndim == 0 or len(array) != n_rows:
            raise ValueError(f"{source}: {key!r} has shape {array.shape}, but 'rewards' has {n_rows} rows")
    if n_rows == 0:
        raise ValueError(f"{source}: empty dataset, it holds no transitions")
    rewards = arrays["rewards"].reshape(n_rows)
    terminals = arrays["terminals"].reshape(n_rows).astype(bool)
    if "timeouts" in arrays:
        timeouts = arrays["timeouts"].reshape(n_rows).astype(bool)
    elif max_episode_steps is not None:
        timeouts = _timeouts_from_episode_length(terminals, max_episode_steps)
    else:
        warnings.warn(
            f"{source} has no 'timeouts' and no max_episode_steps was given: only terminals end episodes", stacklevel=2
        )
        timeouts = np.zeros(n_rows, dtype=bool)
    episode_returns = _episode_returns(rewards, terminals | timeouts)
    observations = arrays["observations"]
    has_next = "next_observations" in arrays
    if keep_timeout_rows and has_next:
        keep = np.ones(n_rows, dtype=bool)
    else:
        keep = ~timeouts  # without next_observations a timeout row's successor is another episode's start
        keep[-1] = False
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        raise ValueError(f"{source}: empty dataset, no row has a known next observation")
    return TransitionSet(
        observations=observations[rows],
        actions=arrays["actions"][rows],
        next_observations=arrays["next_observations"][rows] if has_next else observations[rows + 1],
        rewards=rewards[rows],
        terminals=terminals[rows],
        timeouts=(timeouts & ~terminals)[rows],
        episode_returns=episode_returns,
        source=source,
    )


def _timeouts_from_episode_length(terminals: np.ndarray, max_episode_steps: int) -> np.ndarray:
    """
    d4rl's fallback, counter and all: a row is a timeout when the step counter equals
    ``max_episode_steps - 1``; the counter goes back to 0 after a timeout row but to 1 after a
    terminal row (``qlearning_dataset`` resets it and then counts the terminal row itself), so an
    episode that follows a terminal is cut one step earlier than one that follows a timeout.
    """
    if max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
    timeouts = np.zeros(len(terminals), dtype=bool)
    episode_step = 0
    for row, terminal in enumerate(terminals):
        if episode_step == max_episode_steps - 1:
            timeouts[row] = True
            episode_step = 0
        else:
            episode_step = 1 if terminal else episode_step + 1
    return timeouts
