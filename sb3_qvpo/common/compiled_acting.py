"""
Acting through one compiled function: the reverse chain of :mod:`sb3_qvpo.diffusion.compiled_chain`
and the twin critic's scoring of its candidates, traced together by ``torch.compile``.

Eager acting on a few rows is bound by per-operation overhead (a dozen small operations per
denoising step), not by arithmetic; compiled, each step is a few fused kernels around the hidden
layers' matrix products. Compiling costs seconds per batch size, so a policy compiles a batch size
only once it has acted on it ``compile_after`` times (a long run, a deployed controller, a long
evaluation), and acts eagerly before. By default the call that reaches the threshold compiles and
waits; with ``background=True`` the compiling happens in a background thread, on example inputs of
the right shapes, while the caller goes on acting eagerly, and the calls after it has finished take
the compiled path. That option is unsafe (:data:`BACKGROUND_HAZARD`). Weights are inputs,
re-packed when training changes them, so updates never recompile. Where compiling fails (no C++
compiler, an unsupported platform), a warning is logged and that batch size acts eagerly; the
actions are the same either way, up to the order of floating-point operations.
"""

import atexit
import logging
import threading
import time
import types
import warnings
import weakref
from collections.abc import Callable
from numbers import Integral
from typing import Any, NamedTuple

import torch as th
import torch._inductor.config as inductor_config
from stable_baselines3.common.policies import ContinuousCritic
from torch import nn

from sb3_qvpo.diffusion.compiled_chain import (
    ChainWeights,
    PackedMlp,
    PackedWeights,
    TensorShapes,
    action_term,
    chain_weight_tensors,
    mlp_activation,
    mlp_tail,
    pack_mlp,
    reverse_chain,
    reverse_coefficient_table,
    unflatten_tensors,
)
from sb3_qvpo.diffusion.fast_ops import split_linear_by_inputs
from sb3_qvpo.diffusion.fast_sampler import SMALL_BATCH_ROWS, draw_chain_noise

logger = logging.getLogger(__name__)

# Inductor options: the C++ wrapper calls the kernels without Python in between (CPU), and without
# the pattern matcher a hidden layer's bias add stays fused into the activation's kernel instead of
# turning the matrix product into an addmm that first copies the bias into its output.
COMPILE_OPTIONS: dict[str, dict[str, str | int | bool | Callable[..., Any]]] = {
    "cpu": {"cpp_wrapper": True, "pattern_matcher": False},
    "cuda": {"pattern_matcher": False},
}


class CriticWeights(NamedTuple):
    """One Q network as the scoring needs it: the first layer's state part and bias, the rest packed."""

    state_weight_t: th.Tensor
    first_bias: th.Tensor
    mlp: PackedMlp

    def tensors(self) -> list[th.Tensor]:
        return [self.state_weight_t, self.first_bias, *self.mlp.tensors()]


def critic_weight_tensors(critic: ContinuousCritic, features_dim: int, action_dim: int) -> list[th.Tensor]:
    """Every Q network's :meth:`CriticWeights.tensors`, one after the other (call without gradients)."""
    tensors = []
    for q_net in critic.q_networks:
        layers = list(q_net.children())
        first = layers[0]
        assert isinstance(first, nn.Linear) and first.bias is not None
        w_state, w_action = split_linear_by_inputs(first, [features_dim, action_dim])
        tensors += CriticWeights(w_state.t(), first.bias, pack_mlp(layers, w_action.t())).tensors()
    return tensors


def critics_from_tensors(tensors: list[th.Tensor], n_critics: int) -> list[CriticWeights]:
    """:func:`critic_weight_tensors`' list back as one :class:`CriticWeights` per Q network (traceable)."""
    per_critic = len(tensors) // n_critics
    critics = []
    for index in range(n_critics):
        state_weight_t, first_bias, *mlp = tensors[index * per_critic : (index + 1) * per_critic]
        critics.append(CriticWeights(state_weight_t, first_bias, PackedMlp.from_tensors(mlp)))
    return critics


