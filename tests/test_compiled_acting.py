"""
The compiled acting path (sb3_qvpo.common.compiled_acting) gives the eager path's actions with the
same draws, switches on after ``compile_acting_after`` calls, follows weight updates, and falls back
to eager acting when compiling fails. Networks are tiny and T small so each compile takes seconds.
"""

import copy
import logging
import threading
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from helpers import GoalDictEnv
from torch import nn

from sb3_qvpo import DIPO, QSM, QVPO, DiffusionQL
from sb3_qvpo.common import compiled_acting
from sb3_qvpo.common.off_policy import DiffusionOffPolicyAlgorithm

SMALL = dict(net_arch=[16, 16], n_diffusion_steps=3)
ALGORITHMS = {"qvpo": QVPO, "qsm": QSM, "dipo": DIPO, "diffusion_ql": DiffusionQL}


def make_pair(
    algorithm: type[DiffusionOffPolicyAlgorithm],
    env: gym.Env | str = "Pendulum-v1",
    compile_after: int = 0,
    policy: str = "MlpPolicy",
    background: bool = False,
    **policy_kwargs,
) -> tuple[DiffusionOffPolicyAlgorithm, DiffusionOffPolicyAlgorithm]:
    """An eager model and a compiled one with the same weights (compiling in the calling thread by default)."""
    kwargs = dict(SMALL, **policy_kwargs)
    eager = algorithm(policy, env, buffer_size=100, seed=0, policy_kwargs=dict(kwargs, compile_acting_after=None))
    compiled_kwargs = dict(kwargs, compile_acting_after=compile_after, compile_in_background=background)
    compiled = algorithm(policy, env, buffer_size=100, seed=0, policy_kwargs=compiled_kwargs)
    compiled.policy.load_state_dict(eager.policy.state_dict())
    return eager, compiled


def predict_both(
    eager: DiffusionOffPolicyAlgorithm, compiled: DiffusionOffPolicyAlgorithm, obs: np.ndarray | dict, deterministic: bool
) -> tuple[np.ndarray, np.ndarray]:
    th.manual_seed(3)
    expected = eager.predict(obs, deterministic=deterministic)[0]
    th.manual_seed(3)
    actions = compiled.predict(obs, deterministic=deterministic)[0]
    return expected, actions


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_compiled_acting_gives_the_eager_actions(name: str) -> None:
    # QVPO: best of K (Mish, x0 clipping); QSM: one sample plus noise (ReLU critic, x_t clipping,
    # Fourier time features); DIPO: a noise-free evaluation chain; Diffusion-QL: softmax(Q) of the
    # target critic over 50 candidates.
    eager, compiled = make_pair(ALGORITHMS[name])
    obs = np.stack([compiled.observation_space.sample() for _ in range(3)])
    for deterministic in (True, False):
        expected, actions = predict_both(eager, compiled, obs, deterministic)
        assert actions.shape == expected.shape == (3, 1)
        np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
    assert compiled.policy.compiled_acting.compiled_keys, "the compiled path was not used"
    assert not eager.policy.compiled_acting.compiled_keys


def test_acts_eagerly_until_compile_after_calls_then_compiles() -> None:
    eager, compiled = make_pair(QVPO, compile_after=2)
    obs = compiled.observation_space.sample()
    for call in range(3):
        expected, actions = predict_both(eager, compiled, obs, deterministic=True)
        np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
        assert bool(compiled.policy.compiled_acting.compiled_keys) == (call == 2)
    # Each batch size counts on its own: 4 behaviour candidates is a new one.
    compiled.predict(obs, deterministic=False)
    assert len(compiled.policy.compiled_acting.compiled_keys) == 1


def test_weight_updates_reach_the_compiled_path_without_recompiling() -> None:
    eager, compiled = make_pair(QVPO)
    compiled.observation_space.seed(0)
    obs = np.stack([compiled.observation_space.sample() for _ in range(2)])
    predict_both(eager, compiled, obs, deterministic=True)
    # Train the compiled model (optimiser steps and Polyak updates write in place), then give the
    # eager one its weights: acting must agree again, with the new weights.
    compiled.learning_starts = 20
    compiled.learn(40)
    eager.policy.load_state_dict(compiled.policy.state_dict())
    expected, actions = predict_both(eager, compiled, obs, deterministic=True)
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
    # load_state_dict into the compiled model (copy_ in place) is seen too. The new weights are a fresh
    # model's: after training, the actions can sit on the bounds, where a small shift of every
    # weight leaves them unchanged (CI saw that) and the last check would prove nothing.
    fresh = QVPO("MlpPolicy", "Pendulum-v1", buffer_size=100, seed=1, policy_kwargs=dict(SMALL, compile_acting_after=None))
    eager.policy.load_state_dict(fresh.policy.state_dict())
    compiled.policy.load_state_dict(eager.policy.state_dict())
    expected_after, actions_after = predict_both(eager, compiled, obs, deterministic=True)
    np.testing.assert_allclose(actions_after, expected_after, rtol=1e-5, atol=1e-5)
    assert not np.allclose(actions_after, actions)


