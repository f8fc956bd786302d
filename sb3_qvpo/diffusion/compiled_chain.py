"""
The small-batch reverse chain as one traceable function, for ``torch.compile``.

Acting draws a handful of candidates (K_b = 4, or 32 for ``predict(deterministic=True)``) through
T denoising steps: about a dozen tiny operations per step, so eager PyTorch spends most of its time
on per-operation overhead, not arithmetic. Written out here without in-place tricks, the whole chain
(and, in :mod:`sb3_qvpo.common.compiled_acting`, the critic scoring after it) compiles into one
function: the pointwise work of each step fuses into a few kernels, and the only calls left are the
hidden layers' matrix products.

The networks enter as tensors (:class:`PackedMlp`), not as modules, so training updates need no
recompilation: :class:`PackedWeights` re-packs them when a parameter has changed (its version
counter moved). The hidden weights are stored transposed and contiguous, the layout in which
small-row matrix products run fastest; first-layer products over the few action columns and the
output layer run as fused multiply-sums instead of separate matrix products.
"""

import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch as th
from torch import nn
from torch.nn import functional as F

from sb3_qvpo.diffusion.fast_ops import mish_formula, split_linear_by_inputs
from sb3_qvpo.diffusion.noise_net import NoisePredictionNet
from sb3_qvpo.diffusion.reverse import ReverseProcess
from sb3_qvpo.diffusion.schedules import DiffusionSchedule

# Activations the compiled path knows (parameter-free, so the class says everything); a network with
# any other layer keeps the eager path.
ACTIVATION_FUNCTIONS: dict[type[nn.Module], Callable[[th.Tensor], th.Tensor]] = {
    nn.Mish: mish_formula,
    nn.ReLU: F.relu,
    nn.Tanh: th.tanh,
    nn.SiLU: F.silu,
    nn.Sigmoid: th.sigmoid,
}
# Up to this many input columns (the action's), a first-layer product runs as a fused multiply-sum.
MAX_FUSED_PRODUCT_COLUMNS = 32


class PackedMlp(NamedTuple):
    """
    A Linear/activation stack whose first layer takes the action among other inputs, as tensors:
    the first layer's action columns transposed (action_dim, width), each middle layer's weight
    transposed (in, out) with its bias, and the output layer's weight (out, in) and bias. The first
    layer's other inputs (state, time) and its bias are the caller's.
    """

    first_action_t: th.Tensor
    hidden_t: tuple[th.Tensor, ...]
    hidden_bias: tuple[th.Tensor, ...]
    output_weight: th.Tensor
    output_bias: th.Tensor

    def tensors(self) -> list[th.Tensor]:
        """Flat list in the order :meth:`from_tensors` reads."""
        middle = [tensor for pair in zip(self.hidden_t, self.hidden_bias, strict=True) for tensor in pair]
        return [self.first_action_t, self.output_weight, self.output_bias, *middle]

    @classmethod
    def from_tensors(cls, tensors: list[th.Tensor]) -> "PackedMlp":
        first_action_t, output_weight, output_bias, *middle = tensors
        return cls(first_action_t, tuple(middle[0::2]), tuple(middle[1::2]), output_weight, output_bias)


def mlp_activation(layers: Iterable[nn.Module]) -> Callable[[th.Tensor], th.Tensor] | None:
    """
    The activation function of a Linear/activation stack (Linear, act, Linear, act, ..., Linear) with
    one known activation class throughout; None when the stack has any other shape or layer.
    """
    layers = list(layers)
    linears, activations = layers[0::2], layers[1::2]
    if len(layers) % 2 == 0 or not all(type(layer) is nn.Linear and layer.bias is not None for layer in linears):
        return None
    kinds = {type(layer) for layer in activations}
    if len(kinds) != 1:
        return None
    return ACTIVATION_FUNCTIONS.get(kinds.pop())


def pack_mlp(layers: list[nn.Module], first_action_t: th.Tensor) -> PackedMlp:
    """The middle and output layers of a stack checked by :func:`mlp_activation` (views, transposed where needed)."""
    linears = [layer for layer in layers if isinstance(layer, nn.Linear)]
    middle, output = linears[1:-1], linears[-1]
    return PackedMlp(
        first_action_t,
        tuple(layer.weight.t() for layer in middle),
        tuple(layer.bias for layer in middle),
        output.weight,
        output.bias,
    )


# Every tensor in a flat buffer starts at a multiple of this many elements (64 bytes in float32).
FLAT_ALIGNMENT = 16

TensorShapes = tuple[tuple[int, ...], ...]


