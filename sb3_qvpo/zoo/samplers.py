"""
QVPO's hyper-parameter sampler for rl-zoo3's ``--optimize`` (Optuna), and its converter.

rl-zoo3 keys both by algorithm name: ``HYPERPARAMS_SAMPLER["qvpo"]`` draws one trial's parameters,
``HYPERPARAMS_CONVERTER["qvpo"]`` turns a finished trial's raw ``trial.params`` back into QVPO
keyword arguments (``--storage ... --study-name ... --trial-id N`` trains with them).

Unlike rl-zoo3's own samplers, this one leaves alone every parameter that the command line sets
with ``-params`` (and every ``policy_kwargs`` key set there): tune a subset by pinning the rest,
e.g. small networks on a CPU. The experiment manager tells it what is pinned through
:func:`sampler_context`; called outside one (by plain rl-zoo3 code) it samples everything.
"""

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from rl_zoo3.hyperparams_opt import sample_her_params

# Raw Optuna parameter names -> the QVPO (or policy_kwargs) key each one sets.
NET_ARCHS: dict[str, list[int]] = {
    "small": [64, 64],
    "medium": [256, 256],
    "large": [256, 256, 256],  # the release's
}
RAW_TO_KWARG: dict[str, str] = {
    "learning_rate": "learning_rate",
    "actor_learning_rate": "actor_learning_rate",
    "one_minus_gamma": "gamma",
    "batch_size_pow": "batch_size",
    "tau": "tau",
    "n_action_samples": "n_action_samples",
    "n_uniform_samples": "n_uniform_samples",
    "n_behavior_samples": "n_behavior_samples",
    "n_target_samples": "n_target_samples",
    "entropy_coef": "entropy_coef",
    "entropy_schedule": "entropy_coef",
    "net_arch": "net_arch",  # policy_kwargs
    "n_diffusion_steps": "n_diffusion_steps",  # policy_kwargs
}
POLICY_KWARGS_KEYS = ("net_arch", "n_diffusion_steps")
_SHARED_RAW = ("learning_rate", "actor_learning_rate", "one_minus_gamma", "batch_size_pow", "tau")


@dataclass(frozen=True)
class SamplerContext:
    """
    What the running experiment fixes: ``pinned`` holds QVPO parameter names and ``policy_kwargs``
    keys that are not to be sampled; ``policy_kwargs`` is the experiment's own (from the YAML file
    or ``-params``), which sampled ``net_arch`` / ``n_diffusion_steps`` are merged into.
    """

    pinned: frozenset[str] = frozenset()
    policy_kwargs: Mapping[str, Any] = field(default_factory=dict)


_CONTEXT: contextvars.ContextVar[SamplerContext | None] = contextvars.ContextVar("qvpo_sampler_context", default=None)


@contextlib.contextmanager
def sampler_context(context: SamplerContext) -> Iterator[None]:
    """Within this block (and this thread), :func:`sample_qvpo_params` honours ``context``."""
    token = _CONTEXT.set(context)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def entropy_coef_value(start: float, schedule: str) -> float | str:
    """``"linear"``: the release's decay from ``start`` to a floor of ``start / 10``; ``"constant"``: the paper's."""
    if schedule == "constant":
        return start
    if schedule == "linear":
        return f"lin_{start:.4g}_{start / 10:.4g}"
    raise ValueError(f"Unknown entropy_schedule {schedule!r}: expected 'linear' or 'constant'")


def _convert_shared(raw: dict[str, Any], policy_keys: tuple[str, ...] = POLICY_KWARGS_KEYS) -> dict[str, Any]:
    """Raw parameters every sampler shares (gamma, batch size, ``policy_keys``, HER's) -> keyword arguments."""
    hyperparams: dict[str, Any] = {}
    policy_kwargs: dict[str, Any] = {}
    if "one_minus_gamma" in raw:
        hyperparams["gamma"] = 1 - raw.pop("one_minus_gamma")
    if "batch_size_pow" in raw:
        hyperparams["batch_size"] = 2 ** raw.pop("batch_size_pow")
    if "net_arch" in raw:
        policy_kwargs["net_arch"] = list(NET_ARCHS[raw.pop("net_arch")])
    for key in policy_keys:
        if key in raw:
            policy_kwargs[key] = raw.pop(key)
    # HER's parameters (rl-zoo3's sample_her_params), for goal-conditioned tasks
    her_kwargs = {key: raw.pop(key) for key in ("n_sampled_goal", "goal_selection_strategy") if key in raw}
    if her_kwargs:
        hyperparams["replay_buffer_kwargs"] = her_kwargs
    hyperparams.update(raw)  # learning rates, tau and the algorithm's own numbers map one to one
    if policy_kwargs:
        hyperparams["policy_kwargs"] = policy_kwargs
    return hyperparams