def test_dict_observations_and_several_envs() -> None:
    eager, compiled = make_pair(QVPO, env=GoalDictEnv(), policy="MultiInputPolicy")
    obs = {key: np.stack([space.sample() for _ in range(2)]) for key, space in compiled.observation_space.spaces.items()}
    expected, actions = predict_both(eager, compiled, obs, deterministic=True)
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
    assert compiled.policy.compiled_acting.compiled_keys


def test_networks_the_compiler_does_not_know_stay_eager() -> None:
    eager, compiled = make_pair(QVPO, activation_fn=nn.LeakyReLU)
    obs = compiled.observation_space.sample()
    expected, actions = predict_both(eager, compiled, obs, deterministic=True)
    np.testing.assert_array_equal(actions, expected)
    assert not compiled.policy.compiled_acting.compiled_keys


def test_a_failed_compilation_falls_back_to_eager_acting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attempts = []

    def no_compiler(device_type: str):
        def fail(*args, **kwargs):
            attempts.append(device_type)
            raise RuntimeError("no C++ compiler here")

        return fail

    monkeypatch.setattr(compiled_acting, "compile_sample_and_score", no_compiler)
    eager, compiled = make_pair(QVPO)
    obs = compiled.observation_space.sample()
    with caplog.at_level(logging.WARNING, logger="sb3_qvpo.common.compiled_acting"):
        expected, actions = predict_both(eager, compiled, obs, deterministic=True)
        # The draws of the failed attempt are given back: the global generator too.
        behaviour_expected, behaviour_actions = predict_both(eager, compiled, obs, deterministic=False)
    np.testing.assert_array_equal(actions, expected)
    np.testing.assert_array_equal(behaviour_actions, behaviour_expected)
    assert "acting stays eager" in caplog.text
    assert not compiled.policy.compiled_acting.compiled_keys
    # That batch size is not tried again.
    np.testing.assert_array_equal(predict_both(eager, compiled, obs, deterministic=True)[1], expected)
    assert attempts == ["cpu", "cpu"]


def test_many_models_in_one_process_each_compile() -> None:
    # torch.compile stops recompiling a function after 8 versions; each policy has its own copy.
    obs = np.zeros(3, dtype=np.float32)
    for width in range(9, 19):
        eager, compiled = make_pair(QVPO, net_arch=[width])
        expected, actions = predict_both(eager, compiled, obs, deterministic=True)
        np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
        assert compiled.policy.compiled_acting.compiled_keys, f"width {width} did not compile"


def test_compiling_under_warnings_as_errors() -> None:
    eager, compiled = make_pair(QVPO, net_arch=[24, 24])
    obs = compiled.observation_space.sample()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected, actions = predict_both(eager, compiled, obs, deterministic=True)
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
    assert compiled.policy.compiled_acting.compiled_keys


def test_compile_acting_after_is_checked_saved_and_not_pickled(tmp_path) -> None:
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="compile_acting_after"):
            QVPO("MlpPolicy", "Pendulum-v1", buffer_size=10, policy_kwargs=dict(SMALL, compile_acting_after=bad))
    model = QVPO("MlpPolicy", "Pendulum-v1", buffer_size=10, policy_kwargs=dict(SMALL, compile_acting_after=7))
    model.save(tmp_path / "model")
    loaded = QVPO.load(tmp_path / "model")
    assert loaded.policy.compile_acting_after == loaded.policy.compiled_acting.compile_after == 7
    # Default for files saved before the option existed, and for new models: 10,000 calls, then
    # compiled in the calling thread.
    default = QVPO("MlpPolicy", "Pendulum-v1", buffer_size=10).policy
    assert default.compile_acting_after == 10_000 and not default.compiled_acting.background
    with pytest.raises(ValueError, match="compile_in_background"):
        QVPO("MlpPolicy", "Pendulum-v1", buffer_size=10, policy_kwargs=dict(SMALL, compile_in_background="yes"))
    model.policy.compiled_acting.calls[("key",)] = 3
    assert copy.deepcopy(model.policy).compiled_acting.calls == {}


