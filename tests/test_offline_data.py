"""
The offline-RL data layer (sb3_qvpo.offline): recording Minari datasets (random actions, a saved
model, an rl-zoo3 agent, a replay buffer), reading them and D4RL-layout HDF5 files back, filling an
SB3 ReplayBuffer as an off-policy model would have, and the errors bad input gets.
"""

from pathlib import Path

import gymnasium as gym
import h5py
import minari
import numpy as np
import pytest
from gymnasium import spaces
from helpers import AsymmetricBoxEnv
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_qvpo.offline import (
    TransitionSet,
    check_matches_env,
    collect_random,
    collect_with_model,
    collect_with_zoo_agent,
    fill_model_replay_buffer,
    fill_replay_buffer,
    load_d4rl_hdf5,
    load_minari,
    replay_buffer_to_minari,
    scale_actions,
    validate_transitions,
)
from sb3_qvpo.offline.collect import main
from sb3_qvpo.offline.recording import METADATA_KEY

PENDULUM_STEPS = 200  # Pendulum-v1's time limit


@pytest.fixture(autouse=True)
def minari_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every dataset of a test lives in its own folder, never in ~/.minari."""
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def random_pendulum_rollout(seed: int, n_episodes: int) -> tuple[list[np.ndarray], list[float]]:
    """What collect_random should record: the env and its action space seeded once, episodes back to back."""
    env = gym.make("Pendulum-v1")
    env.action_space.seed(seed)
    observations, rewards = [], []
    for episode in range(n_episodes):
        observation, _ = env.reset(seed=seed if episode == 0 else None)
        done = False
        while not done:
            observations.append(observation)
            observation, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            rewards.append(float(reward))
            done = terminated or truncated
    return observations, rewards


# --- recording and reading Minari datasets ---------------------------------------------------------


def test_random_collection_reads_back_as_recorded(minari_root: Path) -> None:
    summary = collect_random("Pendulum-v1", "pendulum/random-v0", n_episodes=2, seed=3)
    assert (summary.n_episodes, summary.n_complete_episodes, summary.n_transitions) == (2, 2, 2 * PENDULUM_STEPS)

    transitions = load_minari("pendulum/random-v0")
    expected_observations, expected_rewards = random_pendulum_rollout(seed=3, n_episodes=2)
    assert len(transitions) == 2 * PENDULUM_STEPS
    np.testing.assert_array_equal(transitions.observations, np.array(expected_observations))
    np.testing.assert_allclose(transitions.rewards, expected_rewards)
    np.testing.assert_allclose(transitions.episode_returns.sum(), sum(expected_rewards))
    assert summary.mean_return == pytest.approx(np.mean(transitions.episode_returns))
    # Time-limit ends are truncations, never terminals; within an episode next_obs is the next obs.
    assert not transitions.terminals.any()
    np.testing.assert_array_equal(np.flatnonzero(transitions.timeouts), [PENDULUM_STEPS - 1, 2 * PENDULUM_STEPS - 1])
    np.testing.assert_array_equal(
        transitions.next_observations[:-1][~transitions.timeouts[:-1]],
        transitions.observations[1:][~transitions.timeouts[:-1]],
    )

    # The same dataset by its folder, and its metadata.
    by_path = load_minari(minari_root / "pendulum" / "random-v0")
    np.testing.assert_array_equal(by_path.actions, transitions.actions)
    metadata = minari.load_dataset("pendulum/random-v0").storage.metadata
    assert metadata[METADATA_KEY]["n_transitions"] == 2 * PENDULUM_STEPS
    assert metadata["algorithm_name"] == "random"
    assert "400 transitions" in metadata["description"]


def test_cli_step_budget_cuts_the_last_episode_as_a_truncation(capsys: pytest.CaptureFixture[str]) -> None:
    summary = main(["--env", "Pendulum-v1", "--dataset-id", "pendulum/random-v1", "--n-steps", "250", "--seed", "3"])
    assert "250 transitions" in capsys.readouterr().out
    assert (summary.n_episodes, summary.n_complete_episodes) == (2, 1)

    transitions = load_minari("pendulum/random-v1")
    expected_observations, expected_rewards = random_pendulum_rollout(seed=3, n_episodes=2)
    np.testing.assert_array_equal(transitions.observations, np.array(expected_observations[:250]))
    assert summary.mean_return == pytest.approx(sum(expected_rewards[:PENDULUM_STEPS]))
    assert not transitions.terminals.any()
    np.testing.assert_array_equal(np.flatnonzero(transitions.timeouts), [PENDULUM_STEPS - 1, 249])


def test_cli_collects_with_a_saved_sac_model(tmp_path: Path) -> None:
    model_path = tmp_path / "sac.zip"
    SAC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[8]), buffer_size=10, seed=0).save(model_path)
    arguments = ["--env", "Pendulum-v1", "--model", str(model_path), "--algo", "sac", "--n-steps", "50"]
    summary = main([*arguments, "--dataset-id", "pendulum/sac-v0", "--action-noise-std", "0.3", "--author", "tests"])
    assert (summary.n_transitions, summary.n_complete_episodes) == (50, 0)

    dataset = minari.load_dataset("pendulum/sac-v0")
    assert dataset.storage.metadata["algorithm_name"] == "sac (stochastic, action noise std 0.3)"
    assert dataset.storage.metadata["author"] == {"tests"}
    noisy = load_minari("pendulum/sac-v0")
    assert np.all(np.abs(noisy.actions) <= 2.0)

    # Deterministic and noiseless: the recorded actions are the model's own.
    main([*arguments, "--dataset-id", "pendulum/sac-v1", "--deterministic"])
    deterministic = load_minari("pendulum/sac-v1")
    model = SAC.load(model_path)
    np.testing.assert_allclose(
        deterministic.actions, model.predict(deterministic.observations, deterministic=True)[0], atol=1e-6
    )


def test_zoo_agent_sees_normalised_observations_and_the_dataset_keeps_raw_ones(tmp_path: Path) -> None:
    from sb3_qvpo.zoo.cli import train

    logs = tmp_path / "logs"
    hyperparams = ["normalize:True", "learning_starts:10", "policy_kwargs:dict(net_arch=[8])"]
    train(
        [
            "--algo",
            "sac",
            "--env",
            "Pendulum-v1",
            "-n",
            "20",
            "-f",
            str(logs),
            "--eval-freq",
            "-1",
            "--hyperparams",
            *hyperparams,
        ]
    )
    model_path = logs / "sac" / "Pendulum-v1_1" / "Pendulum-v1.zip"
    stats = logs / "sac" / "Pendulum-v1_1" / "Pendulum-v1" / "vecnormalize.pkl"
    assert stats.is_file()

    summary = collect_with_zoo_agent(logs, "sac", "Pendulum-v1", "pendulum/zoo-v0", n_episodes=1, seed=5, deterministic=True)
    assert summary.n_transitions == PENDULUM_STEPS
    transitions = load_minari("pendulum/zoo-v0")
    raw_first_observation, _ = gym.make("Pendulum-v1").reset(seed=5)
    np.testing.assert_array_equal(transitions.observations[0], raw_first_observation)
    assert np.all(np.abs(transitions.observations[:, :2]) <= 1.0)  # cos and sin, unnormalised

    # The agent acted on the run's normalised observations.
    statistics = VecNormalize.load(str(stats), DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    model = SAC.load(model_path)
    normalised = statistics.normalize_obs(transitions.observations)
    np.testing.assert_allclose(transitions.actions, model.predict(normalised, deterministic=True)[0], atol=1e-6)
    assert not np.allclose(transitions.actions, model.predict(transitions.observations, deterministic=True)[0], atol=1e-3)

    # The same agent given as a .zip and its statistics file records the same data.
    collect_with_model(
        model_path, "Pendulum-v1", "pendulum/zip-v0", "sac", n_episodes=1, seed=5, deterministic=True, vec_normalize_path=stats
    )
    np.testing.assert_allclose(load_minari("pendulum/zip-v0").actions, transitions.actions, atol=1e-6)


def test_replay_buffer_round_trip_matches_what_the_model_stored(tmp_path: Path) -> None:
    """A model's own replay buffer -> Minari -> TransitionSet -> ReplayBuffer gives the model's buffer back."""
    model = SAC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[8]), learning_starts=1_000, buffer_size=1_000, seed=0)
    model.learn(250)
    stored = model.replay_buffer
    assert stored is not None
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    summary = replay_buffer_to_minari(stored, "pendulum/replay-v0", "Pendulum-v1")
    assert (summary.n_episodes, summary.n_complete_episodes, summary.n_transitions) == (2, 1, 250)

    transitions = load_minari("pendulum/replay-v0")
    rebuilt = fill_model_replay_buffer(model, transitions)
    assert model.replay_buffer is rebuilt and rebuilt.buffer_size == rebuilt.size() == 250 and rebuilt.full
    for name in ("observations", "next_observations", "actions", "rewards"):
        np.testing.assert_allclose(getattr(rebuilt, name), getattr(stored, name)[:250], rtol=1e-6, err_msg=name)
    # The model stored done=timeout=1 at the time limit; the unfinished last episode is cut as a truncation.
    np.testing.assert_array_equal(rebuilt.dones[:249], stored.dones[:249])
    np.testing.assert_array_equal(rebuilt.timeouts[:249], stored.timeouts[:249])
    assert stored.timeouts[PENDULUM_STEPS - 1, 0] == 1.0
    assert rebuilt.dones[249, 0] == rebuilt.timeouts[249, 0] == 1.0

    # The same through the command line, from the pickle save_replay_buffer writes.
    main(["--env", "Pendulum-v1", "--dataset-id", "pendulum/replay-v1", "--from-replay-buffer", str(tmp_path / "buffer.pkl")])
    np.testing.assert_array_equal(load_minari("pendulum/replay-v1").actions, transitions.actions)


# --- D4RL-layout HDF5 files ----------------------------------------------------------------------

# Two episodes of three steps: the first ends on a terminal (row 2), the second on a timeout (row 5).
OBSERVATIONS = np.array([[row, -row, 0.5] for row in (0, 1, 2, 10, 11, 12)], dtype=np.float32) / 20
NEXT_OBSERVATIONS = np.array([[row, -row, 0.5] for row in (1, 2, 3, 11, 12, 13)], dtype=np.float32) / 20
ACTIONS = np.array([[0.0, -3.0], [2.0, 5.0], [1.0, 1.0], [0.5, 0.0], [1.5, -1.0], [0.0, 4.0]], dtype=np.float32)
REWARDS = np.arange(6, dtype=np.float32)
TERMINALS = np.array([0, 0, 1, 0, 0, 0], dtype=bool)
TIMEOUTS = np.array([0, 0, 0, 0, 0, 1], dtype=bool)


def write_d4rl_file(path: Path, **overrides: np.ndarray | None) -> Path:
    arrays: dict[str, np.ndarray | None] = dict(
        observations=OBSERVATIONS, actions=ACTIONS, rewards=REWARDS, terminals=TERMINALS, timeouts=TIMEOUTS
    )
    arrays.update(overrides)
    with h5py.File(path, "w") as file:
        for key, array in arrays.items():
            if array is not None:
                file.create_dataset(key, data=array)
    return path


def test_d4rl_file_without_next_observations_drops_rows_whose_successor_is_unknown(tmp_path: Path) -> None:
    transitions = load_d4rl_hdf5(write_d4rl_file(tmp_path / "data.hdf5"))
    # As d4rl's qlearning_dataset: rows 0-4 kept (the terminal row 2 gets row 3 as next obs, never
    # bootstrapped); the timeout row 5, whose successor would be another episode's start, is dropped.
    kept = [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(transitions.observations, OBSERVATIONS[kept])
    np.testing.assert_array_equal(transitions.next_observations, OBSERVATIONS[[1, 2, 3, 4, 5]])
    np.testing.assert_array_equal(transitions.actions, ACTIONS[kept])
    np.testing.assert_array_equal(transitions.terminals, [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(transitions.timeouts, [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(transitions.episode_returns, [0 + 1 + 2, 3 + 4 + 5])

    # d4rl's fallback without a timeouts key: the time limit given as max_episode_steps (with 4, the same rows;
    # with 3, d4rl's counter reaches the limit on the terminal row 2, which it then drops).
    no_timeouts = load_d4rl_hdf5(write_d4rl_file(tmp_path / "no_timeouts.hdf5", timeouts=None), max_episode_steps=4)
    np.testing.assert_array_equal(no_timeouts.observations, OBSERVATIONS[[0, 1, 2, 3, 4]])
    three = load_d4rl_hdf5(tmp_path / "no_timeouts.hdf5", max_episode_steps=3)
    np.testing.assert_array_equal(three.observations, OBSERVATIONS[qlearning_dataset_rows(TERMINALS, None, 3)])
    np.testing.assert_array_equal(three.observations, OBSERVATIONS[[0, 1, 3, 4]])
    with pytest.warns(UserWarning, match="only terminals end episodes"):
        assert len(load_d4rl_hdf5(tmp_path / "no_timeouts.hdf5")) == 5


def qlearning_dataset_rows(
    terminals: np.ndarray, timeouts: np.ndarray | None, max_episode_steps: int | None = None
) -> list[int]:
    """The rows d4rl's qlearning_dataset keeps (terminate_on_end=False), from its documented rules:
    rows 0..N-2; a final step (a timeout, or step counter == max_episode_steps - 1) is skipped and
    resets the counter to 0; a terminal resets it before the row is counted, so it then reads 1."""
    kept, episode_step = [], 0
    for row in range(len(terminals) - 1):
        final = bool(timeouts[row]) if timeouts is not None else episode_step == max_episode_steps - 1
        if final:
            episode_step = 0
            continue
        if terminals[row]:
            episode_step = 0
        kept.append(row)
        episode_step += 1
    return kept


def test_d4rl_rows_are_those_of_qlearning_dataset(tmp_path: Path) -> None:
    # Three episodes: a terminal (row 2), a row flagged terminal and timeout (row 5), a timeout (row 8), and one open row.
    n = 10
    observations = np.arange(n * 3, dtype=np.float32).reshape(n, 3) / 40
    next_observations = observations + 0.5
    actions = np.tile(np.array([[1.0, 1.0]], dtype=np.float32), (n, 1))
    terminals = np.zeros(n, dtype=bool)
    terminals[[2, 5]] = True
    timeouts = np.zeros(n, dtype=bool)
    timeouts[[5, 8]] = True
    arrays = dict(actions=actions, rewards=np.arange(n, dtype=np.float32), terminals=terminals, timeouts=timeouts)
    path = write_d4rl_file(tmp_path / "data.hdf5", observations=observations, next_observations=next_observations, **arrays)
    expected = qlearning_dataset_rows(terminals, timeouts)
    assert expected == [0, 1, 2, 3, 4, 6, 7]
    transitions = load_d4rl_hdf5(path)
    np.testing.assert_array_equal(transitions.observations, observations[expected])
    np.testing.assert_array_equal(transitions.next_observations, next_observations[expected])
    np.testing.assert_array_equal(transitions.terminals, terminals[expected])
    assert not transitions.timeouts.any()
    # The option keeps every row with a known next observation: the timeouts as truncations, the both-flagged row as terminal.
    kept = load_d4rl_hdf5(path, keep_timeout_rows=True)
    np.testing.assert_array_equal(kept.observations, observations)
    np.testing.assert_array_equal(kept.terminals, terminals)
    np.testing.assert_array_equal(kept.timeouts, timeouts & ~terminals)

    # Without timeouts: d4rl's counter, which reads 1 after a terminal, so the next episode is cut a step earlier.
    arrays["timeouts"] = None  # type: ignore[assignment]
    no_timeouts = write_d4rl_file(tmp_path / "no_timeouts.hdf5", observations=observations, **arrays)
    for max_steps in (2, 3, 4):
        expected = qlearning_dataset_rows(terminals, None, max_steps)
        np.testing.assert_array_equal(
            load_d4rl_hdf5(no_timeouts, max_episode_steps=max_steps).observations, observations[expected]
        )
    # With 4 steps: rows 0-2 (terminal at 2), then the counter is 1 at row 3, so row 5 (not row 6) is the time limit.
    assert qlearning_dataset_rows(terminals, None, 4) == [0, 1, 2, 3, 4, 6, 7, 8]


def test_d4rl_file_with_next_observations_keeps_every_row_on_request(tmp_path: Path) -> None:
    default = load_d4rl_hdf5(write_d4rl_file(tmp_path / "data.hdf5", next_observations=NEXT_OBSERVATIONS))
    np.testing.assert_array_equal(default.observations, OBSERVATIONS[:5])  # the timeout row 5 is dropped, as d4rl does
    np.testing.assert_array_equal(default.next_observations, NEXT_OBSERVATIONS[:5])
    transitions = load_d4rl_hdf5(tmp_path / "data.hdf5", keep_timeout_rows=True)
    np.testing.assert_array_equal(transitions.observations, OBSERVATIONS)
    np.testing.assert_array_equal(transitions.next_observations, NEXT_OBSERVATIONS)
    np.testing.assert_array_equal(transitions.terminals, TERMINALS)
    np.testing.assert_array_equal(transitions.timeouts, TIMEOUTS)


def test_replay_buffer_holds_scaled_actions_and_timeouts_that_are_not_terminal(tmp_path: Path) -> None:
    env = AsymmetricBoxEnv()  # actions in [0, 2] x [-3, 5]
    path = write_d4rl_file(tmp_path / "data.hdf5", next_observations=NEXT_OBSERVATIONS)
    transitions = load_d4rl_hdf5(path, keep_timeout_rows=True)
    check_matches_env(transitions, env)
    buffer = fill_replay_buffer(transitions, env.observation_space, env.action_space, device="cpu")
    assert type(buffer) is ReplayBuffer and buffer.buffer_size == 6 and buffer.size() == 6 and buffer.full

    low, high = env.action_space.low, env.action_space.high
    np.testing.assert_allclose(buffer.actions[:, 0], 2 * (ACTIONS - low) / (high - low) - 1, atol=1e-6)
    np.testing.assert_array_equal(buffer.actions[:2, 0], [[-1, -1], [1, 1]])
    np.testing.assert_array_equal(buffer.observations[:, 0], OBSERVATIONS)
    np.testing.assert_array_equal(buffer.next_observations[:, 0], NEXT_OBSERVATIONS)
    np.testing.assert_array_equal(buffer.rewards[:, 0], REWARDS)
    # Stored as SB3 stores a time-limit end (done and timeout); sampled, only the terminal is done.
    np.testing.assert_array_equal(buffer.dones[:, 0], [0, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(buffer.timeouts[:, 0], [0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(buffer._get_samples(np.arange(6)).dones.numpy().ravel(), TERMINALS)

    # The policy's own scale_action agrees, and a model trains on the buffer.
    model = SAC("MlpPolicy", env, policy_kwargs=dict(net_arch=[8]), batch_size=4, device="cpu", seed=0)
    model_buffer = fill_model_replay_buffer(model, transitions)
    assert model.replay_buffer is model_buffer
    np.testing.assert_allclose(model_buffer.actions, buffer.actions, atol=1e-6)
    np.testing.assert_allclose(scale_actions(ACTIONS, env.action_space), model.policy.scale_action(ACTIONS), atol=1e-6)
    model.set_logger(configure(None, []))
    model.train(gradient_steps=2, batch_size=4)


# --- bad input ------------------------------------------------------------------------------------


def valid_transitions() -> TransitionSet:
    return TransitionSet(OBSERVATIONS, ACTIONS, NEXT_OBSERVATIONS, REWARDS, TERMINALS, TIMEOUTS, source="test data")


def with_change(name: str, value: np.ndarray) -> TransitionSet:
    transitions = valid_transitions()
    setattr(transitions, name, value)
    return transitions


def set_at(array: np.ndarray, index: tuple[int, ...], value: float) -> np.ndarray:
    array = array.copy()
    array[index] = value
    return array


@pytest.mark.parametrize(
    ("transitions", "message"),
    [
        (with_change("observations", OBSERVATIONS[:, :2]), r"test data: observations have shape \(6, 2\), expected \(6, 3\)"),
        (with_change("next_observations", OBSERVATIONS[:5]), r"next_observations have shape \(5, 3\)"),
        (with_change("actions", ACTIONS[:, :1]), r"actions have shape \(6, 1\), expected \(6, 2\)"),
        (
            with_change("observations", set_at(OBSERVATIONS, (3, 1), np.nan)),
            r"observations contain NaN or inf \(first at transition 3\)",
        ),
        (with_change("rewards", set_at(REWARDS, (4,), np.nan)), r"rewards contain NaN or inf \(first at transition 4\)"),
        (with_change("actions", set_at(ACTIONS, (2, 1), np.inf)), "actions contain NaN or inf"),
        (
            with_change("actions", ACTIONS + np.float32(0.5)),
            r"1 of 6 actions are outside the environment's action bounds .* \(first at transition 1: \[2.5 5.5\]\)",
        ),
        (with_change("terminals", TERMINALS[:4]), r"terminals have shape \(4,\)"),
        (
            TransitionSet(
                np.zeros((0, 3), np.float32),
                np.zeros((0, 2), np.float32),
                np.zeros((0, 3), np.float32),
                np.zeros(0),
                np.zeros(0),
                np.zeros(0),
                source="test data",
            ),
            "empty dataset",
        ),
    ],
)
def test_bad_transitions_are_refused_before_any_buffer_exists(transitions: TransitionSet, message: str) -> None:
    env = AsymmetricBoxEnv()

    class NeverBuilt(ReplayBuffer):
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("a buffer was allocated for bad input")

    with pytest.raises(ValueError, match=message):
        fill_replay_buffer(transitions, env.observation_space, env.action_space, replay_buffer_class=NeverBuilt)


def test_unsupported_spaces_and_dtypes_are_named() -> None:
    box = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    actions = AsymmetricBoxEnv().action_space
    dict_space = spaces.Dict({"observation": box})
    with pytest.raises(ValueError, match=r"observation space Dict.* is not supported: .*Box observation spaces only"):
        validate_transitions(valid_transitions(), dict_space, actions)
    with pytest.raises(ValueError, match=r"action space Discrete\(3\) is not supported"):
        validate_transitions(valid_transitions(), box, spaces.Discrete(3))
    with pytest.raises(ValueError, match="infinite bounds"):
        validate_transitions(valid_transitions(), box, spaces.Box(-np.inf, np.inf, shape=(2,)))
    images = spaces.Box(0, 255, shape=(3,), dtype=np.uint8)
    with pytest.raises(
        ValueError, match=r"observations have dtype float32, which does not fit the environment's space dtype uint8"
    ):
        validate_transitions(valid_transitions(), images, actions)


def test_minari_dataset_with_discrete_actions_is_refused() -> None:
    collect_random("CartPole-v1", "cartpole/random-v0", n_steps=20)
    with pytest.raises(ValueError, match=r"action space Discrete\(2\) is not supported"):
        load_minari("cartpole/random-v0")


def test_missing_minari_dataset_says_how_to_make_one(minari_root: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"'pendulum/expert-v0' is not downloaded: there is no .*minari.*sb3_qvpo\.offline\.collect"
    ):
        load_minari("pendulum/expert-v0")


def test_corrupt_minari_dataset_is_named(minari_root: Path) -> None:
    collect_random("Pendulum-v1", "pendulum/random-v0", n_steps=10)
    data_file = minari_root / "pendulum" / "random-v0" / "data" / "main_data.hdf5"
    data_file.write_bytes(data_file.read_bytes()[:500])
    with pytest.raises(
        ValueError, match=r"Minari dataset 'pendulum/random-v0' cannot be read \(truncated or corrupt file\?\)"
    ):
        load_minari("pendulum/random-v0")


def test_existing_dataset_id_is_refused_before_recording() -> None:
    collect_random("Pendulum-v1", "pendulum/random-v0", n_steps=10)
    with pytest.raises(ValueError, match="'pendulum/random-v0' already exists"):
        collect_random("Pendulum-v1", "pendulum/random-v0", n_steps=10)
    with pytest.raises(ValueError, match="Malformed dataset ID"):
        collect_random("Pendulum-v1", "pendulum/no version!", n_steps=10)
    with pytest.raises(ValueError, match="exactly one of n_steps and n_episodes"):
        collect_random("Pendulum-v1", "pendulum/random-v1")


def test_cli_refuses_incomplete_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--env", "Pendulum-v1", "--dataset-id", "pendulum/random-v0"])
    assert "one of --n-steps or --n-episodes is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--env", "Pendulum-v1", "--dataset-id", "pendulum/random-v0", "--n-steps", "5", "--model", "agent.zip"])
    assert "need --algo" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(terminals=None), r"has no 'terminals' dataset \(required: observations, actions, rewards, terminals"),
        (dict(actions=ACTIONS[:4]), r"'actions' has shape \(4, 2\), but 'rewards' has 6 rows"),
        (
            dict(
                observations=OBSERVATIONS[:0],
                actions=ACTIONS[:0],
                rewards=REWARDS[:0],
                terminals=TERMINALS[:0],
                timeouts=TIMEOUTS[:0],
            ),
            "empty dataset",
        ),
    ],
)
def test_bad_d4rl_files_are_named(tmp_path: Path, overrides: dict[str, np.ndarray | None], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_d4rl_hdf5(write_d4rl_file(tmp_path / "data.hdf5", **overrides))


def test_missing_truncated_and_non_hdf5_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"D4RL dataset file .*absent\.hdf5 does not exist"):
        load_d4rl_hdf5(tmp_path / "absent.hdf5")
    whole = write_d4rl_file(tmp_path / "data.hdf5").read_bytes()
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"truncated\.hdf5 is not a readable HDF5 file \(truncated or corrupt\?\)"):
        load_d4rl_hdf5(truncated)
    text = tmp_path / "notes.hdf5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match=r"notes\.hdf5 is not a readable HDF5 file"):
        load_d4rl_hdf5(text)


def test_replay_buffers_that_cannot_be_converted_are_refused(tmp_path: Path) -> None:
    box = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    pendulum_actions = spaces.Box(-2.0, 2.0, shape=(1,), dtype=np.float32)
    with pytest.raises(ValueError, match="The replay buffer is empty"):
        replay_buffer_to_minari(ReplayBuffer(10, box, pendulum_actions), "pendulum/replay-v0", "Pendulum-v1")
    compact = ReplayBuffer(10, box, pendulum_actions, optimize_memory_usage=True, handle_timeout_termination=False)
    compact.add(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros((1, 1)), np.zeros(1), np.zeros(1), [{}])
    with pytest.raises(ValueError, match="optimize_memory_usage=True"):
        replay_buffer_to_minari(compact, "pendulum/replay-v0", "Pendulum-v1")
    wrong_shape = ReplayBuffer(10, spaces.Box(-1.0, 1.0, shape=(4,)), pendulum_actions)
    wrong_shape.add(np.zeros((1, 4)), np.zeros((1, 4)), np.zeros((1, 1)), np.zeros(1), np.zeros(1), [{}])
    with pytest.raises(ValueError, match=r"observations of shape \(4,\).*the environment has \(3,\)"):
        replay_buffer_to_minari(wrong_shape, "pendulum/replay-v0", "Pendulum-v1")
    with pytest.raises(FileNotFoundError, match=r"Replay buffer file .* does not exist"):
        replay_buffer_to_minari(tmp_path / "absent.pkl", "pendulum/replay-v0", "Pendulum-v1")
