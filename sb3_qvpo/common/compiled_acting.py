"""
Acting through one compiled function, :func:`~sb3_qvpo.common.acting_graph.sample_and_score`: the
reverse chain and the twin critic's scoring of its candidates.

Eager acting on a few rows is bound by per-operation overhead (a dozen small operations per
denoising step), not by arithmetic; compiled, each step is a few fused kernels around the hidden
layers' matrix products. Compiling costs seconds per batch size, so a policy compiles a batch size
only once it has acted on it ``compile_after`` times, and acts eagerly before. Two ways:

- ``background=True`` (default, CPU): after a tenth of ``compile_after`` calls, a child process
  compiles the function ahead of time into a package on disk (:mod:`sb3_qvpo.common.acting_packages`)
  while the calls go on acting eagerly; the call after ``compile_after`` loads it (milliseconds),
  waiting only if the build is still running, and takes the compiled path. A package an earlier
  process built for the same sizes is used without building. The switch comes at the same call in
  every run, so seeded runs stay bitwise reproducible; ``when_ready=True`` switches as soon as the
  package is ready instead (from the first call when it is on disk), which is not.
- ``background=False`` (and on CUDA): the call that reaches the threshold compiles with
  ``torch.compile`` in the calling thread and waits.

Weights are inputs, re-packed when training changes them, so updates never recompile. Where
compiling fails (no C++ compiler, an unsupported platform), a warning is logged and that batch size
acts eagerly; the actions are the same either way, up to the order of floating-point operations.
"""

import functools
import logging
import time
import types
import warnings
from collections.abc import Callable
from numbers import Integral
from pathlib import Path
from typing import Any, NamedTuple

import torch as th
import torch._inductor.config as inductor_config
from stable_baselines3.common.policies import ContinuousCritic
from torch import nn

from sb3_qvpo.common import acting_packages
from sb3_qvpo.common.acting_graph import Scoring, chain_draws, critic_weight_tensors, sample_and_score
from sb3_qvpo.diffusion.compiled_chain import (
    PackedWeights,
    chain_weight_tensors,
    mlp_activation,
    reverse_coefficient_table,
)
from sb3_qvpo.diffusion.fast_sampler import SMALL_BATCH_ROWS, draw_chain_noise

logger = logging.getLogger(__name__)

# Inductor options: the C++ wrapper calls the kernels without Python in between (CPU), and without
# the pattern matcher a hidden layer's bias add stays fused into the activation's kernel instead of
# turning the matrix product into an addmm that first copies the bias into its output.
COMPILE_OPTIONS: dict[str, dict[str, str | int | bool | Callable[..., Any]]] = {
    "cpu": {"cpp_wrapper": True, "pattern_matcher": False},
    "cuda": {"pattern_matcher": False},
}


def random_state(generator: th.Generator | None, device: th.device) -> th.Tensor:
    """The state of ``generator``, or of torch's default generator of ``device``."""
    if generator is not None:
        return generator.get_state()
    return th.cuda.get_rng_state(device) if device.type == "cuda" else th.random.get_rng_state()


def restore_random_state(generator: th.Generator | None, device: th.device, state: th.Tensor | None) -> None:
    if state is None:
        return
    if generator is not None:
        generator.set_state(state)
    elif device.type == "cuda":
        th.cuda.set_rng_state(state, device)
    else:
        th.random.set_rng_state(state)


ActingResult = tuple[th.Tensor, th.Tensor | None, th.Tensor | None]
ActingFunction = Callable[..., ActingResult]


def compile_sample_and_score(device_type: str) -> ActingFunction:
    """
    :func:`sample_and_score` compiled for a device type, as a copy of its own: torch.compile keeps
    compiled versions per code object and stops recompiling after a few, so each policy gets a
    copy and only its own batch sizes count. (Identical graphs still come from inductor's cache.)
    """
    code = sample_and_score.__code__.replace()
    copy = types.FunctionType(code, sample_and_score.__globals__, sample_and_score.__name__)
    # The inductor options (COMPILE_OPTIONS) are set while compiling (CompiledActing._compile_and_call):
    # given to torch.compile, they would be patched in and out around every call.
    return th.compile(copy, fullgraph=True, dynamic=False)


class ActingPlan(NamedTuple):
    """What one (actor, critic, noise scale, device) pair needs on every compiled call, worked out once."""

    actor_activation: Callable[[th.Tensor], th.Tensor]
    chain: PackedWeights
    coefficients: th.Tensor
    clip_x0: bool
    clip_xt: bool
    critic: PackedWeights | None
    n_critics: int
    critic_activation: Callable[[th.Tensor], th.Tensor] | None


