"""`dqn-report DIR...`: folders of runs -> per-game tables, aggregates with confidence intervals,
learning curves.

    dqn-report runs/multirun/2026-11-28_10-00-00 --json report.json --plots report/

Finds every run under the folders (single runs and the job folders of multirun sweeps: a folder
with the `summary.json` or `config.yaml` dqn-train writes), groups them so that only runs of the
same protocol, step budget and settings are compared (seed and game aside), and prints Markdown:
a table per group with one row per game, then the aggregate over games of the human-normalized
scores (mean, median, IQM) with stratified-bootstrap 95% confidence intervals (Agarwal et al.,
2021, "Deep Reinforcement Learning at the Edge of the Statistical Precipice"), computed here
with numpy as rliable does. Runs without a finished summary are listed apart.

Real folders hold damaged runs: every value taken from a run's files is checked in one place
(`Fields`, `Summary`, `Settings`), and a run that fails is one warning and a row of the runs left
out, never a traceback that loses the others. The tables are printed before any file is
written, so a folder the PNGs cannot go to costs no table.
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np

# dqn_atari.summary (for the summary's file name, format and statuses) is imported where it is
# used: it imports torch, which a report never needs and which would take seconds to start
# before main() can turn a Ctrl-C into one line.

PROG = "dqn-report"
# The bootstrap keeps the three aggregates of every resample for the percentiles (24 bytes a
# resample): a million is 24 MB and a second or so of work per group, far past what the
# intervals need (rliable's default is 2,000; the report's 50,000).
MAX_REPS = 1_000_000
# Bins of the training-return curve: more than a figure has pixels across is no gain.
MAX_BINS = 10_000
REFERENCE_FILE = Path(__file__).resolve().parent / "data" / "atari_reference.json"
EVAL_TAG = "eval/return_mean"
TRAIN_TAG = "train/episode_return"
# Settings that do not change what a run learns or how it is scored: runs that differ only in
# these (and in seed and game) are one experiment.
NOT_THE_EXPERIMENT = {
    "seed",
    "env.game",
    "device",
    "resume",
    "compile",
    "progress_interval_s",
    "log_interval",
    "checkpoint_interval",
    "keep_checkpoints",
    "save_replay",
    "eval_interval",
    "eval_episodes",
}


class ReportError(Exception):
    """Input that leaves nothing to report; `listing` is what could be said before that."""

    def __init__(self, message: str, listing: str = "") -> None:
        super().__init__(message)
        self.listing = listing


def warn(message: str) -> None:
    print(f"{PROG}: warning: {' '.join(message.split())}", file=sys.stderr)


# ---------------------------------------------------------------- statistics


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle half, floor(n/4) values cut from each end (the
    convention of scipy.stats.trim_mean(values, 0.25), which rliable uses)."""
    values = np.sort(np.asarray(values, dtype=float).ravel())
    cut = int(0.25 * values.size)
    return float(values[cut : values.size - cut].mean())


def point_estimates(scores: Sequence[np.ndarray]) -> dict[str, float]:
    """Aggregates over games of per-run scores (`scores[j]`: the runs of game j), as rliable's
    aggregate_mean, aggregate_median (of the per-game means) and aggregate_iqm (of all runs)."""
    task_means = np.array([np.mean(s) for s in scores])
    return {
        "mean": float(task_means.mean()),
        "median": float(np.median(task_means)),
        "iqm": iqm(np.concatenate(scores)),
    }


def bootstrap_samples(
    scores: Sequence[np.ndarray], reps: int, rng: np.random.Generator, chunk: int = 5000
) -> dict[str, np.ndarray]:
    """The three aggregates of `reps` stratified resamples: each game's runs are drawn with
    replacement from that game's own runs (rliable's StratifiedBootstrap, without task
    resampling), so the games stay fixed and only the seeds vary."""
    out: dict[str, list[np.ndarray]] = {"mean": [], "median": [], "iqm": []}
    total = sum(len(s) for s in scores)
    cut = int(0.25 * total)
    done = 0
    while done < reps:
        n = min(chunk, reps - done)
        draws = [s[rng.integers(len(s), size=(n, len(s)))] for s in scores]
        task_means = np.stack([d.mean(axis=1) for d in draws], axis=1)  # (n, games)
        out["mean"].append(task_means.mean(axis=1))
        out["median"].append(np.median(task_means, axis=1))
        pooled = np.sort(np.concatenate(draws, axis=1), axis=1)
        out["iqm"].append(pooled[:, cut : total - cut].mean(axis=1))
        done += n
    return {name: np.concatenate(parts) for name, parts in out.items()}


