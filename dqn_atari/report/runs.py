"""The runs under some folders: finding them, one `Run` from its files, why a run is incomplete,
and its learning curves from its TensorBoard files.

A run whose summary.json cannot be used is read from its config.yaml and counts as incomplete;
one whose files give not even its settings is Unusable, and listed as `Skipped`. Either way it is
a warning, never a traceback that loses the other runs.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dqn_atari.report.messages import warn
from dqn_atari.report.run_files import (
    Summary,
    Unusable,
    read_config_yaml,
    read_summary_file,
    show,
)
from dqn_atari.tags import EVAL_RETURN_MEAN, TRAIN_EPISODE_RETURN

# dqn_atari.summary and dqn_atari.envs are imported where they are used: both import torch,
# which a report never needs (see run_files).

# The curves the report reads, tabulates in its JSON and draws.
CURVES = (EVAL_RETURN_MEAN, TRAIN_EPISODE_RETURN)


@dataclass
class Run:
    path: Path
    game: str  # display name
    rom: str
    seed: int | None
    protocol: str
    algo: str
    total_steps: int | None
    agent_steps: int | None
    frame_skip: int
    config: dict[str, Any]  # flattened: {'env.game': 'Pong', 'algo.lr': 0.00025, ...}
    summary: Summary | None
    problem: str | None = None  # what is wrong with the run's files: warned about, not scored
    score: float | None = None  # the evaluation's mean return used for this run
    score_kind: str | None = None  # final | periodic | events
    episodes: int | None = None
    eval_episodes: int | None = None  # games per evaluation during training, from the config
    incomplete: str | None = None  # why, when the run is not complete
    unscored: str | None = None  # why it has no score, where neither file gives one
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    """A run folder whose files give not even the run's settings."""

    path: Path
    why: str


def find_run_dirs(roots: Iterable[Path]) -> list[Path]:
    """Folders dqn-train wrote a run into: they hold summary.json or config.yaml beside
    checkpoints/ or TensorBoard events. Hydra's and submitit's own folders are not runs. A run
    reached twice (`DIR` and `/abs/DIR`, a folder and its parent, a link) is one run, under the
    name it was first found by."""
    from dqn_atari.summary import SUMMARY

    found: dict[Path, Path] = {}  # resolved -> as found
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in (".hydra", ".submitit", "checkpoints"))
            path = Path(folder)
            events = any(f.startswith("events.out.tfevents") for f in files)
            if SUMMARY in files or (
                "config.yaml" in files and ((path / "checkpoints").is_dir() or events)
            ):
                found.setdefault(path.resolve(), path)
    return sorted(found.values())


def _rom_of(game: str) -> str:
    from dqn_atari.envs import UnknownGameError, resolve_game

    try:
        return resolve_game(game)
    except UnknownGameError:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()


def load_run(path: Path) -> Run:
    """A run from its summary.json, or from its config.yaml when it has none or one that cannot
    be used (then it is incomplete, and `problem` says what is wrong with the summary). Raises
    Unusable when neither file gives the run's settings."""
    from dqn_atari.summary import STATUSES, SUMMARY, protocol_name

    problem = None
    try:
        summary = read_summary_file(path)
    except Unusable as err:
        summary, problem = None, str(err)
    if summary is not None and summary.settings is not None:
        settings = summary.settings
    else:
        try:
            settings = read_config_yaml(path)
        except Unusable as err:
            raise Unusable(f"{problem}; {err}" if problem else str(err)) from None
    run = Run(
        path=path,
        game=summary.game if summary else settings.game,
        rom=summary.rom if summary else _rom_of(settings.game),
        seed=settings.seed,
        protocol=(
            summary.protocol
            if summary
            else protocol_name(settings.sticky_action_prob, settings.noop_max)
        ),
        algo=settings.algo,
        total_steps=settings.total_steps,
        agent_steps=summary.agent_steps if summary else None,
        frame_skip=settings.frame_skip,
        config=settings.flat,
        summary=summary,
        problem=problem,
        eval_episodes=settings.eval_episodes,
    )
    if summary is not None:
        problems = []
        if summary.status not in STATUSES:
            problems.append(f"{SUMMARY}: unknown status {show(summary.status)}")
        evaluation = summary.evaluation
        if evaluation is not None and not math.isfinite(evaluation.return_mean):
            # One NaN would make every aggregate NaN: the run is left out, and said to be.
            problems.append(f"{SUMMARY}: evaluation.return_mean is {evaluation.return_mean}")
        elif evaluation is not None:
            run.score = evaluation.return_mean
            run.score_kind = evaluation.kind
            run.episodes = evaluation.episodes
        run.problem = "; ".join(problems) or None
    run.incomplete = why_incomplete(run)
    return run


def why_incomplete(run: Run) -> str | None:
    s = run.summary
    if s is None:
        return run.problem or "no summary.json (still running, or killed)"
    steps = f"{s.agent_steps:,} of {s.total_steps:,} agent steps"
    if s.status == "stopped":
        why = f"stopped by {s.stopped_by} at {steps}"
    elif s.status == "diverged":
        why = f"diverged at {steps}"
    elif run.problem is not None:
        return run.problem
    elif s.agent_steps < s.total_steps:
        return steps
    elif run.score_kind != "final":
        return "finished without a final evaluation (final_eval_episodes=0)"
    else:
        return None
    return f"{why}; {run.problem}" if run.problem else why


def read_curves(run: Run) -> None:
    """eval/return_mean and train/episode_return from the run's TensorBoard files, if readable."""
    files = sorted(run.path.glob("events.out.tfevents*"))
    if not files:
        return
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for file in files:
        try:
            readable = next(iter(event_file_loader.EventFileLoader(str(file)).Load()), None)
        except Exception as err:  # tensorboard raises several kinds on damaged files
            readable, reason = None, f"{type(err).__name__}: {err}"
        else:
            reason = "no events in it"
        if readable is None:
            warn(f"cannot read the event file {file} ({reason}); no curve from it")
    events = EventAccumulator(str(run.path), size_guidance={"scalars": 0})
    try:
        events.Reload()
        tags = set(events.Tags()["scalars"])
        for tag in CURVES:
            if tag in tags:
                points = events.Scalars(tag)
                run.curves[tag] = (
                    np.array([p.step for p in points], dtype=float),
                    np.array([p.value for p in points], dtype=float),
                )
    except Exception as err:  # a damaged file: the table still has the run's summary
        warn(f"cannot read the event files of {run.path} ({type(err).__name__}); no curve")
    for tag, (_, values) in run.curves.items():
        bad = int((~np.isfinite(values)).sum())
        if bad:
            warn(f"{run.path}: {bad} of {values.size} {tag} values in its event files are NaN "
                 "or infinite; the curves leave them out")  # fmt: skip
