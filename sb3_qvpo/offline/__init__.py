"""
Offline RL data: local Minari datasets and D4RL-layout HDF5 files read into a :class:`TransitionSet`,
validated against an environment and put into an SB3 replay buffer as an off-policy model stores
its own.
"""

from sb3_qvpo.offline.buffer import fill_model_replay_buffer, fill_replay_buffer, scale_actions, unscale_actions
from sb3_qvpo.offline.d4rl_data import load_d4rl_hdf5
from sb3_qvpo.offline.minari_data import load_minari, open_minari_dataset
from sb3_qvpo.offline.transitions import TransitionSet, check_matches_env, validate_transitions

__all__ = [
    "TransitionSet",
    "check_matches_env",
    "fill_model_replay_buffer",
    "fill_replay_buffer",
    "load_d4rl_hdf5",
    "load_minari",
    "open_minari_dataset",
    "scale_actions",
    "unscale_actions",
    "validate_transitions",
]
