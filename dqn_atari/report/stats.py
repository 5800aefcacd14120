"""The report's statistics: IQM, the aggregates over games, their stratified-bootstrap
confidence intervals (Agarwal et al., 2021, as rliable computes them, in numpy), human-normalized
scores, and the bootstrap band of a curve over seeds."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np


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
