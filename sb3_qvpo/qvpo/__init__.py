from sb3_qvpo.qvpo.policies import MlpPolicy, MultiInputPolicy, QVPOPolicy
from sb3_qvpo.qvpo.qvpo import QVPO

__all__ = ["QVPO", "MlpPolicy", "MultiInputPolicy", "QVPOPolicy"]
