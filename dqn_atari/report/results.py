"""The report as data: folders of runs -> one JSON-able dict (per group, a row per game with its
scores and curves, and the aggregate over games with its confidence intervals; the runs left
out, with why) and the learning-curve figures still to be drawn.

`markdown.render` prints this dict and `--json` writes it, so the tables and the JSON cannot
disagree. Which runs are scored: those with a finished summary; with `include_incomplete`, also
the rest that have an evaluation (their summary's last, or the last one their events logged).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from dqn_atari.report.grouping import Group, group_runs
from dqn_atari.report.messages import ReportError, warn
from dqn_atari.report.plots import Figure, matplotlib_available
from dqn_atari.report.references import References
from dqn_atari.report.run_files import Unusable
from dqn_atari.report.runs import CURVES, Run, Skipped, find_run_dirs, load_run, read_curves
from dqn_atari.report.stats import band, confidence_intervals, point_estimates
from dqn_atari.tags import EVAL_RETURN_MEAN


def build_report(
    roots: list[Path],
    include_incomplete: bool,
    refs: References,
    plots: Path | None,
    reps: int,
    seed: int,
    bins: int,
) -> tuple[dict[str, Any], list[Figure]]:
    """The report's data, and its figures to be drawn into `plots` (None: no PNGs). With no
    run to score, `groups` is empty and `left_out` says why each run is not in it. Raises
    ReportError for a folder that is missing or holds no runs."""
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
            if include_incomplete and EVAL_RETURN_MEAN in run.curves:
                # No evaluation in a summary: the last one the run logged.
                last = float(run.curves[EVAL_RETURN_MEAN][1][-1])
                if math.isfinite(last):
                    run.score, run.score_kind, run.episodes = last, "events", run.eval_episodes
                else:
                    run.unscored = f"its last {EVAL_RETURN_MEAN} is {last}"
    reported = [r for r in runs if r.score is not None and (include_incomplete or not r.incomplete)]
    left_out = [r for r in runs if r not in reported]
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
    plots_ok = plots is not None and matplotlib_available()
    if plots is not None and not plots_ok:
        warn('matplotlib is not installed: no learning curves (pip install "dqn-atari[sweep]")')
    groups = group_runs(reported)
    figures: list[Figure] = []
    for group in groups:
        out["groups"].append(
            group_record(
                group, refs, plots if plots_ok else None, len(groups), reps, seed, bins, figures
            )
        )
    rows: list[tuple[Path, str | None, int | None, str]] = []
    for run in left_out:
        reasons = [run.incomplete, run.unscored if run.score is None else None]
        why = "; ".join(r for r in reasons if r) or "no evaluation to score"
        rows.append((run.path, run.game, run.seed, why))
    rows += [(s.path, None, None, s.why) for s in skipped]
    for path, game, run_seed, why in sorted(rows, key=lambda row: str(row[0])):
        out["left_out"].append({"path": str(path), "game": game, "seed": run_seed, "why": why})
    return out, figures


def group_record(
    group: Group,
    refs: References,
    plots: Path | None,
    group_count: int,
    reps: int,
    seed: int,
    bins: int,
    figures: list[Figure],
) -> dict[str, Any]:
    """One group's data: a row per game, and the aggregate over the games that have reference
    scores; the group's figures are appended to `figures`."""
    first = group.first
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
    for game, runs in group.games().items():
        row, hns = game_row(game, runs, refs)
        seeds = [r.seed for r in runs]
        if len(set(seeds)) < len(seeds):
            warn(f"{game}: seed(s) repeated across runs in group {group.number}; all are counted")
        if hns is None:
            raw_only.append(game)
        else:
            normalized.append(hns)
            normalized_games.append(game)
        curves = {
            tag: curve_series(runs, tag, first.total_steps or 0, bins, 2000, seed) for tag in CURVES
        }
        row["curves"] = curves
        if plots is not None:
            name = f"{game}.png" if group_count == 1 else f"{game}-{group.number}.png"
            title = f"{game}: {len(runs)} run(s), {group.label()}"
            finals = [r.score for r in runs if r.score_kind == "final" and r.score is not None]
            final = (float(first.total_steps or 0), float(np.mean(finals))) if finals else None
            figures.append(Figure(plots / name, title, curves, first.frame_skip, final, row))
        record["games"].append(row)
    if normalized:
        point = point_estimates(normalized)
        ci = confidence_intervals(normalized, reps, seed)
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
    return record


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
    if tag == EVAL_RETURN_MEAN:
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
