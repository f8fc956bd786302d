"""
QVPO, QSM, DIPO, DiffusionQL and CGPO in the RL Baselines3 Zoo (rl-zoo3): train, evaluate and tune them
from rl-zoo3's command line.

``python -m sb3_qvpo.train --algo qvpo|qsm|dipo|diffusion_ql|cgpo --env Hopper-v5`` and
``python -m sb3_qvpo.enjoy ...`` take rl-zoo3's flags (offline, from a dataset:
``python -m sb3_qvpo.offline.train``); :func:`register` adds them to rl-zoo3's tables for use from Python.
"""

from sb3_qvpo.zoo.cli import enjoy, record_video, train
from sb3_qvpo.zoo.experiment import ZooExperimentManager
from sb3_qvpo.zoo.registration import ALGO_NAME, ZOO_ALGORITHMS, hyperparams_file, register
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

__all__ = [
    "ALGO_NAME",
    "ZOO_ALGORITHMS",
    "ZooExperimentManager",
    "convert_cgpo_params",
    "convert_diffusion_ql_params",
    "convert_dipo_params",
    "convert_qsm_params",
    "convert_qvpo_params",
    "enjoy",
    "hyperparams_file",
    "record_video",
    "register",
    "sample_cgpo_params",
    "sample_diffusion_ql_params",
    "sample_dipo_params",
    "sample_qsm_params",
    "sample_qvpo_params",
    "train",
]