def test_background_compiling_never_makes_a_call_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # The compiler is held at a gate: every call made meanwhile acts eagerly at once, with the eager
    # model's exact draws (starting the compilation drew nothing); once it is done, calls go compiled.
    gate = threading.Event()
    compiled_calls: list[str] = []
    real_compile = compiled_acting.compile_sample_and_score

    def gated(device_type: str):
        function = real_compile(device_type)

        def call(*args, **kwargs):
            compiled_calls.append(threading.current_thread().name)
            assert gate.wait(120), "the test never opened the gate"
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(compiled_acting, "compile_sample_and_score", gated)
    eager, compiled = make_pair(QVPO, background=True)
    obs = np.stack([compiled.observation_space.sample() for _ in range(2)])
    acting = compiled.policy.compiled_acting
    for _ in range(3):
        for deterministic in (True, False):
            expected, actions = predict_both(eager, compiled, obs, deterministic)
            np.testing.assert_array_equal(actions, expected)
    assert not acting.compiled_keys and len(acting._compiling) == 2  # two batch sizes, each compiling once
    assert all(name.startswith("sb3_qvpo-compile") for name in compiled_calls)
    gate.set()
    assert acting.wait(timeout=300)
    assert len(acting.compiled_keys) == 2 and not acting.failed_keys
    graphs_before = dict(th._dynamo.utils.counters["stats"])
    for deterministic in (True, False):
        expected, actions = predict_both(eager, compiled, obs, deterministic)
        np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
    assert compiled_calls.count(threading.main_thread().name) == 2  # the compiled path served both ...
    assert dict(th._dynamo.utils.counters["stats"]) == graphs_before  # ... with what the thread compiled


def test_a_failed_background_compilation_leaves_acting_eager(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    def no_compiler(device_type: str):
        def fail(*args, **kwargs):
            raise RuntimeError("no C++ compiler here")

        return fail

    monkeypatch.setattr(compiled_acting, "compile_sample_and_score", no_compiler)
    eager, compiled = make_pair(QVPO, background=True)
    obs = compiled.observation_space.sample()
    with caplog.at_level(logging.WARNING, logger="sb3_qvpo.common.compiled_acting"):
        predict_both(eager, compiled, obs, deterministic=True)
        assert compiled.policy.compiled_acting.wait(timeout=60)
    assert "acting stays eager" in caplog.text and compiled.policy.compiled_acting.failed_keys
    for _ in range(2):
        expected, actions = predict_both(eager, compiled, obs, deterministic=True)
        np.testing.assert_array_equal(actions, expected)
    assert len(compiled.policy.compiled_acting._compiling) == 1  # not tried again


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs CUDA")
def test_compiled_acting_on_cuda_gives_the_eager_actions() -> None:
    kwargs = dict(SMALL, compile_acting_after=None)
    eager = QVPO("MlpPolicy", "Pendulum-v1", buffer_size=100, seed=0, device="cuda", policy_kwargs=kwargs)
    compiled = QVPO("MlpPolicy", "Pendulum-v1", buffer_size=100, seed=0, device="cuda", policy_kwargs=dict(SMALL))
    compiled.policy.compiled_acting.compile_after = 0
    compiled.policy.load_state_dict(eager.policy.state_dict())
    obs = np.stack([compiled.observation_space.sample() for _ in range(3)])
    for deterministic in (True, False):
        expected, actions = predict_both(eager, compiled, obs, deterministic)
        np.testing.assert_allclose(actions, expected, rtol=1e-4, atol=1e-4)
    assert compiled.policy.compiled_acting.compiled_keys


def test_compiling_waits_in_the_calling_thread_by_default_and_background_warns() -> None:
    # torch's tracer patches nn.Module.__call__ process-wide while it compiles: a background compile
    # crashed a DIPO training run (NameError in the critic's forward), so it is opt-in and warns.
    model = QVPO("MlpPolicy", "Pendulum-v1", buffer_size=10, policy_kwargs=dict(SMALL))
    assert model.policy.compile_in_background is False and model.policy.compiled_acting.background is False
    with pytest.warns(UserWarning, match="compile_in_background=True is unsafe"):
        QVPO("MlpPolicy", "Pendulum-v1", buffer_size=10, policy_kwargs=dict(SMALL, compile_in_background=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # never compiling: nothing to warn about
        QVPO(
            "MlpPolicy",
            "Pendulum-v1",
            buffer_size=10,
            policy_kwargs=dict(SMALL, compile_in_background=True, compile_acting_after=None),
        )
