"""
ONNX export of a trained policy's ``predict``, run with onnxruntime (SB3's export guide: opset 17,
the CPU execution provider). Needs the ``export`` extra: ``pip install sb3-qvpo[export]``.

The graph holds the whole acting: observation preprocessing, the T-step reverse chain unrolled,
the critic's scores of the K candidates, the choice and the unscaling to the action space's bounds.
With ``deterministic=True`` its only input is the observation and it returns
``model.predict(obs, deterministic=True)[0]``; otherwise the noise is an input too
(:func:`~sb3_qvpo.export.graph.draw_acting_noise` draws what torch would).
"""

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm

from sb3_qvpo.common.policies import DiffusionPolicy
from sb3_qvpo.export.graph import ActingGraph, draw_acting_noise

OPSET_VERSION = 17
ACTIONS = "actions"
METADATA_KEY = "sb3_qvpo"  # the ONNX metadata entry describing the graph's inputs (JSON)


def require_export_extra() -> tuple[Any, Any]:
    """onnx and onnxruntime, or an ImportError saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            f"ONNX export needs onnx and onnxruntime ({error.name} is missing): pip install 'sb3-qvpo[export]'"
        ) from error
    return onnx, onnxruntime


def exportable_policy(model: BaseAlgorithm | DiffusionPolicy) -> DiffusionPolicy:
    """The model's diffusion policy, or a TypeError naming what is not covered."""
    policy = model if isinstance(model, DiffusionPolicy) else getattr(model, "policy", None)
    if not isinstance(policy, DiffusionPolicy):
        raise TypeError(
            f"export_onnx covers the diffusion policies of QVPO, QSM, DIPO, DiffusionQL and CGPO; got "
            f"{type(model).__name__} with policy {type(policy).__name__} (for SB3's own algorithms, follow SB3's export guide)"
        )
    return policy


def observation_inputs(observation_space: spaces.Space, batch_size: int) -> dict[str, th.Tensor]:
    """Example observations (zeros of the space's dtype) by ONNX input name: "observation", or one per Dict key."""
    if isinstance(observation_space, spaces.Dict):
        if any(not isinstance(space, spaces.Box) for space in observation_space.spaces.values()):
            raise TypeError(f"Only Dict spaces of Box spaces are exported, got {observation_space}")
        boxes = cast(dict[str, spaces.Box], observation_space.spaces)
        return {key: th.zeros((batch_size, *space.shape), dtype=_dtype(space)) for key, space in boxes.items()}
    if not isinstance(observation_space, spaces.Box):
        raise TypeError(f"Only Box and Dict observation spaces are exported, got {observation_space}")
    return {"observation": th.zeros((batch_size, *observation_space.shape), dtype=_dtype(observation_space))}


def _dtype(space: spaces.Box) -> th.dtype:
    return th.from_numpy(np.zeros((), dtype=space.dtype)).dtype


def export_onnx(
    model: BaseAlgorithm | DiffusionPolicy,
    path: str | os.PathLike[str],
    deterministic: bool = True,
    batch_size: int = 1,
    opset_version: int = OPSET_VERSION,
    dynamo: bool = False,
) -> Path:
    """
    Write ``model``'s acting as an ONNX file that onnxruntime runs without torch.

    :param model: a trained QVPO, QSM, DIPO, DiffusionQL or CGPO (or its policy)
    :param path: the .onnx file to write
    :param deterministic: ``True``: ``predict(deterministic=True)``, its fixed noise baked in, the
        observation the only input; ``False``: ``predict(deterministic=False)`` with the noise as
        inputs (names and shapes in the file's metadata, see :func:`onnx_inputs`)
    :param batch_size: observations per call (the graph's fixed first dimension)
    :param opset_version: ONNX operator set (SB3's guide: 17)
    :param dynamo: trace with torch.export (``torch.onnx.export(dynamo=True)``, opset >= 18, needs
        onnxscript) instead of the TorchScript-based exporter, which torch deprecates but which
        writes opset 17 with Mish decomposed into operators every runtime has
    :return: the path written
    """
    onnx, _ = require_export_extra()
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    source = exportable_policy(model)
    # The fixed noise is drawn on the policy's device, as predict draws it; the graph is traced on the CPU.
    baked = draw_acting_noise(source, batch_size, deterministic=True) if deterministic else None
    policy = copy.deepcopy(source).to("cpu")
    policy.set_training_mode(False)
    graph = ActingGraph(policy, batch_size, deterministic, baked_noise=baked)
    observations = observation_inputs(policy.observation_space, batch_size)
    noise = {name: th.zeros(shape) for name, shape in graph.noise_inputs.items()}
    inputs = {**observations, **noise}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph.eval()
    with th.no_grad(), warnings.catch_warnings():
        # The tracer's notes on Python-side shape checks (constants for a fixed batch size) and the
        # TorchScript exporter's deprecation notice.
        warnings.simplefilter("ignore", category=th.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*will be removed.*", category=DeprecationWarning)
        th.onnx.export(
            graph,
            tuple(inputs.values()),
            str(path),
            input_names=list(inputs),
            output_names=[ACTIONS],
            opset_version=opset_version,
            dynamo=dynamo,
        )
    exported = onnx.load(str(path))
    description = {
        "algorithm": type(model).__name__,
        "deterministic": deterministic,
        "batch_size": batch_size,
        "inputs": {name: list(value.shape) for name, value in inputs.items()},
        "noise_inputs": list(noise),
    }
    onnx.helper.set_model_props(exported, {METADATA_KEY: json.dumps(description)})
    onnx.save(exported, str(path))
    return path


def onnx_inputs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What :func:`export_onnx` wrote about a file: algorithm, mode, batch size, input names and shapes."""
    onnx, _ = require_export_extra()
    props = {prop.key: prop.value for prop in onnx.load(str(path), load_external_data=False).metadata_props}
    if METADATA_KEY not in props:
        raise ValueError(f"{path} was not written by sb3_qvpo.export_onnx (no {METADATA_KEY!r} metadata)")
    return json.loads(props[METADATA_KEY])


class OnnxPolicy:
    """
    An exported policy run by onnxruntime (CPU): ``predict(observation, noise)`` returns the actions.
    Needs neither torch nor this package's algorithms at run time, only onnxruntime and numpy.
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None):
        _, onnxruntime = require_export_extra()
        self.description = onnx_inputs(path)
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [node.name for node in self.session.get_inputs()]

    def predict(
        self, observation: np.ndarray | dict[str, np.ndarray], noise: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """
        Actions for ``batch_size`` observations (shaped as the graph's input; a Dict space's as a
        dict), given the noise inputs (a stochastic export; see ``description["noise_inputs"]``).
        """
        feeds = dict(observation) if isinstance(observation, dict) else {"observation": observation}
        feeds.update(noise or {})
        if missing := sorted(set(self.input_names) - set(feeds)):
            raise ValueError(f"Missing inputs {missing} of the exported graph (it takes {self.input_names})")
        shapes = self.description["inputs"]
        for name in self.input_names:
            value = np.asarray(feeds[name])
            if list(value.shape) != shapes[name]:
                raise ValueError(f"Input {name!r} has shape {list(value.shape)}; the graph was exported for {shapes[name]}")
        (actions,) = self.session.run([ACTIONS], {name: np.asarray(feeds[name]) for name in self.input_names})
        return actions
