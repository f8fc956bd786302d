from sb3_qvpo.dipo.buffers import (
    DictDiffusionMemoryReplayBuffer,
    DiffusionMemory,
    DiffusionMemoryReplayBuffer,
    HerDiffusionMemoryReplayBuffer,
)
from sb3_qvpo.dipo.dipo import DIPO
from sb3_qvpo.dipo.policies import CnnPolicy, DIPOPolicy, MlpPolicy, MultiInputPolicy

__all__ = [
    "DIPO",
    "CnnPolicy",
    "DIPOPolicy",
    "DictDiffusionMemoryReplayBuffer",
    "DiffusionMemory",
    "DiffusionMemoryReplayBuffer",
    "HerDiffusionMemoryReplayBuffer",
    "MlpPolicy",
    "MultiInputPolicy",
]
