"""QSM, DIPO and CGPO learn: the multi-peak continuous bandit (as tests/test_learning.py for QVPO), QSM Pendulum."""

import numpy as np
import pytest

from sb3_qvpo import CGPO, DIPO
from sb3_qvpo.envs import MultiPeakBanditEnv

# Measured mean rewards for seeds 0 / 1 / 2 (uniform actions: 0.18): DIPO 0.70 / 0.60 / 0.82 (its official
# memory, never written; with the write-back memory of before 0.2: 1.63 / 1.79 / 1.70), CGPO 1.30 / 1.48 / 1.21.
# Two seeds run here (CI time); the third seed's numbers above were measured the same way.
BANDIT_LEARNERS = {"DIPO": (DIPO, {}), "CGPO": (CGPO, {"n_guided_steps": 5})}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", list(BANDIT_LEARNERS))
def test_learns_multi_peak_bandit(name: str, seed: int) -> None:
    algorithm, extra = BANDIT_LEARNERS[name]
    env = MultiPeakBanditEnv(sigma=0.3)
    model = algorithm(
        "MlpPolicy",
        env,
        learning_starts=500,
        batch_size=64,
        actor_learning_rate=1e-3,
        learning_rate=1e-3,
        policy_kwargs=dict(net_arch=[64, 64], n_diffusion_steps=10),
        seed=seed,
        **extra,
    )
    model.learn(800)
    assert model._n_updates == 300
    actions, _ = model.predict(np.zeros((256, 1), np.float32), deterministic=False)
    assert np.all(np.abs(actions) <= 2.5)
    mean_reward = float(env.reward(actions).mean())
    uniform = env.uniform_mean_reward()
    assert mean_reward > 3.0 * uniform, f"{name} seed {seed}: mean reward {mean_reward:.3f} vs uniform {uniform:.3f}"


@pytest.mark.slow
def test_qsm_learns_pendulum() -> None:
    """
    QSM does not learn the multi-peak bandit (benchmarks/results/bandit: with flat Q between narrow
    peaks its samples end on the box edges), so its learning test is Pendulum-v1, which it solves
    with the small CPU settings of hyperparams/qsm.yml.
    """
    import gymnasium as gym
    from stable_baselines3.common.evaluation import evaluate_policy

    from sb3_qvpo import QSM

    model = QSM(
        "MlpPolicy",
        "Pendulum-v1",
        learning_starts=1000,
        batch_size=128,
        gamma=0.98,
        learning_rate=1e-3,
        actor_learning_rate=1e-3,
        policy_kwargs=dict(net_arch=[64, 64]),
        seed=0,
    )
    env = gym.make("Pendulum-v1")
    before, _ = evaluate_policy(model, env, n_eval_episodes=3)
    model.learn(6000)
    after, _ = evaluate_policy(model, env, n_eval_episodes=5)
    # Measured (seed 0): about -1060 at 3,000 steps and -179 at 6,000; random actions score about -1200.
    assert before < -700
    assert after > -400, f"QSM after 6,000 Pendulum steps: {after:.1f} (before {before:.1f})"
