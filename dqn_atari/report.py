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
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from dqn_atari.summary import SUMMARY, protocol_name, read_summary

PROG = "dqn-report"
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
    summary: dict[str, Any] | None
    score: float | None = None  # the evaluation's mean return used for this run
    score_kind: str | None = None  # final | periodic | events
    episodes: int | None = None
    eval_episodes: int | None = None  # games per evaluation during training, from the config
    incomplete: str | None = None  # why, when the run is not complete
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return json.dumps(self.settings, sort_keys=True, default=str)


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
    checkpoints/ or TensorBoard events. Hydra's and submitit's own folders are not runs."""
    found = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in (".hydra", ".submitit", "checkpoints"))
            path = Path(folder)
            events = any(f.startswith("events.out.tfevents") for f in files)
            if SUMMARY in files or (
                "config.yaml" in files and ((path / "checkpoints").is_dir() or events)
            ):
                found.append(path)
    return sorted(set(found))


def _rom_of(game: str) -> str:
    from dqn_atari.envs import UnknownGameError, resolve_game

    try:
        return resolve_game(game)
    except UnknownGameError:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()


def load_run(path: Path) -> Run | None:
    """A run from its summary.json, or from its config.yaml when it has none (incomplete)."""
    summary = read_summary(path)
    if summary is None and (path / SUMMARY).exists():
        warn(f"{path / SUMMARY} is not a dqn-train summary; the run counts as incomplete")
    config = summary.get("config") if summary else None
    if config is None:
        try:
            from omegaconf import OmegaConf

            loaded = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"))
        except Exception as err:  # any unreadable YAML: the run is skipped with the reason
            warn(f"{path}: cannot read config.yaml ({type(err).__name__}); skipped")
            return None
        config = {str(k): v for k, v in loaded.items()} if isinstance(loaded, dict) else {}
    flat = flatten(config)
    game = str(summary["game"]) if summary else str(flat.get("env.game", "?"))
    rom = str(summary["rom"]) if summary else _rom_of(game)
    protocol = (
        str(summary["protocol"])
        if summary
        else protocol_name(
            float(flat.get("env.sticky_action_prob", 0.0)), int(flat.get("env.noop_max", 0))
        )
    )
    run = Run(
        path=path,
        game=game,
        rom=rom,
        seed=flat.get("seed"),
        protocol=protocol,
        algo=str(flat.get("algo.name", "?")),
        total_steps=flat.get("total_steps"),
        agent_steps=summary.get("agent_steps") if summary else None,
        frame_skip=int(flat.get("env.frame_skip", 4)),
        settings={k: v for k, v in flat.items() if k not in NOT_THE_EXPERIMENT},
        summary=summary,
        eval_episodes=flat.get("eval_episodes"),
    )
    evaluation = (summary or {}).get("evaluation") or {}
    if evaluation:
        run.score = float(evaluation["return_mean"])
        run.score_kind = str(evaluation["kind"])
        run.episodes = int(evaluation["episodes"])
    run.incomplete = why_incomplete(run)
    return run


def why_incomplete(run: Run) -> str | None:
    s = run.summary
    if s is None:
        return "no summary.json (still running, or killed)"
    steps = f"{s['agent_steps']:,} of {s['total_steps']:,} agent steps"
    if s["status"] == "stopped":
        return f"stopped by {s.get('stopped_by')} at {steps}"
    if s["status"] == "diverged":
        return f"diverged at {steps}"
    if s["agent_steps"] < s["total_steps"]:
        return steps
    if run.score_kind != "final":
        return "finished without a final evaluation (final_eval_episodes=0)"
    return None


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
                "wall_time_s": (r.summary or {}).get("wall_time_s"),
                "agent_steps_per_s": (r.summary or {}).get("agent_steps_per_s"),
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
    with_tag = [r for r in runs if tag in r.curves]
    if not with_tag:
        return None
    if tag == EVAL_TAG:
        steps = np.unique(np.concatenate([r.curves[tag][0] for r in with_tag]))
        values = np.full((len(with_tag), steps.size), np.nan)
        for i, run in enumerate(with_tag):
            run_steps, run_values = run.curves[tag]
            values[i, np.searchsorted(steps, run_steps)] = run_values
        x = steps
    else:
        edges = np.linspace(0, max(total_steps, 1), bins + 1)
        values = np.full((len(with_tag), bins), np.nan)
        for i, run in enumerate(with_tag):
            run_steps, run_values = run.curves[tag]
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _matplotlib_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


# ---------------------------------------------------------------- the report


def build_report(
    roots: list[Path],
    include_incomplete: bool,
    refs: References,
    plots: Path | None,
    reps: int,
    seed: int,
    bins: int,
) -> tuple[str, dict[str, Any]]:
    for root in roots:
        if not root.is_dir():
            raise ReportError(f"{root}: no such folder")
    run_dirs = find_run_dirs(roots)
    if not run_dirs:
        raise ReportError(
            f"no runs under {', '.join(map(str, roots))} (a run is a folder with the "
            "summary.json or config.yaml that dqn-train writes)"
        )
    runs = [run for path in run_dirs if (run := load_run(path)) is not None]
    for run in runs:
        read_curves(run)
        if include_incomplete and run.score is None and EVAL_TAG in run.curves:
            # No evaluation in a summary: the last one the run logged.
            run.score = float(run.curves[EVAL_TAG][1][-1])
            run.score_kind = "events"
            run.episodes = run.eval_episodes
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
    for group in groups:
        lines += group_section(
            group, refs, plots if plots_ok else None, len(groups), reps, seed, bins, out
        )
    if left_out:
        lines += ["", "## Runs not in the tables", ""]
        if not include_incomplete:
            lines.append(
                "Incomplete runs are listed here and not aggregated; "
                "`--include-incomplete` reports those that have an evaluation."
            )
            lines.append("")
        lines += ["| run | game | seed | why |", "|---|---|---|---|"]
        for run in left_out:
            why = run.incomplete or "no evaluation to score"
            if run.incomplete and run.score is None:
                why += "; no evaluation to score"
            lines.append(f"| {run.path} | {run.game} | {run.seed} | {why} |")
            out["left_out"].append(
                {"path": str(run.path), "game": run.game, "seed": run.seed, "why": why}
            )
    if not groups:
        raise ReportError(
            f"no run to report: {len(left_out)} incomplete or unscored run(s) "
            "(--include-incomplete reports those with an evaluation)",
            listing="\n".join(lines) + "\n",
        )
    return "\n".join(lines) + "\n", out


def group_section(
    group: Group,
    refs: References,
    plots: Path | None,
    group_count: int,
    reps: int,
    seed: int,
    bins: int,
    out: dict[str, Any],
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
            plot_game(plots / name, title, curves, first.frame_skip, final)
            row["plot"] = str(plots / name)
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
    if plots is not None:
        lines += ["", "Learning curves: " + ", ".join(g["plot"] for g in record["games"])]
    out["groups"].append(record)
    return lines


def _fail(message: object, code: int = 2) -> NoReturn:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console script `dqn-report`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tables, aggregates with bootstrap confidence intervals and learning "
        "curves from folders of dqn-train runs.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="folders of runs")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure as JSON")
    parser.add_argument(
        "--plots",
        type=Path,
        default=Path("report"),
        metavar="DIR",
        help="folder for the learning-curve PNGs (default: report)",
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
    parser.add_argument("--reps", type=int, default=50_000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument(
        "--bins", type=int, default=50, help="bins of agent steps for the training-return curve"
    )
    args = parser.parse_args(argv)
    if args.reps < 1 or args.bins < 1:
        _fail("--reps and --bins must be >= 1")
    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    try:
        refs = References.load(args.normalize)
        text, data = build_report(
            args.dirs,
            args.include_incomplete,
            refs,
            None if args.no_plots else args.plots,
            args.reps,
            args.seed,
            args.bins,
        )
    except ReportError as err:
        print(err.listing, end="")
        _fail(err, code=1)
    print(text, end="")
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(data, indent=1) + "\n")
        except OSError as err:
            _fail(f"cannot write {args.json}: {err.strerror or err}")


if __name__ == "__main__":
    main()