def stack_activation(stacks: list[list[nn.Module]]) -> Callable[[th.Tensor], th.Tensor] | None:
    """The one activation of every Linear/activation stack in ``stacks``; None if they differ or one is not compilable."""
    found = {mlp_activation(stack) for stack in stacks}
    return found.pop() if len(found) == 1 else None


def make_plan(
    actor: Any,
    critic: ContinuousCritic | None,
    features_dim: int,
    critic_dim: int,
    noise_scale: float,
    device: th.device,
    dtype: th.dtype,
    n_steps: int | None = None,
) -> ActingPlan | None:
    """
    The :class:`ActingPlan` of a :class:`~sb3_qvpo.common.actor.DiffusionActor` and a critic (or
    None: sampling only) for chains of ``n_steps`` steps (None: T); None if their networks are not
    plain Linear/activation stacks it knows.
    """
    noise_net, schedule = actor.noise_net, actor.sampling_schedule(n_steps)
    actor_activation = stack_activation([list(noise_net.body.children())])
    if actor_activation is None:
        return None
    critic_weights, critic_activation, n_critics = None, None, 0
    if critic is not None:
        critic_activation = stack_activation([list(q_net.children()) for q_net in critic.q_networks])
        if critic_activation is None:
            return None
        n_critics = len(critic.q_networks)
        critic_weights = PackedWeights(critic, lambda: critic_weight_tensors(critic, critic_dim, actor.action_dim))
    return ActingPlan(
        actor_activation,
        PackedWeights(noise_net, lambda: chain_weight_tensors(noise_net, schedule, features_dim)),
        reverse_coefficient_table(schedule, actor.process, noise_scale, device, dtype),
        actor.process.clip_x0,
        actor.process.clip_xt,
        critic_weights,
        n_critics,
        critic_activation,
    )