def confidence_intervals(
    scores: Sequence[np.ndarray], reps: int, seed: int, size: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of the stratified bootstrap: the (1 - size)/2 and (1 + size)/2
    quantiles of the resampled aggregates (numpy's linear interpolation)."""
    samples = bootstrap_samples(scores, reps, np.random.default_rng(seed))
    q = [100 * (1 - size) / 2, 100 * (1 + size) / 2]
    return {
        name: (float(np.percentile(s, q[0])), float(np.percentile(s, q[1])))
        for name, s in samples.items()
    }


def human_normalized(score: float, random: float, human: float) -> float:
    return (score - random) / (human - random)


def band(
    values: np.ndarray, reps: int, seed: int, columns: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds (rows) per point (columns), NaN where a seed has no value, and a 95%
    percentile-bootstrap interval over the seeds; no interval from a single seed.

    The resampled seeds are drawn once for all points, and the points are then taken `columns`
    at a time: the same numbers whatever `columns` is, in memory that does not grow with the
    curve's length (a 10M-step run evaluated every 1,000 steps has 10,000 points)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN columns stay NaN
        mean = np.nanmean(values, axis=0)
        if values.shape[0] < 2:
            return mean, mean.copy(), mean.copy()
        rng = np.random.default_rng(seed)
        idx = rng.integers(values.shape[0], size=(reps, values.shape[0]))
        low, high = np.empty_like(mean), np.empty_like(mean)
        for start in range(0, values.shape[1], columns):
            part = slice(start, start + columns)
            means = np.nanmean(values[:, part][idx], axis=1)  # (reps, points of this part)
            low[part], high[part] = np.nanpercentile(means, [2.5, 97.5], axis=0)
    return mean, low, high


# ---------------------------------------------------------------- reference scores


@dataclass(frozen=True)
class References:
    table: str  # key of the normalization table
    name: str
    source: str
    normalization: dict[str, dict[str, float]]  # rom -> {random, human}
    published: dict[str, dict[str, Any]]  # key -> {name, source, games: rom -> {mean, sd}}

    @classmethod
    def load(cls, table: str, path: Path = REFERENCE_FILE) -> References:
        data = json.loads(path.read_text())
        tables = data["normalization"]
        if table not in tables:
            raise ReportError(f"unknown --normalize table '{table}'; choose {', '.join(tables)}")
        chosen = tables[table]
        return cls(table, chosen["name"], chosen["source"], chosen["games"], data["published"])

    def normalize(self, rom: str, score: float) -> float | None:
        ref = self.normalization.get(rom)
        return None if ref is None else human_normalized(score, ref["random"], ref["human"])


# ---------------------------------------------------------------- reading a run's files


class Unusable(Exception):
    """A run file, or a value in it, that the report cannot use. The message starts with the
    file's name (`summary.json: agent_steps is missing`); the run's folder is said apart."""


_REQUIRED = object()  # no default: the key must be there
_D = TypeVar("_D")


def _show(value: object) -> str:
    """A value as the file spelled it, cut short: `"1500"`, `null`, `[1, 2]`."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    names.update({int: "a number", float: "a number", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no count


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Fields:
    """Typed reads of one JSON or YAML object. Every value the report takes from a run's files
    passes through here, so that a missing or mistyped one is one `Unusable` naming the file, the
    key and the value, never a KeyError or a ValueError deep in the table code."""

    def __init__(self, data: object, where: str, prefix: str = "") -> None:
        if not isinstance(data, dict):
            what = f"{prefix.rstrip('.')} is" if prefix else "holds"
            raise Unusable(f"{where}: {what} {_kind(data)}, not an object")
        self.data: dict[str, Any] = data
        self.where = where
        self.prefix = prefix  # how the file spells the keys' parent: 'evaluation.'

    def _read(self, key: str, default: Any, ok: Callable[[Any], bool], kind: str) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                raise Unusable(f"{self.where}: {self.prefix}{key} is missing")
            return default
        value = self.data[key]
        if value is None and default is None:  # null stands for "not recorded" where allowed
            return None
        if not ok(value):
            raise Unusable(f"{self.where}: {self.prefix}{key} must be {kind}, got {_show(value)}")
        return value

    def _integer(self, key: str, default: Any, minimum: int | None) -> Any:
        if minimum is None:
            return self._read(key, default, _is_int, "an integer")
        return self._read(
            key, default, lambda v: _is_int(v) and v >= minimum, f"an integer >= {minimum}"
        )

    def integer(self, key: str, minimum: int | None = 0) -> int:
        """An int (not a bool) >= `minimum`."""
        return int(self._integer(key, _REQUIRED, minimum))

    def integer_or(self, key: str, default: _D, minimum: int | None = 0) -> int | _D:
        """The same, or `default` when the key is absent (or null, where `default` is None)."""
        value: int | _D = self._integer(key, default, minimum)
        return value

    def number(self, key: str) -> float:
        """An int or a float, NaN and infinity included (the caller decides what they mean)."""
        return float(self._read(key, _REQUIRED, _is_number, "a number"))

    def number_or(self, key: str, default: _D) -> float | _D:
        value = self._read(key, default, _is_number, "a number")
        return value if value is default else float(value)

    def text(self, key: str) -> str:
        return str(self._read(key, _REQUIRED, lambda v: isinstance(v, str), "a string"))

    def text_or(self, key: str, default: _D) -> str | _D:
        value: str | _D = self._read(key, default, lambda v: isinstance(v, str), "a string")
        return value


@dataclass(frozen=True)
class Settings:
    """What the report takes from a run's config (summary.json's `config`, else config.yaml),
    checked, and the flattened config it groups runs by. Keys an older config lacks take the
    value dqn-train would have used or stay unknown (None, '?')."""

    game: str
    seed: int | None
    algo: str
    total_steps: int | None  # agent steps asked for
    frame_skip: int  # emulator frames per agent step
    sticky_action_prob: float
    noop_max: int
    eval_episodes: int | None  # games per evaluation during training
    flat: dict[str, Any]

    @classmethod
    def parse(cls, config: object, where: str, prefix: str = "") -> Settings:
        flat = flatten(Fields(config, where, prefix).data)
        f = Fields(flat, where, prefix)
        sticky = f.number_or("env.sticky_action_prob", 0.0)
        if not 0.0 <= sticky <= 1.0:
            raise Unusable(
                f"{where}: {prefix}env.sticky_action_prob must be in [0, 1], got {_show(sticky)}"
            )
        return cls(
            game=f.text_or("env.game", "?"),
            seed=f.integer_or("seed", None, minimum=None),
            algo=f.text_or("algo.name", "?"),
            total_steps=f.integer_or("total_steps", None, minimum=1),
            frame_skip=f.integer_or("env.frame_skip", 4, minimum=1),
            sticky_action_prob=float(sticky),
            noop_max=f.integer_or("env.noop_max", 0),
            eval_episodes=f.integer_or("eval_episodes", None),
            flat=flat,
        )


@dataclass(frozen=True)
class Evaluation:
    kind: str  # final | periodic
    episodes: int  # games played
    return_mean: float  # may be NaN or infinite: such a run is flagged, never scored


@dataclass(frozen=True)
class Summary:
    """The fields of a summary.json the report uses, checked (dqn_atari/summary.py writes it)."""

    status: str  # finished | stopped | diverged; anything else makes the run incomplete
    stopped_by: str | None
    game: str  # display name
    rom: str
    protocol: str
    agent_steps: int
    total_steps: int
    evaluation: Evaluation | None
    wall_time_s: float | None
    agent_steps_per_s: float | None
    settings: Settings | None  # None: an older summary without its config

    @classmethod
    def parse(cls, data: object) -> Summary:
        from dqn_atari.summary import FORMAT, SUMMARY

        if not isinstance(data, dict):
            raise Unusable(f"{SUMMARY}: not a dqn-train summary ({_kind(data)}, not an object)")
        if data.get("format") != FORMAT:
            raise Unusable(
                f"{SUMMARY}: not a dqn-train summary (format {_show(data.get('format'))}, "
                f"expected {FORMAT})"
            )
        f = Fields(data, SUMMARY)
        evaluation = None
        if data.get("evaluation") is not None:
            # Its mean return is what the report scores; the per-game returns are not read.
            e = Fields(data["evaluation"], SUMMARY, "evaluation.")
            evaluation = Evaluation(
                kind=e.text("kind"),
                episodes=e.integer("episodes", minimum=1),
                return_mean=float(e.number("return_mean")),
            )
        config = data.get("config")
        wall, speed = f.number_or("wall_time_s", None), f.number_or("agent_steps_per_s", None)
        return cls(
            status=f.text("status"),
            stopped_by=f.text_or("stopped_by", None),
            game=f.text("game"),
            rom=f.text("rom"),
            protocol=f.text("protocol"),
            agent_steps=f.integer("agent_steps"),
            total_steps=f.integer("total_steps", minimum=1),
            evaluation=evaluation,
            # Speed figures are only shown: a NaN one is dropped, not a reason to skip the run.
            wall_time_s=wall if wall is not None and math.isfinite(wall) else None,
            agent_steps_per_s=speed if speed is not None and math.isfinite(speed) else None,
            settings=None if config is None else Settings.parse(config, SUMMARY, "config."),
        )


def read_summary_file(path: Path) -> Summary | None:
    """The run's summary.json, checked; None when there is none. One that cannot be read, is
    truncated, or lacks what the report needs raises Unusable with the reason."""
    from dqn_atari.summary import SUMMARY

    try:
        text = (path / SUMMARY).read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise Unusable(f"{SUMMARY}: unreadable ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise Unusable(f"{SUMMARY}: unreadable (not UTF-8 text)") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        # A copy cut short, or a file written by hand: not "no summary".
        raise Unusable(f"{SUMMARY}: unreadable, truncated or not JSON ({err})") from None
    return Summary.parse(data)


def read_config_yaml(path: Path) -> Settings:
    """The run's config.yaml (as dqn-train saves it), checked; Unusable when it cannot be used."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    name = "config.yaml"
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path / name))
    except FileNotFoundError:
        raise Unusable(f"{name}: missing") from None
    except OSError as err:
        raise Unusable(f"{name}: unreadable ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise Unusable(f"{name}: unreadable (not UTF-8 text)") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise Unusable(f"{name}: not valid YAML ({err.problem or err.context}{where})") from None
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        raise Unusable(f"{name}: not valid YAML ({str(err).splitlines()[0]})") from None
    return Settings.parse(loaded, name)


# ---------------------------------------------------------------- runs


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
    settings: dict[str, Any]  # flattened config, without the keys in NOT_THE_EXPERIMENT
    summary: Summary | None
    problem: str | None = None  # what is wrong with the run's files: warned about, not scored
    score: float | None = None  # the evaluation's mean return used for this run
    score_kind: str | None = None  # final | periodic | events
    episodes: int | None = None
    eval_episodes: int | None = None  # games per evaluation during training, from the config
    incomplete: str | None = None  # why, when the run is not complete
    unscored: str | None = None  # why it has no score, where neither file gives one
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return json.dumps(self.settings, sort_keys=True, default=str)


@dataclass(frozen=True)
class Skipped:
    """A run folder whose files give not even the run's settings."""

    path: Path
    why: str


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in config.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{key}."))
        else:
            flat[key] = value
    return flat


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
        settings={k: v for k, v in settings.flat.items() if k not in NOT_THE_EXPERIMENT},
        summary=summary,
        problem=problem,
        eval_episodes=settings.eval_episodes,
    )
    if summary is not None:
        problems = []
        if summary.status not in STATUSES:
            problems.append(f"{SUMMARY}: unknown status {_show(summary.status)}")
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
        for tag in (EVAL_TAG, TRAIN_TAG):
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


