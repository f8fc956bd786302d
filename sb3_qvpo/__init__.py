"""
sb3-qvpo: diffusion-policy actor-critics for Stable-Baselines3: QVPO, the paper's baselines QSM and
DIPO, Diffusion-QL (offline RL) and CGPO, QVPO's successor.
"""

import os

from sb3_qvpo.cgpo import CGPO, CGPOPolicy
from sb3_qvpo.diffusion_ql import DiffusionQL, DiffusionQLPolicy
from sb3_qvpo.dipo import DIPO, DIPOPolicy
from sb3_qvpo.export import export_onnx
from sb3_qvpo.qsm import QSM, QSMPolicy
from sb3_qvpo.qvpo import QVPO, CnnPolicy, MlpPolicy, MultiInputPolicy, QVPOPolicy

with open(os.path.join(os.path.dirname(__file__), "version.txt")) as version_file:
    __version__ = version_file.read().strip()

__all__ = [
    "CGPO",
    "DIPO",
    "QSM",
    "QVPO",
    "CGPOPolicy",
    "CnnPolicy",
    "DIPOPolicy",
    "DiffusionQL",
    "DiffusionQLPolicy",
    "MlpPolicy",
    "MultiInputPolicy",
    "QSMPolicy",
    "QVPOPolicy",
    "__version__",
    "export_onnx",
]
