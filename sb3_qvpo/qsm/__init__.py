from sb3_qvpo.qsm.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, QSMPolicy
from sb3_qvpo.qsm.qsm import QSM

__all__ = ["QSM", "CnnPolicy", "MlpPolicy", "MultiInputPolicy", "QSMPolicy"]