def flatten_tensors(tensors: list[th.Tensor]) -> tuple[th.Tensor, TensorShapes]:
    """
    One contiguous, aligned copy of ``tensors`` (each in row-major order) and their shapes: a
    compiled function that takes many weights as one input checks one input instead of dozens.
    """
    sizes = [tensor.numel() for tensor in tensors]
    padded = [-(-size // FLAT_ALIGNMENT) * FLAT_ALIGNMENT for size in sizes]
    flat = tensors[0].new_zeros(sum(padded))
    offset = 0
    for tensor, size, room in zip(tensors, sizes, padded, strict=True):
        flat[offset : offset + size].view(tensor.shape).copy_(tensor)
        offset += room
    return flat, tuple(tuple(tensor.shape) for tensor in tensors)


def unflatten_tensors(flat: th.Tensor, shapes: TensorShapes) -> list[th.Tensor]:
    """Views of :func:`flatten_tensors`' buffer with their shapes again (traceable)."""
    views, offset = [], 0
    for shape in shapes:
        size = math.prod(shape)
        views.append(flat[offset : offset + size].view(shape))
        offset += -(-size // FLAT_ALIGNMENT) * FLAT_ALIGNMENT
    return views


class PackedWeights:
    """
    A flat copy of some weights (:func:`flatten_tensors` of what ``pack`` returns), rebuilt only when
    a parameter of the module has changed: optimiser steps, Polyak updates and ``load_state_dict``
    all write in place, which moves the tensors' version counters.
    """

    def __init__(self, module: nn.Module, pack: Callable[[], list[th.Tensor]]) -> None:
        self.parameters = list(module.parameters())
        self.pack = pack
        self.key: tuple[int, ...] | None = None
        self.value: tuple[th.Tensor, TensorShapes] | None = None

    def get(self) -> tuple[th.Tensor, TensorShapes]:
        key = tuple(parameter._version for parameter in self.parameters)
        if key != self.key or self.value is None:
            with th.no_grad():
                self.value = flatten_tensors(self.pack())
            self.key = key
        return self.value


def action_term(actions: th.Tensor, first_action_t: th.Tensor) -> th.Tensor:
    """actions @ first_action_t: a fused multiply-sum over few action columns, a matrix product otherwise."""
    if actions.shape[-1] <= MAX_FUSED_PRODUCT_COLUMNS:
        return (actions.unsqueeze(-1) * first_action_t).sum(-2)
    return th.mm(actions, first_action_t)


def mlp_tail(pre_activation: th.Tensor, mlp: PackedMlp, activation: Callable[[th.Tensor], th.Tensor]) -> th.Tensor:
    """The stack from its first layer's output (before the activation) to its output, traceable."""
    hidden = activation(pre_activation)
    for weight_t, bias in zip(mlp.hidden_t, mlp.hidden_bias, strict=True):
        hidden = activation(th.mm(hidden, weight_t) + bias)
    return (hidden.unsqueeze(-2) * mlp.output_weight).sum(-1) + mlp.output_bias


class ChainWeights(NamedTuple):
    """The noise network as the chain needs it: the first layer's state part, the time terms of every step, the rest packed."""

    state_weight_t: th.Tensor  # (features_dim, width)
    first_bias: th.Tensor
    time_terms: th.Tensor  # (T, width): the time features' contribution to the first layer at each step
    mlp: PackedMlp

    def tensors(self) -> list[th.Tensor]:
        return [self.state_weight_t, self.first_bias, self.time_terms, *self.mlp.tensors()]

    @classmethod
    def from_tensors(cls, tensors: list[th.Tensor]) -> "ChainWeights":
        state_weight_t, first_bias, time_terms, *mlp = tensors
        return cls(state_weight_t, first_bias, time_terms, PackedMlp.from_tensors(mlp))


def chain_weight_tensors(noise_net: NoisePredictionNet, schedule: DiffusionSchedule, features_dim: int) -> list[th.Tensor]:
    """
    :meth:`ChainWeights.tensors` of ``noise_net`` for the chain of ``schedule`` (its time terms are
    those of the schedule's network steps; call without gradients), ready for :func:`flatten_tensors`.
    """
    first = noise_net.body[0]
    assert isinstance(first, nn.Linear) and first.bias is not None
    sizes = [noise_net.action_dim, noise_net.time_features_dim, features_dim]
    w_action, w_time, w_state = split_linear_by_inputs(first, sizes)
    steps = schedule.network_steps(first.weight.device)
    time_terms = F.linear(noise_net.embed_time(steps), w_time)
    mlp = pack_mlp(list(noise_net.body.children()), w_action.t())
    return ChainWeights(w_state.t(), first.bias, time_terms, mlp).tensors()


def reverse_coefficient_table(
    schedule: DiffusionSchedule, process: ReverseProcess, noise_scale: float, device: th.device, dtype: th.dtype
) -> th.Tensor:
    """(T, 5) table of :meth:`DiffusionSchedule.reverse_steps`, as a tensor so that no value is compiled in."""
    return th.tensor(schedule.reverse_steps(process.variance, noise_scale), device=device, dtype=dtype)


def reverse_chain(
    x: th.Tensor,
    noise: th.Tensor,
    features: th.Tensor,
    n_per_state: int,
    weights: ChainWeights,
    coefficients: th.Tensor,
    clip_x0: bool,
    clip_xt: bool,
    activation: Callable[[th.Tensor], th.Tensor],
) -> th.Tensor:
    """
    The reverse chain of :func:`~sb3_qvpo.diffusion.sample_actions_fast`, traceable and written for
    few rows: ``x`` the starting draw (rows, action_dim), ``noise`` the T - 1 later draws, each state
    of ``features`` owning ``n_per_state`` consecutive rows. Same function, same draws: only the
    order of floating-point operations differs.
    """
    n_states = features.shape[0]
    n_rows, n_steps = x.shape[0], coefficients.shape[0]
    state_term = th.mm(features, weights.state_weight_t) + weights.first_bias
    width = state_term.shape[1]
    state_rows = state_term.unsqueeze(1).expand(n_states, n_per_state, width).reshape(n_rows, width)
    for index in range(n_steps):
        t = n_steps - 1 - index
        pre_activation = state_rows + weights.time_terms[t] + action_term(x, weights.mlp.first_action_t)
        eps = mlp_tail(pre_activation, weights.mlp, activation)
        step = coefficients[t]
        x0 = x * step[0] - eps * step[1]
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        x = x0 * step[2] + x * step[3]
        if t > 0:
            x = x + noise[index] * step[4]
        if clip_xt:
            x = x.clamp(-1.0, 1.0)
    return x.clamp(-1.0, 1.0)
