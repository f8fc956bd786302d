"""
Scoring actions with the twin-Q critic: min over Q networks, many candidates per state (fast
path), and the action gradient that QSM and DIPO follow.
"""

import torch as th
from stable_baselines3.common.policies import ContinuousCritic
from torch import nn
from torch.nn import functional as F

from sb3_qvpo.diffusion.fast_ops import LayerRunner, run_layers_, split_linear_by_inputs, state_chunks
from sb3_qvpo.diffusion.fast_sampler import SMALL_BATCH_ROWS, default_chunk_rows


def q_values_per_network(critic: ContinuousCritic, critic_features: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """Every Q network's value, shape (n_rows, n_critics); features already extracted."""
    q_input = th.cat([critic_features, actions], dim=1)
    return th.cat([q_net(q_input) for q_net in critic.q_networks], dim=1)


def min_q_values(critic: ContinuousCritic, critic_features: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """min over the critic's Q networks, as a flat (n_rows,) tensor; features already extracted."""
    return q_values_per_network(critic, critic_features, actions).min(dim=1).values


def candidate_min_q(
    critic: ContinuousCritic,
    critic_features: th.Tensor,
    candidates: th.Tensor,
    n_per_state: int,
    fast_path: bool = True,
) -> th.Tensor:
    """
    min-Q of ``n_per_state`` candidates per state, shape (n_states, n_per_state).

    The fast path (gradient-free) computes each Q network's first layer on the state once per
    state instead of once per candidate; it is the same function as :func:`min_q_values`.
    """
    n_states = critic_features.shape[0]
    if not fast_path or th.is_grad_enabled():
        repeated = critic_features.repeat_interleave(n_per_state, dim=0)
        return min_q_values(critic, repeated, candidates).view(n_states, n_per_state)
    grouped = candidates.view(n_states, n_per_state, -1)
    q_values = [_candidate_q(q_net, critic_features, grouped) for q_net in critic.q_networks]
    return th.stack(q_values).min(dim=0).values


def _candidate_q(q_net: nn.Module, critic_features: th.Tensor, grouped: th.Tensor) -> th.Tensor:
    """One Q network on (n_states, n_per_state, action_dim) candidates, its first layer split by input."""
    assert isinstance(q_net, nn.Sequential)
    layers = list(q_net)
    first = layers[0]
    assert isinstance(first, nn.Linear)
    n_states, n_per_state, action_dim = grouped.shape
    w_state, w_action = split_linear_by_inputs(first, [critic_features.shape[1], action_dim])
    state_term = F.linear(critic_features, w_state, first.bias).unsqueeze(1)
    if n_states * n_per_state <= SMALL_BATCH_ROWS:
        # Acting and TD targets: few rows, per-operation overhead dominates; no chunks or buffers.
        hidden = th.matmul(grouped, w_action.t()).add_(state_term)
        return run_layers_(layers[1:], hidden).squeeze(-1)
    chunks = state_chunks(n_states, n_per_state, default_chunk_rows(grouped.device))
    run_tail = LayerRunner(layers[1:], (chunks[0].stop - chunks[0].start) * n_per_state, grouped)
    q_values = th.empty(n_states, n_per_state, device=grouped.device, dtype=grouped.dtype)
    # Chunks of rows keep the hidden activations in cache (see sample_actions_fast).
    for states in chunks:
        hidden = th.matmul(grouped[states], w_action.t()).add_(state_term[states])
        q_values[states] = run_tail(hidden.view(-1, hidden.shape[-1])).view(-1, n_per_state)
    return q_values


def q_action_gradient(critic: ContinuousCritic, critic_features: th.Tensor, actions: th.Tensor, reduce: str) -> th.Tensor:
    """
    grad_a of the critic at ``actions`` (no gradient reaches the critic's parameters):

    - ``reduce="mean"``: the mean over Q networks of grad_a Q_i (QSM, ``update_actor``);
    - ``reduce="min"``: grad_a min_i Q_i (DIPO, ``action_gradient``).

    Rows are independent, so the gradient of the summed Q gives each row's own gradient.
    """
    with th.enable_grad():
        actions = actions.detach().requires_grad_(True)
        q_values = q_values_per_network(critic, critic_features.detach(), actions)
        if reduce == "mean":
            objective = q_values.mean(dim=1).sum()
        elif reduce == "min":
            objective = q_values.min(dim=1).values.sum()
        else:
            raise ValueError(f"Unknown reduce {reduce!r}: expected 'mean' or 'min'")
        (gradient,) = th.autograd.grad(objective, actions)
    return gradient
