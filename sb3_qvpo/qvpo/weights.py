"""Q-weight transforms (paper section 4.2): which sample of each state to train on, and how much."""

import torch as th

WEIGHT_TRANSFORMS = ("qadv", "qcut")


def best_sample_weights(
    q_values: th.Tensor,
    weight_transform: str = "qadv",
    qcut_threshold: float = 1.0,
) -> tuple[th.Tensor, th.Tensor]:
    """
    Keep the highest-Q sample of each state and weight it.

    ``q_values`` has shape (n_states, n_samples). Both transforms are non-decreasing in Q, so the
    sample with the largest weight is the one with the largest Q.

    - "qadv" (eq. 9): max(Q(s, a_max) - V(s), 0), with V(s) the mean Q of the samples;
    - "qcut": max(Q(s, a_max), ``qcut_threshold``), as the release's ``QCut`` (``agent/q_transform.py``)
      computes it: a best Q below the cut gets the cut itself as its weight.

    Returns (index of the best sample, its weight), each of shape (n_states,).
    """
    best_q, best_index = q_values.max(dim=1)
    if weight_transform == "qadv":
        weights = (best_q - q_values.mean(dim=1)).clamp(min=0.0)
    elif weight_transform == "qcut":
        weights = best_q.clamp(min=qcut_threshold)
    else:
        raise ValueError(f"Unknown weight_transform {weight_transform!r}: expected one of {WEIGHT_TRANSFORMS}")
    return best_index, weights
