"""
QSM, DIPO, DiffusionQL (here online, as for fine-tuning) and CGPO are drop-in SB3 algorithms like QVPO:
Box and Dict observations, HER, VecEnvs, VecNormalize, save/load, exact resume, and the same clear
errors for bad input.
"""

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from helpers import AsymmetricBoxEnv, GoalDictEnv, baseline_kwargs
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import BitFlippingEnv
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize
from stable_baselines3.her import HerReplayBuffer
from test_resume import (
    M_STEPS,
    N_STEPS,
    assert_same_buffer,
    assert_same_model,
    make_env,
    resume_everything,
    save_everything,
    scramble_rngs,
)

from sb3_qvpo import CGPO, DIPO, QSM, QVPO, DiffusionQL
from sb3_qvpo.common.off_policy import DiffusionOffPolicyAlgorithm
from sb3_qvpo.dipo import DictDiffusionMemoryReplayBuffer, DiffusionMemoryReplayBuffer, HerDiffusionMemoryReplayBuffer

ALGORITHMS = {"QSM": QSM, "DIPO": DIPO, "DiffusionQL": DiffusionQL, "CGPO": CGPO}
NAMES = list(ALGORITHMS)


def make(name: str, policy: str, env: Any, **overrides: Any) -> DiffusionOffPolicyAlgorithm:
    return ALGORITHMS[name](policy, env, **baseline_kwargs(name, **overrides))


def finite_parameters(model: DiffusionOffPolicyAlgorithm) -> bool:
    return all(th.isfinite(p).all() for p in model.policy.parameters())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("policy", "env_class"), [("MlpPolicy", AsymmetricBoxEnv), ("MultiInputPolicy", GoalDictEnv)])
def test_learn_predict_save_load(tmp_path: Path, name: str, policy: str, env_class: type[gym.Env]) -> None:
    env = env_class()
    model = make(name, policy, env, seed=0)
    model.learn(120)
    assert model._n_updates == 70 and finite_parameters(model)
    for key in ("train/critic_loss", "train/actor_loss"):
        assert np.isfinite(model.logger.name_to_value[key])
    obs, _ = env.reset(seed=1)
    batch = {key: np.stack([value] * 5) for key, value in obs.items()} if isinstance(obs, dict) else np.stack([obs] * 5)
    low, high = env.action_space.low, env.action_space.high
    for deterministic in (False, True):
        actions, _ = model.predict(batch, deterministic=deterministic)
        assert actions.shape == (5, 2)
        assert np.all(actions >= low) and np.all(actions <= high)
    # predict(deterministic=True) is a function of the observation and the weights.
    first, _ = model.predict(batch, deterministic=True)
    np.testing.assert_array_equal(first, model.predict(batch, deterministic=True)[0])

    model.save(tmp_path / "model.zip")
    loaded = ALGORITHMS[name].load(tmp_path / "model.zip", env=env)
    assert type(loaded.policy) is type(model.policy)
    np.testing.assert_array_equal(first, loaded.predict(batch, deterministic=True)[0])
    loaded.learn(20, reset_num_timesteps=False)
    assert loaded._n_updates == 90


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("vec_env_cls", [DummyVecEnv, SubprocVecEnv])
def test_vec_envs(name: str, vec_env_cls: type) -> None:
    env = make_vec_env("Pendulum-v1", n_envs=3, seed=0, vec_env_cls=vec_env_cls)
    model = make(name, "MlpPolicy", env, seed=0, train_freq=1, gradient_steps=2)
    model.learn(150)
    assert model.num_timesteps == 150
    # One rollout step = 3 transitions; updates start once 50 have been collected.
    assert model._n_updates == 2 * (50 - 17 + 1) and finite_parameters(model)
    assert model.replay_buffer is not None and model.replay_buffer.actions.shape[1] == 3
    env.close()


