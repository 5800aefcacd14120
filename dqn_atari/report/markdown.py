"""The report's Markdown, rendered from the data `results.build_report` makes (the dict that
`--json` writes): the normalization table's name, a section per group (a row per game, what a
run's score is, the aggregate over games), and the runs not in the tables."""

from __future__ import annotations

import math
from typing import Any

from dqn_atari.tags import EVAL_RETURN_MEAN

# What a run's score is, by where it came from (Run.score_kind).
SCORE_SOURCES = {
    "final": "the final evaluation",
    "periodic": "the last evaluation during training",
    "events": f"the last {EVAL_RETURN_MEAN} logged",
}
AGGREGATES = (("mean", "mean"), ("median", "median"), ("iqm", "IQM"))  # key, heading


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def render(report: dict[str, Any], include_incomplete: bool) -> str:
    """The whole report; `include_incomplete` says whether incomplete runs were asked for."""
    norm = report["normalization"]
    lines = ["# dqn-report", ""]
    lines.append(
        f"Human-normalized scores use the {norm['name']} ({norm['source']}): "
        "(score - random) / (human - random)."
    )
    for group in report["groups"]:
        lines += group_section(group, report)
    if report["left_out"]:
        lines += ["", "## Runs not in the tables", ""]
        if not include_incomplete:
            lines.append(
                "Incomplete runs are listed here and not aggregated; "
                "`--include-incomplete` reports those that have an evaluation."
            )
            lines.append("")
        lines += ["| run | game | seed | why |", "|---|---|---|---|"]
        for run in report["left_out"]:
            seed = "?" if run["seed"] is None else str(run["seed"])
            cells = (run["path"], run["game"] or "?", seed, run["why"])
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def group_section(group: dict[str, Any], report: dict[str, Any]) -> list[str]:
    lines = ["", f"## {group['number']}. {group['label']}", ""]
    published = report["published"]
    header = "| game | runs | seeds | evaluation return, mean ± sd over seeds | human-normalized |"
    header += "".join(f" {v['name']} |" for v in published.values())
    lines += [header, "|---" * (5 + len(published)) + "|"]
    for row in group["games"]:
        sd = f" ± {fmt(row['score_sd'])}" if row["score_sd"] is not None else " (1 seed)"
        marks = " (incl. incomplete)" if row["incomplete_runs"] else ""
        cells = [
            row["game"],
            str(row["runs"]),
            ", ".join(str(s) for s in row["seeds"]),
            f"{fmt(row['score_mean'])}{sd}{marks}",
            fmt(row["human_normalized"], 3),
        ]
        for ref in row["published"].values():
            cells.append("-" if ref is None else f"{ref['mean']:g} ± {ref['sd']:g}")
        lines.append("| " + " | ".join(cells) + " |")
    runs = [run for row in group["games"] for run in row["runs_detail"]]
    episodes = sorted({str(run["episodes"]) for run in runs})
    kinds = sorted({str(run["score_kind"]) for run in runs})
    used = " and ".join(SCORE_SOURCES.get(k, k) for k in kinds)
    lines.append("")
    lines.append(
        f"Score of a run: mean return of {used} ({'/'.join(episodes)} games, raw score, "
        "all lives). Published columns are other agents' results, for orientation; they "
        "share neither this budget nor, for CleanRL, this evaluation."
    )
    if group["raw_only_games"]:
        lines.append(
            f"No {report['normalization']['name']} scores for "
            f"{', '.join(group['raw_only_games'])}: reported raw, not in the normalized aggregate."
        )
    aggregate = group["aggregate"]
    if aggregate is not None:
        games = aggregate["games"]
        lines += [
            "",
            f"Aggregate over {len(games)} game(s) ({', '.join(games)}), "
            f"human-normalized; 95% CIs from a stratified bootstrap over runs within each game "
            f"({report['method']['reps']:,} resamples, percentile intervals):",
            "",
            "| metric | estimate | 95% CI |",
            "|---|---|---|",
        ]
        for name, title in AGGREGATES:
            lo, hi = aggregate[name]["ci95"]
            lines.append(f"| {title} | {aggregate[name]['estimate']:.3f} | [{lo:.3f}, {hi:.3f}] |")
        runs_per_game = {
            len(row["human_normalized_runs"])
            for row in group["games"]
            if row["human_normalized_runs"] is not None
        }
        if runs_per_game == {1}:
            lines += ["", "One run per game: the intervals have nothing to resample."]
    return lines
