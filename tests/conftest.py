"""Shared test configuration: one torch thread per xdist worker; MuJoCo's renderer imported up front."""

import gc

import pytest
import torch as th

# The suite runs with `pytest -n 2` on small machines: one intra-op thread per worker.
th.set_num_threads(1)

# Creating a MuJoCo env imports gymnasium's renderer, which imports glfw. glfw 2.x iterates over its
# own module globals while importing; a garbage collection at that moment that finalises a leaked
# object of an earlier test (a ResourceWarning) adds `__warningregistry__` to those globals and the
# import dies with "dictionary changed size during iteration" (seen on CI in a QSM Ant-v5 test). Import
# it once here, before any test has made garbage, with the collector paused.
gc.disable()
try:
    import gymnasium.envs.mujoco.mujoco_rendering  # noqa: F401
finally:
    gc.enable()


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread() -> None:
    th.set_num_threads(1)


@pytest.fixture(autouse=True)
def _private_acting_packages(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """
    Each test gets its own folder of compiled acting packages (so none acts compiled because an
    earlier test built its sizes), and the package builds it started are stopped when it ends.
    Child processes (zoo commands) inherit the folder through the environment. Builds run at the
    tests' priority: the tests that wait for one would otherwise wait behind the other xdist worker.
    """
    from sb3_qvpo.common import acting_packages

    monkeypatch.setattr(acting_packages, "BUILD_NICENESS", 0)
    monkeypatch.setenv(acting_packages.CACHE_VARIABLE, str(tmp_path_factory.mktemp("acting_packages")))
    yield
    acting_packages.stop_builds()