# ---------------------------------------------------------------- grouping and figures


@dataclass
class Group:
    runs: list[Run]
    number: int = 0
    differs: dict[str, Any] = field(default_factory=dict)  # settings that set it apart

    @property
    def first(self) -> Run:
        return self.runs[0]

    def label(self) -> str:
        r = self.first
        steps = f"{r.total_steps:,} agent steps" if r.total_steps else "? agent steps"
        frames = f" ({r.total_steps * r.frame_skip:,} frames)" if r.total_steps else ""
        extra = "".join(f", {k}={v}" for k, v in sorted(self.differs.items()))
        return f"{r.protocol} protocol, {r.algo}, {steps}{frames}{extra}"

    def games(self) -> dict[str, list[Run]]:
        by_game: dict[str, list[Run]] = {}
        for run in sorted(self.runs, key=lambda r: (r.game, r.seed if r.seed is not None else -1)):
            by_game.setdefault(run.game, []).append(run)
        return by_game


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs of one experiment (same settings but seed and game) form a group; the groups' labels
    name the settings in which they differ."""
    by_key: dict[str, list[Run]] = {}
    for run in runs:
        by_key.setdefault(run.key, []).append(run)
    groups = [Group(v) for _, v in sorted(by_key.items(), key=lambda kv: str(kv[1][0].path))]
    if len(groups) > 1:
        keys = set().union(*(g.first.settings for g in groups))
        varying = {
            k for k in keys if len({json.dumps(g.first.settings.get(k)) for g in groups}) > 1
        }
        # Budget, algorithm and protocol are in every label already.
        shown = {"total_steps", "algo.name", "env.sticky_action_prob", "env.noop_max"}
        for group in groups:
            group.differs = {k: group.first.settings.get(k) for k in varying - shown}
    for number, group in enumerate(groups, start=1):
        group.number = number
    return groups


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def game_row(
    game: str, runs: list[Run], refs: References
) -> tuple[dict[str, Any], np.ndarray | None]:
    scores = np.array([r.score for r in runs], dtype=float)
    mean = float(scores.mean())
    sd = float(scores.std(ddof=1)) if len(scores) > 1 else None
    rom = runs[0].rom
    normalized = [refs.normalize(rom, s) for s in scores]
    hns = None if normalized[0] is None else np.array(normalized, dtype=float)
    published = {key: table["games"].get(rom) for key, table in refs.published.items()}
    row = {
        "game": game,
        "rom": rom,
        "runs": len(runs),
        "seeds": [r.seed for r in runs],
        "scores": scores.tolist(),
        "score_mean": mean,
        "score_sd": sd,
        "human_normalized": None if hns is None else float(hns.mean()),
        "human_normalized_runs": None if hns is None else hns.tolist(),
        "published": published,
        "incomplete_runs": [str(r.path) for r in runs if r.incomplete],
        "runs_detail": [
            {
                "path": str(r.path),
                "seed": r.seed,
                "score": r.score,
                "score_kind": r.score_kind,
                "episodes": r.episodes,
                "agent_steps": r.agent_steps,
                "wall_time_s": r.summary.wall_time_s if r.summary else None,
                "agent_steps_per_s": r.summary.agent_steps_per_s if r.summary else None,
            }
            for r in runs
        ],
    }
    return row, hns


def curve_series(
    runs: list[Run], tag: str, total_steps: int, bins: int, reps: int, seed: int
) -> dict[str, Any] | None:
    """One curve over seeds. Evaluations share their agent steps across seeds; training episodes
    end at different steps, so each seed's returns are averaged per bin of agent steps first."""
    # NaN and infinite points are left out (read_curves warned): one would blank or flatten the
    # band over seeds at its step.
    with_tag = []  # (steps, values) of each run that has the curve
    for run in runs:
        if tag in run.curves:
            run_steps, run_values = run.curves[tag]
            finite = np.isfinite(run_values)
            if finite.any():
                with_tag.append((run_steps[finite], run_values[finite]))
    if not with_tag:
        return None
    if tag == EVAL_TAG:
        steps = np.unique(np.concatenate([s for s, _ in with_tag]))
        values = np.full((len(with_tag), steps.size), np.nan)
        for i, (run_steps, run_values) in enumerate(with_tag):
            values[i, np.searchsorted(steps, run_steps)] = run_values
        x = steps
    else:
        edges = np.linspace(0, max(total_steps, 1), bins + 1)
        values = np.full((len(with_tag), bins), np.nan)
        for i, (run_steps, run_values) in enumerate(with_tag):
            which = np.clip(np.searchsorted(edges, run_steps, side="left") - 1, 0, bins - 1)
            sums = np.bincount(which, weights=run_values, minlength=bins)
            counts = np.bincount(which, minlength=bins)
            with np.errstate(invalid="ignore", divide="ignore"):
                values[i] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        x = (edges[:-1] + edges[1:]) / 2
    mean, low, high = band(values, reps, seed)
    keep = ~np.isnan(mean)
    return {
        "agent_steps": x[keep].tolist(),
        "mean": mean[keep].tolist(),
        "ci_low": low[keep].tolist(),
        "ci_high": high[keep].tolist(),
        "seeds": len(with_tag),
    }


