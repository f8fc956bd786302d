"""
Put a :class:`TransitionSet` into an SB3 replay buffer holding exactly what an off-policy model
would have stored had it collected the data itself.

SB3's ``OffPolicyAlgorithm._sample_action`` stores Box actions scaled to [-1, 1]
(``policy.scale_action``: 2 (a - low) / (high - low) - 1) and ``_store_transition`` stores raw
(unnormalised) observations, ``done`` = terminated or truncated, and ``TimeLimit.truncated`` in
``infos``; with ``handle_timeout_termination`` a truncated step is then not treated as terminal
when sampled. Our algorithms (``DiffusionOffPolicyAlgorithm``) keep those semantics, so the buffer
filled here can replace ``model.replay_buffer`` and be sampled by ``model.train``.
"""

from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from sb3_qvpo.offline.transitions import TransitionSet, validate_transitions


def scale_actions(actions: np.ndarray, action_space: spaces.Box) -> np.ndarray:
    """Environment actions to [-1, 1], as SB3's ``BasePolicy.scale_action`` (clipped: bounds are checked with a tolerance)."""
    low, high = action_space.low, action_space.high
    return np.clip(2.0 * (actions - low) / (high - low) - 1.0, -1.0, 1.0)


def unscale_actions(scaled_actions: np.ndarray, action_space: spaces.Box) -> np.ndarray:
    """[-1, 1] actions (what a replay buffer holds) back to environment units, as ``BasePolicy.unscale_action``."""
    low, high = action_space.low, action_space.high
    return low + 0.5 * (scaled_actions + 1.0) * (high - low)


def fill_replay_buffer(
    transitions: TransitionSet,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    device: th.device | str = "auto",
    scale_action: Callable[[np.ndarray], np.ndarray] | None = None,
    replay_buffer_class: type[ReplayBuffer] = ReplayBuffer,
    replay_buffer_kwargs: dict[str, Any] | None = None,
    buffer_size: int | None = None,
) -> ReplayBuffer:
    """
    A replay buffer holding the ``len(transitions)`` transitions, sized to them (full, so every one
    is sampled) or to ``buffer_size`` when larger (room left for online fine-tuning; only the
    stored rows are sampled).

    Everything is validated first (:func:`validate_transitions`): on bad input nothing is allocated.
    ``scale_action`` maps environment actions to what the buffer stores; the default is
    :func:`scale_actions` on ``action_space``; pass ``model.policy.scale_action`` to use the policy's.
    Transitions go in through ``ReplayBuffer.add`` (one environment), so a subclass's bookkeeping runs.
    """
    validate_transitions(transitions, observation_space, action_space)
    assert isinstance(action_space, spaces.Box)  # checked by validate_transitions
    if scale_action is None:
        scaled_actions = scale_actions(transitions.actions, action_space)
    else:  # clipped as scale_actions is: actions within the bound tolerance may land just outside [-1, 1]
        scaled_actions = np.clip(scale_action(transitions.actions), -1.0, 1.0)
    kwargs = {"handle_timeout_termination": True, **(replay_buffer_kwargs or {})}
    n_transitions = len(transitions)
    capacity = max(n_transitions, buffer_size or 0)
    buffer = replay_buffer_class(capacity, observation_space, action_space, device=device, n_envs=1, **kwargs)
    dones = transitions.terminals | transitions.timeouts
    for row in range(n_transitions):
        buffer.add(
            transitions.observations[row : row + 1],
            transitions.next_observations[row : row + 1],
            scaled_actions[row : row + 1],
            transitions.rewards[row : row + 1],
            dones[row : row + 1],
            [{"TimeLimit.truncated": bool(transitions.timeouts[row])}],
        )
    return buffer


def fill_model_replay_buffer(
    model: OffPolicyAlgorithm, transitions: TransitionSet, buffer_size: int | None = None
) -> ReplayBuffer:
    """
    Replace ``model.replay_buffer`` with one holding ``transitions``, built with the model's replay
    buffer class and kwargs, its device, and its policy's ``scale_action`` (``buffer_size``: see
    :func:`fill_replay_buffer`).
    """
    buffer = fill_replay_buffer(
        transitions,
        model.observation_space,
        model.action_space,
        device=model.device,
        scale_action=model.policy.scale_action,
        replay_buffer_class=model.replay_buffer_class or ReplayBuffer,
        replay_buffer_kwargs=model.replay_buffer_kwargs,
        buffer_size=buffer_size,
    )
    model.replay_buffer = buffer
    return buffer
