"""
rl-zoo3's scripts with QVPO registered: ``train``, ``enjoy`` and ``record_video``.

Each takes exactly rl-zoo3's command-line flags (``--algo qvpo`` next to the zoo's own algorithms).
``python -m sb3_qvpo.train`` and ``python -m sb3_qvpo.enjoy`` call the first two;
``python -m sb3_qvpo.zoo <train|enjoy|record_video> ...`` calls any of them.
"""

import contextlib
import runpy
import sys
from collections.abc import Iterator, Sequence

from sb3_qvpo.zoo.experiment import ZooExperimentManager
from sb3_qvpo.zoo.registration import register, register_for_playback


@contextlib.contextmanager
def _command_line(prog: str, argv: Sequence[str] | None) -> Iterator[None]:
    """Run an rl-zoo3 script on ``argv`` (default: this process's own command line)."""
    if argv is None:
        yield
        return
    saved = sys.argv
    sys.argv = [prog, *argv]
    try:
        yield
    finally:
        sys.argv = saved


@contextlib.contextmanager
def _playback_registration() -> Iterator[None]:
    register_for_playback()
    try:
        yield
    finally:
        register()


def train(argv: Sequence[str] | None = None, manager_class: type[ZooExperimentManager] = ZooExperimentManager) -> None:
    """``rl_zoo3.train`` with ``--algo qvpo`` and :class:`ZooExperimentManager` (or ``manager_class``)."""
    register()
    import rl_zoo3.train as zoo_train

    saved_manager = zoo_train.ExperimentManager
    zoo_train.ExperimentManager = manager_class  # type: ignore[misc]
    try:
        with _command_line("sb3_qvpo.train", argv):
            zoo_train.train()
    finally:
        zoo_train.ExperimentManager = saved_manager  # type: ignore[misc]


def enjoy(argv: Sequence[str] | None = None) -> None:
    """``rl_zoo3.enjoy``: load a trained agent from the log folder and run it (``--no-render`` without a screen)."""
    import rl_zoo3.enjoy as zoo_enjoy  # imports requests, which sb3-qvpo installs and rl-zoo3 does not

    with _playback_registration(), _command_line("sb3_qvpo.enjoy", argv):
        zoo_enjoy.enjoy()


def record_video(argv: Sequence[str] | None = None) -> None:
    """``rl_zoo3.record_video``: run a trained agent and write an mp4 (``-o`` folder, default ``<run>/videos``)."""
    with _playback_registration(), _command_line("sb3_qvpo.record_video", argv):
        runpy.run_module("rl_zoo3.record_video", run_name="__main__")


SCRIPTS = {"train": train, "enjoy": enjoy, "record_video": record_video}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m sb3_qvpo.zoo <script> [flags]``, like rl-zoo3's own ``rl_zoo3 <script>``."""
    args = list(sys.argv[1:] if argv is None else argv)
    script = args[0].replace("-", "_") if args else ""
    if script not in SCRIPTS:
        raise SystemExit(f"usage: python -m sb3_qvpo.zoo {{{','.join(SCRIPTS)}}} [flags]; got {args[:1] or 'nothing'}")
    SCRIPTS[script](args[1:])