def plot_game(
    path: Path,
    title: str,
    curves: dict[str, dict[str, Any] | None],
    frame_skip: int,
    final: tuple[float, float] | None = None,
) -> None:
    """Both curves of one game; `final` (agent step, mean return) marks the final evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    names = {EVAL_TAG: "evaluation return (eval/return_mean)", TRAIN_TAG: "training return"}
    for ax, tag in zip(axes, (EVAL_TAG, TRAIN_TAG), strict=True):
        series = curves.get(tag)
        ax.set_ylabel(names[tag])
        ax.grid(alpha=0.3)
        if series:
            x = np.array(series["agent_steps"])
            ax.plot(x, series["mean"], marker="o" if tag == EVAL_TAG else None, ms=3,
                    label=f"mean over {series['seeds']} seed(s)")  # fmt: skip
            if series["seeds"] > 1:
                ax.fill_between(x, series["ci_low"], series["ci_high"], alpha=0.25,
                                label="95% bootstrap CI over seeds")  # fmt: skip
        if tag == EVAL_TAG and final is not None:
            step, value = final
            ax.plot([step], [value], marker="*", ms=12, ls="", color="C3",
                    label="final evaluation (mean over seeds)")  # fmt: skip
        if ax.lines:
            ax.legend(loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
    axes[1].set_xlabel("agent steps")
    top = axes[0].secondary_xaxis(
        "top", functions=(lambda s: s * frame_skip, lambda f: f / frame_skip)
    )
    top.set_xlabel("emulator frames")
    fig.suptitle(title)
    fig.tight_layout()
    make_folder(path.parent)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _matplotlib_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def make_folder(folder: Path) -> None:
    """mkdir -p, where a file in the way is 'a file, not a folder', not mkdir's 'File exists'."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "a file, not a folder", str(folder))
    folder.mkdir(parents=True, exist_ok=True)


