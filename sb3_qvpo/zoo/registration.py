"""
Register QVPO with rl-zoo3: its algorithm table, its sampler and converter tables, and its default
hyper-parameter file.

rl-zoo3 keeps three module-level dicts keyed by algorithm name: ``rl_zoo3.utils.ALGOS`` (also the
``--algo`` choices, read when ``train``/``enjoy`` build their parser), and
``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER`` / ``HYPERPARAMS_CONVERTER``. :func:`register` adds
``"qvpo"`` to each, next to the zoo's own algorithms.
"""

from pathlib import Path
from typing import Any

from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
from rl_zoo3.utils import ALGOS

from sb3_qvpo.qvpo import QVPO
from sb3_qvpo.zoo.samplers import convert_qvpo_params, sample_qvpo_params

ALGO_NAME = "qvpo"

# The file's canonical copy is the checkout's top-level hyperparams/qvpo.yml; the package carries
# an identical copy (sb3_qvpo/zoo/hyperparams/, checked by tests/test_zoo.py) for installs from a wheel.
_PACKAGE_HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"
_CHECKOUT_HYPERPARAMS_DIR = Path(__file__).resolve().parents[2] / "hyperparams"


def hyperparams_file(algo: str = ALGO_NAME) -> Path:
    """
    The default hyper-parameter file of one of our algorithms: the checkout's ``hyperparams/<algo>.yml``
    when running from a source checkout (editable install), else the copy inside the installed package.
    """
    for folder in (_CHECKOUT_HYPERPARAMS_DIR, _PACKAGE_HYPERPARAMS_DIR):
        candidate = folder / f"{algo}.yml"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"No hyper-parameter file {algo}.yml in {_CHECKOUT_HYPERPARAMS_DIR} or {_PACKAGE_HYPERPARAMS_DIR}")


def register() -> None:
    """Add QVPO to rl-zoo3's algorithm, sampler and converter tables (idempotent)."""
    ALGOS[ALGO_NAME] = QVPO
    HYPERPARAMS_SAMPLER[ALGO_NAME] = sample_qvpo_params
    HYPERPARAMS_CONVERTER[ALGO_NAME] = convert_qvpo_params


class PlaybackQVPO(QVPO):
    """
    QVPO whose ``load`` defaults to a one-transition replay buffer, as rl-zoo3's ``enjoy`` and
    ``record_video`` do for their own off-policy algorithms (their list of those is hard-coded).
    """

    @classmethod
    def load(cls, path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.setdefault("buffer_size", 1)
        return super().load(path, *args, **kwargs)


def register_for_playback() -> None:
    """:func:`register`, with :class:`PlaybackQVPO` as the class that ``enjoy``/``record_video`` load."""
    register()
    ALGOS[ALGO_NAME] = PlaybackQVPO
