"""sb3-qvpo: QVPO, a diffusion-policy actor-critic, for Stable-Baselines3."""

import os

from sb3_qvpo.qvpo import QVPO, CnnPolicy, MlpPolicy, MultiInputPolicy, QVPOPolicy

with open(os.path.join(os.path.dirname(__file__), "version.txt")) as version_file:
    __version__ = version_file.read().strip()

__all__ = ["QVPO", "CnnPolicy", "MlpPolicy", "MultiInputPolicy", "QVPOPolicy", "__version__"]