@dataclass
class Figure:
    """One game's learning curves, to be drawn into `path`."""

    path: Path
    title: str
    curves: dict[str, dict[str, Any] | None]
    frame_skip: int
    final: tuple[float, float] | None
    row: dict[str, Any]  # the game's JSON record, which names the PNG once it is written


def draw(figures: list[Figure]) -> list[Path]:
    """Write the PNGs, in order; the first that cannot be written stops it (OSError, whose
    filename says where)."""
    written = []
    for figure in figures:
        plot_game(figure.path, figure.title, figure.curves, figure.frame_skip, figure.final)
        figure.row["plot"] = str(figure.path)
        written.append(figure.path)
    return written


# ---------------------------------------------------------------- the report


def build_report(
    roots: list[Path],
    include_incomplete: bool,
    refs: References,
    plots: Path | None,
    reps: int,
    seed: int,
    bins: int,
) -> tuple[str, dict[str, Any], list[Figure]]:
    """The report's Markdown, its JSON, and the learning-curve figures still to be drawn (after
    the tables are printed, so that a folder the PNGs cannot go to loses no table)."""
    for root in roots:
        if not root.exists():
            raise ReportError(f"{root}: no such folder")
        if not root.is_dir():
            raise ReportError(f"{root}: not a folder (give the folder that holds the runs)")
    run_dirs = find_run_dirs(roots)
    if not run_dirs:
        raise ReportError(
            f"no runs under {', '.join(map(str, roots))} (a run is a folder with the "
            "summary.json or config.yaml that dqn-train writes)"
        )
    runs: list[Run] = []
    skipped: list[Skipped] = []
    for path in run_dirs:
        try:
            run = load_run(path)
        except Unusable as err:
            warn(f"{path}: {err}; the run is left out")
            skipped.append(Skipped(path, str(err)))
            continue
        if run.problem:
            warn(f"{path}: {run.problem}; the run counts as incomplete")
        runs.append(run)
    for run in runs:
        read_curves(run)
        summary_eval = run.summary.evaluation if run.summary else None
        if run.score is None and summary_eval is None:
            run.unscored = "no evaluation to score"
            if include_incomplete and EVAL_TAG in run.curves:
                # No evaluation in a summary: the last one the run logged.
                last = float(run.curves[EVAL_TAG][1][-1])
                if math.isfinite(last):
                    run.score, run.score_kind, run.episodes = last, "events", run.eval_episodes
                else:
                    run.unscored = f"its last {EVAL_TAG} is {last}"
    reported = [r for r in runs if r.score is not None and (include_incomplete or not r.incomplete)]
    left_out = [r for r in runs if r not in reported]
    lines = ["# dqn-report", ""]
    lines.append(
        f"Human-normalized scores use the {refs.name} ({refs.source}): "
        "(score - random) / (human - random)."
    )
    out: dict[str, Any] = {
        "normalization": {"table": refs.table, "name": refs.name, "source": refs.source},
        "published": {
            k: {"name": v["name"], "source": v["source"]} for k, v in refs.published.items()
        },
        "method": {
            "aggregates": "mean and median of the per-game mean scores, IQM of all runs",
            "confidence_interval": "95% percentile interval of a stratified bootstrap "
            "(runs resampled within each game)",
            "reps": reps,
            "seed": seed,
        },
        "groups": [],
        "left_out": [],
    }
    plots_ok = plots is not None and _matplotlib_available()
    if plots is not None and not plots_ok:
        warn('matplotlib is not installed: no learning curves (pip install "dqn-atari[sweep]")')
    groups = group_runs(reported)
    figures: list[Figure] = []
    for group in groups:
        lines += group_section(
            group, refs, plots if plots_ok else None, len(groups), reps, seed, bins, out, figures
        )
    if left_out or skipped:
        lines += ["", "## Runs not in the tables", ""]
        if not include_incomplete:
            lines.append(
                "Incomplete runs are listed here and not aggregated; "
                "`--include-incomplete` reports those that have an evaluation."
            )
            lines.append("")
        lines += ["| run | game | seed | why |", "|---|---|---|---|"]
        rows: list[tuple[Path, str | None, int | None, str]] = []
        for run in left_out:
            reasons = [run.incomplete, run.unscored if run.score is None else None]
            why = "; ".join(r for r in reasons if r) or "no evaluation to score"
            rows.append((run.path, run.game, run.seed, why))
        rows += [(s.path, None, None, s.why) for s in skipped]
        for path, game, run_seed, why in sorted(rows, key=lambda row: str(row[0])):
            cells = (str(path), game or "?", "?" if run_seed is None else str(run_seed), why)
            lines.append("| " + " | ".join(cells) + " |")
            out["left_out"].append({"path": str(path), "game": game, "seed": run_seed, "why": why})
    if not groups:
        raise ReportError(
            f"no run to report: {len(left_out) + len(skipped)} incomplete, unscored or "
            "unreadable run(s) (--include-incomplete reports those with an evaluation)",
            listing="\n".join(lines) + "\n",
        )
    return "\n".join(lines) + "\n", out, figures


