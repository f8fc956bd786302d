"""
Scoring with CGPO's distributional critic (TQC's quantile critics, sb3-contrib): the truncated
quantile mean Qhat of eq. 14 and its targets.
"""

import torch as th
from sb3_contrib.tqc.policies import Critic as QuantileCritic


def critic_quantiles(critic: QuantileCritic, critic_features: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """Every net's quantiles at (features, actions), shape (n_rows, n_critics, n_quantiles); features already extracted."""
    q_input = th.cat([critic_features, actions], dim=1)
    return th.stack([q_net(q_input) for q_net in critic.q_networks], dim=1)


def truncate_quantiles(quantiles: th.Tensor, n_drop: int) -> th.Tensor:
    """Each net's quantiles sorted, its highest ``n_drop`` dropped: (..., n_critics, n_quantiles - n_drop)."""
    n_quantiles = quantiles.shape[-1]
    return quantiles.sort(dim=-1).values[..., : n_quantiles - n_drop]


def truncated_q(quantiles: th.Tensor, n_drop: int) -> th.Tensor:
    """
    Qhat (eq. 14): per net, the mean of its M - k lowest quantiles; then the mean over the N nets.
    (..., n_critics, n_quantiles) -> (...).
    """
    return truncate_quantiles(quantiles, n_drop).mean(dim=-1).mean(dim=-1)


def q_hat(critic: QuantileCritic, critic_features: th.Tensor, actions: th.Tensor, n_drop: int) -> th.Tensor:
    """Qhat of each row, (n_rows,); differentiable in ``actions`` (and in the critic)."""
    return truncated_q(critic_quantiles(critic, critic_features, actions), n_drop)


def candidate_q_hat(
    critic: QuantileCritic, critic_features: th.Tensor, candidates: th.Tensor, n_per_state: int, n_drop: int
) -> th.Tensor:
    """Qhat of ``n_per_state`` candidates per state (grouped by state), shape (n_states, n_per_state)."""
    n_states = critic_features.shape[0]
    repeated = critic_features.repeat_interleave(n_per_state, dim=0)
    return q_hat(critic, repeated, candidates, n_drop).view(n_states, n_per_state)
