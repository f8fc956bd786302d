"""
Record a local Minari dataset from any Gymnasium environment, acting with random actions, a saved
SB3 model (``.zip``) or an rl-zoo3 trained agent (log folder); the command line is
:mod:`sb3_qvpo.offline.collect`.

The environment is rl-zoo3's ``create_test_env`` (the one ``enjoy`` plays in: the
agent's env wrappers, its VecNormalize statistics frozen), with an :class:`EpisodeRecorder` as the
outermost Gymnasium wrapper: the dataset holds the observations the environment returns, before
any VecNormalize, and the actions in environment units, after any added noise.
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from sb3_qvpo.common.checks import check_count
from sb3_qvpo.offline.recording import (
    CollectionSummary,
    EpisodeRecorder,
    check_new_dataset_id,
    recorded_env_spec,
    summarize,
    write_minari_dataset,
)

# A batch of observations (as the VecEnv returns them) to a batch of environment actions.
ActionChooser = Callable[[np.ndarray], np.ndarray]


def _check_budget(n_steps: int | None, n_episodes: int | None) -> None:
    if (n_steps is None) == (n_episodes is None):
        raise ValueError(f"Give exactly one of n_steps and n_episodes (got n_steps={n_steps}, n_episodes={n_episodes})")
    if n_steps is not None:
        check_count("n_steps", n_steps)
    if n_episodes is not None:
        check_count("n_episodes", n_episodes)


def make_recording_env(
    env_id: str,
    seed: int,
    env_kwargs: dict[str, Any] | None = None,
    hyperparams: dict[str, Any] | None = None,
    stats_path: str | None = None,
) -> tuple[VecEnv, EpisodeRecorder]:
    """
    One environment made by rl-zoo3's ``create_test_env`` from an agent's saved ``hyperparams`` (its
    ``env_wrapper``, and the VecNormalize statistics in ``stats_path`` when it was normalised), with
    an :class:`EpisodeRecorder` appended to the env wrappers, so that it is the outermost one.
    """
    from rl_zoo3.utils import create_test_env

    hyperparams = dict(hyperparams or {"normalize": False})
    wrappers = hyperparams.get("env_wrapper") or []
    hyperparams["env_wrapper"] = [*(wrappers if isinstance(wrappers, list) else [wrappers]), EpisodeRecorder]
    venv = create_test_env(
        env_id,
        n_envs=1,
        stats_path=stats_path,
        seed=seed,
        log_dir=None,
        should_render=False,
        hyperparams=hyperparams,
        env_kwargs=env_kwargs,
        vec_env_cls=DummyVecEnv,
    )
    base = venv.unwrapped
    assert isinstance(base, DummyVecEnv)
    recorder = base.envs[0]
    assert isinstance(recorder, EpisodeRecorder)
    return venv, recorder


def record_dataset(
    venv: VecEnv,
    recorder: EpisodeRecorder,
    choose_actions: ActionChooser,
    dataset_id: str,
    source: str,
    n_steps: int | None = None,
    n_episodes: int | None = None,
    algorithm_name: str | None = None,
    author: str | None = None,
    description: str | None = None,
) -> CollectionSummary:
    """Step ``venv`` with ``choose_actions`` until the budget is met, then write what ``recorder`` kept."""
    _check_budget(n_steps, n_episodes)
    try:
        observations = venv.reset()
        while (n_steps is None or recorder.n_transitions < n_steps) and (
            n_episodes is None or recorder.n_finished_episodes < n_episodes
        ):
            observations, _, _, _ = venv.step(choose_actions(observations))  # type: ignore[arg-type]
        episodes = recorder.finish()
        summary = summarize(dataset_id, source, episodes, recorder.episode_complete)
        write_minari_dataset(
            summary,
            episodes,
            recorded_env_spec(recorder),
            recorder.observation_space,
            recorder.action_space,
            algorithm_name=algorithm_name,
            author=author,
            description=description,
        )
    finally:
        venv.close()
    return summary


def collect_random(
    env_id: str,
    dataset_id: str,
    n_steps: int | None = None,
    n_episodes: int | None = None,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    algorithm_name: str = "random",
    author: str | None = None,
    description: str | None = None,
) -> CollectionSummary:
    """A dataset of uniformly random actions (the action space's ``sample``), seeded by ``seed``."""
    check_new_dataset_id(dataset_id)
    _check_budget(n_steps, n_episodes)
    venv, recorder = make_recording_env(env_id, seed, env_kwargs)
    venv.action_space.seed(seed)

    def random_actions(observations: np.ndarray) -> np.ndarray:
        return np.array([venv.action_space.sample() for _ in range(venv.num_envs)])

    return record_dataset(
        venv,
        recorder,
        random_actions,
        dataset_id,
        source=f"random actions on {env_id}",
        n_steps=n_steps,
        n_episodes=n_episodes,
        algorithm_name=algorithm_name,
        author=author,
        description=description,
    )


def load_agent(path: str | os.PathLike[str], algo: str, device: str = "auto") -> BaseAlgorithm:
    """
    A saved model, its class found by ``--algo`` name in rl-zoo3's ``ALGOS`` (ours registered), loaded
    as ``enjoy`` loads one: a one-transition replay buffer, schedules replaced by constants.
    """
    from rl_zoo3.utils import ALGOS

    from sb3_qvpo.zoo import register

    register()
    if algo not in ALGOS:
        raise ValueError(f"Unknown algorithm {algo!r}: expected one of {', '.join(sorted(ALGOS))}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"Saved model {path} does not exist")
    algorithm = ALGOS[algo]
    kwargs: dict[str, Any] = {"buffer_size": 1} if issubclass(algorithm, OffPolicyAlgorithm) else {}
    custom_objects = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}
    return algorithm.load(Path(path), device=device, custom_objects=custom_objects, **kwargs)


def model_actions(
    model: BaseAlgorithm, deterministic: bool = False, action_noise_std: float = 0.0, seed: int = 0
) -> ActionChooser:
    """
    The model's actions; with ``action_noise_std`` > 0, Gaussian noise of that standard deviation is
    added in the policy's [-1, 1] action scale (as SB3's ``action_noise``), then clipped to the bounds.
    """
    if action_noise_std < 0:
        raise ValueError(f"action_noise_std must be >= 0, got {action_noise_std}")
    if action_noise_std > 0 and not isinstance(model.action_space, spaces.Box):
        raise ValueError(f"action noise needs a Box action space, got {model.action_space}")
    rng = np.random.default_rng(seed)

    def choose(observations: np.ndarray) -> np.ndarray:
        actions, _ = model.predict(observations, deterministic=deterministic)
        if action_noise_std > 0:
            scaled = model.policy.scale_action(actions) + rng.normal(0.0, action_noise_std, size=actions.shape)
            actions = model.policy.unscale_action(np.clip(scaled, -1.0, 1.0))
        return actions

    return choose


def _check_model_fits(model: BaseAlgorithm, venv: VecEnv) -> None:
    for name in ("observation_space", "action_space"):
        model_space, env_space = getattr(model, name), getattr(venv, name)
        if model_space.shape != env_space.shape:
            raise ValueError(f"The model's {name} {model_space} does not match the environment's {env_space}")


def _policy_label(algo: str, deterministic: bool, action_noise_std: float) -> str:
    label = f"{algo} ({'deterministic' if deterministic else 'stochastic'}"
    return f"{label}, action noise std {action_noise_std})" if action_noise_std > 0 else f"{label})"


def collect_with_model(
    model: BaseAlgorithm | str | os.PathLike[str],
    env_id: str,
    dataset_id: str,
    algo: str | None = None,
    n_steps: int | None = None,
    n_episodes: int | None = None,
    seed: int = 0,
    deterministic: bool = False,
    action_noise_std: float = 0.0,
    vec_normalize_path: str | os.PathLike[str] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    algorithm_name: str | None = None,
    author: str | None = None,
    description: str | None = None,
    device: str = "auto",
) -> CollectionSummary:
    """
    A dataset of a model's actions: a model object, or a ``.zip`` path with ``algo`` naming its class.
    ``vec_normalize_path``: the VecNormalize statistics it was trained with (the policy then sees
    normalised observations; the dataset keeps the raw ones).
    """
    check_new_dataset_id(dataset_id)
    _check_budget(n_steps, n_episodes)
    if not isinstance(model, BaseAlgorithm):
        if algo is None:
            raise ValueError("Loading a saved model needs its algorithm name (algo / --algo: sac, td3, qvpo, ...)")
        model = load_agent(model, algo, device)
    algo = algo or type(model).__name__.lower()
    choose = model_actions(model, deterministic, action_noise_std, seed)
    set_random_seed(seed)
    venv, recorder = make_recording_env(env_id, seed, env_kwargs)
    if vec_normalize_path is not None:
        venv = VecNormalize.load(str(vec_normalize_path), venv)
        venv.training, venv.norm_reward = False, False
    _check_model_fits(model, venv)
    label = _policy_label(algo, deterministic, action_noise_std)
    return record_dataset(
        venv,
        recorder,
        choose,
        dataset_id,
        source=f"{label} on {env_id}",
        n_steps=n_steps,
        n_episodes=n_episodes,
        algorithm_name=algorithm_name or label,
        author=author,
        description=description,
    )


def collect_with_zoo_agent(
    folder: str | os.PathLike[str],
    algo: str,
    env_id: str,
    dataset_id: str,
    exp_id: int = 0,
    load_best: bool = False,
    load_checkpoint: str | None = None,
    load_last_checkpoint: bool = False,
    n_steps: int | None = None,
    n_episodes: int | None = None,
    seed: int = 0,
    deterministic: bool = False,
    action_noise_std: float = 0.0,
    env_kwargs: dict[str, Any] | None = None,
    algorithm_name: str | None = None,
    author: str | None = None,
    description: str | None = None,
    device: str = "auto",
) -> CollectionSummary:
    """
    A dataset of an agent trained with rl-zoo3 (``-f logs --algo sac --env ENV --exp-id N``; 0: the
    latest run), found and set up as ``enjoy`` does: ``get_model_path``, ``get_saved_hyperparams``
    (env wrappers, env kwargs and VecNormalize statistics of the run).
    """
    import yaml
    from huggingface_sb3 import EnvironmentName
    from rl_zoo3.utils import get_model_path, get_saved_hyperparams

    check_new_dataset_id(dataset_id)
    _check_budget(n_steps, n_episodes)
    env_name = EnvironmentName(env_id)
    try:
        _, model_path, log_path = get_model_path(
            exp_id, str(folder), algo, env_name, load_best, load_checkpoint, load_last_checkpoint
        )
    except (AssertionError, ValueError) as error:
        raise FileNotFoundError(f"No trained {algo} agent for {env_id} in {folder} (exp id {exp_id}): {error}") from error
    stats_path = os.path.join(log_path, env_name)
    hyperparams, maybe_stats_path = get_saved_hyperparams(stats_path, norm_reward=False, test_mode=True)
    run_env_kwargs = hyperparams.pop("env_kwargs", None) or {}
    args_path = Path(stats_path, "args.yml")
    if args_path.is_file():  # as enjoy: the run's command-line env kwargs win over the config's
        saved_args = yaml.load(args_path.read_text(), Loader=yaml.UnsafeLoader)
        run_env_kwargs = saved_args.get("env_kwargs") or run_env_kwargs
    model = load_agent(model_path, algo, device)
    choose = model_actions(model, deterministic, action_noise_std, seed)
    set_random_seed(seed)
    venv, recorder = make_recording_env(env_id, seed, {**run_env_kwargs, **(env_kwargs or {})}, hyperparams, maybe_stats_path)
    _check_model_fits(model, venv)
    label = _policy_label(algo, deterministic, action_noise_std)
    return record_dataset(
        venv,
        recorder,
        choose,
        dataset_id,
        source=f"{label} from {model_path} on {env_id}",
        n_steps=n_steps,
        n_episodes=n_episodes,
        algorithm_name=algorithm_name or label,
        author=author,
        description=description,
    )