def candidate_min_q_traceable(
    candidates: th.Tensor,
    features: th.Tensor,
    n_per_state: int,
    critics: list[CriticWeights],
    activation: Callable[[th.Tensor], th.Tensor],
) -> th.Tensor:
    """min over Q networks of ``n_per_state`` candidates per state, (n_states, n_per_state); traceable."""
    n_states = features.shape[0]
    q_values = []
    for critic in critics:
        state_term = th.mm(features, critic.state_weight_t) + critic.first_bias
        width = state_term.shape[1]
        state_rows = state_term.unsqueeze(1).expand(n_states, n_per_state, width).reshape(-1, width)
        q_values.append(mlp_tail(state_rows + action_term(candidates, critic.mlp.first_action_t), critic.mlp, activation))
    return th.stack(q_values).min(dim=0).values.view(n_states, n_per_state)


class Scoring(NamedTuple):
    """How the candidates are scored: the critic's flat weights, their shapes, the number of Q networks, the activation."""

    features: th.Tensor
    flat_weights: th.Tensor
    shapes: TensorShapes
    n_critics: int
    activation: Callable[[th.Tensor], th.Tensor]


def sample_and_score(
    x: th.Tensor,
    noise: th.Tensor,
    actor_features: th.Tensor,
    n_per_state: int,
    chain_flat: th.Tensor,
    chain_shapes: TensorShapes,
    coefficients: th.Tensor,
    clip_x0: bool,
    clip_xt: bool,
    actor_activation: Callable[[th.Tensor], th.Tensor],
    scoring: Scoring | None,
) -> tuple[th.Tensor, th.Tensor | None, th.Tensor | None]:
    """
    What acting needs, in one graph: the reverse chain's candidates, grouped by state and, with
    ``scoring``, their min-Q (n_states, n_per_state) and the best candidate of each state.
    """
    chain = ChainWeights.from_tensors(unflatten_tensors(chain_flat, chain_shapes))
    candidates = reverse_chain(x, noise, actor_features, n_per_state, chain, coefficients, clip_x0, clip_xt, actor_activation)
    if scoring is None:
        return candidates, None, None
    critics = critics_from_tensors(unflatten_tensors(scoring.flat_weights, scoring.shapes), scoring.n_critics)
    q_values = candidate_min_q_traceable(candidates, scoring.features, n_per_state, critics, scoring.activation)
    grouped = candidates.view(q_values.shape[0], n_per_state, -1)
    best = th.gather(grouped, 1, q_values.argmax(dim=1).view(-1, 1, 1).expand(-1, 1, grouped.shape[2])).squeeze(1)
    return candidates, q_values, best


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


ActingFunction = Callable[..., tuple[th.Tensor, th.Tensor | None, th.Tensor | None]]

BACKGROUND_HAZARD = (
    "compile_in_background=True is unsafe: while torch's compiler traces (torch.fx.symbolic_trace, "
    "e.g. in inductor's loop-body codegen) it patches torch.nn.Module.__call__ for the whole process, so a "
    "module called meanwhile in another thread (the training or acting going on) can fail with "
    "NameError('module is not installed as a submodule'); a DIPO training run on Pendulum-v1 crashed this way"
)

# Background compilations under way (weakly held: finished threads drop out).
BACKGROUND_COMPILES: "weakref.WeakSet[threading.Thread]" = weakref.WeakSet()
_exiting = False


@atexit.register
def finish_background_compiles() -> None:
    """
    At interpreter exit, wait for the background compilations under way: cutting torch's compiler
    off at shutdown aborts the process. (Registered after torch's own exit handlers, so it runs
    before them, while the compiler's workers still exist.) A compilation the exit overtakes fails
    quietly; the process has stopped acting anyway.
    """
    global _exiting
    _exiting = True
    for thread in list(BACKGROUND_COMPILES):
        thread.join()


