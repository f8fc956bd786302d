"""QSM's actor learning-rate schedules: over gradient steps as the official code counts them, or over the run's progress."""

import math

from sb3_qvpo.common.schedules import GradientStepSchedule


def _check(initial_value: float, length: float, length_name: str, schedule: str) -> None:
    if not (0 <= initial_value < math.inf and 0 < length < math.inf):
        raise ValueError(f"{schedule} needs a finite initial_value >= 0 and {length_name} > 0, got {initial_value}, {length}")


class CosineDecayOverGradientSteps(GradientStepSchedule):
    """
    ``initial_value * (1 + cos(pi * min(k, decay_steps) / decay_steps)) / 2`` at gradient step k
    (0 for the first update): optax's ``cosine_decay_schedule(initial_value, decay_steps)`` with
    its count of updates, which QSM's official ``create()`` gives the actor (3e-4, 2e6).
    """

    def __init__(self, initial_value: float, decay_steps: int = 2_000_000):
        _check(initial_value, decay_steps, "decay_steps", "CosineDecayOverGradientSteps")
        self.initial_value = float(initial_value)
        self.decay_steps = int(decay_steps)

    def __call__(self, gradient_steps_done: int) -> float:
        fraction = min(gradient_steps_done, self.decay_steps) / self.decay_steps
        return self.initial_value * 0.5 * (1.0 + math.cos(math.pi * fraction))

    def __repr__(self) -> str:
        return f"CosineDecayOverGradientSteps(initial_value={self.initial_value}, decay_steps={self.decay_steps})"


class CosineDecaySchedule:
    """
    ``initial_value * (1 + cos(pi * min(1, elapsed / horizon))) / 2`` with ``elapsed = 1 - progress_remaining``,
    an SB3 schedule of the run's progress (QSM's default before 0.2).

    It is not the official schedule: progress starts with ``learn``, not with the first update, so
    on a 1e6-step run with 10,000 random steps and ``horizon=2.0`` the rate is always the official
    one of 10,000 updates later (1.5% lower at the end). ``horizon=1.0`` decays to zero at the end.
    """

    def __init__(self, initial_value: float, horizon: float = 2.0):
        _check(initial_value, horizon, "horizon", "CosineDecaySchedule")
        self.initial_value = float(initial_value)
        self.horizon = float(horizon)

    def __call__(self, progress_remaining: float) -> float:
        fraction = min(1.0, (1.0 - progress_remaining) / self.horizon)
        return self.initial_value * 0.5 * (1.0 + math.cos(math.pi * fraction))

    def __repr__(self) -> str:
        return f"CosineDecaySchedule(initial_value={self.initial_value}, horizon={self.horizon})"
