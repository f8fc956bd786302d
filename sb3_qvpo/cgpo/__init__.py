from sb3_qvpo.cgpo.cgpo import CGPO
from sb3_qvpo.cgpo.policies import CGPOPolicy, CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["CGPO", "CGPOPolicy", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