def convert_qvpo_params(sampled_params: Mapping[str, Any]) -> dict[str, Any]:
    """Raw Optuna parameters (as stored in ``trial.params``) -> QVPO keyword arguments."""
    raw = dict(sampled_params)
    entropy: dict[str, Any] = {}
    if "entropy_coef" in raw:
        entropy["entropy_coef"] = entropy_coef_value(raw.pop("entropy_coef"), raw.pop("entropy_schedule", "linear"))
    raw.pop("entropy_schedule", None)
    return {**_convert_shared(raw), **entropy}


def _suggest_optimisation(trial: optuna.Trial, free: Callable[[str], bool], raw: dict[str, Any]) -> None:
    """Learning rates, gamma, batch size and tau: the same ranges for every algorithm."""
    if free("learning_rate"):
        raw["learning_rate"] = trial.suggest_float("learning_rate", 1e-4, 1e-3, log=True)
    if free("actor_learning_rate"):
        raw["actor_learning_rate"] = trial.suggest_float("actor_learning_rate", 3e-5, 1e-3, log=True)
    if free("one_minus_gamma"):
        raw["one_minus_gamma"] = trial.suggest_float("one_minus_gamma", 0.001, 0.05, log=True)
    if free("batch_size_pow"):
        raw["batch_size_pow"] = trial.suggest_int("batch_size_pow", 7, 9)  # 128 to 512
    if free("tau"):
        raw["tau"] = trial.suggest_float("tau", 0.001, 0.02, log=True)


def _suggest_networks(trial: optuna.Trial, free: Callable[[str], bool], raw: dict[str, Any], steps: list[int]) -> None:
    """Network size and T (``steps``: the choices of T)."""
    if free("net_arch"):
        raw["net_arch"] = trial.suggest_categorical("net_arch", list(NET_ARCHS))
    if free("n_diffusion_steps"):  # T
        raw["n_diffusion_steps"] = trial.suggest_categorical("n_diffusion_steps", steps)


def _suggest(trial: optuna.Trial, pinned: frozenset[str]) -> dict[str, Any]:
    """QVPO's search space. A raw parameter is skipped when the key it sets is pinned."""
    raw: dict[str, Any] = {}

    def free(name: str) -> bool:
        return RAW_TO_KWARG[name] not in pinned

    _suggest_optimisation(trial, free, raw)
    if free("n_action_samples"):  # N_d
        raw["n_action_samples"] = trial.suggest_categorical("n_action_samples", [16, 32, 64])
    if free("n_uniform_samples"):  # N_e (0: no entropy term)
        raw["n_uniform_samples"] = trial.suggest_categorical("n_uniform_samples", [0, 5, 10, 20])
    if free("n_behavior_samples"):  # K_b
        raw["n_behavior_samples"] = trial.suggest_categorical("n_behavior_samples", [1, 2, 4, 8])
    if free("n_target_samples"):  # K_t
        raw["n_target_samples"] = trial.suggest_categorical("n_target_samples", [1, 2, 4])
    if free("entropy_coef"):  # omega_ent: start value, and the release's decay or the paper's constant
        raw["entropy_coef"] = trial.suggest_float("entropy_coef", 1e-3, 0.05, log=True)
        raw["entropy_schedule"] = trial.suggest_categorical("entropy_schedule", ["linear", "constant"])
    _suggest_networks(trial, free, raw, [5, 10, 20])
    return raw


def _finish_sample(
    trial: optuna.Trial,
    hyperparams: dict[str, Any],
    context: SamplerContext,
    additional_args: dict[str, Any],
) -> dict[str, Any]:
    """Merge sampled policy_kwargs into the experiment's, record derived values, add HER's parameters."""
    if "policy_kwargs" in hyperparams:
        hyperparams["policy_kwargs"] = {**context.policy_kwargs, **hyperparams["policy_kwargs"]}
    for key in ("gamma", "batch_size", "entropy_coef"):
        if key in hyperparams:
            trial.set_user_attr(key, hyperparams[key])
    if additional_args.get("using_her_replay_buffer") and "replay_buffer_kwargs" not in context.pinned:
        hyperparams = sample_her_params(trial, hyperparams, additional_args.get("her_kwargs", {}))
    return hyperparams


