"""QSM's actor learning-rate schedule, as an SB3 schedule of the remaining progress (1 -> 0)."""

import math


class CosineDecaySchedule:
    """
    ``initial_value * (1 + cos(pi * min(1, elapsed / horizon))) / 2`` with ``elapsed = 1 - progress_remaining``.

    The official code decays the actor's learning rate with ``optax.cosine_decay_schedule(3e-4,
    2e6)`` over gradient steps, on 1e6-step runs: ``horizon=2.0`` (two run lengths) reproduces that
    for a 1e6-step run, ending at half the initial value; ``horizon=1.0`` decays to zero at the end.
    """

    def __init__(self, initial_value: float, horizon: float = 2.0):
        if not (0 <= initial_value < math.inf and 0 < horizon < math.inf):
            raise ValueError(
                f"CosineDecaySchedule needs a finite initial_value >= 0 and horizon > 0, got {initial_value}, {horizon}"
            )
        self.initial_value = float(initial_value)
        self.horizon = float(horizon)

    def __call__(self, progress_remaining: float) -> float:
        fraction = min(1.0, (1.0 - progress_remaining) / self.horizon)
        return self.initial_value * 0.5 * (1.0 + math.cos(math.pi * fraction))

    def __repr__(self) -> str:
        return f"CosineDecaySchedule(initial_value={self.initial_value}, horizon={self.horizon})"
