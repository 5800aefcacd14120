"""TensorBoard scalars under namespaced tags, and a console progress line."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from torch.utils.tensorboard import SummaryWriter

from dqn_atari import tags


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class RecentRate:
    """Agent steps per second over the last `window_s` seconds of stepping, for the console.

    `observe(now, step)` is called as the loop goes (after every step; it costs two
    comparisons). It keeps a (time, step) sample every `window_s / 60` seconds, and `rate`
    divides the steps since the newest sample that is at least `window_s` old (or the oldest
    kept) by the time since. So the random-play phase, a slower spell or a speed-up leave the
    rate within a window; time before the start or a resume never enters it.

    A gap of more than `pause_s` between two observations means the loop was not stepping
    (an evaluation, a checkpoint written, the first compile, a suspended process): the window
    restarts after it, and until a new sample is `window_s / 60` seconds old, `rate` keeps its
    last value. Stepping time alone is measured, so the ETA leaves out future evaluations and
    checkpoints (a few percent of a run at the defaults).
    """

    def __init__(self, now: float, step: int, window_s: float = 60.0, pause_s: float = 10.0):
        self.window_s = window_s
        self.pause_s = pause_s
        self.spacing_s = window_s / 60
        self._samples: deque[tuple[float, int]] = deque([(now, step)])
        self._last_seen = now
        self._rate: float | None = None

    def observe(self, now: float, step: int) -> None:
        samples = self._samples
        if now - self._last_seen > self.pause_s:
            samples.clear()
            samples.append((now, step))
        elif now - samples[-1][0] >= self.spacing_s:
            samples.append((now, step))
            self._forget(now)
        self._last_seen = now

    def _forget(self, now: float) -> None:
        """Drop samples older than the newest one that is at least `window_s` old."""
        samples = self._samples
        while len(samples) > 1 and samples[1][0] <= now - self.window_s:
            samples.popleft()

    def rate(self, now: float, step: int) -> float | None:
        """Agent steps per second in the window ending at `now`; None until one is measured."""
        self._forget(now)
        then, then_step = self._samples[0]
        if now - then >= self.spacing_s:
            self._rate = (step - then_step) / (now - then)
        return self._rate


class Metrics:
    """Writes `train/*`, `eval/*` and `perf/*` scalars, and prints progress to the console.

    Tags (named in dqn_atari/tags.py, which dqn-report reads them by): train/episode_return,
    train/episode_length, train/loss, train/q_mean, train/epsilon, perf/sps (agent steps per
    second), eval/return_mean, eval/return_std.

    The progress line shows the recent rate and an ETA from it (see RecentRate): one line per
    `progress_interval_s`, terminal or not, so logs and Slurm output read the same. `clock`
    (seconds, monotonic) is for tests.
    """

    def __init__(
        self,
        log_dir: Path,
        total_steps: int,
        start_step: int = 0,
        progress_interval_s: float = 2.0,
        label: str = "",
        stream: TextIO | None = None,
        *,
        log_file: Path | None = None,
        rate_window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # On resume, purge_step hides what a crashed run logged after its last checkpoint (the
        # checkpoint at step S is written after step S's scalars, so those are kept).
        self.writer = SummaryWriter(
            log_dir=str(log_dir), purge_step=start_step + 1 if start_step else None
        )
        self.total_steps = total_steps
        self.progress_interval_s = progress_interval_s
        self.label = label
        self.stream = stream or sys.stderr
        # The console's lines also go to the run's own log, appended across resumes.
        self._log: TextIO | None = log_file.open("a", buffering=1) if log_file else None
        self.recent_returns: deque[float] = deque(maxlen=20)
        self.clock = clock
        now = clock()
        self._recent = RecentRate(now, start_step, window_s=rate_window_s)  # for the line
        self._window_start = (now, start_step)  # for perf/sps
        self._last_print = -float("inf")
        self.sps = 0.0

    def episode(self, step: int, episode_return: float, episode_length: int) -> None:
        self.recent_returns.append(episode_return)
        self.writer.add_scalar(tags.TRAIN_EPISODE_RETURN, episode_return, step)
        self.writer.add_scalar(tags.TRAIN_EPISODE_LENGTH, episode_length, step)

    def learner(self, step: int, loss: float, q_mean: float) -> None:
        self.writer.add_scalar(tags.TRAIN_LOSS, loss, step)
        self.writer.add_scalar(tags.TRAIN_Q_MEAN, q_mean, step)

    def speed(self, step: int, epsilon: float) -> float:
        """Logs perf/sps (agent steps per second since the last call) and train/epsilon."""
        self.writer.add_scalar(tags.TRAIN_EPSILON, epsilon, step)
        now = self.clock()
        then, then_step = self._window_start
        if now > then and step > then_step:
            self.sps = (step - then_step) / (now - then)
            self.writer.add_scalar(tags.PERF_SPS, self.sps, step)
        self._window_start = (now, step)
        return self.sps

    def evaluation(self, step: int, return_mean: float, return_std: float) -> None:
        self.writer.add_scalar(tags.EVAL_RETURN_MEAN, return_mean, step)
        self.writer.add_scalar(tags.EVAL_RETURN_STD, return_std, step)
        self.message(f"eval at step {step:,}: return {return_mean:.1f} +- {return_std:.1f}")

    def progress(self, step: int, epsilon: float, force: bool = False) -> None:
        """Call after every step: prints a line when `progress_interval_s` has passed."""
        now = self.clock()
        self._recent.observe(now, step)
        if not force and now - self._last_print < self.progress_interval_s:
            return
        self._last_print = now
        rate = self._recent.rate(now, step)
        eta = (self.total_steps - step) / rate if rate else None
        recent = (
            f"{sum(self.recent_returns) / len(self.recent_returns):.1f}"
            if self.recent_returns
            else "-"
        )
        bar_width = 20
        filled = int(bar_width * step / self.total_steps)
        line = (
            f"{self.label}[{'#' * filled}{'.' * (bar_width - filled)}] "
            f"{step:,}/{self.total_steps:,} steps | "
            f"{'-' if rate is None else f'{rate:,.0f}'} sps | "
            f"return {recent} (last {len(self.recent_returns)}) | eps {epsilon:.3f} | "
            f"eta {'?' if eta is None else format_duration(eta)}"
        )
        self._write(line)

    def message(self, text: str) -> None:
        self._write(f"{self.label}{text}")

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()
        if self._log is not None:
            self._log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
        if self._log is not None:
            self._log.close()
            self._log = None
