"""Models saved before the shared diffusion core (QVPO alone, commit 5c1dec3) still load, act the same and train on."""

import json
from pathlib import Path

import gymnasium as gym
import numpy as np

from sb3_qvpo import QVPO
from sb3_qvpo.qvpo.policies import QVPOPolicy

DATA = Path(__file__).parent / "data"


def test_model_saved_before_the_shared_core_loads_and_acts_the_same() -> None:
    # Written by the pre-refactor code: Pendulum-v1, 150 steps, 2x16 nets, T = 4, seed 3, with its
    # predict(deterministic=True) on two observations recorded next to it.
    reference = json.loads((DATA / "qvpo_v1_pendulum.json").read_text())
    model = QVPO.load(DATA / "qvpo_v1_pendulum.zip", env=gym.make("Pendulum-v1"))
    assert isinstance(model.policy, QVPOPolicy)
    assert model._n_updates == reference["n_updates"]
    actions, _ = model.predict(np.array(reference["observations"], dtype=np.float32), deterministic=True)
    np.testing.assert_array_equal(actions, np.array(reference["deterministic_actions"], dtype=np.float32))
    model.learn(model.learning_starts + 20, reset_num_timesteps=True)
    assert model._n_updates == reference["n_updates"] + 20