class CompiledActing:
    """
    Decides, call by call, whether a policy acts through the compiled :func:`sample_and_score`, and
    keeps what that needs (:class:`ActingPlan` per actor and critic, call counts per batch size,
    compiled functions and loaded packages).

    :param compile_after: act eagerly on a batch size this many times before compiling it (0: at
        once); None: never compile
    :param background: on the CPU, compile in a child process (ahead of time, into a package kept on
        disk), started after a tenth of ``compile_after`` calls, while the calls go on acting
        eagerly; the call after ``compile_after`` switches to it, waiting only if it is still being
        built (True, default). False: that call compiles in the calling thread and waits (always so
        on CUDA)
    :param when_ready: with ``background``, switch as soon as the package is ready instead (a package
        on disk at a batch size's first call): fast from the first call, but the call that switches
        depends on the build's duration and the disk cache, so seeded runs that cross it are not
        bitwise reproducible (compiled and eager actions differ by float rounding)
    """

    def __init__(self, compile_after: int | None, background: bool = True, when_ready: bool = False) -> None:
        if compile_after is not None and (
            isinstance(compile_after, bool) or not isinstance(compile_after, Integral) or compile_after < 0
        ):
            raise ValueError(f"compile_acting_after must be an integer >= 0 or None, got {compile_after!r}")
        if not isinstance(background, bool):
            raise ValueError(f"compile_in_background must be a bool, got {background!r}")
        if not isinstance(when_ready, bool):
            raise ValueError(f"compiled_acting_when_ready must be a bool, got {when_ready!r}")
        self.compile_after = compile_after
        self.background = background
        self.when_ready = when_ready
        self.calls: dict[tuple, int] = {}
        self.compiled_keys: set[tuple] = set()
        self.failed_keys: set[tuple] = set()
        self._functions: dict[str, ActingFunction] = {}
        self._plans: dict[tuple, ActingPlan | None] = {}
        self._packages: dict[tuple, acting_packages.PackageRunner] = {}
        self._package_specs: dict[tuple, tuple[acting_packages.ActingSpec, Path] | None] = {}
        self._builds: dict[tuple, acting_packages.PackageBuild] = {}
        self._pending: set[tuple] = set()
        if background and when_ready and compile_after is not None:
            # A policy that switches when ready will load a package soon: inductor's CPU probe, which
            # the first load needs, starts now rather than beside the first calls.
            acting_packages.start_cpu_probe()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled or deep-copied (a policy copy): the counts and caches start afresh."""
        return {"compile_after": self.compile_after, "background": self.background, "when_ready": self.when_ready}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["compile_after"], state.get("background", True), state.get("when_ready", False))  # type: ignore[misc]

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the package builds this object started; True if none is left running."""
        return all(build.wait(timeout) for build in list(self._builds.values()))

    def __call__(
        self,
        actor: Any,
        critic: ContinuousCritic | None,
        actor_features: th.Tensor,
        critic_features: th.Tensor | None,
        n_per_state: int,
        generator: th.Generator | None,
        noise_scale: float,
        n_steps: int | None = None,
    ) -> ActingResult | None:
        """
        The candidates (chains of ``n_steps`` steps, None: T) and, if ``critic`` is given, their
        min-Q and each state's best candidate, computed by the compiled function; None when this
        call acts eagerly (not yet compiled, not eligible, or compiling failed). ``actor`` is a
        :class:`~sb3_qvpo.common.actor.DiffusionActor`.
        """
        if self.compile_after is None or th.is_grad_enabled() or not actor.fast_path:
            return None
        n_states, features_dim = actor_features.shape
        n_rows = n_states * n_per_state
        if n_rows > SMALL_BATCH_ROWS:
            return None
        device, dtype = actor_features.device, actor_features.dtype
        critic_dim = 0 if critic_features is None else critic_features.shape[1]
        plan_key = (id(actor), id(critic), features_dim, critic_dim, noise_scale, device, dtype, n_steps)
        key = (plan_key, n_rows, n_per_state)
        count = self.calls[key] = self.calls.get(key, 0) + 1
        use_packages = self.background and device.type == "cpu"
        if key in self.failed_keys:
            return None
        if use_packages and key not in self._packages and not self._package_due(key, count):
            return None
        if not use_packages and count <= self.compile_after:
            return None
        if plan_key not in self._plans:
            self._plans[plan_key] = make_plan(actor, critic, features_dim, critic_dim, noise_scale, device, dtype, n_steps)
        plan = self._plans[plan_key]
        if plan is None:
            return None
        scoring = None
        if plan.critic is not None and critic_features is not None and plan.critic_activation is not None:
            flat, shapes = plan.critic.get()
            scoring = Scoring(critic_features, flat, shapes, plan.n_critics, plan.critic_activation)
        chain_flat, chain_shapes = plan.chain.get()
        n_draws = plan.coefficients.shape[0]
        chain_inputs = (actor_features, n_per_state, chain_flat, chain_shapes, plan.coefficients, plan.clip_x0, plan.clip_xt)
        static = (*chain_inputs, plan.actor_activation, scoring)  # the arguments after the draws
        if use_packages:
            runner = self._packages.get(key)
            if runner is None:
                runner = self._find_package(key, count, n_rows, n_draws, actor.action_dim, static)
            if runner is None:
                return None
            call = functools.partial(self._run_package, runner, key, n_rows)
            return self._with_draws(call, n_rows, n_draws, actor.action_dim, static, generator, may_fail=True)
        compiling = key not in self.compiled_keys
        if device.type not in self._functions:
            self._functions[device.type] = compile_sample_and_score(device.type)
        function = self._functions[device.type]
        call = functools.partial(self._compile_and_call, n_rows, key, function) if compiling else function
        return self._with_draws(call, n_rows, n_draws, actor.action_dim, static, generator, may_fail=compiling)

    @staticmethod
    def _with_draws(
        call: Callable[..., ActingResult | None],
        n_rows: int,
        n_draws: int,
        action_dim: int,
        static: tuple,
        generator: th.Generator | None,
        may_fail: bool,
    ) -> ActingResult | None:
        """
        ``call(x_T, noise, *static)`` with the chain's draws taken as the eager path takes them; where
        the call ``may_fail`` and returns None, the draws are given back, so the eager path draws the
        same numbers again.
        """
        features = static[0]
        rng_state = random_state(generator, features.device) if may_fail else None
        draws = chain_draws(draw_chain_noise((n_rows, action_dim), n_draws, generator, features.device, features.dtype))
        result = call(*draws, *static)
        if result is None:
            restore_random_state(generator, features.device, rng_state)
        return result

    def _package_due(self, key: tuple, count: int) -> bool:
        """
        Whether this call has package work to do (before a batch size's package is loaded): its first
        call (look on disk), the call that starts the build, the call that switches, and, when
        switching as soon as ready, every call until it is. The others act eagerly at once.
        """
        assert self.compile_after is not None
        return count == 1 or count == self.build_after + 1 or count > self.compile_after or key in self._pending

    @property
    def build_after(self) -> int:
        """Calls of a batch size before its package build starts: a tenth of ``compile_after``."""
        return 0 if self.compile_after is None else self.compile_after // 10

    def _run_package(
        self, runner: acting_packages.PackageRunner, key: tuple, n_rows: int, *arguments: Any
    ) -> ActingResult | None:
        """One call through a loaded package; None (eager from now on) if it fails after all."""
        try:
            outputs = runner(*acting_packages.package_inputs(arguments))
        except Exception as error:  # a package that does not fit after all
            self._fail(key, n_rows, f"running its package failed ({error!r})")
            return None
        return (outputs[0], None, None) if len(outputs) == 1 else (outputs[0], outputs[1], outputs[2])

    def _find_package(
        self, key: tuple, count: int, n_rows: int, n_draws: int, action_dim: int, static: tuple
    ) -> acting_packages.PackageRunner | None:
        """
        This batch size's package, loaded if this call switches to it; None while it acts eagerly.
        The build starts after :attr:`build_after` calls unless the package is on disk already; the
        switch comes after ``compile_after`` calls, waiting for the build if it is still running
        (so that the call that switches is the same in every run), or, with ``when_ready``, at the
        first call that finds the package ready. ``static``: the arguments after the chain's draws.
        """
        if key not in self._package_specs:
            self._package_specs[key] = self._package_spec(key, n_rows, n_draws, action_dim, static)
        found = self._package_specs[key]
        if found is None:
            return None
        spec, path = found
        # The call that switches at a fixed count (waiting for what it needs); with when_ready, none.
        switching = not self.when_ready and self.compile_after is not None and count > self.compile_after
        on_disk = path.exists()
        if not on_disk and count > self.build_after:
            build = self._builds.get(key)
            if build is None:
                try:
                    build = self._builds[key] = acting_packages.start_build(spec, path)
                except OSError as error:  # a read-only folder, no Python to start
                    self._fail(key, n_rows, f"its build could not start ({error!r})")
                    return None
                acting_packages.start_cpu_probe()  # for the load to come
                logger.info("Building the acting package of %d rows in a child process (%s)", n_rows, path)
            if switching and not build.finished():
                start = time.perf_counter()
                if not build.wait(acting_packages.BUILD_TIMEOUT_S):
                    build.stop()
                    self._fail(key, n_rows, f"its build took over {acting_packages.BUILD_TIMEOUT_S} s and was stopped")
                    return None
                logger.info("Acting for %d rows waited %.1f s for its package", n_rows, time.perf_counter() - start)
            if build.finished():
                failure = build.error()
                if failure is not None:
                    self._fail(key, n_rows, f"its build failed ({failure})")
                    return None
                on_disk = True  # built: error() found the file
        if on_disk:
            acting_packages.start_cpu_probe()  # for the load to come
        if not (switching or self.when_ready):
            return None
        if not on_disk or not (switching or acting_packages.loader_ready()):
            if on_disk or key in self._builds:
                self._pending.add(key)  # when ready: look again at the next call
            return None
        self._pending.discard(key)
        try:
            runner = acting_packages.load_package(path)
        except Exception as error:  # a damaged file, or one this platform cannot load
            self._fail(key, n_rows, f"loading {path} failed ({error!r})")
            return None
        self._packages[key] = runner
        self.compiled_keys.add(key)
        logger.info("Acting for %d rows runs compiled (package %s)", n_rows, path)
        return runner

    def _package_spec(
        self, key: tuple, n_rows: int, n_draws: int, action_dim: int, static: tuple
    ) -> tuple[acting_packages.ActingSpec, Path] | None:
        """This batch size's spec and package path (worked out once); None, with a warning, where there can be none."""
        features = static[0]
        # Zeros for the draws: the spec needs only their shapes, and the callers' random streams stay untouched.
        example = chain_draws([th.zeros((n_rows, action_dim), device=features.device, dtype=features.dtype)] * n_draws)
        spec = acting_packages.ActingSpec.from_arguments((*example, *static))
        if spec is None:
            self._fail(key, n_rows, "its activation has no compiled form")
            return None
        try:
            return spec, acting_packages.package_path(spec)
        except OSError as error:  # no usable cache folder (inductor's is made here)
            self._fail(key, n_rows, f"its package folder cannot be used ({error!r})")
            return None

    def _fail(self, key: tuple, n_rows: int, why: str) -> None:
        self.failed_keys.add(key)
        logger.warning("Compiling the acting path for %d rows: %s; acting stays eager", n_rows, why)

    def _compile_and_call(self, n_rows: int, key: tuple, function: ActingFunction, *arguments: Any) -> ActingResult | None:
        """
        The first call of a batch size compiles it, with torch's warnings silenced. If that fails, the
        batch size acts eagerly from then on and a warning is logged.
        """
        start = time.perf_counter()
        device_type = arguments[0].device.type
        try:
            with warnings.catch_warnings(), inductor_config.patch(COMPILE_OPTIONS.get(device_type, {})):
                # Compiling runs torch code that warns (deprecations); a user's -W error must not break acting.
                warnings.simplefilter("ignore")
                result = function(*arguments)
        except Exception as error:  # the platform's toolchain, or torch.compile's limits
            self._fail(key, n_rows, f"torch.compile failed ({error!r})")
            return None
        self.compiled_keys.add(key)
        logger.info("Compiled acting for %d rows in %.1f s", n_rows, time.perf_counter() - start)
        return result