def sample_qvpo_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """
    Sampler for QVPO hyper-parameters, with rl-zoo3's sampler signature.

    Samples the critic and actor learning rates, gamma, batch size, tau, N_d, N_e, K_b, K_t, the
    entropy weight (start and decay), the network size and T, except those pinned by the running
    experiment (see :class:`SamplerContext`). With a ``HerReplayBuffer`` it also samples HER's
    ``n_sampled_goal`` and ``goal_selection_strategy``, as rl-zoo3 does.
    """
    context = _CONTEXT.get() or SamplerContext()
    raw = _suggest(trial, context.pinned)
    return _finish_sample(trial, convert_qvpo_params(raw), context, additional_args)


# --- QSM and DIPO: the shared ranges plus each algorithm's own numbers -----------------------------

SHARED_RAW_TO_KWARG = {key: RAW_TO_KWARG[key] for key in (*_SHARED_RAW, "net_arch", "n_diffusion_steps")}
QSM_RAW_TO_KWARG = {
    **SHARED_RAW_TO_KWARG,
    "q_score_scale": "q_score_scale",
    "target_noise": "target_noise",
    "exploration_noise": "exploration_noise",
}
QSM_POLICY_KWARGS_KEYS = (*POLICY_KWARGS_KEYS, "exploration_noise")
DIPO_RAW_TO_KWARG = {
    **SHARED_RAW_TO_KWARG,
    "action_learning_rate": "action_learning_rate",
    "action_gradient_steps": "action_gradient_steps",
    "action_grad_norm_ratio": "action_grad_norm_ratio",
}


def convert_qsm_params(sampled_params: Mapping[str, Any]) -> dict[str, Any]:
    """Raw Optuna parameters -> QSM keyword arguments (``exploration_noise`` goes to ``policy_kwargs``)."""
    return _convert_shared(dict(sampled_params), QSM_POLICY_KWARGS_KEYS)


def convert_dipo_params(sampled_params: Mapping[str, Any]) -> dict[str, Any]:
    """Raw Optuna parameters -> DIPO keyword arguments."""
    return _convert_shared(dict(sampled_params))


def sample_qsm_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """
    QSM's sampler (rl-zoo3's signature): the shared learning rates, gamma, batch size, tau, network
    size and T (3 to 20), plus M_q (``q_score_scale``, the parameter its authors name the most
    important), the TD target's action noise and the exploration noise; pinned keys are left alone.
    """
    context = _CONTEXT.get() or SamplerContext()

    def free(name: str) -> bool:
        return QSM_RAW_TO_KWARG[name] not in context.pinned

    raw: dict[str, Any] = {}
    _suggest_optimisation(trial, free, raw)
    if free("q_score_scale"):  # M_q
        raw["q_score_scale"] = trial.suggest_float("q_score_scale", 1.0, 200.0, log=True)
    if free("target_noise"):
        raw["target_noise"] = trial.suggest_categorical("target_noise", [0.0, 0.1, 0.2])
    if free("exploration_noise"):
        raw["exploration_noise"] = trial.suggest_categorical("exploration_noise", [0.0, 0.05, 0.1, 0.2])
    _suggest_networks(trial, free, raw, [3, 5, 10, 20])
    return _finish_sample(trial, convert_qsm_params(raw), context, additional_args)


def sample_dipo_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """
    DIPO's sampler (rl-zoo3's signature): the shared learning rates, gamma, batch size, tau, network
    size and T (10 to 100), plus the action gradient's learning rate, number of steps and norm
    ratio (its README tunes the last per task); pinned keys are left alone.
    """
    context = _CONTEXT.get() or SamplerContext()

    def free(name: str) -> bool:
        return DIPO_RAW_TO_KWARG[name] not in context.pinned

    raw: dict[str, Any] = {}
    _suggest_optimisation(trial, free, raw)
    if free("action_learning_rate"):
        raw["action_learning_rate"] = trial.suggest_float("action_learning_rate", 3e-3, 0.1, log=True)
    if free("action_gradient_steps"):
        raw["action_gradient_steps"] = trial.suggest_categorical("action_gradient_steps", [5, 10, 20, 40])
    if free("action_grad_norm_ratio"):
        raw["action_grad_norm_ratio"] = trial.suggest_float("action_grad_norm_ratio", 0.03, 0.3, log=True)
    _suggest_networks(trial, free, raw, [10, 20, 50, 100])
    return _finish_sample(trial, convert_dipo_params(raw), context, additional_args)