def chain_draws(draws: list[th.Tensor]) -> tuple[th.Tensor, th.Tensor]:
    """The chain's draws as :func:`sample_and_score` takes them: x_T, and the steps' noise stacked."""
    return draws[0], th.stack(draws[1:]) if len(draws) > 1 else draws[0][None, :0]


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
    keeps what that needs (:class:`ActingPlan` per actor and critic, call counts per batch size).

    :param compile_after: act eagerly on a batch size this many times before compiling it (0: at
        once); None: never compile
    :param background: compile in a background thread while the calls go on acting eagerly
        (False, default: the call that reaches ``compile_after`` compiles and waits); unsafe, see
        :data:`BACKGROUND_HAZARD`
    """

    def __init__(self, compile_after: int | None, background: bool = False) -> None:
        if compile_after is not None and (
            isinstance(compile_after, bool) or not isinstance(compile_after, Integral) or compile_after < 0
        ):
            raise ValueError(f"compile_acting_after must be an integer >= 0 or None, got {compile_after!r}")
        if not isinstance(background, bool):
            raise ValueError(f"compile_in_background must be a bool, got {background!r}")
        self.compile_after = compile_after
        self.background = background
        self.calls: dict[tuple, int] = {}
        self.compiled_keys: set[tuple] = set()
        self.failed_keys: set[tuple] = set()
        self._functions: dict[str, ActingFunction] = {}
        self._plans: dict[tuple, ActingPlan | None] = {}
        self._compiling: dict[tuple, threading.Thread] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled or deep-copied (a policy copy): the counts and caches start afresh."""
        return {"compile_after": self.compile_after, "background": self.background}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["compile_after"], state.get("background", False))  # type: ignore[misc]

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background compilations under way; True if none is left running."""
        for thread in list(self._compiling.values()):
            thread.join(timeout)
        return not any(thread.is_alive() for thread in self._compiling.values())

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
    ) -> tuple[th.Tensor, th.Tensor | None, th.Tensor | None] | None:
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
        if count <= self.compile_after or key in self.failed_keys:
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
        compiling = key not in self.compiled_keys
        if device.type not in self._functions:
            self._functions[device.type] = compile_sample_and_score(device.type)
        function = self._functions[device.type]
        n_draws = plan.coefficients.shape[0]
        chain_inputs = (actor_features, n_per_state, chain_flat, chain_shapes, plan.coefficients, plan.clip_x0, plan.clip_xt)
        if compiling and self.background:
            if key not in self._compiling:  # zeros for the draws: the callers' random streams stay untouched
                example = chain_draws([th.zeros((n_rows, actor.action_dim), device=device, dtype=dtype)] * n_draws)
                arguments = (*example, *chain_inputs, plan.actor_activation, scoring)
                self._compile_in_background(n_rows, key, function, arguments)
            return None
        rng_state = random_state(generator, device) if compiling else None
        draws = chain_draws(draw_chain_noise((n_rows, actor.action_dim), n_draws, generator, device, dtype))
        arguments = (*draws, *chain_inputs, plan.actor_activation, scoring)
        if not compiling:
            return function(*arguments)
        result = self._compile_and_call(n_rows, key, function, arguments)
        if result is None:  # the eager path draws the same numbers again
            restore_random_state(generator, device, rng_state)
        return result

    def _compile_in_background(self, n_rows: int, key: tuple, function: ActingFunction, arguments: tuple) -> None:
        """
        Compile one batch size in a thread (under no_grad, as acting calls run, so the compiled
        graph's guards match them); :meth:`_compile_and_call` marks it compiled or failed. A
        process that ends while it compiles waits for it (:func:`finish_background_compiles`).
        """

        def compile_now() -> None:
            with th.no_grad():
                self._compile_and_call(n_rows, key, function, arguments)

        thread = threading.Thread(target=compile_now, name=f"sb3_qvpo-compile-{n_rows}-rows", daemon=True)
        BACKGROUND_COMPILES.add(thread)
        self._compiling[key] = thread
        thread.start()

    def _compile_and_call(
        self, n_rows: int, key: tuple, function: ActingFunction, arguments: tuple
    ) -> tuple[th.Tensor, th.Tensor | None, th.Tensor | None] | None:
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
            self.failed_keys.add(key)
            log = logger.debug if _exiting else logger.warning
            log("Compiling the acting path for %d rows failed (%r); acting stays eager", n_rows, error)
            return None
        self.compiled_keys.add(key)
        logger.info("Compiled acting for %d rows in %.1f s", n_rows, time.perf_counter() - start)
        return result
