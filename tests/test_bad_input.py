"""
Bad input gives a clear error that names the problem, never silently corrupted weights.

Without a check, one NaN or inf observation or reward in the replay buffer turns every weight into
NaN within a few updates and ``predict`` returns NaN actions. QVPO therefore refuses to store a
non-finite observation, reward or terminal observation (ValueError naming it and the timestep).
VecCheckNan(raise_exception=True) catches NaN/inf in observations and rewards one step earlier but
not in the terminal observation of an episode (SB3 passes it in ``infos``); its default
(raise_exception=False) only warns once.
"""

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from helpers import AsymmetricBoxEnv, GoalDictEnv, tiny_kwargs
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecCheckNan

from sb3_qvpo import QVPO


class NonFiniteEnv(AsymmetricBoxEnv):
    """AsymmetricBoxEnv whose ``what`` ("obs", "reward", "terminal_obs" or "reset_obs") is ``value`` once."""

    def __init__(self, what: str, value: float, at_step: int = 60):
        super().__init__(episode_length=10)
        self.what, self.value, self.at_step = what, value, at_step
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        obs, info = super().reset(seed=seed, options=options)
        if self.what == "reset_obs":
            obs[1] = self.value
        return obs, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = super().step(action)
        self._steps += 1
        # at_step is a multiple of the episode length, so the terminal observation is the last one of an episode.
        if self._steps == self.at_step:
            if self.what in ("obs", "terminal_obs"):
                obs[0] = self.value
            elif self.what == "reward":
                reward = self.value
        return obs, reward, terminated, truncated, info


def nonfinite_vec_env(what: str, value: float) -> DummyVecEnv:
    # "obs" lands mid-episode (step 55), "terminal_obs" on the last step of the 6th episode (step 60).
    return DummyVecEnv([lambda: NonFiniteEnv(what, value, at_step=55 if what in ("obs", "reward") else 60)])


NON_FINITE_CASES = [
    ("obs", np.nan),
    ("obs", np.inf),
    ("reward", np.nan),
    ("reward", -np.inf),
    ("terminal_obs", np.nan),
    ("reset_obs", np.inf),
]


@pytest.mark.parametrize(("what", "value"), [case for case in NON_FINITE_CASES if case[0] in ("obs", "reward", "reset_obs")])
def test_vec_check_nan_raises_and_names_the_problem(what: str, value: float) -> None:
    env = VecCheckNan(nonfinite_vec_env(what, value), raise_exception=True)
    model = QVPO("MlpPolicy", env, seed=0, **tiny_kwargs())
    name = "rewards" if what == "reward" else "observations"
    kind = "nan" if np.isnan(value) else "inf"
    with pytest.raises(ValueError, match=f"found {kind} in {name}"):
        model.learn(100)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_vec_check_nan_misses_terminal_observations() -> None:
    """SB3's VecCheckNan does not look into infos["terminal_observation"], so QVPO has to."""
    env = VecCheckNan(nonfinite_vec_env("terminal_obs", np.nan), raise_exception=True)
    env.reset()
    for _ in range(59):
        env.step(np.ones((1, 2), np.float32))
    obs, _, dones, infos = env.step(np.ones((1, 2), np.float32))  # no error
    assert dones[0] and np.isnan(infos[0]["terminal_observation"]).any()
    assert np.isfinite(obs).all()  # the observation after the automatic reset


@pytest.mark.parametrize(("what", "value"), NON_FINITE_CASES)
def test_non_finite_input_without_vec_check_nan_raises(what: str, value: float) -> None:
    model = QVPO("MlpPolicy", nonfinite_vec_env(what, value), seed=0, **tiny_kwargs())
    name = {"reward": "reward", "terminal_obs": "terminal observation"}.get(what, "observation")
    with pytest.raises(ValueError, match=f"non-finite {name}"):
        model.learn(100)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    assert model.replay_buffer is not None
    assert np.isfinite(model.replay_buffer.observations).all() and np.isfinite(model.replay_buffer.rewards).all()


def test_default_vec_check_nan_warns_then_raises() -> None:
    """VecCheckNan's default only warns; QVPO must still refuse the transition."""
    model = QVPO("MlpPolicy", VecCheckNan(nonfinite_vec_env("reward", np.nan)), seed=0, **tiny_kwargs())
    with pytest.warns(UserWarning, match="found nan in rewards"), pytest.raises(ValueError, match="non-finite reward"):
        model.learn(100)


def test_non_finite_loss_raises() -> None:
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), seed=0, **tiny_kwargs())
    model.learn(60)
    assert model.replay_buffer is not None
    model.replay_buffer.rewards[:] = np.nan  # corruption that bypassed every input check
    with pytest.raises(FloatingPointError, match="critic_loss"):
        model.learn(10, reset_num_timesteps=False)


# --- large rewards ------------------------------------------------------------------------------


class ScaledReward(gym.RewardWrapper):
    def __init__(self, env: gym.Env, scale: float):
        super().__init__(env)
        self.scale = scale

    def reward(self, reward: float) -> float:
        return self.scale * float(reward)


class FiniteLossWatch(BaseCallback):
    """Checks every value that ``train`` records, after every call of ``train`` (before any dump clears them)."""

    def __init__(self) -> None:
        super().__init__()
        self.n_checked = 0
        self.largest: dict[str, float] = {}

    def _check(self) -> None:
        values = {key: value for key, value in self.logger.name_to_value.items() if key.startswith("train/")}
        if not values:
            return
        bad = {key: value for key, value in values.items() if not np.isfinite(value)}
        assert not bad, f"non-finite training values after update {self.model._n_updates}: {bad}"
        for key, value in values.items():
            self.largest[key] = max(self.largest.get(key, 0.0), abs(float(value)))
        self.n_checked += 1
        self.logger.name_to_value.clear()  # so that each train() call is checked once

    def _on_rollout_start(self) -> None:
        self._check()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self._check()


