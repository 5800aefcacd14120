"""The console progress line: its rate and ETA are the recent ones, on a clock the test drives."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from dqn_atari.metrics import Metrics, RecentRate, format_duration


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self, start_s: float = 0.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s


def make_metrics(
    tmp_path: Path, clock: FakeClock, total_steps: int, start_step: int = 0
) -> tuple[Metrics, io.StringIO]:
    stream = io.StringIO()
    metrics = Metrics(
        tmp_path,
        total_steps,
        start_step=start_step,
        progress_interval_s=2.0,
        stream=stream,
        clock=clock,
    )
    return metrics, stream


def run_at(
    metrics: Metrics, clock: FakeClock, times_s: range, step_at: Callable[[int], int]
) -> None:
    """The loop calls progress after its steps; here once per simulated second in `times_s`."""
    for t in times_s:
        clock.now_s = t
        metrics.progress(step_at(t), epsilon=0.1)


def last_line(stream: io.StringIO) -> str:
    return stream.getvalue().splitlines()[-1]


def rate_and_eta(line: str) -> tuple[str, str]:
    match = re.search(r"\| ([\d,.-]+) sps \|.*\| eta (\S+)$", line)
    assert match is not None, line
    return match.group(1), match.group(2)


def test_rate_and_eta_follow_a_slow_spell_after_fast_random_play(tmp_path: Path) -> None:
    """The issue's case: a fast random-play phase, then the learner's slower pace.

    10 s at 1,000 agent steps/s (10,000 steps), then 120 s at 100/s: 22,000 steps at t=130 s.
    In the last 60 s the run did 100 steps/s: ETA (1,000,000 - 22,000) / 100 = 9,780 s =
    2h43m. The average since the start would say 22,000 / 130 = 169 steps/s and 1h36m.
    """
    clock = FakeClock()
    metrics, stream = make_metrics(tmp_path, clock, total_steps=1_000_000)

    def step_at(t: int) -> int:
        return 1000 * t if t <= 10 else 10_000 + 100 * (t - 10)

    run_at(metrics, clock, range(0, 131), step_at)
    line = last_line(stream)
    assert "22,000/1,000,000 steps" in line
    assert rate_and_eta(line) == ("100", "2h43m")
    assert format_duration(978_000 / 100) == "2h43m"
    metrics.close()


def test_rate_during_the_first_window_counts_from_the_start(tmp_path: Path) -> None:
    # 3 s at 1,000/s then 2 s at 250/s: 3,500 steps in 5 s -> 700/s; ETA 96,500 / 700 = 2m17s.
    clock = FakeClock()
    metrics, stream = make_metrics(tmp_path, clock, total_steps=100_000)
    run_at(metrics, clock, range(1, 6), lambda t: 1000 * t if t <= 3 else 3000 + 250 * (t - 3))
    assert rate_and_eta(last_line(stream)) == ("700", "2m17s")
    metrics.close()


def test_a_resumed_run_counts_only_time_since_the_resume(tmp_path: Path) -> None:
    # Resumed at agent step 500,000 (the clock reads 5,000 s); 250 steps/s since then.
    # At 5,020 s: 505,000 steps, 250/s, ETA 95,000 / 250 = 380 s = 6m20s.
    clock = FakeClock(start_s=5_000.0)
    metrics, stream = make_metrics(tmp_path, clock, total_steps=600_000, start_step=500_000)
    run_at(metrics, clock, range(5_000, 5_021), lambda t: 500_000 + 250 * (t - 5_000))
    assert "505,000/600,000 steps" in last_line(stream)
    assert rate_and_eta(last_line(stream)) == ("250", "6m20s")
    metrics.close()


def test_a_pause_neither_drops_nor_spikes_the_rate(tmp_path: Path) -> None:
    """300 steps/s for 100 s, then 300 s without a step (an evaluation), then 300/s again.

    The line after the pause keeps 300/s (the average since the start would read 30,001 / 400
    = 75/s), and 2 s later the window that restarted after the pause measures 600 / 2 = 300/s.
    """
    clock = FakeClock()
    metrics, stream = make_metrics(tmp_path, clock, total_steps=1_000_000)
    run_at(metrics, clock, range(0, 101), lambda t: 300 * t)
    run_at(metrics, clock, range(400, 401), lambda t: 30_001)
    # ETA (1,000,000 - 30,001) / 300 = 3,233 s = 53m53s
    assert rate_and_eta(last_line(stream)) == ("300", "53m53s")
    run_at(metrics, clock, range(401, 403), lambda t: 30_001 + 300 * (t - 400))
    assert "30,601/1,000,000 steps" in last_line(stream)
    assert rate_and_eta(last_line(stream))[0] == "300"
    metrics.close()


def test_no_rate_before_a_second_of_stepping(tmp_path: Path) -> None:
    # The loop's first call comes right after the first step: one step in 5 ms is no rate.
    clock = FakeClock()
    metrics, stream = make_metrics(tmp_path, clock, total_steps=1000)
    clock.now_s = 0.005
    metrics.progress(1, epsilon=1.0)
    assert rate_and_eta(last_line(stream)) == ("-", "?")
    metrics.close()


def test_one_line_per_interval(tmp_path: Path) -> None:
    # Calls every 0.5 s for 10 s with progress_interval_s=2: lines at 0.5, 2.5, ..., 8.5 s and
    # none between them, each ending in a newline (logs and Slurm files read line by line).
    clock = FakeClock()
    metrics, stream = make_metrics(tmp_path, clock, total_steps=10_000)
    for k in range(1, 21):
        clock.now_s = k * 0.5
        metrics.progress(100 * k, epsilon=1.0)
    text = stream.getvalue()
    assert text.count("\n") == 5 and "\r" not in text
    assert [line.split()[1] for line in text.splitlines()] == [
        "100/10,000",
        "500/10,000",
        "900/10,000",
        "1,300/10,000",
        "1,700/10,000",
    ]
    metrics.close()


def steady(rate_per_s: int, start_s: int, end_s: int, start_step: int) -> list[tuple[int, int]]:
    return [(t, start_step + rate_per_s * (t - start_s)) for t in range(start_s, end_s + 1)]


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        # (time s, step) observations, one a second; the rate at the last, 60 s window.
        (steady(50, 0, 30, 0), 1500 / 30),  # less history than the window: all of it
        (steady(50, 0, 200, 0), 50.0),
        # 10/s to 120 s, then 5,000 steps in 5 s: from (65 s, 650) to (125 s, 6,200).
        ([*steady(10, 0, 120, 0), (125, 6200)], (6200 - 650) / 60),
        # 30 s without an observation restarts the window at (80 s, 600): 400 steps in 4 s.
        ([*steady(10, 0, 50, 0), *steady(100, 80, 84, 600)], 400 / 4),
    ],
)
def test_recent_rate_by_hand(samples: list[tuple[int, int]], expected: float) -> None:
    (t0, s0), *rest = samples
    rate = RecentRate(t0, s0, window_s=60.0, pause_s=10.0)
    for t, s in rest:
        rate.observe(t, s)
    last_t, last_s = samples[-1]
    assert rate.rate(last_t, last_s) == pytest.approx(expected)
