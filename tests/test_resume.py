"""
Nothing is lost across save/load: resuming equals not stopping, and seeding makes runs identical.

What SB3's ``save`` / ``save_replay_buffer`` store, and what they do not:

- stored: the weights of all four networks (actor, critic and both targets), both optimiser states
  (Adam moments and step counts), the hyperparameters (entropy-coefficient and learning-rate
  schedules included), the counters (``num_timesteps``, ``_n_updates``, ``_episode_num``,
  ``_total_timesteps``, ``_current_progress_remaining``), the last observation and episode-start flags,
  and, in the replay-buffer file, every transition with the buffer's position.
- not stored: the environment (its simulator state, its own RNG, its time-limit counter, i.e. the
  episode in progress) and the global RNG streams (torch: diffusion noise, behaviour and target
  sampling, uniform entropy actions; numpy: replay-buffer minibatch indices). On top of that,
  ``load`` calls ``set_random_seed(seed)``, which re-seeds those streams and the new environment with
  the *original* seed, and ``load(env=...)`` discards the last observation (``force_reset=True``) so
  that training restarts with a fresh episode.

So a plain ``load`` + ``load_replay_buffer`` continues training correctly but not along the same
trajectory as an uninterrupted run. When the caller also keeps the environment (pickled) and the
global RNG states, and loads with ``force_reset=False``, the resumed run is *bitwise* identical to the
uninterrupted one: tolerance 0 (``torch.equal``), because every float that the next update reads is
restored exactly (tensors are saved in float32 as they are) and, on one CPU thread, the same
operations run in the same order.
"""

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from helpers import tiny_kwargs
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import LinearSchedule, set_random_seed
from stable_baselines3.common.vec_env import VecEnv

from sb3_qvpo import QVPO

# N stops in the middle of Pendulum's first 200-step episode; N + M crosses the time limit, so the
# resumed run also auto-resets the environment (from the environment's own restored RNG).
N_STEPS, M_STEPS = 130, 100


def resume_kwargs(**overrides: Any) -> dict[str, Any]:
    return tiny_kwargs(buffer_size=5_000, n_eval_samples=4, **overrides)


def make_env(seed: int = 0) -> VecEnv:
    return make_vec_env("Pendulum-v1", n_envs=1, seed=seed)


def rng_states() -> dict[str, Any]:
    return {"torch": th.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}


def set_rng_states(states: dict[str, Any]) -> None:
    th.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["random"])


def scramble_rngs() -> None:
    """What an unrelated process would have done to the global streams before the resume."""
    th.manual_seed(12345)
    np.random.seed(12345)
    random.seed(12345)


def assert_same_model(model: QVPO, other: QVPO) -> None:
    state, other_state = model.policy.state_dict(), other.policy.state_dict()
    assert state.keys() == other_state.keys()
    for key, value in state.items():
        assert th.equal(value, other_state[key]), key
    for name in ("actor", "critic"):
        optimizer_state = getattr(model, name).optimizer.state_dict()
        other_optimizer_state = getattr(other, name).optimizer.state_dict()
        assert optimizer_state["param_groups"] == other_optimizer_state["param_groups"], name
        assert optimizer_state["state"].keys() == other_optimizer_state["state"].keys(), name
        for index, param_state in optimizer_state["state"].items():
            for key, value in param_state.items():
                assert th.equal(value, other_optimizer_state["state"][index][key]), (name, index, key)
    for name in ("num_timesteps", "_n_updates", "_episode_num", "_total_timesteps", "_current_progress_remaining"):
        assert getattr(model, name) == getattr(other, name), name


def assert_same_buffer(model: QVPO, other: QVPO) -> None:
    buffer, other_buffer = model.replay_buffer, other.replay_buffer
    assert buffer is not None and other_buffer is not None
    assert (buffer.pos, buffer.full) == (other_buffer.pos, other_buffer.full)
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(buffer, name), getattr(other_buffer, name), err_msg=name)


def save_everything(model: QVPO, folder: Path) -> bytes:
    """SB3's two files, plus what SB3 does not save: the environment and the global RNG states."""
    model.save(folder / "model.zip")
    model.save_replay_buffer(folder / "buffer.pkl")
    env = model.get_env()
    assert env is not None
    return pickle.dumps({"env": env, "rng": rng_states()})


def resume_everything(folder: Path, extra: bytes, algorithm: type[QVPO] = QVPO) -> QVPO:
    state = pickle.loads(extra)
    # force_reset=False keeps the saved last observation: the episode in progress goes on.
    model = algorithm.load(folder / "model.zip", env=state["env"], force_reset=False)
    model.load_replay_buffer(folder / "buffer.pkl")
    set_rng_states(state["rng"])  # after load, which re-seeds the global streams with `seed`
    return model


