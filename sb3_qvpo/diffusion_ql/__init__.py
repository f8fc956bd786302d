from sb3_qvpo.diffusion_ql.diffusion_ql import DiffusionQL
from sb3_qvpo.diffusion_ql.policies import CnnPolicy, DiffusionQLPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["CnnPolicy", "DiffusionQL", "DiffusionQLPolicy", "MlpPolicy", "MultiInputPolicy"]
