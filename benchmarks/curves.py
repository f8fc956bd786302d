"""What the benchmark scripts share: evaluation curves saved one file per seed."""

import json
from pathlib import Path

import numpy as np


def load_seed_curves(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, list[float]] | None:
    """
    Steps, per-seed mean evaluation returns (seeds x evaluations, cut to the shortest run) and
    per-seed wall times, from rl-zoo3-style ``evaluations.npz`` copies (``timesteps``, ``results``)
    with a ``.json`` next to each holding ``wall_seconds``; None without any file.
    """
    if not paths:
        return None
    loaded = [np.load(path) for path in sorted(paths)]
    n_points = min(len(data["timesteps"]) for data in loaded)
    steps = loaded[0]["timesteps"][:n_points]
    returns = np.stack([data["results"][:n_points].mean(axis=1) for data in loaded])
    walls = [json.loads(path.with_suffix(".json").read_text())["wall_seconds"] for path in sorted(paths)]
    return steps, returns, walls
