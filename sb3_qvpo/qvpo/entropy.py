"""The entropy weight omega_ent as an SB3 schedule of the remaining progress (1 -> 0)."""

import math
from collections.abc import Callable

from stable_baselines3.common.utils import ConstantSchedule

EntropyCoef = float | str | Callable[[float], float]


class FlooredLinearSchedule:
    """
    ``max(start * progress_remaining, floor)``: linear decay to zero over the run, never below ``floor``.

    With start 0.02 and floor 0.002 this is the authors' release (the paper's text says a constant 0.01).
    A class rather than a lambda so that it pickles with the model and prints readably.
    """

    def __init__(self, start: float, floor: float = 0.0):
        if not (0 <= start < math.inf and 0 <= floor < math.inf):
            raise ValueError(f"entropy_coef schedule bounds must be finite and >= 0, got start={start}, floor={floor}")
        self.start = float(start)
        self.floor = float(floor)

    def __call__(self, progress_remaining: float) -> float:
        return max(self.start * progress_remaining, self.floor)

    def __repr__(self) -> str:
        return f"FlooredLinearSchedule(start={self.start}, floor={self.floor})"


def make_entropy_schedule(entropy_coef: EntropyCoef) -> Callable[[float], float]:
    """
    Accept a float, a callable of the remaining progress, or "lin_<start>" / "lin_<start>_<floor>"
    (rl-zoo3's spelling, so YAML files can hold it).
    """
    if isinstance(entropy_coef, str):
        parts = entropy_coef.split("_")
        try:
            if parts[0] != "lin" or len(parts) not in (2, 3):
                raise ValueError
            return FlooredLinearSchedule(*(float(part) for part in parts[1:]))
        except ValueError:
            raise ValueError(
                f"entropy_coef={entropy_coef!r} is not understood: use a float >= 0, a schedule, "
                "or 'lin_<start>' / 'lin_<start>_<floor>'"
            ) from None
    if callable(entropy_coef):
        return entropy_coef
    if isinstance(entropy_coef, bool) or not isinstance(entropy_coef, int | float) or not 0 <= entropy_coef < math.inf:
        raise ValueError(
            f"entropy_coef must be a finite float >= 0, a schedule or 'lin_<start>[_<floor>]', got {entropy_coef!r}"
        )
    return ConstantSchedule(float(entropy_coef))