def test_rewards_of_scale_1e4_stay_finite() -> None:
    n_steps = 2_500
    env = make_vec_env("Pendulum-v1", n_envs=1, seed=0, wrapper_class=ScaledReward, wrapper_kwargs=dict(scale=1e4))
    model = QVPO("MlpPolicy", env, seed=0, **tiny_kwargs(buffer_size=2_500, n_eval_samples=4))
    watch = FiniteLossWatch()
    model.learn(n_steps, callback=watch, log_interval=None)  # type: ignore[arg-type]
    assert model._n_updates == n_steps - 50
    assert watch.n_checked == model._n_updates  # every update's losses were seen
    assert watch.largest["train/critic_loss"] > 1e6  # the rewards really were large
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


# --- wrong shapes, foreign and truncated files, unknown kwargs ----------------------------------


@pytest.fixture(scope="module")
def saved_box_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = QVPO("MlpPolicy", "Pendulum-v1", seed=0, **tiny_kwargs())
    path = tmp_path_factory.mktemp("bad_input") / "qvpo.zip"
    model.save(path)
    return path


@pytest.mark.parametrize(
    ("obs", "error", "message"),
    [
        (np.zeros(5, np.float32), ValueError, r"Unexpected observation shape \(5,\) for Box environment, please use \(3,\)"),
        (np.zeros((2, 4), np.float32), ValueError, r"Unexpected observation shape \(2, 4\)"),
        (np.zeros((2, 3, 1), np.float32), ValueError, r"Unexpected observation shape \(2, 3, 1\)"),
        ({"observation": np.zeros(3, np.float32)}, AssertionError, "observation provided is a dict but the obs space is Box"),
    ],
)
def test_wrong_observation_shape_for_loaded_model(saved_box_model: Path, obs: Any, error: type, message: str) -> None:
    loaded = QVPO.load(saved_box_model)
    with pytest.raises(error, match=message):
        loaded.predict(obs)


def test_wrong_dict_observation_for_loaded_model(tmp_path: Path) -> None:
    QVPO("MultiInputPolicy", GoalDictEnv(), **tiny_kwargs()).save(tmp_path / "model.zip")
    loaded = QVPO.load(tmp_path / "model.zip")
    with pytest.raises(ValueError, match=r"observation shape \(4,\)"):
        loaded.predict({"observation": np.zeros(4, np.float32), "desired_goal": np.zeros(2, np.float32)})
    with pytest.raises(KeyError, match="desired_goal"):
        loaded.predict({"observation": np.zeros(3, np.float32)})


def test_load_with_env_of_wrong_spaces(saved_box_model: Path) -> None:
    # Pendulum's observations are (3,); MountainCarContinuous's are (2,).
    with pytest.raises(ValueError, match=r"Observation spaces do not match.*\(3,\).*\(2,\)"):
        QVPO.load(saved_box_model, env=gym.make("MountainCarContinuous-v0"))
    loaded = QVPO.load(saved_box_model)
    with pytest.raises(ValueError, match="Observation spaces do not match"):
        loaded.set_env(make_vec_env("MountainCarContinuous-v0", n_envs=1))


@pytest.mark.parametrize("algorithm", [TD3, SAC, PPO])
def test_load_file_of_another_algorithm(tmp_path: Path, algorithm: Any) -> None:
    algorithm("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[8])).save(tmp_path / "other.zip")
    with pytest.raises(TypeError, match="another algorithm"):
        QVPO.load(tmp_path / "other.zip")


TRUNCATIONS = [0.0, 0.3, 0.6, 0.99]


def truncated_copy(path: Path, tmp_path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    truncated = tmp_path / f"cut_{fraction}.zip"
    truncated.write_bytes(data[: int(len(data) * fraction)])
    return truncated


@pytest.mark.parametrize("fraction", TRUNCATIONS)
def test_truncated_file_never_loads(saved_box_model: Path, tmp_path: Path, fraction: float) -> None:
    # Today: ValueError "wasn't a zip-file", or (when zipfile finds the archive nested in a .pth entry)
    # AssertionError "No data found in the saved file".
    with pytest.raises((ValueError, AssertionError), match=r"wasn't a zip-file|No data found|not a complete saved model"):
        QVPO.load(truncated_copy(saved_box_model, tmp_path, fraction))


@pytest.mark.parametrize("fraction", TRUNCATIONS)
def test_truncated_file_error_says_truncated(saved_box_model: Path, tmp_path: Path, fraction: float) -> None:
    with pytest.raises(ValueError, match="the file is truncated"):
        QVPO.load(truncated_copy(saved_box_model, tmp_path, fraction))


@pytest.mark.parametrize(
    ("policy", "env_class"),
    [("MlpPolicy", AsymmetricBoxEnv), ("MultiInputPolicy", GoalDictEnv)],
)
@pytest.mark.parametrize("bad_key", ["n_difusion_steps", "net_archs"])
def test_unknown_policy_kwargs_are_named(policy: str, env_class: type[gym.Env], bad_key: str) -> None:
    policy_kwargs = dict(net_arch=[8], n_diffusion_steps=2, **{bad_key: 3})
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{bad_key}'"):
        QVPO(policy, env_class(), **tiny_kwargs(policy_kwargs=policy_kwargs))
