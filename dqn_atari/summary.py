"""`summary.json`: what a run did, written atomically when it ends, for `dqn-report` to read.

A run writes it when it finishes (after the final evaluation), when a signal stops it, and when
it diverges. A run that was killed outright has none, and `dqn-report` lists it as incomplete.
A resumed run carries the earlier segments over, so wall time and speed cover the whole run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dqn_atari import __version__
from dqn_atari.evaluation import EvalResult
from dqn_atari.files import write_atomic

SUMMARY = "summary.json"
FORMAT = "dqn-atari/summary-1"
STATUSES = ("finished", "stopped", "diverged")


def protocol_name(sticky_action_prob: float, noop_max: int) -> str:
    """The evaluation protocol the environment settings amount to.

    Nature (Mnih et al., 2015): a deterministic emulator and up to 30 random no-op frames at each
    start. Machado et al. (2018): sticky actions with probability 0.25 instead. Anything else is
    named by its two values, so that it is never grouped with either.
    """
    if sticky_action_prob == 0.0 and noop_max > 0:
        return "Nature"
    if sticky_action_prob == 0.25:
        return "Machado"
    return f"custom (sticky_action_prob={sticky_action_prob:g}, noop_max={noop_max})"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as JSON through a temporary file, flushed and renamed over `path`."""
    write_atomic(path, json.dumps(data, indent=1) + "\n")


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary, or None when it has none or it cannot be read as one."""
    try:
        data = json.loads((run_dir / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def is_done(summary: dict[str, Any] | None, total_steps: int, final_eval_episodes: int) -> bool:
    """Whether a summary already records the whole run as asked: nothing is left to do."""
    if summary is None or summary.get("status") != "finished":
        return False
    if summary.get("agent_steps", 0) < total_steps or summary.get("total_steps") != total_steps:
        return False
    evaluation = summary.get("evaluation") or {}
    return final_eval_episodes == 0 or (
        evaluation.get("kind") == "final" and evaluation.get("episodes") == final_eval_episodes
    )


def eval_record(kind: str, step: int, epsilon: float, result: EvalResult) -> dict[str, Any]:
    return {"kind": kind, "agent_step": step, "epsilon": epsilon, **result.summary()}


@dataclass
class RunFacts:
    """What a summary says about the run besides its counters: fixed for the whole run."""

    game: str  # display name, 'Pong'
    rom: str  # ALE ROM id, 'pong'
    seed: int
    protocol: str
    algo: str
    device: str  # where it trained: 'cpu', 'cuda:1' (device=auto resolved)
    total_steps: int  # agent steps asked for
    frame_skip: int  # emulator frames per agent step
    final_eval_episodes: int
    eval_epsilon: float
    overrides: list[str]
    config: dict[str, Any]
    # Start-up warnings of this process (a speed setting that fell back), as logged.
    warnings: list[str] = field(default_factory=list)


class RunRecord:
    """Times the run and writes its summary.json; created right before the training loop."""

    def __init__(
        self, run_dir: Path, facts: RunFacts, start_step: int, started_s: float, resumed: bool
    ) -> None:
        self.run_dir = run_dir
        self.facts = facts
        self.start_step = start_step
        self.started_s = started_s  # time.monotonic() when this process began the run
        self.loop_start_s = time.monotonic()
        self.loop_end_s: float | None = None
        self.last_eval: dict[str, Any] | None = None
        previous = read_summary(run_dir) if resumed else None
        # Segments of earlier processes that ended where this one starts (a stop writes its
        # checkpoint at the step it stopped); a crash's lost steps are retrained, not counted.
        self.segments: list[dict[str, Any]] = [
            s for s in (previous or {}).get("segments", []) if s["end_step"] <= start_step
        ]
        if previous is not None and previous.get("evaluation"):
            self.last_eval = previous["evaluation"]

    def remember(
        self, evaluate_at: Callable[[int], EvalResult | None], epsilon: float
    ) -> Callable[[int], EvalResult | None]:
        """`evaluate_at` that also keeps the last periodic evaluation for the summary."""

        def wrapped(step: int) -> EvalResult | None:
            result = evaluate_at(step)
            if result is not None:
                self.last_eval = eval_record("periodic", step, epsilon, result)
            return result

        return wrapped

    def loop_done(self) -> None:
        self.loop_end_s = time.monotonic()

    def write(
        self,
        status: str,
        agent_steps: int,
        stopped_by: str | None = None,
        error: str | None = None,
        final: EvalResult | None = None,
    ) -> dict[str, Any]:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        now = time.monotonic()
        loop_end = self.loop_end_s if self.loop_end_s is not None else now
        segment = {
            "start_step": self.start_step,
            "end_step": agent_steps,
            "train_s": round(loop_end - self.loop_start_s, 3),  # in the training loop
            "wall_s": round(now - self.started_s, 3),  # start-up, loop and final evaluation
        }
        segments = [*self.segments, segment]
        if final is not None:
            self.last_eval = eval_record("final", agent_steps, self.facts.eval_epsilon, final)
        f = self.facts
        train_s = sum(s["train_s"] for s in segments)
        trained = sum(s["end_step"] - s["start_step"] for s in segments)
        summary = {
            "format": FORMAT,
            "status": status,
            "stopped_by": stopped_by,
            "error": error,
            "game": f.game,
            "rom": f.rom,
            "seed": f.seed,
            "protocol": f.protocol,
            "algo": f.algo,
            "device": f.device,
            "agent_steps": agent_steps,
            "total_steps": f.total_steps,
            "frames": agent_steps * f.frame_skip,
            "frame_skip": f.frame_skip,
            "wall_time_s": round(sum(s["wall_s"] for s in segments), 3),
            "agent_steps_per_s": round(trained / train_s, 2) if train_s > 0 else None,
            "segments": segments,
            "final_eval_episodes": f.final_eval_episodes,
            "evaluation": self.last_eval,
            "version": __version__,
            "overrides": f.overrides,
            "config": f.config,
            "warnings": f.warnings,
        }
        write_json_atomic(self.run_dir / SUMMARY, summary)
        return summary