@pytest.mark.parametrize(
    "schedules",
    [
        # Constant schedules: progress does not matter, so one learn(N + M) call is the reference.
        dict(entropy_coef=0.01),
        # Decaying schedules: SB3 evaluates them at the progress *within the current learn call*, so
        # learn(N) + learn(M, reset_num_timesteps=False) differs from learn(N + M) for every SB3
        # algorithm even without save/load; the reference is then the two calls in one process.
        dict(entropy_coef="lin_0.02_0.002", learning_rate=LinearSchedule(3e-4, 1e-4, 1.0)),
    ],
    ids=["constant", "decaying"],
)
def test_resume_matches_uninterrupted_run(tmp_path: Path, schedules: dict[str, Any]) -> None:
    kwargs = resume_kwargs(**schedules)
    constant = isinstance(schedules["entropy_coef"], float)

    reference = QVPO("MlpPolicy", make_env(), seed=0, **kwargs)
    if constant:
        reference.learn(N_STEPS + M_STEPS)
    else:
        reference.learn(N_STEPS)
        reference.learn(M_STEPS, reset_num_timesteps=False)

    first = QVPO("MlpPolicy", make_env(), seed=0, **kwargs)
    first.learn(N_STEPS)
    extra = save_everything(first, tmp_path)
    del first
    scramble_rngs()
    resumed = resume_everything(tmp_path, extra)
    assert resumed.num_timesteps == N_STEPS and resumed._n_updates == N_STEPS - 50
    resumed.learn(M_STEPS, reset_num_timesteps=False)

    assert resumed.num_timesteps == N_STEPS + M_STEPS
    assert resumed._n_updates == N_STEPS + M_STEPS - 50
    # Tolerance 0: every parameter, target, Adam moment and step count is bitwise equal.
    assert_same_model(resumed, reference)
    assert_same_buffer(resumed, reference)
    np.testing.assert_array_equal(resumed._last_obs, reference._last_obs)  # type: ignore[arg-type]


def test_resume_equality_is_sensitive_to_the_rng_state(tmp_path: Path) -> None:
    """The exact match above needs the RNG states: without them the same protocol diverges (the test can fail)."""
    kwargs = resume_kwargs(entropy_coef=0.01)
    reference = QVPO("MlpPolicy", make_env(), seed=0, **kwargs)
    reference.learn(N_STEPS + M_STEPS)

    first = QVPO("MlpPolicy", make_env(), seed=0, **kwargs)
    first.learn(N_STEPS)
    extra = save_everything(first, tmp_path)
    resumed = resume_everything(tmp_path, extra)
    scramble_rngs()
    resumed.learn(M_STEPS, reset_num_timesteps=False)
    state, reference_state = resumed.policy.state_dict(), reference.policy.state_dict()
    assert not all(th.equal(value, reference_state[key]) for key, value in state.items())


class RecordingSchedule:
    """A picklable entropy-coefficient schedule that records the progress it is evaluated at."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, progress_remaining: float) -> float:
        self.calls.append(progress_remaining)
        return 0.01 * progress_remaining


def test_plain_sb3_resume_keeps_state_and_schedules(tmp_path: Path) -> None:
    """
    The plain SB3 protocol (fresh env, no RNG states): everything SB3 saves comes back exactly, and
    the schedules continue from where they stopped rather than restarting.
    """
    kwargs = resume_kwargs(entropy_coef=RecordingSchedule(), learning_rate=LinearSchedule(3e-4, 1e-4, 1.0))
    model = QVPO("MlpPolicy", make_env(), seed=0, **kwargs)
    model.learn(N_STEPS)
    model.save(tmp_path / "model.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")

    loaded = QVPO.load(tmp_path / "model.zip", env=make_env(seed=1))
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    assert_same_model(loaded, model)
    assert_same_buffer(loaded, model)
    # Targets are restored as targets (not re-copied from the online networks).
    online, target = loaded.actor.state_dict(), loaded.actor_target.state_dict()
    assert any(not th.equal(online[key], target[key]) for key in online)
    for key, value in model.critic_target.state_dict().items():
        assert th.equal(value, loaded.critic_target.state_dict()[key]), key
    # The optimisers hold the learning rates of the last update (the schedule's end), not its start.
    assert loaded.critic.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert isinstance(loaded.entropy_coef, RecordingSchedule)
    assert loaded.entropy_coef.calls == model.entropy_coef.calls  # the schedule object itself round-trips
    loaded.entropy_coef_schedule.calls.clear()  # type: ignore[attr-defined]

    loaded.learn(M_STEPS, reset_num_timesteps=False)
    assert loaded.num_timesteps == N_STEPS + M_STEPS
    assert loaded._n_updates == N_STEPS + M_STEPS - 50
    # Progress continues from N / (N + M), as in an uninterrupted learn(N) + learn(M) pair.
    expected = [1.0 - (N_STEPS + k) / (N_STEPS + M_STEPS) for k in range(1, M_STEPS + 1)]
    np.testing.assert_allclose(loaded.entropy_coef_schedule.calls, expected, rtol=0, atol=1e-12)  # type: ignore[attr-defined]
    # Adam's step counts continued too.
    steps = [state["step"] for state in loaded.actor.optimizer.state_dict()["state"].values()]
    assert all(float(step) == N_STEPS + M_STEPS - 50 for step in steps)


# --- seeding ------------------------------------------------------------------------------------


def trained_parameters(model: QVPO, steps: int = 150) -> list[th.Tensor]:
    model.learn(steps)
    return [p.detach().clone() for p in model.policy.state_dict().values()]


@pytest.mark.parametrize("n_envs", [1, 2])
def test_seed_makes_runs_identical(n_envs: int) -> None:
    runs = [
        trained_parameters(QVPO("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=n_envs), seed=seed, **resume_kwargs()))
        for seed in (7, 7, 8)
    ]
    assert all(th.equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert not all(th.equal(a, b) for a, b in zip(runs[0], runs[2], strict=True))


def test_set_random_seed_makes_runs_identical() -> None:
    def run(seed: int) -> list[th.Tensor]:
        set_random_seed(seed)  # before construction: the initial weights
        model = QVPO("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=1), **resume_kwargs())
        model.set_random_seed(seed)  # the action space (warm-up actions) and the environment
        return trained_parameters(model)

    first, second, other = run(3), run(3), run(4)
    assert all(th.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(th.equal(a, b) for a, b in zip(first, other, strict=True))
