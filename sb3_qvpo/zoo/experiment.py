"""rl-zoo3's ExperimentManager with what QVPO (and distributed tuning) need on top."""

import os
import random
import re
import socket
import time
from typing import Any

import optuna
import sqlalchemy.engine
import sqlalchemy.exc
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.utils import SimpleLinearSchedule

from sb3_qvpo.zoo.registration import ZOO_ALGORITHMS, hyperparams_file
from sb3_qvpo.zoo.samplers import SamplerContext, sampler_context


def default_storage(log_folder: str, algo: str, env_name: str) -> str:
    """The embedded default storage of ``--optimize``: an Optuna journal file next to the runs."""
    return os.path.join(log_folder, algo, f"{env_name}_optuna.log")


def default_study_name(algo: str, env_name: str, n_timesteps: int) -> str:
    """One study per algorithm, task and budget, so that trials of different budgets never mix."""
    return f"{algo}_{env_name}_{n_timesteps}"


def hide_password(storage: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``, for printing."""
    if "://" not in storage:
        return storage
    try:
        return sqlalchemy.engine.make_url(storage).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return re.sub(r"(://[^:/@]+):.*@", r"\1:***@", storage)


def prepare_storage(storage: str, attempts: int = 5) -> None:
    """
    Create a database storage's tables before the study is opened, retrying on errors: workers
    started together on a new PostgreSQL database race on ``CREATE TABLE``. Files need nothing.
    """
    if "://" not in storage:
        return
    for attempt in range(attempts):
        try:
            optuna.storages.RDBStorage(storage).engine.dispose()
            return
        except ImportError as error:  # Optuna's "Failed to import DB access module"
            raise SystemExit(
                f"No database driver for {hide_password(storage)}: for PostgreSQL, pip install 'sb3-qvpo[postgres]' "
                "(psycopg 3) and use a postgresql+psycopg://user:password@host:5432/database URL"
            ) from error
        except sqlalchemy.exc.SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random() * (attempt + 1))


class ZooExperimentManager(ExperimentManager):
    """
    rl-zoo3's :class:`~rl_zoo3.exp_manager.ExperimentManager`, plus:

    - ``--algo qvpo|qsm|dipo`` reads this package's ``hyperparams/<algo>.yml`` unless ``--conf-file`` is given
      (rl-zoo3 looks for ``hyperparams/<algo>.yml`` inside its own package only);
    - ``actor_learning_rate`` accepts ``"lin_<value>"`` like ``learning_rate`` does;
    - ``--optimize`` without ``--storage`` records the study in a local Optuna journal file,
      ``<log-folder>/<algo>/<env>_optuna.log``, and without ``--study-name`` names the study
      ``<algo>_<env>_<n_timesteps>``: running the same command again (in another terminal, or
      later) adds trials to the same study;
    - a database storage gets its tables before the study opens, retried if workers race on them;
    - each trial records the worker that ran it (``hostname:pid``) as the user attribute ``worker``;
    - our samplers leave the parameters given with ``-params`` as they are (see
      :mod:`sb3_qvpo.zoo.samplers`), and ``--trial-id`` merges the trial's ``net_arch`` and
      ``n_diffusion_steps`` into the file's ``policy_kwargs`` instead of replacing them.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # rl-zoo3's train passes ``config`` (--conf-file) by keyword; None means "the default file"
        if kwargs.get("config") is None and self.algo in ZOO_ALGORITHMS:
            self.config = str(hyperparams_file(self.algo))
        self._trial_policy_kwargs: dict[str, Any] | None = None

    @staticmethod
    def _preprocess_schedules(hyperparams: dict[str, Any]) -> dict[str, Any]:
        hyperparams = ExperimentManager._preprocess_schedules(hyperparams)
        value = hyperparams.get("actor_learning_rate")
        if isinstance(value, str):
            schedule, _, initial_value = value.partition("_")
            if schedule != "lin":
                raise ValueError(f"Invalid value for actor_learning_rate: {value!r} (expected a float or 'lin_<value>')")
            hyperparams["actor_learning_rate"] = SimpleLinearSchedule(float(initial_value))
        return hyperparams

    def load_trial(self, storage: str, study_name: str, trial_id: int | None = None, convert: bool = True) -> dict[str, Any]:
        params = super().load_trial(storage, study_name, trial_id, convert)
        if convert and self.algo in ZOO_ALGORITHMS and "policy_kwargs" in params:
            self._trial_policy_kwargs = params.pop("policy_kwargs")
        return params

    def read_hyperparameters(self) -> tuple[dict[str, Any], dict[str, Any]]:
        hyperparams, saved_hyperparams = super().read_hyperparameters()
        custom = self.custom_hyperparams or {}
        if self._trial_policy_kwargs and "policy_kwargs" not in custom:
            base = hyperparams.get("policy_kwargs") or {}
            if isinstance(base, str):  # evaluated later by rl-zoo3, like the file's own string
                merged: Any = f"dict({base}, **{self._trial_policy_kwargs!r})"
            else:
                merged = {**base, **self._trial_policy_kwargs}
            hyperparams["policy_kwargs"] = saved_hyperparams["policy_kwargs"] = merged
            print(f"policy_kwargs with the trial's values: {merged}")
        return hyperparams, saved_hyperparams

    def sampler_context(self) -> SamplerContext:
        """What ``-params`` pins: its keys, and the ``policy_kwargs`` keys when it sets ``policy_kwargs``."""
        custom = self.custom_hyperparams or {}
        policy_kwargs = dict(self._hyperparams.get("policy_kwargs") or {})
        pinned = set(custom)
        if "policy_kwargs" in custom:
            pinned |= set(policy_kwargs)
        return SamplerContext(pinned=frozenset(pinned), policy_kwargs=policy_kwargs)

    def objective(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        with sampler_context(self.sampler_context()):
            return super().objective(trial)

    def hyperparameters_optimization(self) -> None:
        if self.study_name is None:
            self.study_name = default_study_name(self.algo, self.env_name, self.n_timesteps)
        if self.storage is None:
            self.storage = default_storage(self.log_folder, self.algo, self.env_name)
        print(f"Optuna storage: {hide_password(self.storage)} - study: {self.study_name}")
        prepare_storage(self.storage)
        super().hyperparameters_optimization()
