"""What a run does between agent steps besides the algorithm, each at its own interval: finished
games and the learner's means to TensorBoard, evaluations, checkpoints, the progress line, and
stopping when a signal asked for it. The loop (`loop.train`) calls `after_step` once a step.

Losses stay on the device between logs (the learner's running sums), so updates never wait for
the host; they are read once per `log_interval`, which is also where divergence is caught.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from dqn_atari.config import TrainConfig
from dqn_atari.evaluation import EvalResult
from dqn_atari.loop import TrainState
from dqn_atari.metrics import Metrics
from dqn_atari.vector import VectorStep


class DivergenceError(RuntimeError):
    """The loss or Q-values stopped being finite (at agent step `step`)."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


def check_finite(step: int, loss: torch.Tensor, q_mean: torch.Tensor) -> tuple[float, float]:
    """The logged means on the host (the one sync per log interval); non-finite stops the run."""
    loss_value, q_value = loss.item(), q_mean.item()
    if not (math.isfinite(loss_value) and math.isfinite(q_value)):
        raise DivergenceError(
            f"training diverged by agent step {step:,}: loss {loss_value}, mean Q {q_value}",
            step,
        )
    return loss_value, q_value


def crossed(previous: int, step: int, interval: int) -> bool:
    """Whether a multiple of `interval` lies in (previous, step]; never for interval 0 (off)."""
    return interval > 0 and step // interval > previous // interval


class Means(Protocol):
    def take_means(self) -> tuple[torch.Tensor, torch.Tensor] | None: ...


class RunHooks:
    """The run's work between agent steps (see the module docstring).

    `save_checkpoint(state, periodic)` is called every `checkpoint_interval` agent steps, at the
    end, and when a stop is requested. `evaluate_at(step)` runs every `eval_interval` agent
    steps and returns None when a stop interrupted it (then it stays due, and a resumed run
    plays it first). `stop_requested()` returning a signal name ends the run early, with a
    checkpoint.
    """

    def __init__(
        self,
        config: TrainConfig,
        learner: Means,
        metrics: Metrics,
        save_checkpoint: Callable[[TrainState, bool], None],
        evaluate_at: Callable[[int], EvalResult | None] | None,
        stop_requested: Callable[[], str | None],
    ) -> None:
        self.config = config
        self.learner = learner
        self.metrics = metrics
        self.save_checkpoint = save_checkpoint
        self.evaluate_at = evaluate_at
        self.stop_requested = stop_requested

    def start(self, state: TrainState) -> None:
        if state.eval_due is not None:  # interrupted by the stop that ended the last process
            self.evaluate(state, state.eval_due)

    def after_step(self, previous: int, state: TrainState, epsilon: float, out: VectorStep) -> bool:
        """Everything due in agent steps (previous, state.step]; returns True when the run must
        stop now (a checkpoint is written first)."""
        config, metrics, step = self.config, self.metrics, state.step
        for i in np.flatnonzero(out.ended):
            metrics.episode(step, float(out.episode_returns[i]), int(out.episode_lengths[i]))
        if crossed(previous, step, config.log_interval):
            metrics.speed(step, epsilon)
            means = self.learner.take_means()
            if means is not None:
                loss, q_mean = check_finite(step, *means)
                metrics.learner(step, loss, q_mean)
        if crossed(previous, step, config.eval_interval):
            self.evaluate(state, step)
        periodic = crossed(previous, step, config.checkpoint_interval)
        finished = step >= config.total_steps
        stop = self.stop_requested()
        if periodic or finished or stop is not None:
            self.save_checkpoint(state, periodic)
        metrics.progress(step, epsilon, force=finished)
        if stop is None or finished:
            return False
        state.stopped_by = stop
        return True

    def evaluate(self, state: TrainState, step: int) -> None:
        """The evaluation of agent step `step`, logged; left due when a stop interrupts it."""
        if self.evaluate_at is None:
            return
        self.metrics.message(
            f"evaluating at agent step {step:,} ({self.config.eval_episodes} games)"
        )
        result = self.evaluate_at(step)
        if result is None:
            state.eval_due = step
            return
        state.eval_due = None
        self.metrics.evaluation(step, result.return_mean, result.return_std)
