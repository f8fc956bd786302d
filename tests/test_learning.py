"""QVPO learns: on the paper's multi-peak continuous bandit it finds the high-reward regions."""

import numpy as np
import pytest

from sb3_qvpo import QVPO
from sb3_qvpo.envs import PAPER_PEAK_CENTERS, MultiPeakBanditEnv


def test_bandit_reward() -> None:
    env = MultiPeakBanditEnv(sigma=0.3)
    peak = 1.5 / (2 * np.pi * 0.3**2)
    rewards = env.reward(np.asarray(PAPER_PEAK_CENTERS))
    assert rewards.shape == (3,)
    assert np.all(rewards >= peak) and np.all(rewards < 1.5 * peak)
    assert env.reward(np.array([[2.5, -2.5]]))[0] < 1e-6
    uniform = env.uniform_mean_reward()
    # Three peaks of mass 1.5 each, almost all inside the 5 x 5 box.
    assert uniform == pytest.approx(3 * 1.5 / 25, rel=0.05)

    obs, _ = env.reset(seed=0)
    assert obs.shape == (1,) and np.all(obs == 0)
    obs, reward, terminated, truncated, _ = env.step(np.array(PAPER_PEAK_CENTERS[0], dtype=np.float32))
    assert terminated and not truncated
    assert reward == pytest.approx(float(env.reward(np.asarray([PAPER_PEAK_CENTERS[0]]))[0]))
    # Out-of-box actions are clipped: with a box of half-width 1, the first peak's centre (-1.35, 0.65)
    # is played as (-1, 0.65).
    small = MultiPeakBanditEnv(sigma=0.3, action_bound=1.0)
    small.reset(seed=0)
    _, clipped_reward, _, _, _ = small.step(np.array([-1.35, 0.65], dtype=np.float32))
    assert clipped_reward == pytest.approx(float(small.reward(np.array([[-1.0, 0.65]]))[0]))
    assert clipped_reward < 0.8 * float(small.reward(np.array([[-1.35, 0.65]]))[0])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learns_multi_peak_bandit(seed: int) -> None:
    env = MultiPeakBanditEnv(sigma=0.3)
    model = QVPO(
        "MlpPolicy",
        env,
        learning_starts=500,
        batch_size=64,
        n_action_samples=32,
        n_uniform_samples=4,
        actor_learning_rate=1e-3,
        learning_rate=1e-3,
        entropy_coef=0.01,
        policy_kwargs=dict(net_arch=[64, 64], n_diffusion_steps=10),
        seed=seed,
    )
    model.learn(800)
    assert model._n_updates == 300
    actions, _ = model.predict(np.zeros((256, 1), np.float32), deterministic=False)
    assert actions.shape == (256, 2)
    assert np.all(np.abs(actions) <= 2.5)
    mean_reward = float(env.reward(actions).mean())
    uniform = env.uniform_mean_reward()
    assert mean_reward > 3.0 * uniform, f"seed {seed}: mean reward {mean_reward:.3f} vs uniform {uniform:.3f}"
