"""
Offline training with rl-zoo3's conventions:

    python -m sb3_qvpo.offline.train --algo diffusion_ql --env Hopper-v5 --dataset hopper/medium-v0 \\
        [-n GRADIENT_STEPS] [--eval-freq K] [-params key:value ...] [--seed S] [-f logs] [other rl-zoo3 train flags]

Exactly rl-zoo3's ``train`` (hyper-parameters from ``hyperparams/<algo>.yml`` or ``--conf-file``,
``-params`` overrides, seeds, the ``logs/<algo>/<env>_<id>/`` folder with the model, its config
and ``evaluations.npz``), plus ``--dataset``: a local Minari dataset id or folder, or a D4RL-layout
HDF5 file. The model's replay buffer is filled from it and the model trains with ``learn_offline``:
``-n`` (or the file's ``n_timesteps``) counts gradient steps and ``--eval-freq`` evaluates every that
many updates. The environment is made as for online training and is stepped only by evaluations.
Tuning (``--optimize``) is online only.
"""

import argparse
import sys
from collections.abc import Sequence
from typing import Any, ClassVar

from stable_baselines3.common.base_class import BaseAlgorithm

from sb3_qvpo.common.off_policy import DiffusionOffPolicyAlgorithm
from sb3_qvpo.zoo.cli import train as zoo_train
from sb3_qvpo.zoo.experiment import ZooExperimentManager

OPTIMIZE_FLAGS = ("-optimize", "--optimize", "--optimize-hyperparameters")


class OfflineExperimentManager(ZooExperimentManager):
    """rl-zoo3's experiment manager whose ``learn`` trains from :attr:`dataset` instead of the environment."""

    dataset: ClassVar[str] = ""

    def learn(self, model: BaseAlgorithm) -> None:
        if not isinstance(model, DiffusionOffPolicyAlgorithm):
            raise SystemExit(
                f"--algo {self.algo} cannot train from a dataset: offline training needs one of this package's "
                "algorithms (diffusion_ql, or qvpo / qsm / dipo)"
            )
        model.load_dataset(self.dataset)
        print(f"Dataset {self.dataset}: {model.replay_buffer.size()} transitions")  # type: ignore[union-attr]
        kwargs: dict[str, Any] = {"progress_bar": self.show_progress}
        if self.log_interval > -1:
            kwargs["log_interval"] = self.log_interval
        if self.callbacks:
            kwargs["callback"] = self.callbacks
        try:
            model.learn_offline(self.n_timesteps, **kwargs)
        except KeyboardInterrupt:  # save the model when interrupted, as rl-zoo3 does
            pass
        finally:
            if model.env is not None:
                model.env.close()


def offline_manager(dataset: str) -> type[OfflineExperimentManager]:
    """:class:`OfflineExperimentManager` bound to ``dataset`` (rl-zoo3's ``train`` builds the manager itself)."""
    return type("OfflineExperimentManager", (OfflineExperimentManager,), {"dataset": dataset})


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m sb3_qvpo.offline.train", add_help=False)
    parser.add_argument("--dataset", help="local Minari dataset id or folder, or a D4RL-layout .hdf5 file")
    known, zoo_args = parser.parse_known_args(args)
    if "-h" in zoo_args or "--help" in zoo_args:
        print(__doc__)
    elif known.dataset is None:
        raise SystemExit("python -m sb3_qvpo.offline.train needs --dataset (a Minari dataset id or folder, or an .hdf5 file)")
    if any(flag in zoo_args for flag in OPTIMIZE_FLAGS):
        raise SystemExit("--optimize is not supported from a dataset: tune online with python -m sb3_qvpo.train")
    zoo_train(zoo_args, manager_class=offline_manager(known.dataset or ""))


if __name__ == "__main__":
    main()
