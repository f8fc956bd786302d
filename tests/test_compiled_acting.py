"""
The compiled acting path (sb3_qvpo.common.compiled_acting) gives the eager path's actions with the
same draws, switches on after ``compile_acting_after`` calls, follows weight updates, and falls back
to eager acting when compiling fails. Networks are tiny and T small so each compile takes seconds.
"""

import copy
import dataclasses
import logging
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from helpers import GoalDictEnv
from torch import nn

from sb3_qvpo import DIPO, QSM, QVPO, DiffusionQL
from sb3_qvpo.common import acting_packages, compiled_acting
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
    kwargs = dict(SMALL, compile_acting_after=7, compile_in_background=False, compiled_acting_when_ready=True)
    model = QVPO("MlpPolicy", "Pendulum-v1", buffer_size=10, policy_kwargs=kwargs)
    model.save(tmp_path / "model")
    loaded = QVPO.load(tmp_path / "model")
    assert loaded.policy.compile_acting_after == loaded.policy.compiled_acting.compile_after == 7
    assert loaded.policy.compiled_acting.background is False and loaded.policy.compiled_acting.when_ready is True
    # New models: 10,000 calls, built ahead in a child process, switching at that call.
    default = QVPO("MlpPolicy", "Pendulum-v1", buffer_size=10).policy
    assert default.compile_acting_after == 10_000 and default.compiled_acting.background
    assert not default.compiled_acting.when_ready and default.compiled_acting.build_after == 1_000
    for keyword in ("compile_in_background", "compiled_acting_when_ready"):
        with pytest.raises(ValueError, match=keyword):
            QVPO("MlpPolicy", "Pendulum-v1", buffer_size=10, policy_kwargs=dict(SMALL, **{keyword: "yes"}))
    model.policy.compiled_acting.calls[("key",)] = 3
    assert copy.deepcopy(model.policy).compiled_acting.calls == {}
    # Changed on a loaded policy (a deployment); a save keeps the model's policy_kwargs, as for every
    # policy keyword SB3 saves.
    loaded.policy.set_compiled_acting(0, compiled_acting_when_ready=True)
    acting = loaded.policy.compiled_acting
    assert (acting.compile_after, acting.background, acting.when_ready) == (0, True, True)
    assert (loaded.policy.compile_acting_after, loaded.policy.compile_in_background) == (0, True)
    loaded.save(tmp_path / "changed")
    reloaded = QVPO.load(tmp_path / "changed").policy
    saved = (reloaded.compile_acting_after, reloaded.compile_in_background, reloaded.compiled_acting_when_ready)
    assert saved == (7, False, True)
    with pytest.raises(ValueError, match="compile_acting_after"):
        reloaded.set_compiled_acting(-3)


def gated_build_command(gate: Path, started: list[int] | None = None):
    """A build command whose child waits until ``gate`` exists, then builds as the real one does."""
    real = acting_packages.build_command

    def command(spec_path: Path, path: Path) -> list[str]:
        if started is not None:
            started.append(1)
        hold = "import pathlib, sys, time\nwhile not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.05)"
        run = "import runpy; sys.argv = sys.argv[2:]; runpy.run_module(sys.argv[0], run_name='__main__')"
        module_and_files = real(spec_path, path)[2:]  # [python, -m, module, spec, package, niceness]
        return [sys.executable, "-c", f"{hold}\n{run}", str(gate), *module_and_files]

    return command


def test_package_builds_never_make_a_call_wait_before_the_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The child is held at a gate: every call before the switch acts eagerly at once, with the eager
    # model's exact draws (starting the build drew nothing). The switching call (the 6th) waits for
    # the build, so it is the same call in every run; then the calls take the package.
    gate = tmp_path / "gate"
    monkeypatch.setattr(acting_packages, "build_command", gated_build_command(gate))
    eager, compiled = make_pair(QVPO, compile_after=5, background=True)
    obs = np.stack([compiled.observation_space.sample() for _ in range(2)])
    acting = compiled.policy.compiled_acting
    assert acting.build_after == 0
    for _ in range(5):
        expected, actions = predict_both(eager, compiled, obs, deterministic=True)
        np.testing.assert_array_equal(actions, expected)
    (build,) = acting._builds.values()
    assert not build.finished() and not acting.compiled_keys  # held at the gate, and nobody waited for it
    threading.Timer(1.0, gate.touch).start()
    for _ in range(2):
        expected, actions = predict_both(eager, compiled, obs, deterministic=True)
        np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
        assert len(acting.compiled_keys) == 1 and not acting.failed_keys and build.finished()


