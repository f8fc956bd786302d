"""
What acting computes, as one traceable function of tensors: the reverse chain of
:mod:`sb3_qvpo.diffusion.compiled_chain` and the twin critic's scoring of its candidates.
:mod:`sb3_qvpo.common.compiled_acting` compiles it with ``torch.compile`` in the calling process;
:mod:`sb3_qvpo.common.acting_packages` compiles it ahead of time (AOTInductor) in a separate one.
Weights enter as flat tensors, so training updates never need a recompile.
"""

from collections.abc import Callable
from typing import NamedTuple

import torch as th
from stable_baselines3.common.policies import ContinuousCritic
from torch import nn

from sb3_qvpo.diffusion.compiled_chain import (
    ChainWeights,
    PackedMlp,
    TensorShapes,
    action_term,
    mlp_tail,
    pack_mlp,
    reverse_chain,
    unflatten_tensors,
)
from sb3_qvpo.diffusion.fast_ops import split_linear_by_inputs


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


def chain_draws(draws: list[th.Tensor]) -> tuple[th.Tensor, th.Tensor]:
    """The chain's draws as :func:`sample_and_score` takes them: x_T, and the steps' noise stacked."""
    return draws[0], th.stack(draws[1:]) if len(draws) > 1 else draws[0][None, :0]
