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
(`run_files`), and a run that fails is one warning and a row of the runs left out, never a
traceback that loses the others. The tables are printed before any file is written, so a folder
the PNGs cannot go to costs no table.

The modules, in the order the data goes through them:

    runs        finding runs, one Run from its files, why it is incomplete, its curves
    run_files   summary.json and config.yaml, read and checked (Unusable names file, key, value)
    grouping    which runs are one experiment; each group's label
    results     the report as data (the dict --json writes): rows, aggregates, curves, left out
    stats       IQM, aggregates, stratified-bootstrap intervals, bands over seeds
    references  random/human tables and published scores, from data/atari_reference.json
    markdown    the tables, rendered from that data
    plots       the learning-curve PNGs (matplotlib, imported only to draw)
    outputs     the files written, and why one could not be
    messages    warnings and ReportError, one line each
    cli         main(): the arguments, the order of the outputs, the exit codes

Nothing here imports torch (dqn_atari.summary and envs are imported where they are used), so
that `dqn-report` starts in a fraction of a second and a Ctrl-C is one line from the start.
"""

from dqn_atari.report.cli import MAX_BINS, MAX_REPS, main
from dqn_atari.report.messages import ReportError
from dqn_atari.report.references import References
from dqn_atari.report.stats import (
    band,
    bootstrap_samples,
    confidence_intervals,
    human_normalized,
    iqm,
    point_estimates,
)

__all__ = [
    "MAX_BINS",
    "MAX_REPS",
    "References",
    "ReportError",
    "band",
    "bootstrap_samples",
    "confidence_intervals",
    "human_normalized",
    "iqm",
    "main",
    "point_estimates",
]
