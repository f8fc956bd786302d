"""
The in-memory form every offline data source is read into, and the checks it must pass against an
environment's spaces before any of it reaches a replay buffer.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

# Actions this far outside the action bounds are taken as float rounding of a bound (D4RL stores
# float32 actions of float64 environments) and clipped; anything further out is an error.
ACTION_BOUND_TOLERANCE = 1e-5


@dataclass
class TransitionSet:
    """
    One transition per row, in episode order, whatever the source (a Minari dataset, a D4RL file).

    ``terminals`` marks true ends (no bootstrapping from ``next_observations``); ``timeouts`` marks
    episodes cut short (time limit, end of recording): their ``next_observations`` are real and the
    value is bootstrapped, as SB3 does with ``handle_timeout_termination``. A row is never both:
    a termination wins, as in SB3's ``TimeLimit.truncated = truncated and not terminated``.
    ``actions`` are in the environment's units, not scaled.
    """

    observations: np.ndarray
    actions: np.ndarray
    next_observations: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    # Undiscounted return of each complete episode, where the source lets us compute it.
    episode_returns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # Where the data came from, for error messages.
    source: str = "dataset"

    def __post_init__(self) -> None:
        self.rewards = np.asarray(self.rewards).reshape(-1)
        self.terminals = np.asarray(self.terminals).reshape(-1).astype(bool)
        self.timeouts = np.asarray(self.timeouts).reshape(-1).astype(bool) & ~self.terminals
        self.episode_returns = np.asarray(self.episode_returns, dtype=np.float64).reshape(-1)

    def __len__(self) -> int:
        return len(self.rewards)


def check_box_space(space: spaces.Space, what: str) -> spaces.Box:
    """Only flat continuous data is supported: SB3's ReplayBuffer and our MLP policies take Box spaces."""
    if not isinstance(space, spaces.Box):
        raise ValueError(
            f"{what} space {space} is not supported: offline datasets are loaded for Box {what} spaces only "
            "(Dict, Discrete, MultiDiscrete, MultiBinary and Tuple spaces are not)"
        )
    return space


def _check_array(name: str, array: np.ndarray, expected_shape: tuple[int, ...], space: spaces.Box | None, source: str) -> None:
    if array.shape != expected_shape:
        raise ValueError(f"{source}: {name} have shape {array.shape}, expected {expected_shape} to match the environment")
    if space is not None and not np.can_cast(array.dtype, space.dtype, casting="same_kind"):
        raise ValueError(
            f"{source}: {name} have dtype {array.dtype}, which does not fit the environment's space dtype {space.dtype}"
        )
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        row = int(np.argwhere(~np.isfinite(array.reshape(len(array), -1)))[0, 0])
        raise ValueError(f"{source}: {name} contain NaN or inf (first at transition {row})")


def validate_transitions(transitions: TransitionSet, observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """
    Raise a ValueError naming the first problem that would make the transitions wrong for an agent
    with these spaces: unsupported spaces, no data, shapes, dtypes, NaN/inf, actions out of bounds.
    """
    source = transitions.source
    obs_space = check_box_space(observation_space, "observation")
    act_space = check_box_space(action_space, "action")
    if not (np.isfinite(act_space.low).all() and np.isfinite(act_space.high).all()):
        raise ValueError(f"action space {act_space} has infinite bounds: actions cannot be scaled to [-1, 1]")
    n_transitions = len(transitions)
    if n_transitions == 0:
        raise ValueError(f"{source}: empty dataset, it holds no transitions")
    _check_array("observations", transitions.observations, (n_transitions, *obs_space.shape), obs_space, source)
    _check_array("next_observations", transitions.next_observations, (n_transitions, *obs_space.shape), obs_space, source)
    _check_array("actions", transitions.actions, (n_transitions, *act_space.shape), act_space, source)
    _check_array("rewards", transitions.rewards, (n_transitions,), None, source)
    for name in ("terminals", "timeouts"):
        flags = getattr(transitions, name)
        if flags.shape != (n_transitions,):
            raise ValueError(f"{source}: {name} have shape {flags.shape}, expected ({n_transitions},)")
    below = transitions.actions < act_space.low - ACTION_BOUND_TOLERANCE
    above = transitions.actions > act_space.high + ACTION_BOUND_TOLERANCE
    outside = (below | above).reshape(n_transitions, -1).any(axis=1)
    if outside.any():
        row = int(np.argmax(outside))
        raise ValueError(
            f"{source}: {int(outside.sum())} of {n_transitions} actions are outside the environment's action bounds "
            f"[{act_space.low}, {act_space.high}] (first at transition {row}: {transitions.actions[row]})"
        )


def check_matches_env(transitions: TransitionSet, env: Any) -> None:
    """:func:`validate_transitions` against the spaces of ``env`` (a Gymnasium env, a VecEnv or an SB3 model)."""
    validate_transitions(transitions, env.observation_space, env.action_space)
