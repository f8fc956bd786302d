"""
Deploying a trained policy without torch: ``predict`` as an ONNX graph that onnxruntime runs
(:func:`export_onnx`, :class:`OnnxPolicy`), its randomness as inputs (:func:`draw_acting_noise`).
onnx and onnxruntime are imported only when exporting or running (the ``export`` extra).
"""

from sb3_qvpo.export.graph import ActingGraph, ActingNoise, acting_noise, draw_acting_noise
from sb3_qvpo.export.onnx import OnnxPolicy, export_onnx, onnx_inputs

__all__ = ["ActingGraph", "ActingNoise", "OnnxPolicy", "acting_noise", "draw_acting_noise", "export_onnx", "onnx_inputs"]
