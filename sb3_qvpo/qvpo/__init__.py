from sb3_qvpo.qvpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, QVPOPolicy
from sb3_qvpo.qvpo.qvpo import QVPO

__all__ = ["QVPO", "CnnPolicy", "MlpPolicy", "MultiInputPolicy", "QVPOPolicy"]