def test_when_ready_switches_without_waiting_and_a_later_model_reuses_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = tmp_path / "gate"
    started: list[int] = []
    monkeypatch.setattr(acting_packages, "build_command", gated_build_command(gate, started))
    eager, compiled = make_pair(QVPO, compile_after=3, background=True, compiled_acting_when_ready=True)
    obs = np.stack([compiled.observation_space.sample() for _ in range(2)])
    acting = compiled.policy.compiled_acting
    for _ in range(6):  # past compile_after too: when ready never waits
        expected, actions = predict_both(eager, compiled, obs, deterministic=True)
        np.testing.assert_array_equal(actions, expected)
    assert not acting.compiled_keys and len(started) == 1
    gate.touch()
    assert acting.wait(timeout=300)
    for _ in range(3):  # the first call may still find inductor's CPU probe running, the next ones not
        expected, actions = predict_both(eager, compiled, obs, deterministic=True)
        np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
    assert len(acting.compiled_keys) == 1 and not acting.failed_keys
    # A later model of the same sizes (as a later process) finds the package: compiled from its
    # first call, nothing built; with the default switch, it still acts eagerly until its threshold.
    later = QVPO(
        "MlpPolicy", "Pendulum-v1", buffer_size=100, seed=0, policy_kwargs=dict(SMALL, compiled_acting_when_ready=True)
    )
    later.policy.load_state_dict(eager.policy.state_dict())
    expected, actions = predict_both(eager, later, obs, deterministic=True)
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
    assert later.policy.compiled_acting.compiled_keys and len(started) == 1
    fixed = QVPO("MlpPolicy", "Pendulum-v1", buffer_size=100, seed=0, policy_kwargs=dict(SMALL, compile_acting_after=2))
    fixed.policy.load_state_dict(eager.policy.state_dict())
    for call in range(3):
        predict_both(eager, fixed, obs, deterministic=True)
        assert bool(fixed.policy.compiled_acting.compiled_keys) == (call == 2)
    assert len(started) == 1


