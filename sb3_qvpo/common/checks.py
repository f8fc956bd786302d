"""Checks of arguments and inputs that turn bad input into an error naming the problem."""

import io
import pathlib
import zipfile
from typing import Any

import numpy as np
from gymnasium import spaces


def check_count(name: str, value: Any, minimum: int = 1) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an integer >= ``minimum`` (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_action_space(action_space: spaces.Space, algorithm: str = "QVPO") -> None:
    """A diffusion model over [-1, 1]^d needs a bounded Box; say so before SB3 asserts."""
    if not isinstance(action_space, spaces.Box):
        raise ValueError(
            f"{algorithm} needs a continuous (Box) action space, got {action_space}: "
            "Discrete, MultiDiscrete and MultiBinary spaces are not supported"
        )
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ValueError(
            f"{algorithm} needs a Box action space with finite bounds (actions are scaled to [-1, 1]), got {action_space}"
        )


def check_finite(name: str, value: np.ndarray | dict[str, np.ndarray], timestep: int, algorithm: str = "QVPO") -> None:
    """
    Raise before a NaN or inf observation or reward reaches the replay buffer: one such transition
    turns every network weight into NaN within a few updates, and the actions into NaN with them.
    """
    arrays = value.items() if isinstance(value, dict) else [(None, value)]
    for key, array in arrays:
        array = np.asarray(array)
        if not np.issubdtype(array.dtype, np.floating) or np.isfinite(array).all():
            continue
        label = name if key is None else f"{name}[{key!r}]"
        kind = "nan" if np.isnan(array).any() else "inf"
        raise ValueError(
            f"{algorithm} got a non-finite {label} ({kind}) at timestep {timestep}; it was not stored, as it would corrupt "
            "the networks. Fix the environment, or wrap it in VecCheckNan(venv, raise_exception=True) to find the step"
        )


def check_model_archive(path: str | pathlib.Path | io.BufferedIOBase) -> None:
    """
    Name the problem when a saved model is truncated or is not an SB3 archive. (A truncated archive can
    make zipfile read the archive nested in one of its .pth entries, and SB3 then reports "No data found".)
    """
    if not isinstance(path, str | pathlib.Path):
        return
    path = pathlib.Path(path)
    if not path.exists() and pathlib.Path(f"{path}.zip").exists():
        path = pathlib.Path(f"{path}.zip")
    if not path.is_file():
        return  # SB3 raises FileNotFoundError
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except zipfile.BadZipFile:
        names = set()
    missing = [name for name in ("data", "policy.pth") if name not in names]
    if missing:
        raise ValueError(
            f"{path} is not a complete saved model (no {' or '.join(missing)} entry in a zip archive): "
            "the file is truncated, corrupt, or was not written by `save`"
        )