@pytest.mark.parametrize("accumulate", [False, True])
def test_dipo_memory_with_several_envs(accumulate: bool) -> None:
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    model = make("DIPO", "MlpPolicy", env, seed=0, accumulate_improved_actions=accumulate)
    model.learn(200)
    buffer = model.replay_buffer
    assert isinstance(buffer, DiffusionMemoryReplayBuffer)
    if not accumulate:
        assert buffer.memory_actions is buffer.actions
        return
    assert buffer.memory_actions.shape == buffer.actions.shape == (buffer.buffer_size, 2, 1)
    # Both envs' columns were improved (written back) somewhere, and nothing outside the filled rows.
    changed = np.abs(buffer.memory_actions - buffer.actions)[: buffer.pos].max(axis=(0, 2))
    assert np.all(changed > 0)
    assert np.all(buffer.memory_actions[buffer.pos :] == 0)


@pytest.mark.parametrize("name", NAMES)
def test_vec_normalize(tmp_path: Path, name: str) -> None:
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=0), norm_obs=True, norm_reward=True)
    model = make(name, "MlpPolicy", env, seed=0)
    model.learn(150)
    assert finite_parameters(model)
    # The buffer keeps raw observations; minibatches (the diffusion memory's too) are normalised.
    assert model.replay_buffer is not None
    raw = model.replay_buffer.observations[:100, 0]
    assert np.abs(raw[:, 2]).max() > 1.5  # Pendulum's angular velocity, unnormalised
    if name == "DIPO":
        observations, _, indices = model.diffusion_memory.sample_memory(64, env=env)  # type: ignore[attr-defined]
        np.testing.assert_allclose(
            observations.numpy(), env.normalize_obs(model.replay_buffer.observations[indices]), rtol=1e-6, atol=1e-6
        )
    env.save(str(tmp_path / "stats.pkl"))
    model.save(tmp_path / "model.zip")
    loaded_env = VecNormalize.load(str(tmp_path / "stats.pkl"), make_vec_env("Pendulum-v1", n_envs=1, seed=1))
    np.testing.assert_array_equal(loaded_env.obs_rms.mean, env.obs_rms.mean)
    loaded = ALGORITHMS[name].load(tmp_path / "model.zip", env=loaded_env)
    mean_reward, _ = evaluate_policy(loaded, loaded_env, n_eval_episodes=1)
    assert np.isfinite(mean_reward)


