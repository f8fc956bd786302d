"""
The acting function (:func:`~sb3_qvpo.common.acting_graph.sample_and_score`) compiled ahead of
time in a separate process, and kept on disk for later processes.

Why a separate process: compiling in the calling thread stalls the call that compiles (24.6 s at
Hopper sizes, ``benchmarks/results/compile_stall_cpu.md``), and compiling in a background thread of
the same process is unsafe: torch.fx's tracer patches ``nn.Module.__call__`` process-wide while it
runs, and a DIPO training run crashed that way. Here a child process exports the function for one
set of shapes (``torch.export``) and compiles it into a package, a shared library in a ``.pt2``
file (AOTInductor, ``torch._inductor.aoti_compile_and_package``); the acting process acts eagerly
meanwhile, then loads the package (milliseconds) and calls it. Packages hold no weights (the
weights are inputs), so one package serves every model of the same sizes, and a later process finds
it on disk and acts compiled from its first call.

The child is ``python -m sb3_qvpo.common.acting_packages SPEC PACKAGE NICENESS``; it runs at a
lower CPU priority (:data:`BUILD_NICENESS`) and finishes even if the acting process exits first (a
short evaluation), so that the next process finds the package (:func:`stop_builds` stops them).
"""

import dataclasses
import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch as th
from torch import nn

from sb3_qvpo.common.acting_graph import Scoring, sample_and_score
from sb3_qvpo.diffusion.compiled_chain import ACTIVATION_FUNCTIONS

# Where packages are kept: this variable, else a folder in inductor's cache (TORCHINDUCTOR_CACHE_DIR).
CACHE_VARIABLE = "SB3_QVPO_ACTING_CACHE"
# Inductor options of the build (as compiled_acting.COMPILE_OPTIONS for the CPU; the wrapper of an
# AOTInductor package is C++ anyway): without the pattern matcher, a hidden layer's bias add stays
# fused into its activation's kernel.
PACKAGE_OPTIONS = {"pattern_matcher": False}
# The files whose code a package compiles: a package built from other code is never loaded.
TRACED_SOURCES = ("common/acting_graph.py", "common/acting_packages.py", "diffusion/compiled_chain.py")
ACTIVATION_NAMES = {function: kind.__name__ for kind, function in ACTIVATION_FUNCTIONS.items()}
FUNCTIONS_BY_NAME = {kind.__name__: function for kind, function in ACTIVATION_FUNCTIONS.items()}
# How much lower the build's CPU priority is than the acting process's (os.nice): on a busy machine
# the training or acting goes first.
BUILD_NICENESS = 10
# The longest the switching call waits for a build still running (a hung compiler must not hang
# acting); then the build is stopped and that batch size acts eagerly.
BUILD_TIMEOUT_S = 600.0

Shape = tuple[int, ...]


@functools.cache
def build_environment() -> str:
    """What besides the spec decides a package's code: torch's version, the CPU, the traced sources."""
    package_dir = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for part in (th.__version__, th.backends.cpu.get_cpu_capability(), platform.machine(), sys.platform):
        digest.update(part.encode())
    for source in TRACED_SOURCES:
        digest.update((package_dir / source).read_bytes())
    return digest.hexdigest()


