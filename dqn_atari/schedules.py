"""Schedules of values that anneal with the agent step."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinearSchedule:
    """`start` at agent step `begin_step`, linearly to `end` over `duration_steps`, then held.

    Nature DQN: epsilon 1.0 -> 0.1 over the first 1M agent steps.
    """

    start: float
    end: float
    duration_steps: int
    begin_step: int = 0

    def __call__(self, step: int) -> float:
        if self.duration_steps <= 0:
            return self.end
        fraction = min(max(step - self.begin_step, 0) / self.duration_steps, 1.0)
        return self.start + fraction * (self.end - self.start)
