"""TensorBoard scalars under namespaced tags, and a console progress line."""

from __future__ import annotations

import sys
import time
from collections import deque
from pathlib import Path
from typing import TextIO

from torch.utils.tensorboard import SummaryWriter


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Metrics:
    """Writes `train/*`, `eval/*` and `perf/*` scalars, and prints progress to the console.

    Tags: train/episode_return, train/episode_length, train/loss, train/q_mean, train/epsilon,
    perf/sps (agent steps per second), eval/return_mean, eval/return_std.
    """

    def __init__(
        self,
        log_dir: Path,
        total_steps: int,
        start_step: int = 0,
        progress_interval_s: float = 2.0,
        label: str = "",
        stream: TextIO | None = None,
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
        self.recent_returns: deque[float] = deque(maxlen=20)
        now = time.monotonic()
        self._run_start = (now, start_step)  # for the ETA
        self._window_start = (now, start_step)  # for perf/sps
        self._last_print = 0.0
        self.sps = 0.0

    def episode(self, step: int, episode_return: float, episode_length: int) -> None:
        self.recent_returns.append(episode_return)
        self.writer.add_scalar("train/episode_return", episode_return, step)
        self.writer.add_scalar("train/episode_length", episode_length, step)

    def learner(self, step: int, loss: float, q_mean: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/q_mean", q_mean, step)

    def speed(self, step: int, epsilon: float) -> float:
        """Logs perf/sps (agent steps per second since the last call) and train/epsilon."""
        self.writer.add_scalar("train/epsilon", epsilon, step)
        now = time.monotonic()
        then, then_step = self._window_start
        if now > then and step > then_step:
            self.sps = (step - then_step) / (now - then)
            self.writer.add_scalar("perf/sps", self.sps, step)
        self._window_start = (now, step)
        return self.sps

    def evaluation(self, step: int, return_mean: float, return_std: float) -> None:
        self.writer.add_scalar("eval/return_mean", return_mean, step)
        self.writer.add_scalar("eval/return_std", return_std, step)
        self.message(f"eval at step {step:,}: return {return_mean:.1f} +- {return_std:.1f}")

    def progress(self, step: int, epsilon: float, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_print < self.progress_interval_s:
            return
        self._last_print = now
        start, start_step = self._run_start
        rate = (step - start_step) / max(now - start, 1e-9)
        eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
        recent = (
            f"{sum(self.recent_returns) / len(self.recent_returns):.1f}"
            if self.recent_returns
            else "-"
        )
        bar_width = 20
        filled = int(bar_width * step / self.total_steps)
        line = (
            f"{self.label}[{'#' * filled}{'.' * (bar_width - filled)}] "
            f"{step:,}/{self.total_steps:,} steps | {rate:,.0f} sps | "
            f"return {recent} (last {len(self.recent_returns)}) | eps {epsilon:.3f} | "
            f"eta {format_duration(eta) if eta != float('inf') else '?'}"
        )
        self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        self.stream.write(f"{self.label}{text}\n")
        self.stream.flush()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