def group_section(
    group: Group,
    refs: References,
    plots: Path | None,
    group_count: int,
    reps: int,
    seed: int,
    bins: int,
    out: dict[str, Any],
    figures: list[Figure],
) -> list[str]:
    first = group.first
    lines = ["", f"## {group.number}. {group.label()}", ""]
    pub = refs.published
    header = "| game | runs | seeds | evaluation return, mean ± sd over seeds | human-normalized |"
    header += "".join(f" {v['name']} |" for v in pub.values())
    lines += [header, "|---" * (5 + len(pub)) + "|"]
    record: dict[str, Any] = {
        "number": group.number,
        "label": group.label(),
        "protocol": first.protocol,
        "algo": first.algo,
        "total_steps": first.total_steps,
        "frames": first.total_steps * first.frame_skip if first.total_steps else None,
        "differs": group.differs,
        "games": [],
    }
    normalized: list[np.ndarray] = []
    normalized_games: list[str] = []
    raw_only: list[str] = []
    kinds: set[str] = set()
    for game, runs in group.games().items():
        row, hns = game_row(game, runs, refs)
        seeds = [r.seed for r in runs]
        if len(set(seeds)) < len(seeds):
            warn(f"{game}: seed(s) repeated across runs in group {group.number}; all are counted")
        kinds.update(str(r.score_kind) for r in runs)
        if hns is None:
            raw_only.append(game)
        else:
            normalized.append(hns)
            normalized_games.append(game)
        sd = f" ± {fmt(row['score_sd'])}" if row["score_sd"] is not None else " (1 seed)"
        marks = " (incl. incomplete)" if row["incomplete_runs"] else ""
        cells = [
            game,
            str(len(runs)),
            ", ".join(str(s) for s in seeds),
            f"{fmt(row['score_mean'])}{sd}{marks}",
            fmt(row["human_normalized"], 3),
        ]
        for ref in row["published"].values():
            cells.append("-" if ref is None else f"{ref['mean']:g} ± {ref['sd']:g}")
        lines.append("| " + " | ".join(cells) + " |")
        curves = {
            tag: curve_series(runs, tag, first.total_steps or 0, bins, 2000, seed)
            for tag in (EVAL_TAG, TRAIN_TAG)
        }
        row["curves"] = curves
        if plots is not None:
            name = f"{game}.png" if group_count == 1 else f"{game}-{group.number}.png"
            title = f"{game}: {len(runs)} run(s), {group.label()}"
            finals = [r.score for r in runs if r.score_kind == "final" and r.score is not None]
            final = (float(first.total_steps or 0), float(np.mean(finals))) if finals else None
            figures.append(Figure(plots / name, title, curves, first.frame_skip, final, row))
        record["games"].append(row)
    episodes = sorted({str(r.episodes) for r in group.runs})
    lines.append("")
    source = {
        "final": "the final evaluation",
        "periodic": "the last evaluation during training",
        "events": "the last eval/return_mean logged",
    }
    used = " and ".join(source.get(k, k) for k in sorted(kinds))
    lines.append(
        f"Score of a run: mean return of {used} ({'/'.join(episodes)} games, raw score, "
        "all lives). Published columns are other agents' results, for orientation; they "
        "share neither this budget nor, for CleanRL, this evaluation."
    )
    if raw_only:
        lines.append(
            f"No {refs.name} scores for {', '.join(raw_only)}: reported raw, "
            "not in the normalized aggregate."
        )
    if normalized:
        point = point_estimates(normalized)
        ci = confidence_intervals(normalized, reps, seed)
        runs_per_game = sorted({len(s) for s in normalized})
        lines += [
            "",
            f"Aggregate over {len(normalized)} game(s) ({', '.join(normalized_games)}), "
            f"human-normalized; 95% CIs from a stratified bootstrap over runs within each game "
            f"({reps:,} resamples, percentile intervals):",
            "",
            "| metric | estimate | 95% CI |",
            "|---|---|---|",
        ]
        for name, title in (("mean", "mean"), ("median", "median"), ("iqm", "IQM")):
            lo, hi = ci[name]
            lines.append(f"| {title} | {point[name]:.3f} | [{lo:.3f}, {hi:.3f}] |")
        if runs_per_game == [1]:
            lines += ["", "One run per game: the intervals have nothing to resample."]
        record["aggregate"] = {
            "games": normalized_games,
            **{
                name: {"estimate": point[name], "ci95": list(ci[name])}
                for name in ("mean", "median", "iqm")
            },
        }
    else:
        record["aggregate"] = None
    record["raw_only_games"] = raw_only
    out["groups"].append(record)
    return lines