@pytest.mark.parametrize("name", NAMES)
def test_her_on_bit_flipping(tmp_path: Path, name: str) -> None:
    n_bits = 4
    env = make_vec_env(lambda: BitFlippingEnv(n_bits=n_bits, continuous=True, max_steps=n_bits), n_envs=1, seed=0)
    model = make(
        name,
        "MultiInputPolicy",
        env,
        replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs=dict(n_sampled_goal=4, goal_selection_strategy="future"),
        seed=0,
    )
    model.learn(200)
    assert isinstance(model.replay_buffer, HerReplayBuffer)
    if name == "DIPO":
        assert isinstance(model.replay_buffer, HerDiffusionMemoryReplayBuffer)
    assert model._n_updates == 150 and finite_parameters(model)
    assert (model.replay_buffer.sample(256).rewards == 0).any()  # HER relabels
    rewards, lengths = evaluate_policy(model, env, n_eval_episodes=3, deterministic=True, return_episode_rewards=True)
    assert all(1 <= length <= n_bits for length in lengths)  # type: ignore[operator]
    assert all(-n_bits <= reward <= 0 for reward in rewards)  # type: ignore[operator]

    model.save(tmp_path / "model.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    loaded = ALGORITHMS[name].load(tmp_path / "model.zip", env=env)
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    assert type(loaded.replay_buffer) is type(model.replay_buffer)
    if name == "DIPO":
        np.testing.assert_array_equal(loaded.replay_buffer.memory_actions, model.replay_buffer.memory_actions)
    loaded.learn(20, reset_num_timesteps=False)
    assert loaded._n_updates == 170


@pytest.mark.parametrize("name", NAMES)
def test_resume_matches_uninterrupted_run(tmp_path: Path, name: str) -> None:
    """As for QVPO (tests/test_resume.py): with the env and RNG states kept, bitwise equal; DIPO's memory included."""
    kwargs = baseline_kwargs(name, buffer_size=5_000, actor_learning_rate=1e-3)
    algorithm = ALGORITHMS[name]
    reference = algorithm("MlpPolicy", make_env(), seed=0, **kwargs)
    reference.learn(N_STEPS + M_STEPS)

    first = algorithm("MlpPolicy", make_env(), seed=0, **kwargs)
    first.learn(N_STEPS)
    extra = save_everything(first, tmp_path)  # type: ignore[arg-type]
    del first
    scramble_rngs()
    resumed = resume_everything(tmp_path, extra, algorithm)  # type: ignore[arg-type]
    resumed.learn(M_STEPS, reset_num_timesteps=False)
    assert resumed._n_updates == N_STEPS + M_STEPS - 50
    assert_same_model(resumed, reference)  # type: ignore[arg-type]
    assert_same_buffer(resumed, reference)  # type: ignore[arg-type]
    if name == "CGPO":  # V_phi and its optimiser too
        resumed_value = resumed.value_net.optimizer.state_dict()["state"]  # type: ignore[attr-defined]
        reference_value = reference.value_net.optimizer.state_dict()["state"]  # type: ignore[attr-defined]
        assert resumed_value.keys() == reference_value.keys() and len(resumed_value) > 0
        for index, param_state in resumed_value.items():
            for key, value in param_state.items():
                assert th.equal(value, reference_value[index][key]), (index, key)
    if name == "DIPO":
        np.testing.assert_array_equal(resumed.replay_buffer.memory_actions, reference.replay_buffer.memory_actions)
        assert resumed._dipo_updates == reference._dipo_updates == N_STEPS + M_STEPS - 50


# --- bad input ----------------------------------------------------------------------------------


class SpaceEnv(gym.Env):
    def __init__(self, action_space: gym.spaces.Space):
        self.observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.action_space = action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        return np.zeros(2, np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(2, np.float32), 0.0, False, False, {}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("action_space", "message"),
    [
        (gym.spaces.Discrete(3), r"needs a continuous \(Box\) action space"),
        (gym.spaces.MultiBinary(2), "MultiBinary"),
        (gym.spaces.Box(-np.inf, np.inf, (2,), np.float32), "finite bounds"),
    ],
)
def test_rejects_bad_action_spaces(name: str, action_space: gym.spaces.Space, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        make(name, "MlpPolicy", SpaceEnv(action_space))
    assert str(error.value).startswith(f"{name} needs a")


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("QSM", dict(batch_size=0), "batch_size"),
        ("QSM", dict(q_score_scale=0.0), "q_score_scale"),
        ("QSM", dict(q_score_scale=float("nan")), "q_score_scale"),
        ("QSM", dict(target_noise=-0.1), "target_noise"),
        ("QSM", dict(max_grad_norm=0.0), "max_grad_norm"),
        ("QSM", dict(policy_kwargs=dict(exploration_noise=-1.0)), "exploration_noise"),
        ("QSM", dict(policy_kwargs=dict(n_eval_samples=0)), "n_eval_samples"),
        ("QSM", dict(policy_kwargs=dict(reverse_process="langevin")), "reverse_process"),
        ("QSM", dict(policy_kwargs=dict(time_embedding="learned")), "time_embedding"),
        ("QSM", dict(policy_kwargs=dict(weight_init="orthogonal")), "weight_init"),
        ("DIPO", dict(batch_size=-1), "batch_size"),
        ("DIPO", dict(action_gradient_steps=-1), "action_gradient_steps"),
        ("DIPO", dict(actor_target_update_interval=0), "actor_target_update_interval"),
        ("DIPO", dict(action_learning_rate=float("inf")), "action_learning_rate"),
        ("DIPO", dict(action_grad_norm_ratio=-0.1), "action_grad_norm_ratio"),
        ("DIPO", dict(n_steps=3), "n_steps=1"),
        ("DIPO", dict(policy_kwargs=dict(n_behavior_samples=0)), "n_behavior_samples"),
        ("DIPO", dict(policy_kwargs=dict(eval_noise_scale=-1.0)), "eval_noise_scale"),
        ("DIPO", dict(policy_kwargs=dict(n_diffusion_steps=0)), "n_diffusion_steps"),
        ("CGPO", dict(n_guided_steps=6), r"n_guided_steps \(G\) must be in \[0, T=5\]"),
        ("CGPO", dict(n_guided_steps=-1), "n_guided_steps"),
        ("CGPO", dict(guidance_rate=1.5), r"guidance_rate \(rho\) must be in \[0, 1\]"),
        ("CGPO", dict(guidance_rate=-0.1), "guidance_rate"),
        ("CGPO", dict(n_target_samples=0), "n_target_samples"),
        ("CGPO", dict(entropy_coef=float("nan")), "entropy_coef"),
        ("CGPO", dict(policy_kwargs=dict(n_quantiles=5, top_quantiles_to_drop_per_net=5)), "must be below n_quantiles"),
        ("CGPO", dict(policy_kwargs=dict(top_quantiles_to_drop_per_net=-1)), "top_quantiles_to_drop_per_net"),
        ("DiffusionQL", dict(eta=-1.0), "eta"),
        ("DiffusionQL", dict(eta=float("nan")), "eta"),
        ("DiffusionQL", dict(ema_decay=1.5), "ema_decay"),
        ("DiffusionQL", dict(ema_update_interval=0), "ema_update_interval"),
        ("DiffusionQL", dict(ema_start_update=-1), "ema_start_update"),
        ("DiffusionQL", dict(n_backup_samples=0), "n_backup_samples"),
        ("DiffusionQL", dict(policy_kwargs=dict(n_critics=3)), "n_critics=2"),
        ("DiffusionQL", dict(policy_kwargs=dict(use_actor_target=False)), "actor target"),
        ("DiffusionQL", dict(policy_kwargs=dict(action_selection="greedy")), "action_selection"),
    ],
)
def test_rejects_bad_arguments(name: str, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(name, "MlpPolicy", AsymmetricBoxEnv(), **overrides)


def test_dipo_rejects_a_buffer_without_a_memory_version() -> None:
    from stable_baselines3.common.buffers import NStepReplayBuffer

    with pytest.raises(ValueError, match="NStepReplayBuffer"):
        make("DIPO", "MlpPolicy", AsymmetricBoxEnv(), replay_buffer_class=NStepReplayBuffer)
    model = make("DIPO", "MultiInputPolicy", GoalDictEnv())
    assert isinstance(model.replay_buffer, DictDiffusionMemoryReplayBuffer)


def test_dipo_refuses_a_replay_buffer_saved_by_qvpo_and_keeps_its_own(tmp_path: Path) -> None:
    qvpo = QVPO("MlpPolicy", "Pendulum-v1", buffer_size=500, learning_starts=50, policy_kwargs=dict(net_arch=[8]))
    qvpo.learn(60)
    qvpo.save_replay_buffer(tmp_path / "qvpo_buffer.pkl")
    model = make("DIPO", "MlpPolicy", "Pendulum-v1")
    model.learn(60)
    own = model.replay_buffer
    with pytest.raises(TypeError, match="without DIPO's diffusion memory"):
        model.load_replay_buffer(tmp_path / "qvpo_buffer.pkl")
    assert model.replay_buffer is own
    model.learn(10, reset_num_timesteps=False)


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_transitions_are_refused(name: str) -> None:
    class NanRewardEnv(AsymmetricBoxEnv):
        def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
            obs, reward, terminated, truncated, info = super().step(action)
            return obs, (float("nan") if self._t == 7 else reward), terminated, truncated, info

    model = make(name, "MlpPolicy", NanRewardEnv())
    with pytest.raises(ValueError, match=f"{name} got a non-finite reward"):
        model.learn(20)


@pytest.mark.parametrize(
    ("loader", "saver"),
    [(QSM, QVPO), (DIPO, QSM), (QVPO, DIPO), (DiffusionQL, QVPO), (QVPO, DiffusionQL), (CGPO, QVPO), (QVPO, CGPO)],
)
def test_load_file_of_another_diffusion_algorithm(tmp_path: Path, loader: type, saver: type) -> None:
    extra = dict(n_guided_steps=1) if saver is CGPO else {}  # G <= T
    saver("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[8], n_diffusion_steps=2), **extra).save(
        tmp_path / "other.zip"
    )
    with pytest.raises(TypeError, match="another algorithm"):
        loader.load(tmp_path / "other.zip")
