"""
Offline RL data: local Minari datasets and D4RL-layout HDF5 files read into a :class:`TransitionSet`,
validated against an environment and put into an SB3 replay buffer as an off-policy model stores
its own; and recording Minari datasets (``python -m sb3_qvpo.offline.collect``).
"""

from sb3_qvpo.offline.buffer import fill_model_replay_buffer, fill_replay_buffer, scale_actions, unscale_actions
from sb3_qvpo.offline.collection import collect_random, collect_with_model, collect_with_zoo_agent
from sb3_qvpo.offline.d4rl_data import load_d4rl_hdf5
from sb3_qvpo.offline.minari_data import load_minari, open_minari_dataset
from sb3_qvpo.offline.recording import CollectionSummary, EpisodeRecorder
from sb3_qvpo.offline.replay import replay_buffer_to_minari
from sb3_qvpo.offline.sources import load_transitions
from sb3_qvpo.offline.transitions import TransitionSet, check_matches_env, validate_transitions

__all__ = [
    "CollectionSummary",
    "EpisodeRecorder",
    "TransitionSet",
    "check_matches_env",
    "collect_random",
    "collect_with_model",
    "collect_with_zoo_agent",
    "fill_model_replay_buffer",
    "fill_replay_buffer",
    "load_d4rl_hdf5",
    "load_minari",
    "load_transitions",
    "open_minari_dataset",
    "replay_buffer_to_minari",
    "scale_actions",
    "unscale_actions",
    "validate_transitions",
]