def test_a_later_process_acts_compiled_from_its_first_call(tmp_path: Path) -> None:
    # The package's name depends only on the sizes, torch, the CPU and the traced code: a second
    # process finds what the first built and gives the same actions bit for bit.
    script = tmp_path / "act.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import numpy as np
            import torch as th
            from sb3_qvpo import QVPO
            from sb3_qvpo.common import acting_packages

            th.set_num_threads(1)
            kwargs = dict(net_arch=[16, 16], n_diffusion_steps=3, compile_acting_after=int(sys.argv[1]),
                          compiled_acting_when_ready=True)
            model = QVPO("MlpPolicy", "Pendulum-v1", buffer_size=100, seed=0, policy_kwargs=kwargs)
            acting_packages.start_cpu_probe()
            acting_packages._cpu_probe.join()
            obs = np.array([[0.5, -0.5, 1.0]], dtype=np.float32)
            actions = model.predict(obs, deterministic=True)[0]
            model.policy.compiled_acting.wait()
            print(bool(model.policy.compiled_acting.compiled_keys), repr(actions.ravel().tolist()))
            """
        )
    )
    outputs = []
    for compile_after in (0, 1_000_000):
        result = subprocess.run([sys.executable, str(script), str(compile_after)], capture_output=True, text=True, check=True)
        outputs.append(result.stdout.strip().splitlines()[-1])
    first, second = outputs
    assert first.startswith("False") and second.startswith("True")  # built by the first, used by the second
    eager = QVPO("MlpPolicy", "Pendulum-v1", buffer_size=100, seed=0, policy_kwargs=dict(SMALL, compile_acting_after=None))
    expected = eager.predict(np.array([[0.5, -0.5, 1.0]], dtype=np.float32), deterministic=True)[0]
    np.testing.assert_allclose(eval(second.split(" ", 1)[1]), expected.ravel(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["qsm", "dipo", "diffusion_ql"])
def test_packages_give_the_eager_actions(name: str) -> None:
    # QSM: one sample plus noise (ReLU critic, x_t clipping, Fourier time features); DIPO: a
    # noise-free chain without scoring; Diffusion-QL: the target critic's min-Q of 50 candidates.
    eager, compiled = make_pair(ALGORITHMS[name], background=True, compiled_acting_when_ready=True)
    obs = np.stack([compiled.observation_space.sample() for _ in range(3)])
    predict_both(eager, compiled, obs, deterministic=True)
    assert compiled.policy.compiled_acting.wait(timeout=300)
    for _ in range(3):
        expected, actions = predict_both(eager, compiled, obs, deterministic=True)
        np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
    assert compiled.policy.compiled_acting.compiled_keys and not compiled.policy.compiled_acting.failed_keys


def assert_stays_eager(
    eager: DiffusionOffPolicyAlgorithm,
    compiled: DiffusionOffPolicyAlgorithm,
    obs: np.ndarray,
    caplog: pytest.LogCaptureFixture,
    modes: tuple[bool, ...],
) -> str:
    """Acts once per entry of ``modes`` (deterministic or not): the eager actions exactly; returns the warnings logged."""
    with caplog.at_level(logging.WARNING, logger="sb3_qvpo.common.compiled_acting"):
        for deterministic in modes:
            expected, actions = predict_both(eager, compiled, obs, deterministic)
            np.testing.assert_array_equal(actions, expected)
    return caplog.text


def test_a_failed_build_or_a_damaged_package_leaves_acting_eager(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []

    def failing(spec_path: Path, path: Path) -> list[str]:
        started.append(1)
        return [sys.executable, "-c", "raise SystemExit('no C++ compiler here')"]

    monkeypatch.setattr(acting_packages, "build_command", failing)
    eager, compiled = make_pair(QVPO, compile_after=1, background=True)
    obs = compiled.observation_space.sample()
    logged = assert_stays_eager(eager, compiled, obs, caplog, (True, True, True))
    assert "its build failed" in logged and "no C++ compiler here" in logged and "acting stays eager" in logged
    assert compiled.policy.compiled_acting.failed_keys and len(started) == 1  # not tried again
    # A damaged file where the package should be: a warning, and eager acting with the same draws.
    caplog.clear()
    ((_, path),) = [found for found in compiled.policy.compiled_acting._package_specs.values() if found is not None]
    path.write_bytes(b"not a package")
    other = QVPO("MlpPolicy", "Pendulum-v1", buffer_size=100, seed=0, policy_kwargs=dict(SMALL, compile_acting_after=0))
    other.policy.load_state_dict(eager.policy.state_dict())
    logged = assert_stays_eager(eager, other, obs, caplog, (True, True, False))
    assert "loading" in logged and "acting stays eager" in logged


def test_a_build_that_never_ends_does_not_hang_the_switching_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(acting_packages, "build_command", gated_build_command(tmp_path / "never"))
    monkeypatch.setattr(acting_packages, "BUILD_TIMEOUT_S", 1.0)
    eager, compiled = make_pair(QVPO, compile_after=2, background=True)
    obs = compiled.observation_space.sample()
    assert "was stopped" in assert_stays_eager(eager, compiled, obs, caplog, (True, True, True, True))
    assert compiled.policy.compiled_acting.failed_keys
    ((build,),) = [list(compiled.policy.compiled_acting._builds.values())]
    assert build.finished()  # stopped, not left running


def test_a_package_folder_that_cannot_be_used_leaves_acting_eager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("a file where the folder should be")
    monkeypatch.setenv(acting_packages.CACHE_VARIABLE, str(not_a_folder / "packages"))
    eager, compiled = make_pair(QVPO, compile_after=0, background=True)
    obs = compiled.observation_space.sample()
    assert "its build could not start" in assert_stays_eager(eager, compiled, obs, caplog, (True, False, True))
    assert len(compiled.policy.compiled_acting.failed_keys) == 2


def test_package_specs_name_what_the_package_depends_on() -> None:
    _, compiled = make_pair(QVPO, compile_after=0, background=True, compiled_acting_when_ready=True)
    compiled.policy.compiled_acting.compile_after = 10**9  # record the spec, build nothing
    compiled.predict(compiled.observation_space.sample(), deterministic=True)
    ((spec, path),) = compiled.policy.compiled_acting._package_specs.values()
    assert acting_packages.ActingSpec.from_json(spec.to_json()) == spec
    assert spec.x_shape == (32, 1) and spec.n_per_state == 32 and spec.critic_shapes is not None and spec.n_critics == 2
    assert path.name == f"acting_{spec.key()}.pt2" and not path.exists()
    for change in (dict(num_threads=spec.num_threads + 1), dict(n_per_state=4), dict(clip_x0=not spec.clip_x0)):
        assert dataclasses.replace(spec, **change).key() != spec.key()


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