def _error(message: object) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)


def _fail(message: object, code: int = 2) -> NoReturn:
    _error(message)
    sys.exit(code)


def _why(err: OSError, target: Path) -> str:
    """An OSError's reason without Python's '[Errno N]', after the path it concerns where that
    is not `target` itself."""
    reason = err.strerror or str(err)
    if err.filename and Path(err.filename) != target:
        return f"{err.filename}: {reason}"
    return reason


def main(argv: list[str] | None = None) -> None:
    """Console script `dqn-report`."""
    try:
        sys.exit(_main(argv))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (`dqn-report runs | head`): stop quietly, as a tool that SIGPIPE
        # ends would, and point stdout at /dev/null so that Python's last flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, as every other bad input, instead of argparse's usage block.
        _fail(f"{message} (see dqn-report --help)")


def _path(text: str) -> Path:
    """A path argument; an empty one (`dqn-report "$RUNS"` with RUNS unset) would be Path('.'),
    the working directory, and is refused instead."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path (an unset shell variable?)")
    return Path(text)


def _main(argv: list[str] | None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):
        # A folder name that is not UTF-8 (os.walk keeps its bytes as surrogates) must not end
        # the report in a UnicodeEncodeError where stdout's encoding is strict; stderr already
        # escapes such characters by default.
        sys.stdout.reconfigure(errors="backslashreplace")
    parser = _Parser(
        prog=PROG,
        description="Tables, aggregates with bootstrap confidence intervals and learning "
        "curves from folders of dqn-train runs. A run whose files cannot be used is a warning "
        "and the others are reported. The tables are printed first; PNGs or a JSON file that "
        "cannot be written are one error line each after them, and exit 1.",
    )
    parser.add_argument("dirs", nargs="+", type=_path, metavar="DIR", help="folders of runs")
    parser.add_argument("--json", type=_path, metavar="FILE", help="write every figure as JSON")
    parser.add_argument(
        "--plots",
        type=_path,
        default=Path("report"),
        metavar="DIR",
        help="folder for the learning-curve PNGs (default: report; if it cannot be written, "
        "the tables are still printed and the exit status is 1)",
    )
    parser.add_argument("--no-plots", action="store_true", help="write no PNG")
    parser.add_argument(
        "--include-incomplete",
        action="store_true",
        help="also report runs without a finished summary, by their last evaluation",
    )
    parser.add_argument(
        "--normalize",
        default="dqn_zoo",
        metavar="TABLE",
        help="random/human table: dqn_zoo (57 games, default) or nature",
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=50_000,
        help=f"bootstrap resamples, 1 to {MAX_REPS:,} (default 50,000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap, >= 0")
    parser.add_argument(
        "--bins",
        type=int,
        default=50,
        help=f"bins of agent steps for the training-return curve, 1 to {MAX_BINS:,}",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.reps <= MAX_REPS:
        # Every resample's aggregates are kept for the percentiles: 24 bytes each.
        _fail(f"--reps must be between 1 and {MAX_REPS:,}, got {args.reps:,}")
    if not 1 <= args.bins <= MAX_BINS:
        _fail(f"--bins must be between 1 and {MAX_BINS:,}, got {args.bins:,}")
    if args.seed < 0:
        _fail(f"--seed must be >= 0 (numpy seeds are non-negative), got {args.seed}")
    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    plots = None if args.no_plots else args.plots
    try:
        refs = References.load(args.normalize)
        text, data, figures = build_report(
            args.dirs,
            args.include_incomplete,
            refs,
            plots,
            args.reps,
            args.seed,
            args.bins,
        )
    except ReportError as err:
        print(err.listing, end="")
        _fail(err, code=1)
    print(text, end="", flush=True)
    status = 0
    if figures:
        folder = figures[0].path.parent
        try:
            written = draw(figures)
        except OSError as err:
            _error(
                f"cannot write the learning curves to {folder}: {_why(err, folder)} (the tables "
                "above are complete; --plots DIR puts the PNGs elsewhere, --no-plots skips them)"
            )
            status = 1
        else:
            print("\nLearning curves: " + ", ".join(map(str, written)))
    if args.json is not None:
        try:
            make_folder(args.json.parent)
            args.json.write_text(json.dumps(data, indent=1) + "\n")
        except OSError as err:
            _error(f"cannot write {args.json}: {_why(err, args.json)}")
            status = 1
    return status


if __name__ == "__main__":
    main()
