"""One entry point for a dataset named by the user: a D4RL-layout HDF5 file or a local Minari dataset."""

import os
from pathlib import Path

from sb3_qvpo.offline.d4rl_data import load_d4rl_hdf5
from sb3_qvpo.offline.minari_data import load_minari
from sb3_qvpo.offline.transitions import TransitionSet

HDF5_SUFFIXES = (".hdf5", ".h5")


def load_transitions(source: str | os.PathLike[str]) -> TransitionSet:
    """
    ``source`` ending in .hdf5 / .h5: a D4RL-layout file (:func:`load_d4rl_hdf5`); anything else:
    a Minari dataset id or folder (:func:`load_minari`, never downloading).
    """
    if Path(source).suffix.lower() in HDF5_SUFFIXES:
        return load_d4rl_hdf5(source)
    return load_minari(source)
