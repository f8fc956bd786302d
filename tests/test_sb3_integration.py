"""QVPO as a drop-in for SB3 pipelines: VecEnvs and wrappers, callbacks, loggers, HER, evaluate_policy, devices."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from helpers import AsymmetricBoxEnv, GoalDictEnv, tiny_kwargs
from stable_baselines3.common.callbacks import (
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    StopTrainingOnRewardThreshold,
)
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import BitFlippingEnv
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecFrameStack, VecNormalize
from stable_baselines3.her import HerReplayBuffer

from sb3_qvpo import QVPO, QVPOPolicy

# The values QVPO's train() records (train/n_updates is excluded from TensorBoard, as in SB3).
QVPO_KEYS = (
    "train/actor_loss",
    "train/critic_loss",
    "train/q_values",
    "train/target_q",
    "train/sample_q_mean",
    "train/sample_q_best",
    "train/weight_mean",
    "train/positive_weight_fraction",
    "train/entropy_coef",
    "train/learning_rate",
    "train/actor_learning_rate",
)


def finite_parameters(model: QVPO) -> bool:
    return all(th.isfinite(p).all() for p in model.policy.parameters())


# --- vectorised environments and wrappers -------------------------------------------------------


@pytest.mark.parametrize("vec_env_cls", [DummyVecEnv, SubprocVecEnv])
def test_make_vec_env_with_four_envs(vec_env_cls: type[VecEnv]) -> None:
    env = make_vec_env("Pendulum-v1", n_envs=4, seed=0, vec_env_cls=vec_env_cls)
    try:
        model = QVPO("MlpPolicy", env, seed=0, **tiny_kwargs())
        model.learn(400)
        assert model.num_timesteps == 400
        # One update per vectorised step once learning_starts (50) transitions are in: steps 13..100.
        assert model._n_updates == 100 - 12
        assert model.replay_buffer is not None and model.replay_buffer.n_envs == 4
        assert model.replay_buffer.pos == 100
        assert finite_parameters(model)
        actions, _ = model.predict(env.reset(), deterministic=True)
        assert actions.shape == (4, 1) and np.all(np.abs(actions) <= 2.0)
    finally:
        env.close()


def test_vec_normalize_obs_and_reward(tmp_path: Path) -> None:
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0), norm_obs=True, norm_reward=True)
    model = QVPO("MlpPolicy", env, seed=0, **tiny_kwargs())
    assert model.get_vec_normalize_env() is env

    # Every minibatch must be normalised with the VecNormalize statistics of the moment.
    sample_envs: list[Any] = []
    original_sample = model.replay_buffer.sample  # type: ignore[union-attr]

    def recording_sample(batch_size: int, env: Any = None) -> Any:
        sample_envs.append(env)
        return original_sample(batch_size, env=env)

    model.replay_buffer.sample = recording_sample  # type: ignore[union-attr,method-assign]
    model.learn(200)
    assert sample_envs and all(sample_env is env for sample_env in sample_envs)
    assert env.obs_rms.count > 200 and env.ret_rms.count > 0
    # The buffer keeps the original observations and rewards (Pendulum's rewards are in [-16.3, 0]).
    buffer = model.replay_buffer
    assert buffer is not None
    np.testing.assert_allclose(
        buffer.observations[: buffer.pos, :, 0] ** 2 + buffer.observations[: buffer.pos, :, 1] ** 2, 1.0, rtol=1e-5
    )
    assert buffer.rewards[: buffer.pos].min() < -1.0
    assert finite_parameters(model)

    # The statistics and the model are saved and loaded together, and training goes on.
    model.save(tmp_path / "model.zip")
    env.save(str(tmp_path / "vecnormalize.pkl"))
    new_env = VecNormalize.load(str(tmp_path / "vecnormalize.pkl"), make_vec_env("Pendulum-v1", n_envs=2, seed=1))
    np.testing.assert_array_equal(new_env.obs_rms.mean, env.obs_rms.mean)
    loaded = QVPO.load(tmp_path / "model.zip", env=new_env)
    assert loaded.get_vec_normalize_env() is new_env
    loaded.learn(20, reset_num_timesteps=False)
    assert loaded.num_timesteps == 220


@pytest.mark.parametrize(
    ("policy", "env_id", "stacked_shape"),
    [("MlpPolicy", "Pendulum-v1", (9,)), ("MultiInputPolicy", GoalDictEnv, (9,))],
)
def test_vec_frame_stack(tmp_path: Path, policy: str, env_id: Any, stacked_shape: tuple[int, ...]) -> None:
    env = VecFrameStack(make_vec_env(env_id, n_envs=2, seed=0), n_stack=3)
    model = QVPO(policy, env, seed=0, **tiny_kwargs())
    obs_space = model.observation_space
    shape = obs_space["observation"].shape if policy == "MultiInputPolicy" else obs_space.shape  # type: ignore[index]
    assert shape == stacked_shape
    model.learn(150)
    assert model._n_updates > 0 and finite_parameters(model)
    actions, _ = model.predict(env.reset(), deterministic=True)
    assert actions.shape == (2, model.action_space.shape[0])  # type: ignore[index]
    model.save(tmp_path / "model.zip")
    loaded = QVPO.load(tmp_path / "model.zip", env=env)
    obs = env.reset()
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])


# --- callbacks and loggers ----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:rich is experimental")
def test_callbacks_and_progress_bar(tmp_path: Path) -> None:
    env = make_vec_env(AsymmetricBoxEnv, n_envs=1, seed=0)
    eval_env = make_vec_env(AsymmetricBoxEnv, n_envs=1, seed=1)
    # Any return beats -1e9: the first evaluation (after 100 steps) is a new best, which stops training.
    stop = StopTrainingOnRewardThreshold(reward_threshold=-1e9, verbose=0)
    evaluation = EvalCallback(
        eval_env,
        callback_on_new_best=stop,
        n_eval_episodes=2,
        eval_freq=100,
        best_model_save_path=str(tmp_path / "best"),
        log_path=str(tmp_path / "eval"),
        deterministic=True,
    )
    checkpoint = CheckpointCallback(save_freq=40, save_path=str(tmp_path / "checkpoints"), save_replay_buffer=True)
    model = QVPO("MlpPolicy", env, seed=0, **tiny_kwargs())
    model.learn(1_000, callback=CallbackList([checkpoint, evaluation]), progress_bar=True)

    assert model.num_timesteps == 100  # stopped by the reward threshold, not by total_timesteps
    evaluations = np.load(tmp_path / "eval" / "evaluations.npz")
    assert evaluations["timesteps"].tolist() == [100]
    assert evaluations["results"].shape == (1, 2) and evaluations["ep_lengths"].tolist() == [[10, 10]]
    assert evaluation.best_mean_reward == pytest.approx(evaluations["results"].mean())

    best = QVPO.load(tmp_path / "best" / "best_model.zip")
    obs = eval_env.reset()
    np.testing.assert_array_equal(best.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])

    saved = sorted(path.name for path in (tmp_path / "checkpoints").iterdir())
    assert saved == [
        "rl_model_40_steps.zip",
        "rl_model_80_steps.zip",
        "rl_model_replay_buffer_40_steps.pkl",
        "rl_model_replay_buffer_80_steps.pkl",
    ]
    resumed = QVPO.load(tmp_path / "checkpoints" / "rl_model_80_steps.zip", env=env)
    resumed.load_replay_buffer(tmp_path / "checkpoints" / "rl_model_replay_buffer_80_steps.pkl")
    # CheckpointCallback runs inside step 80, before that step's transition is stored and its update
    # made (as for every SB3 off-policy algorithm): 79 transitions and 29 updates (steps 51..79).
    assert resumed.num_timesteps == 80 and resumed._n_updates == 29
    assert resumed.replay_buffer is not None and resumed.replay_buffer.pos == 79
    resumed.learn(10, reset_num_timesteps=False)
    assert resumed._n_updates == 39 and resumed.replay_buffer.pos == 89


def read_tensorboard_tags(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_files = list(folder.glob("events.out.tfevents.*"))
    assert event_files, f"no TensorBoard event file in {folder}: {list(folder.iterdir())}"
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return set(accumulator.Tags()["scalars"])


def test_tensorboard_log(tmp_path: Path) -> None:
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), tensorboard_log=str(tmp_path), seed=0, **tiny_kwargs())
    model.learn(120, log_interval=1)
    model.learn(30, log_interval=1, reset_num_timesteps=False)  # continues the same run
    assert sorted(path.name for path in tmp_path.iterdir()) == ["QVPO_1"]
    tags = read_tensorboard_tags(tmp_path / "QVPO_1")
    missing = set(QVPO_KEYS) - tags
    assert not missing, f"missing from TensorBoard: {missing}; found {sorted(tags)}"
    assert "train/n_updates" not in tags  # excluded from TensorBoard, as SAC does
    assert "rollout/ep_rew_mean" in tags


def test_csv_and_tensorboard_via_configure(tmp_path: Path) -> None:
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), seed=0, **tiny_kwargs())
    model.set_logger(configure(str(tmp_path), ["csv", "tensorboard"]))
    model.learn(120, log_interval=1)
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    missing = {*QVPO_KEYS, "train/n_updates"} - set(header)
    assert not missing, f"missing from progress.csv: {missing}"
    assert not set(QVPO_KEYS) - read_tensorboard_tags(tmp_path)


def test_get_set_parameters_and_policy_save(tmp_path: Path) -> None:
    model = QVPO("MlpPolicy", "Pendulum-v1", seed=0, **tiny_kwargs())
    model.learn(70)
    assert sorted(model.get_parameters()) == ["actor.optimizer", "critic.optimizer", "policy"]
    model.save(tmp_path / "model.zip")
    obs = np.random.default_rng(0).uniform(-1, 1, size=(4, 3)).astype(np.float32)
    expected = model.predict(obs, deterministic=True)[0]
    for source in (model.get_parameters(), str(tmp_path / "model.zip")):
        other = QVPO("MlpPolicy", "Pendulum-v1", seed=1, **tiny_kwargs())
        other.set_parameters(source)
        for key, value in model.policy.state_dict().items():
            assert th.equal(value, other.policy.state_dict()[key]), key
        np.testing.assert_array_equal(other.predict(obs, deterministic=True)[0], expected)
    # Policy-only save and load (SB3's way to ship a policy without the algorithm).
    model.policy.save(str(tmp_path / "policy.pth"))
    policy = QVPOPolicy.load(str(tmp_path / "policy.pth"))
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], expected)


# --- HER and evaluate_policy --------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The last trajectory in the replay buffer will be truncated")
def test_her_on_bit_flipping_with_evaluate_policy(tmp_path: Path) -> None:
    n_bits = 4
    env = make_vec_env(lambda: BitFlippingEnv(n_bits=n_bits, continuous=True, max_steps=n_bits), n_envs=1, seed=0)
    model = QVPO(
        "MultiInputPolicy",
        env,
        replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs=dict(n_sampled_goal=4, goal_selection_strategy="future"),
        seed=0,
        **tiny_kwargs(),
    )
    model.learn(300)
    assert isinstance(model.replay_buffer, HerReplayBuffer)
    assert model._n_updates == 250 and finite_parameters(model)
    # HER relabels: sampled minibatches contain successes (reward 0) that the real episodes may lack.
    assert (model.replay_buffer.sample(256).rewards == 0).any()

    rewards, lengths = evaluate_policy(model, env, n_eval_episodes=5, deterministic=True, return_episode_rewards=True)
    assert len(rewards) == len(lengths) == 5
    assert all(1 <= length <= n_bits for length in lengths)  # type: ignore[operator]
    assert all(-n_bits <= reward <= 0 for reward in rewards)  # type: ignore[operator]
    mean_reward, std_reward = evaluate_policy(model, env, n_eval_episodes=2)
    assert np.isfinite(mean_reward) and np.isfinite(std_reward)

    # HER state survives save/load: the buffer needs the environment back.
    model.save(tmp_path / "model.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    loaded = QVPO.load(tmp_path / "model.zip", env=env)
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    assert isinstance(loaded.replay_buffer, HerReplayBuffer)
    assert loaded.replay_buffer.pos == model.replay_buffer.pos
    loaded.learn(20, reset_num_timesteps=False)
    assert loaded._n_updates == 270


# --- devices ------------------------------------------------------------------------------------

DEVICES = ["cpu", "cuda"] if th.cuda.is_available() else ["cpu"]


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_device() -> None:
    model = QVPO("MlpPolicy", "Pendulum-v1", device="cuda", seed=0, **tiny_kwargs())
    model.learn(100)
    assert model.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in model.policy.parameters())
    assert model._n_updates == 50 and finite_parameters(model)
    actions, _ = model.predict(np.zeros((3, 3), np.float32), deterministic=True)
    assert actions.shape == (3, 1)


@pytest.mark.parametrize("save_device", DEVICES)
@pytest.mark.parametrize("load_device", DEVICES)
def test_save_on_one_device_load_on_another(tmp_path: Path, save_device: str, load_device: str) -> None:
    model = QVPO("MlpPolicy", "Pendulum-v1", device=save_device, seed=0, **tiny_kwargs())
    model.learn(80)
    model.save(tmp_path / "model.zip")
    loaded = QVPO.load(tmp_path / "model.zip", env=make_vec_env("Pendulum-v1", n_envs=1), device=load_device)
    assert loaded.device.type == load_device
    state = model.policy.state_dict()
    for key, value in loaded.policy.state_dict().items():
        assert value.device.type == load_device, key
        assert th.equal(value.cpu(), state[key].cpu()), key
    for name in ("actor", "critic"):
        for param_state in getattr(loaded, name).optimizer.state_dict()["state"].values():
            assert param_state["exp_avg"].device.type == load_device
    loaded.learn(20, reset_num_timesteps=False)
    assert loaded._n_updates == 50 and finite_parameters(loaded)


def test_cnn_policy_learns_on_image_observations() -> None:
    from stable_baselines3.common.envs import FakeImageEnv
    from stable_baselines3.common.torch_layers import NatureCNN

    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=False)
    kwargs = tiny_kwargs(learning_starts=20, batch_size=8, buffer_size=200)
    model = QVPO("CnnPolicy", env, seed=0, **kwargs)
    assert isinstance(model.actor.features_extractor, NatureCNN)
    assert isinstance(model.critic.features_extractor, NatureCNN)
    model.learn(40)
    assert model._n_updates > 0
    action, _ = model.predict(env.observation_space.sample(), deterministic=True)
    assert env.action_space.contains(action)