# --- Diffusion-QL: the shared ranges plus eta and the gradient clip --------------------------------

DIFFUSION_QL_RAW_TO_KWARG = {**SHARED_RAW_TO_KWARG, "eta": "eta", "max_grad_norm": "max_grad_norm"}


def convert_diffusion_ql_params(sampled_params: Mapping[str, Any]) -> dict[str, Any]:
    """Raw Optuna parameters -> DiffusionQL keyword arguments."""
    return _convert_shared(dict(sampled_params))


def sample_diffusion_ql_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]
) -> dict[str, Any]:
    """
    Diffusion-QL's sampler (rl-zoo3's signature): the shared learning rates, gamma, batch size, tau,
    network size and T (3 to 10), plus eta and the gradient-norm clip, the two numbers its
    ``main.py`` sets per task (eta 0.005-4.5, clip 1-10); pinned keys are left alone.
    """
    context = _CONTEXT.get() or SamplerContext()

    def free(name: str) -> bool:
        return DIFFUSION_QL_RAW_TO_KWARG[name] not in context.pinned

    raw: dict[str, Any] = {}
    _suggest_optimisation(trial, free, raw)
    if free("eta"):
        raw["eta"] = trial.suggest_float("eta", 0.01, 5.0, log=True)
    if free("max_grad_norm"):
        raw["max_grad_norm"] = trial.suggest_categorical("max_grad_norm", [1.0, 2.0, 5.0, 9.0])
    _suggest_networks(trial, free, raw, [3, 5, 10])
    return _finish_sample(trial, convert_diffusion_ql_params(raw), context, additional_args)


# --- CGPO: the shared ranges plus its guidance and entropy numbers --------------------------------

CGPO_RAW_TO_KWARG = {
    **SHARED_RAW_TO_KWARG,
    "guidance_rate": "guidance_rate",
    "n_guided_steps": "n_guided_steps",
    "entropy_coef": "entropy_coef",
    "n_target_samples": "n_target_samples",
}


def convert_cgpo_params(sampled_params: Mapping[str, Any]) -> dict[str, Any]:
    """Raw Optuna parameters -> CGPO keyword arguments."""
    return _convert_shared(dict(sampled_params))


def sample_cgpo_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """
    CGPO's sampler (rl-zoo3's signature): the shared learning rates, gamma, batch size, tau, network
    size and T (10 or 20), plus rho (``guidance_rate``), G (``n_guided_steps``, capped at T),
    lambda_ent (``entropy_coef``) and K_t (``n_target_samples``), the paper's parameter study
    (rho 0.35 / 0.65 / 0.95, G 5 / 10 / 15 of T = 20) widened; pinned keys are left alone.
    """
    context = _CONTEXT.get() or SamplerContext()

    def free(name: str) -> bool:
        return CGPO_RAW_TO_KWARG[name] not in context.pinned

    raw: dict[str, Any] = {}
    _suggest_optimisation(trial, free, raw)
    if free("guidance_rate"):  # rho
        raw["guidance_rate"] = trial.suggest_float("guidance_rate", 0.3, 1.0)
    if free("entropy_coef"):  # lambda_ent
        raw["entropy_coef"] = trial.suggest_float("entropy_coef", 1e-3, 0.1, log=True)
    if free("n_target_samples"):  # K_t
        raw["n_target_samples"] = trial.suggest_categorical("n_target_samples", [1, 2, 4, 8])
    _suggest_networks(trial, free, raw, [10, 20])
    if free("n_guided_steps"):  # G, at most T (sampled, pinned, or CGPO's default 20)
        n_steps = raw.get("n_diffusion_steps", context.policy_kwargs.get("n_diffusion_steps", 20))
        raw["n_guided_steps"] = min(trial.suggest_categorical("n_guided_steps", [2, 5, 10, 15]), n_steps)
    return _finish_sample(trial, convert_cgpo_params(raw), context, additional_args)
