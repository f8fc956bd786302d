"""Q-weight transforms (paper section 4.2): which sample of each state to train on, and how much."""

import torch as th

WEIGHT_TRANSFORMS = ("qadv", "qcut")


def best_sample_weights(
    q_values: th.Tensor,
    weight_transform: str = "qadv",
    qcut_threshold: float = 1.0,
    qcut_floor: float = 1e-3,
) -> tuple[th.Tensor, th.Tensor]:
    """
    Keep the highest-Q sample of each state and weight it.

    ``q_values`` has shape (n_states, n_samples). Both transforms are non-decreasing in Q, so the
    sample with the largest weight is the one with the largest Q.

    - "qadv" (eq. 9): max(Q(s, a_max) - V(s), 0), with V(s) the mean Q of the samples;
    - "qcut": Q(s, a_max) where it is at least ``qcut_threshold``, else the small ``qcut_floor``.

    Returns (index of the best sample, its weight), each of shape (n_states,).
    """
    best_q, best_index = q_values.max(dim=1)
    if weight_transform == "qadv":
        weights = (best_q - q_values.mean(dim=1)).clamp(min=0.0)
    elif weight_transform == "qcut":
        weights = th.where(best_q >= qcut_threshold, best_q, th.full_like(best_q, qcut_floor))
    else:
        raise ValueError(f"Unknown weight_transform {weight_transform!r}: expected one of {WEIGHT_TRANSFORMS}")
    return best_index, weights