PackageRunner = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class ActingSpec:
    """
    Everything a package depends on besides the weights' values: the inputs' shapes, the chain's and
    critic's static structure, the dtype and the torch thread count (inductor writes it into the
    kernels). Two calls with equal specs can share one package.
    """

    dtype: str
    x_shape: Shape
    noise_shape: Shape
    features_shape: Shape
    n_per_state: int
    chain_flat_size: int
    chain_shapes: tuple[Shape, ...]
    coefficients_shape: Shape
    clip_x0: bool
    clip_xt: bool
    actor_activation: str
    critic_features_shape: Shape | None
    critic_flat_size: int | None
    critic_shapes: tuple[Shape, ...] | None
    n_critics: int
    critic_activation: str | None
    num_threads: int

    @classmethod
    def from_arguments(cls, arguments: tuple) -> "ActingSpec | None":
        """The spec of :func:`sample_and_score`'s arguments; None if an activation has no name here."""
        x, noise, features, n_per_state, chain_flat, chain_shapes, coefficients, clip_x0, clip_xt, activation, scoring = (
            arguments
        )
        if activation not in ACTIVATION_NAMES or (scoring is not None and scoring.activation not in ACTIVATION_NAMES):
            return None
        return cls(
            dtype=str(x.dtype).removeprefix("torch."),
            x_shape=tuple(x.shape),
            noise_shape=tuple(noise.shape),
            features_shape=tuple(features.shape),
            n_per_state=int(n_per_state),
            chain_flat_size=chain_flat.numel(),
            chain_shapes=tuple(tuple(shape) for shape in chain_shapes),
            coefficients_shape=tuple(coefficients.shape),
            clip_x0=bool(clip_x0),
            clip_xt=bool(clip_xt),
            actor_activation=ACTIVATION_NAMES[activation],
            critic_features_shape=None if scoring is None else tuple(scoring.features.shape),
            critic_flat_size=None if scoring is None else scoring.flat_weights.numel(),
            critic_shapes=None if scoring is None else tuple(tuple(shape) for shape in scoring.shapes),
            n_critics=0 if scoring is None else scoring.n_critics,
            critic_activation=None if scoring is None else ACTIVATION_NAMES[scoring.activation],
            num_threads=th.get_num_threads(),
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ActingSpec":
        fields = json.loads(text)
        for name in ("x_shape", "noise_shape", "features_shape", "coefficients_shape", "critic_features_shape"):
            if fields[name] is not None:
                fields[name] = tuple(fields[name])
        for name in ("chain_shapes", "critic_shapes"):
            if fields[name] is not None:
                fields[name] = tuple(tuple(shape) for shape in fields[name])
        return cls(**fields)

    def key(self) -> str:
        """A digest of the spec, torch's version, the CPU and the traced code: the package's file name."""
        return hashlib.sha256((self.to_json() + build_environment()).encode()).hexdigest()[:24]

    def example_inputs(self) -> tuple[th.Tensor, ...]:
        """Random tensors of the inputs' shapes and dtype, in :class:`ActingModule`'s order."""
        dtype = getattr(th, self.dtype)
        shapes = [self.x_shape, self.noise_shape, self.features_shape, (self.chain_flat_size,), self.coefficients_shape]
        if self.critic_features_shape is not None and self.critic_flat_size is not None:
            shapes += [self.critic_features_shape, (self.critic_flat_size,)]
        return tuple(th.randn(shape, dtype=dtype) for shape in shapes)


def package_inputs(arguments: tuple) -> tuple[th.Tensor, ...]:
    """:func:`sample_and_score`'s tensor arguments in :class:`ActingModule`'s order, contiguous."""
    x, noise, features, _, chain_flat, _, coefficients, _, _, _, scoring = arguments
    tensors = [x, noise, features, chain_flat, coefficients]
    if scoring is not None:
        tensors += [scoring.features, scoring.flat_weights]
    return tuple(tensor.contiguous() for tensor in tensors)


class ActingModule(nn.Module):
    """:func:`sample_and_score` with a spec's static arguments fixed: what ``torch.export`` traces."""

    def __init__(self, spec: ActingSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, *tensors: th.Tensor) -> tuple[th.Tensor, ...]:
        spec = self.spec
        x, noise, features, chain_flat, coefficients, *critic = tensors
        scoring = None
        if critic and spec.critic_shapes is not None and spec.critic_activation is not None:
            critic_activation = FUNCTIONS_BY_NAME[spec.critic_activation]
            scoring = Scoring(critic[0], critic[1], spec.critic_shapes, spec.n_critics, critic_activation)
        candidates, q_values, best = sample_and_score(
            x,
            noise,
            features,
            spec.n_per_state,
            chain_flat,
            spec.chain_shapes,
            coefficients,
            spec.clip_x0,
            spec.clip_xt,
            FUNCTIONS_BY_NAME[spec.actor_activation],
            scoring,
        )
        return (candidates,) if q_values is None or best is None else (candidates, q_values, best)


def cache_folder() -> Path:
    """The folder of the packages (:data:`CACHE_VARIABLE`, else ``<inductor cache>/sb3_qvpo_acting``)."""
    folder = os.environ.get(CACHE_VARIABLE)
    if folder is None:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        folder = os.path.join(cache_dir(), "sb3_qvpo_acting")
    return Path(folder)


def package_path(spec: ActingSpec) -> Path:
    return cache_folder() / f"acting_{spec.key()}.pt2"


def probe_cpu() -> None:
    """Inductor's CPU probe, which the first package load of a process runs (test builds, about 1.5 s)."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    pick_vec_isa()


# The probe runs once per process, in a thread started with the first package work, so that the load
# that switches acting finds it done. (It compiles and loads test programs: no torch.fx, unlike compiling.)
_cpu_probe = threading.Thread(target=probe_cpu, name="sb3_qvpo-cpu-probe", daemon=True)


def start_cpu_probe() -> None:
    if _cpu_probe.ident is None:
        _cpu_probe.start()


def loader_ready() -> bool:
    """Whether a package loads in milliseconds now (the CPU probe has run)."""
    return _cpu_probe.ident is not None and not _cpu_probe.is_alive()


def load_package(path: Path) -> PackageRunner:
    """The compiled function of a package file (loads its shared library; waits for the CPU probe)."""
    import torch._inductor

    start_cpu_probe()
    _cpu_probe.join()
    return torch._inductor.aoti_load_package(str(path))


def build_package(spec: ActingSpec, path: Path) -> None:
    """Export and compile the spec's acting function into ``path`` (written whole, then renamed in)."""
    import torch._inductor

    th.set_num_threads(spec.num_threads)
    module = ActingModule(spec)
    with th.no_grad():
        program = th.export.export(module, spec.example_inputs())
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.pt2")
    try:
        torch._inductor.aoti_compile_and_package(program, package_path=str(partial), inductor_configs=PACKAGE_OPTIONS)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def build_command(spec_path: Path, path: Path) -> list[str]:
    """The child process's command line (a function, so that tests can hold a build back)."""
    return [sys.executable, "-m", "sb3_qvpo.common.acting_packages", str(spec_path), str(path), str(BUILD_NICENESS)]


class PackageBuild:
    """One child process building one package; its output goes to a ``.log`` file beside it."""

    def __init__(self, spec: ActingSpec, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.spec_path = path.with_suffix(".json")
        self.log_path = path.with_suffix(".log")
        self.spec_path.write_text(spec.to_json())
        package_root = str(Path(__file__).resolve().parent.parent.parent)
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": str(spec.num_threads),
            "TORCHINDUCTOR_COMPILE_THREADS": "1",
        }
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                build_command(self.spec_path, path), stdout=log, stderr=subprocess.STDOUT, env=environment
            )

    def finished(self) -> bool:
        return self.process.poll() is not None

    def error(self) -> str | None:
        """None if it built the package; else why not (the end of its log)."""
        if self.process.returncode == 0 and self.path.exists():
            return None
        try:
            tail = self.log_path.read_text().strip().splitlines()[-3:]
        except OSError:
            tail = []
        return f"exit status {self.process.returncode}: {' / '.join(tail)}"

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the child; True once it has ended."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self) -> None:
        if not self.finished():
            self.process.terminate()
            if not self.wait(10):
                self.process.kill()
                self.process.wait()
        for partial in self.path.parent.glob(f"{self.path.stem}.{self.process.pid}.partial*"):
            partial.unlink(missing_ok=True)


# The builds this process has started, by package path: models of the same sizes share one.
BUILDS: dict[Path, PackageBuild] = {}


def start_build(spec: ActingSpec, path: Path) -> PackageBuild:
    """The build of ``path``: the one under way or done in this process, else a new child process."""
    if path not in BUILDS:
        BUILDS[path] = PackageBuild(spec, path)
    return BUILDS[path]


def stop_builds() -> None:
    """
    Stop the builds still running. Not called at exit: a build outlives a process that ends first
    (a short evaluation), at its lower priority, so that the next process finds the package.
    """
    for build in list(BUILDS.values()):
        build.stop()
    BUILDS.clear()


def main(arguments: list[str]) -> None:
    """The child process: build the package of a spec file (arguments: spec file, package file, niceness)."""
    spec_path, path, niceness = Path(arguments[0]), Path(arguments[1]), int(arguments[2])
    if niceness and hasattr(os, "nice"):
        os.nice(niceness)
    build_package(ActingSpec.from_json(spec_path.read_text()), path)


if __name__ == "__main__":
    main(sys.argv[1:])
