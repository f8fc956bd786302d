"""
Register our algorithms with rl-zoo3: its algorithm table, its sampler and converter tables, and
their default hyper-parameter files.

rl-zoo3 keeps three module-level dicts keyed by algorithm name: ``rl_zoo3.utils.ALGOS`` (also the
``--algo`` choices, read when ``train``/``enjoy`` build their parser), and
``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER`` / ``HYPERPARAMS_CONVERTER``. :func:`register` adds
``"qvpo"``, ``"qsm"``, ``"dipo"``, ``"diffusion_ql"`` and ``"cgpo"`` to each, next to the zoo's own algorithms
(``diffusion_ql`` trains online there; offline, from a dataset, through ``python -m sb3_qvpo.offline.train``).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
from rl_zoo3.utils import ALGOS

from sb3_qvpo.cgpo import CGPO
from sb3_qvpo.common.off_policy import DiffusionOffPolicyAlgorithm
from sb3_qvpo.diffusion_ql import DiffusionQL
from sb3_qvpo.dipo import DIPO
from sb3_qvpo.qsm import QSM
from sb3_qvpo.qvpo import QVPO
from sb3_qvpo.zoo.samplers import (
    convert_cgpo_params,
    convert_diffusion_ql_params,
    convert_dipo_params,
    convert_qsm_params,
    convert_qvpo_params,
    sample_cgpo_params,
    sample_diffusion_ql_params,
    sample_dipo_params,
    sample_qsm_params,
    sample_qvpo_params,
)

ALGO_NAME = "qvpo"

# --algo name -> (class, Optuna sampler, converter of a finished trial's raw parameters)
ZOO_ALGORITHMS: dict[
    str, tuple[type[DiffusionOffPolicyAlgorithm], Callable[..., dict[str, Any]], Callable[..., dict[str, Any]]]
] = {
    "qvpo": (QVPO, sample_qvpo_params, convert_qvpo_params),
    "qsm": (QSM, sample_qsm_params, convert_qsm_params),
    "dipo": (DIPO, sample_dipo_params, convert_dipo_params),
    "diffusion_ql": (DiffusionQL, sample_diffusion_ql_params, convert_diffusion_ql_params),
    "cgpo": (CGPO, sample_cgpo_params, convert_cgpo_params),
}

# The files' canonical copies are the checkout's top-level hyperparams/<algo>.yml; the package carries
# identical copies (sb3_qvpo/zoo/hyperparams/, checked by tests/test_zoo.py) for installs from a wheel.
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
    """Add QVPO, QSM, DIPO, DiffusionQL and CGPO to rl-zoo3's algorithm, sampler and converter tables (idempotent)."""
    for name, (algorithm, sampler, converter) in ZOO_ALGORITHMS.items():
        ALGOS[name] = algorithm
        HYPERPARAMS_SAMPLER[name] = sampler
        HYPERPARAMS_CONVERTER[name] = converter


def playback_class(algorithm: type[DiffusionOffPolicyAlgorithm]) -> type[DiffusionOffPolicyAlgorithm]:
    """
    ``algorithm`` whose ``load`` defaults to a one-transition replay buffer, as rl-zoo3's ``enjoy``
    and ``record_video`` do for their own off-policy algorithms (their list of those is hard-coded).
    """

    def load(cls: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffer_size", 1)
        return algorithm.load.__func__(cls, path, *args, **kwargs)  # type: ignore[attr-defined]

    name = f"Playback{algorithm.__name__}"
    return type(name, (algorithm,), {"load": classmethod(load), "__module__": __name__, "__qualname__": name})


PlaybackQVPO = playback_class(QVPO)
PLAYBACK_CLASSES = {name: playback_class(algorithm) for name, (algorithm, _, _) in ZOO_ALGORITHMS.items()}
PLAYBACK_CLASSES["qvpo"] = PlaybackQVPO


def register_for_playback() -> None:
    """:func:`register`, with the playback classes as the ones that ``enjoy``/``record_video`` load."""
    register()
    ALGOS.update(PLAYBACK_CLASSES)
