"""
Learning-rate schedules counted in gradient steps rather than in the run's progress.

SB3's schedules are functions of the remaining progress (1 -> 0) of one ``learn`` call, so they
depend on ``total_timesteps`` and start when ``learn`` starts, not when learning starts. An
official code that schedules its optimiser over update counts (optax's schedules, e.g. QSM's
actor) is only matched by a schedule of the number of updates done; the algorithms of this
package accept one wherever a learning rate is taken and set it before every gradient step.
"""

from stable_baselines3.common.type_aliases import Schedule


class GradientStepSchedule:
    """Base of the schedules called with the number of gradient steps done before the current one (0, 1, ...)."""

    def __call__(self, gradient_steps_done: int) -> float:
        raise NotImplementedError


# What the algorithms take as a learning rate: a constant, an SB3 schedule of the progress, or one of gradient steps.
LearningRate = float | Schedule | GradientStepSchedule
