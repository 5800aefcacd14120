"""dqn-report on fixed inputs: IQM and the stratified bootstrap against hand-computed values,
normalization tables, grouping, and bad input. Run folders are written here the way dqn-train
writes them (summary.json, config.yaml, TensorBoard events); test_sweeps.py runs the real thing."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from dqn_atari import report
from dqn_atari.summary import FORMAT, SUMMARY, write_json_atomic

# ---------------------------------------------------------------- statistics


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    assert report.iqm(np.arange(1, 9)) == 4.5  # 1..8: cut 1, 2 and 7, 8 -> mean(3, 4, 5, 6)
    # 10 values: floor(10/4) = 2 cut from each end -> mean of 3..8 = 5.5
    assert report.iqm(np.array([100, 1, 2, 3, 4, 5, 6, 7, 8, -100])) == 4.5
    assert report.iqm(np.array([7.0])) == 7.0
    assert report.iqm(np.array([1.0, 2.0, 3.0])) == 2.0  # floor(3/4) = 0: the plain mean


def test_point_estimates_follow_rliable() -> None:
    scores = [np.array([0.0, 2.0]), np.array([10.0, 10.0]), np.array([4.0, 8.0])]
    # per-game means 1, 10, 6: mean 17/3, median 6; all six runs 0, 2, 4, 8, 10, 10: cut 1 each
    # end (floor(6/4)) -> mean(2, 4, 8, 10) = 6
    assert report.point_estimates(scores) == pytest.approx(
        {"mean": 17 / 3, "median": 6.0, "iqm": 6.0}
    )


def test_stratified_bootstrap_resamples_within_each_game() -> None:
    # Game A runs {0, 2}, game B runs {10, 10}. A resample of A has mean 0, 1 or 2 with
    # probabilities 1/4, 1/2, 1/4, B's mean is always 10, so the aggregate mean is 5, 5.5 or 6.
    # Pooling the games before resampling would also give other values (e.g. A drawing 10).
    scores = [np.array([0.0, 2.0]), np.array([10.0, 10.0])]
    samples = report.bootstrap_samples(scores, 40_000, np.random.default_rng(1), chunk=7_000)
    values, counts = np.unique(samples["mean"], return_counts=True)
    assert values.tolist() == [5.0, 5.5, 6.0]
    assert counts / counts.sum() == pytest.approx([0.25, 0.5, 0.25], abs=0.01)
    # Two games: the median of the per-game means is their mean.
    assert np.array_equal(samples["median"], samples["mean"])
    # IQM of the 4 pooled runs cuts one from each end: A={0,0} -> mean(0, 10) = 5,
    # otherwise the middle two are (2, 10) -> 6. P(5) = 1/4.
    values, counts = np.unique(samples["iqm"], return_counts=True)
    assert values.tolist() == [5.0, 6.0]
    assert counts[0] / counts.sum() == pytest.approx(0.25, abs=0.01)


def test_confidence_intervals_are_the_percentiles_of_the_resamples() -> None:
    scores = [np.array([0.0, 2.0]), np.array([10.0, 10.0])]
    ci = report.confidence_intervals(scores, 20_000, seed=0)
    # 2.5% and 97.5% quantiles of {5 (1/4), 5.5 (1/2), 6 (1/4)} and of {5 (1/4), 6 (3/4)}.
    assert ci == {"mean": (5.0, 6.0), "median": (5.0, 6.0), "iqm": (5.0, 6.0)}
    # One run per game: nothing to resample, the interval is the point.
    single = [np.array([0.3]), np.array([0.7])]
    assert report.confidence_intervals(single, 100, seed=0)["mean"] == pytest.approx((0.5, 0.5))
    # Same seed, same interval; another seed may differ only by resampling noise.
    wide = [np.array([0.0, 1.0, 5.0, 9.0]), np.array([2.0, 3.0, 4.0, 8.0])]
    assert report.confidence_intervals(wide, 5000, 3) == report.confidence_intervals(wide, 5000, 3)


def test_band_over_seeds() -> None:
    values = np.array([[1.0, np.nan], [3.0, 4.0]])
    mean, low, high = report.band(values, reps=4000, seed=0)
    assert mean.tolist() == [2.0, 4.0]
    assert (low[0], high[0]) == (1.0, 3.0)  # resampled means of {1, 3} lie in [1, 3]
    assert (low[1], high[1]) == (4.0, 4.0)  # only one seed has the second point
    mean, low, high = report.band(np.array([[1.0, 2.0]]), reps=10, seed=0)
    assert mean.tolist() == low.tolist() == high.tolist() == [1.0, 2.0]


def test_band_over_seeds_is_the_same_taken_a_few_points_at_a_time() -> None:
    # Seeds at 0, 10 and 5, the third missing at the last point. The resampled seeds are drawn
    # once for all points, so taking the points 1 or 3 at a time gives the same band. The mean is
    # 5 everywhere; at the last point a resample of only the first seed (or missing ones) has
    # mean 0, with chance (2/3)^3 - (1/3)^3 = 7/27, and one of only the second 10, so the 95%
    # band there is [0, 10].
    values = np.array([[0.0] * 7, [10.0] * 7, [5.0] * 6 + [np.nan]])
    whole = report.band(values, reps=4000, seed=2, columns=7)
    for columns in (1, 3):
        parts = report.band(values, reps=4000, seed=2, columns=columns)
        for a, b in zip(whole, parts, strict=True):
            assert np.array_equal(a, b)
    mean, low, high = whole
    assert mean.tolist() == [5.0] * 7
    assert low[-1] == 0.0 and high[-1] == 10.0


def test_human_normalized_scores_name_their_table() -> None:
    zoo = report.References.load("dqn_zoo")
    nature = report.References.load("nature")
    assert "dqn_atari.py" in zoo.source or "atari_data.py" in zoo.source
    assert len(zoo.normalization) == 57
    # Pong -5.7: (-5.7 + 20.7) / (14.6 + 20.7) with DQN Zoo's table, / (9.3 + 20.7) with Nature's.
    assert zoo.normalize("pong", -5.7) == pytest.approx(15 / 35.3)
    assert nature.normalize("pong", -5.7) == pytest.approx(0.5)
    assert zoo.normalize("breakout", 30.5) == pytest.approx(1.0)
    assert nature.normalize("breakout", 31.8) == pytest.approx(1.0)
    assert zoo.normalize("frogger", 10.0) is None  # not one of the 57
    for rom in ("battle_zone", "double_dunk", "name_this_game", "phoenix", "qbert"):
        assert zoo.normalize(rom, 0.0) is not None  # Atari-5 is covered
    with pytest.raises(report.ReportError, match="unknown --normalize table 'x'"):
        report.References.load("x")


# ---------------------------------------------------------------- run folders


def write_run(
    run_dir: Path,
    game: str,
    rom: str,
    seed: int,
    score: float | None,
    *,
    status: str = "finished",
    total_steps: int = 1000,
    agent_steps: int | None = None,
    sticky: float = 0.0,
    lr: float = 2.5e-4,
    eval_points: list[tuple[int, float]] | None = None,
    episodes: list[tuple[int, float]] | None = None,
    summary: bool = True,
) -> Path:
    """A run folder as dqn-train leaves it: config.yaml, events, and summary.json."""
    run_dir.mkdir(parents=True)
    config: dict[str, Any] = {
        "env": {"game": game, "frame_skip": 4, "noop_max": 30, "sticky_action_prob": sticky},
        "algo": {"name": "dqn", "lr": lr},
        "seed": seed,
        "device": "cpu",
        "total_steps": total_steps,
        "eval_episodes": 2,
        "final_eval_episodes": 3,
    }
    lines = [
        f"env:\n  game: {game}\n  frame_skip: 4\n  noop_max: 30\n  sticky_action_prob: {sticky}",
        f"algo:\n  name: dqn\n  lr: {lr}",
        f"seed: {seed}\ndevice: cpu\ntotal_steps: {total_steps}\neval_episodes: 2",
        "final_eval_episodes: 3",
    ]
    (run_dir / "config.yaml").write_text("\n".join(lines) + "\n")
    writer = SummaryWriter(log_dir=str(run_dir))
    for step, value in eval_points or []:
        writer.add_scalar("eval/return_mean", value, step)
    for step, value in episodes or []:
        writer.add_scalar("train/episode_return", value, step)
    writer.close()
    if summary:
        steps = total_steps if agent_steps is None else agent_steps
        evaluation = None
        if score is not None:
            evaluation = {"kind": "final" if status == "finished" else "periodic",
                          "agent_step": steps, "epsilon": 0.05, "episodes": 3,
                          "return_mean": score, "return_std": 0.0, "returns": [score] * 3,
                          "lengths": [100] * 3, "steps": 300}  # fmt: skip
        data = {
            "format": FORMAT,
            "status": status,
            "stopped_by": "SIGTERM" if status == "stopped" else None,
            "error": None,
            "game": game,
            "rom": rom,
            "seed": seed,
            "protocol": "Machado" if sticky == 0.25 else "Nature",
            "algo": "dqn",
            "agent_steps": steps,
            "total_steps": total_steps,
            "frames": 4 * steps,
            "frame_skip": 4,
            "wall_time_s": 10.0,
            "agent_steps_per_s": 100.0,
            "segments": [],
            "final_eval_episodes": 3,
            "evaluation": evaluation,
            "version": "0.1.0",
            "overrides": [],
            "config": config,
        }
        write_json_atomic(run_dir / SUMMARY, data)
    return run_dir


def dqn_report(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The console script's main(), run as the installed `dqn-report` runs it."""
    return subprocess.run(
        [sys.executable, "-m", "dqn_atari.report", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("dqn-report: error:")]


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    curve = [(500, -21.0), (1000, -20.0)]
    write_run(root / "0", "Pong", "pong", 0, -20.7 + 0.1 * 35.3, eval_points=curve,
              episodes=[(300, -21.0), (900, -19.0)])  # fmt: skip
    write_run(root / "1", "Pong", "pong", 1, -20.7 + 0.3 * 35.3, eval_points=curve)
    write_run(root / "2", "Breakout", "breakout", 0, 1.7 + 0.2 * 28.8)
    write_run(root / "3", "Breakout", "breakout", 1, 1.7 + 0.6 * 28.8)
    return root


def test_report_tables_aggregates_json_and_plots(sweep_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    plots = tmp_path / "plots"
    result = dqn_report(sweep_dir, "--json", out, "--plots", plots, "--reps", 20_000, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "## 1. Nature protocol, dqn, 1,000 agent steps (4,000 frames)" in text
    assert "DQN Zoo Atari-57 random/human table" in text
    # Breakout 7.46 and 18.98: mean 13.2 +- 8.1 (sample sd), normalized 0.4; Nature 401.2.
    assert "| Breakout | 2 | 0, 1 | 13.2 ± 8.1 | 0.400 | 401.2 ± 26.9 | 366.9 ± 39.9 |" in text
    assert "| Pong | 2 | 0, 1 | -13.6 ± 5.0 | 0.200 | 18.9 ± 1.3 | 20.25 ± 0.41 |" in text
    # Normalized runs: Breakout {0.2, 0.6}, Pong {0.1, 0.3}: mean = median = 0.3, IQM of
    # {0.1, 0.2, 0.3, 0.6} = mean(0.2, 0.3) = 0.25.
    assert "| mean | 0.300 |" in text and "| median | 0.300 |" in text
    assert "| IQM | 0.250 |" in text

    data = json.loads(out.read_text())
    (group,) = data["groups"]
    assert data["normalization"]["table"] == "dqn_zoo"
    agg = group["aggregate"]
    assert agg["games"] == ["Breakout", "Pong"]
    assert agg["mean"]["estimate"] == pytest.approx(0.3)
    assert agg["iqm"]["estimate"] == pytest.approx(0.25)
    # Bootstrap bounds: Breakout's mean is 0.2, 0.4 or 0.6 and Pong's 0.1, 0.2 or 0.3.
    lo, hi = agg["mean"]["ci95"]
    assert lo == pytest.approx(0.15) and hi == pytest.approx(0.45)
    pong = next(g for g in group["games"] if g["game"] == "Pong")
    assert pong["scores"] == pytest.approx([-20.7 + 3.53, -20.7 + 10.59])
    assert pong["curves"]["eval/return_mean"]["mean"] == [-21.0, -20.0]
    assert pong["curves"]["eval/return_mean"]["agent_steps"] == [500.0, 1000.0]
    assert pong["curves"]["train/episode_return"]["seeds"] == 1
    for game in ("Pong", "Breakout"):
        png = plots / f"{game}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["left_out"] == []


def test_incomplete_runs_are_listed_apart_unless_asked_for(sweep_dir: Path, tmp_path: Path) -> None:
    write_run(sweep_dir / "4", "Pong", "pong", 2, 0.0, status="stopped", agent_steps=400)
    write_run(sweep_dir / "5", "Pong", "pong", 3, None, summary=False,
              eval_points=[(500, -15.0)])  # fmt: skip
    result = dqn_report(sweep_dir, "--no-plots", "--json", tmp_path / "o.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| Pong | 2 | 0, 1 |" in result.stdout  # the table is unchanged
    assert "stopped by SIGTERM at 400 of 1,000 agent steps" in result.stdout
    assert "no summary.json (still running, or killed)" in result.stdout
    assert len(json.loads((tmp_path / "o.json").read_text())["left_out"]) == 2

    result = dqn_report(sweep_dir, "--no-plots", "--include-incomplete", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # Seeds 2 (its last periodic evaluation, 0.0) and 3 (the events' last eval, -15.0) join.
    assert "| Pong | 4 | 0, 1, 2, 3 |" in result.stdout
    assert "(incl. incomplete)" in result.stdout


def test_protocols_budgets_and_settings_are_never_mixed(sweep_dir: Path, tmp_path: Path) -> None:
    write_run(sweep_dir / "m", "Pong", "pong", 0, 5.0, sticky=0.25)
    write_run(sweep_dir / "b", "Pong", "pong", 0, 6.0, total_steps=2000)
    write_run(sweep_dir / "l", "Pong", "pong", 0, 7.0, lr=1e-4)
    result = dqn_report(sweep_dir, "--no-plots", "--json", tmp_path / "o.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "o.json").read_text())
    labels = sorted(g["label"] for g in data["groups"])
    # Where groups differ in a setting beyond protocol and budget, every label names its value.
    assert labels == [
        "Machado protocol, dqn, 1,000 agent steps (4,000 frames), algo.lr=0.00025",
        "Nature protocol, dqn, 1,000 agent steps (4,000 frames), algo.lr=0.0001",
        "Nature protocol, dqn, 1,000 agent steps (4,000 frames), algo.lr=0.00025",
        "Nature protocol, dqn, 2,000 agent steps (8,000 frames), algo.lr=0.00025",
    ]
    sizes = {g["label"]: sum(x["runs"] for x in g["games"]) for g in data["groups"]}
    assert sizes[labels[2]] == 4  # the original sweep alone
    assert all(sizes[label] == 1 for label in (labels[0], labels[1], labels[3]))


def test_speed_only_settings_do_not_split_a_group(tmp_path: Path) -> None:
    # One experiment run on the CPU, on a GPU with every speed setting on, and resumed with a
    # refilled replay memory: one group. bf16 and 16 games at once are other experiments.
    root = tmp_path / "runs"
    on_the_cpu = {"device": "cpu", "compile": False, "cuda_graph": False, "num_envs": 1,
                  "precision": "fp32", "resume": None, "refill_replay": False}  # fmt: skip
    runs = {
        "cpu": {},
        "gpu": {"device": "cuda", "compile": True, "cuda_graph": True},
        "resumed": {"resume": "runs/resumed", "refill_replay": True},
        "bf16": {"precision": "bf16"},
        "games": {"num_envs": 16},
    }
    for seed, (name, settings) in enumerate(runs.items()):
        changed = {**on_the_cpu, **settings}
        run = write_run(root / name, "Pong", "pong", seed, -20.0 + seed)
        edit_summary(run, lambda s, changed=changed: s["config"].update(changed))
    out = tmp_path / "o.json"
    result = dqn_report(root, "--no-plots", "--json", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    seeds = {g["label"]: g["games"][0]["seeds"] for g in json.loads(out.read_text())["groups"]}
    steps = "Nature protocol, dqn, 1,000 agent steps (4,000 frames)"
    assert seeds == {
        f"{steps}, num_envs=1, precision=fp32": [0, 1, 2],
        f"{steps}, num_envs=1, precision=bf16": [3],
        f"{steps}, num_envs=16, precision=fp32": [4],
    }


def test_a_game_without_reference_scores_is_reported_raw(tmp_path: Path) -> None:
    write_run(tmp_path / "runs" / "a", "Frogger", "frogger", 0, 12.0)
    write_run(tmp_path / "runs" / "b", "Pong", "pong", 0, -20.7 + 0.5 * 35.3)
    result = dqn_report(tmp_path / "runs", "--no-plots", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| Frogger | 1 | 0 | 12.0 (1 seed) | - | - | - |" in result.stdout
    assert "No DQN Zoo Atari-57 random/human table scores for Frogger: reported raw" in (
        result.stdout
    )
    assert "Aggregate over 1 game(s) (Pong)" in result.stdout
    # With the Nature table, Pong is 0.5 * 35.3 - ... normalized by (9.3 + 20.7).
    nature = dqn_report(tmp_path / "runs", "--no-plots", "--normalize", "nature", cwd=tmp_path)
    assert f"| {(0.5 * 35.3) / 30:.3f} |" in nature.stdout
    assert "Nature DQN table (Mnih et al., 2015" in nature.stdout


def test_unreadable_event_files_are_one_warning_and_the_run_still_counts(
    sweep_dir: Path, tmp_path: Path
) -> None:
    (sweep_dir / "0" / "events.out.tfevents.0.broken").write_bytes(b"\x00garbage" * 40)
    result = dqn_report(sweep_dir, "--plots", tmp_path / "p", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "cannot read the event file" in warnings[0], result.stderr
    assert "events.out.tfevents.0.broken" in warnings[0]
    assert "Traceback" not in result.stderr
    assert "| Pong | 2 | 0, 1 |" in result.stdout


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("empty", "no runs under"),
        ("missing", "no such folder"),
        ("only_incomplete", "no run to report: 1 incomplete"),
    ],
)
def test_nothing_to_report_is_one_line_and_non_zero(
    setup: str, message: str, tmp_path: Path
) -> None:
    target = tmp_path / "runs"
    if setup != "missing":
        target.mkdir()
        (target / "notes.txt").write_text("not a run")
    if setup == "only_incomplete":
        write_run(target / "r", "Pong", "pong", 0, None, summary=False)
    result = dqn_report(target, "--no-plots", cwd=tmp_path)
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    if setup == "only_incomplete":
        assert "no summary.json" in result.stdout  # what could be said is still said


def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    result = dqn_report(tmp_path, "--reps", 0, cwd=tmp_path)
    assert result.returncode == 2 and len(error_lines(result.stderr)) == 1
    result = dqn_report(tmp_path, "--normalize", "nope", cwd=tmp_path)
    assert result.returncode == 1 and "unknown --normalize table" in result.stderr


# ---------------------------------------------------------------- real-world folders


def edit_summary(run_dir: Path, change: Callable[[dict[str, Any]], object]) -> None:
    """Rewrite a run's summary.json by hand: `change` edits it in place, or returns what the file
    is to hold instead."""
    path = run_dir / SUMMARY
    data = json.loads(path.read_text())
    replaced = change(data)
    path.write_text(json.dumps(data if replaced is None else replaced))


def without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("dqn-report: warning:")]


def left_out_row(stdout: str, run_dir: Path) -> str:
    (row,) = [line for line in stdout.splitlines() if line.startswith(f"| {run_dir} |")]
    return row


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda s: without(s, "agent_steps"), "summary.json: agent_steps is missing"),
        (
            lambda s: s.update(agent_steps="1500"),
            'summary.json: agent_steps must be an integer >= 0, got "1500"',
        ),
        (
            lambda s: s["evaluation"].update(return_mean=None),
            "summary.json: evaluation.return_mean must be a number, got null",
        ),
        (
            lambda s: s["evaluation"].update(return_mean="-5.0"),
            'summary.json: evaluation.return_mean must be a number, got "-5.0"',
        ),
        (
            lambda s: s["evaluation"].update(episodes=0, returns=[]),
            "summary.json: evaluation.episodes must be an integer >= 1, got 0",
        ),
        (lambda s: s.update(config=[1, 2]), "summary.json: config is a list, not an object"),
        (
            lambda s: s["config"]["env"].update(frame_skip="four"),
            'summary.json: config.env.frame_skip must be an integer >= 1, got "four"',
        ),
        (lambda s: s.update(status=True), "summary.json: status must be a string, got true"),
        (lambda s: [s], "summary.json: not a dqn-train summary (a list, not an object)"),
    ],
    ids=["no-agent_steps", "str-agent_steps", "null-return", "str-return", "no-games",
         "list-config", "str-frame_skip", "bool-status", "list"],
)  # fmt: skip
def test_a_malformed_summary_is_one_warning_and_the_rest_is_reported(
    change: Callable[[dict[str, Any]], object], reason: str, sweep_dir: Path, tmp_path: Path
) -> None:
    bad = write_run(sweep_dir / "bad", "Pong", "pong", 2, -5.0)
    edit_summary(bad, change)
    result = dqn_report(sweep_dir, "--no-plots", "--reps", 2000, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert warning_lines(result.stderr) == [
        f"dqn-report: warning: {bad}: {reason}; the run counts as incomplete"
    ]
    # The other runs, as without it; the bad one is listed apart, by its config.yaml.
    assert "| Pong | 2 | 0, 1 | -13.6 ± 5.0 | 0.200 |" in result.stdout
    assert "| mean | 0.300 |" in result.stdout
    assert (
        left_out_row(result.stdout, bad)
        == f"| {bad} | Pong | 2 | {reason}; no evaluation to score |"
    )


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ("frame_skip: 4", "frame_skip: four",
         'config.yaml: env.frame_skip must be an integer >= 1, got "four"'),
        ("total_steps: 1000", "total_steps: lots",
         'config.yaml: total_steps must be an integer >= 1, got "lots"'),
        ("seed: 2", "seed: [2]", "config.yaml: seed must be an integer, got [2]"),
        ("env:", "env: [", "config.yaml: not valid YAML ("),
    ],
    ids=["str-frame_skip", "str-total_steps", "list-seed", "not-yaml"],
)  # fmt: skip
def test_a_bad_config_yaml_is_one_warning_and_the_rest_is_reported(
    old: str, new: str, reason: str, sweep_dir: Path, tmp_path: Path
) -> None:
    bad = write_run(sweep_dir / "bad", "Pong", "pong", 2, None, summary=False)
    config = bad / "config.yaml"
    config.write_text(config.read_text().replace(old, new))
    result = dqn_report(sweep_dir, "--no-plots", "--reps", 2000, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = warning_lines(result.stderr)
    assert line.startswith(f"dqn-report: warning: {bad}: {reason}"), line
    assert line.endswith("; the run is left out")
    assert "| Pong | 2 | 0, 1 | -13.6 ± 5.0 | 0.200 |" in result.stdout
    assert left_out_row(result.stdout, bad).startswith(f"| {bad} | ? | ? | {reason}")


def test_a_truncated_summary_is_unreadable_not_missing(sweep_dir: Path, tmp_path: Path) -> None:
    bad = write_run(sweep_dir / "cut", "Pong", "pong", 2, -5.0, eval_points=[(1000, -8.0)])
    summary = bad / SUMMARY
    summary.write_text(summary.read_text()[:200])  # a copy cut short
    result = dqn_report(sweep_dir, "--no-plots", "--reps", 2000, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = warning_lines(result.stderr)
    assert f"{bad}: summary.json: unreadable, truncated or not JSON (" in line
    row = left_out_row(result.stdout, bad)
    assert "summary.json: unreadable, truncated or not JSON" in row
    assert "no summary.json" not in result.stdout
    # Like a run without a summary, --include-incomplete scores it by its last logged evaluation.
    result = dqn_report(sweep_dir, "--no-plots", "--include-incomplete", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| Pong | 3 | 0, 1, 2 |" in result.stdout
    data_row = next(line for line in result.stdout.splitlines() if line.startswith("| Pong |"))
    # (-17.17 - 10.11 - 8) / 3 = -11.76
    assert "| -11.8 ± " in data_row


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_non_finite_return_is_flagged_and_left_out(
    value: str, sweep_dir: Path, tmp_path: Path
) -> None:
    bad = write_run(sweep_dir / "bad", "Pong", "pong", 2, float(value))
    out = tmp_path / "o.json"
    for extra in ([], ["--include-incomplete"]):
        result = dqn_report(sweep_dir, "--no-plots", "--json", out, *extra, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        reason = f"summary.json: evaluation.return_mean is {value}"
        assert warning_lines(result.stderr) == [
            f"dqn-report: warning: {bad}: {reason}; the run counts as incomplete"
        ]
        # The aggregates are those of the four finite runs (see the test of the tables above).
        assert "| Pong | 2 | 0, 1 | -13.6 ± 5.0 | 0.200 |" in result.stdout
        assert "| mean | 0.300 |" in result.stdout and "| IQM | 0.250 |" in result.stdout
        assert left_out_row(result.stdout, bad) == f"| {bad} | Pong | 2 | {reason} |"
        data = json.loads(out.read_text())  # strict JSON: no NaN or Infinity in it
        assert data["left_out"] == [{"path": str(bad), "game": "Pong", "seed": 2, "why": reason}]


def test_non_finite_points_of_a_curve_are_left_out(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    write_run(root / "0", "Pong", "pong", 0, -20.0, eval_points=[(500, -21.0), (1000, -20.0)])
    write_run(root / "1", "Pong", "pong", 1, -18.0, eval_points=[(500, -19.0), (1000, math.inf)])
    out = tmp_path / "o.json"
    result = dqn_report(root, "--no-plots", "--json", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = warning_lines(result.stderr)
    assert f"{root / '1'}: 1 of 2 eval/return_mean values" in line
    (pong,) = json.loads(out.read_text())["groups"][0]["games"]
    # Step 500: mean of -21 and -19; step 1000: seed 0's -20 alone.
    assert pong["curves"]["eval/return_mean"]["mean"] == [-20.0, -20.0]


def test_a_non_finite_last_evaluation_does_not_score_an_incomplete_run(
    sweep_dir: Path, tmp_path: Path
) -> None:
    bad = write_run(sweep_dir / "bad", "Pong", "pong", 2, None, summary=False,
                    eval_points=[(500, -15.0), (1000, math.nan)])  # fmt: skip
    result = dqn_report(sweep_dir, "--no-plots", "--include-incomplete", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| Pong | 2 | 0, 1 | -13.6 ± 5.0 | 0.200 |" in result.stdout
    assert left_out_row(result.stdout, bad) == (
        f"| {bad} | Pong | 2 | no summary.json (still running, or killed); "
        "its last eval/return_mean is nan |"
    )


def test_an_unknown_status_is_incomplete(sweep_dir: Path, tmp_path: Path) -> None:
    bad = write_run(sweep_dir / "bad", "Pong", "pong", 2, -5.0)
    edit_summary(bad, lambda s: s.update(status="paused"))
    result = dqn_report(sweep_dir, "--no-plots", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    reason = 'summary.json: unknown status "paused"'
    assert warning_lines(result.stderr) == [
        f"dqn-report: warning: {bad}: {reason}; the run counts as incomplete"
    ]
    assert "| Pong | 2 | 0, 1 | -13.6 ± 5.0 | 0.200 |" in result.stdout
    assert left_out_row(result.stdout, bad) == f"| {bad} | Pong | 2 | {reason} |"


def test_a_run_given_twice_counts_once(sweep_dir: Path, tmp_path: Path) -> None:
    # The same folder relative and absolute, a folder and its parent, and a path through '..'.
    args = ["sweep", sweep_dir, sweep_dir / "0", "sweep/1/../2"]
    result = dqn_report(*args, "--no-plots", "--json", tmp_path / "o.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert warning_lines(result.stderr) == []  # no "seed(s) repeated"
    assert "| Pong | 2 | 0, 1 | -13.6 ± 5.0 | 0.200 |" in result.stdout
    assert "| Breakout | 2 | 0, 1 | 13.2 ± 8.1 | 0.400 |" in result.stdout
    (group,) = json.loads((tmp_path / "o.json").read_text())["groups"]
    paths = [r["path"] for g in group["games"] for r in g["runs_detail"]]
    assert sorted(paths) == ["sweep/0", "sweep/1", "sweep/2", "sweep/3"]  # as first named


def test_outputs_that_cannot_be_written_come_after_the_tables(
    sweep_dir: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    if os.geteuid() == 0:
        # Root writes into a read-only folder: a folder under a regular file fails for anyone.
        read_only, why = blocker / "plots", "Not a directory"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        read_only, why = locked / "plots", "Permission denied"
    curves = "cannot write the learning curves to"
    cases = [
        (["--plots", blocker], f"{curves} {blocker}: a file, not a folder"),
        (["--plots", read_only], f"{curves} {read_only}: {why}"),
        # The default, report/, where the working directory holds a file of that name.
        ([], f"{curves} report: a file, not a folder"),
        (["--no-plots", "--json", blocker / "o.json"],
         f"cannot write {blocker / 'o.json'}: {blocker}: a file, not a folder"),
    ]  # fmt: skip
    (tmp_path / "report").write_text("a file where the default plots folder would go")
    for args, message in cases:
        out = tmp_path / "o.json"
        out.unlink(missing_ok=True)
        json_args = [] if "--json" in args else ["--json", out]
        result = dqn_report(sweep_dir, "--reps", 2000, *args, *json_args, cwd=tmp_path)
        assert result.returncode == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr
        (line,) = error_lines(result.stderr)
        assert line.startswith(f"dqn-report: error: {message}"), line
        # The tables were printed in full, and the JSON (where it could go) written.
        assert "| Pong | 2 | 0, 1 | -13.6 ± 5.0 | 0.200 |" in result.stdout
        assert "| IQM | 0.250 |" in result.stdout
        assert "Learning curves:" not in result.stdout
        if json_args:
            (group,) = json.loads(out.read_text())["groups"]
            assert all("plot" not in game for game in group["games"])


def test_bad_numbers_are_one_line(tmp_path: Path) -> None:
    cases = [
        (["--reps", 10**9], "--reps must be between 1 and 1,000,000, got 1,000,000,000"),
        (["--reps", 0], "--reps must be between 1 and 1,000,000, got 0"),
        (["--bins", 0], "--bins must be between 1 and 10,000, got 0"),
        (["--bins", -3], "--bins must be between 1 and 10,000, got -3"),
        (["--bins", 10**9], "--bins must be between 1 and 10,000, got 1,000,000,000"),
        (["--seed", -1], "--seed must be >= 0"),
        (["--seed", "abc"], "argument --seed: invalid int value: 'abc'"),  # argparse's, one line
        # An unset variable (`dqn-report "$RUNS"`) would otherwise mean the working directory.
        (["--plots", ""], "argument --plots: an empty path"),
        (["--no-plots", "--json", ""], "argument --json: an empty path"),
    ]
    for args, message in cases:
        result = dqn_report(tmp_path, *args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"dqn-report: error: {message}"), line
    result = dqn_report("", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("dqn-report: error: argument DIR: an empty path")
    assert len(result.stderr.splitlines()) == 1


def test_a_folder_name_that_is_not_utf8_is_printed_escaped(sweep_dir: Path, tmp_path: Path) -> None:
    stopped = write_run(sweep_dir / "s", "Pong", "pong", 2, None, status="stopped", agent_steps=9)
    odd = Path(os.fsdecode(os.fsencode(sweep_dir) + b"/run-\xff"))  # Latin-1 'ÿ' on disk
    stopped.rename(odd)
    # Where the locale's UTF-8 is strict (en_US.UTF-8; C.UTF-8 escapes by itself).
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    result = subprocess.run(
        [sys.executable, "-m", "dqn_atari.report", sweep_dir, "--no-plots"],
        cwd=tmp_path, capture_output=True, env=env, timeout=300,
    )  # fmt: skip
    stdout, stderr = result.stdout.decode(), result.stderr.decode(errors="replace")
    assert result.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert f"| {sweep_dir}/run-\\udcff | Pong | 2 | stopped by SIGTERM at 9 of 1,000" in stdout


def test_the_bootstrap_at_its_cap_agrees_with_the_hand_computed_interval() -> None:
    # The largest --reps: the resamples of game A {0, 2} (mean 0, 1 or 2) beside game B {10, 10}
    # give aggregate means 5, 5.5, 6 with probabilities 1/4, 1/2, 1/4, so the 2.5% and 97.5%
    # quantiles are 5 and 6 however the million draws are chunked.
    scores = [np.array([0.0, 2.0]), np.array([10.0, 10.0])]
    ci = report.confidence_intervals(scores, report.MAX_REPS, seed=0)
    assert ci == {"mean": (5.0, 6.0), "median": (5.0, 6.0), "iqm": (5.0, 6.0)}


def test_a_file_given_as_the_folder_is_one_line(sweep_dir: Path, tmp_path: Path) -> None:
    result = dqn_report(sweep_dir / "0" / SUMMARY, "--no-plots", cwd=tmp_path)
    assert result.returncode == 1
    (line,) = error_lines(result.stderr)
    assert f"{sweep_dir / '0' / SUMMARY}: not a folder" in line


def test_ctrl_c_is_one_line_and_exit_130(sweep_dir: Path, tmp_path: Path) -> None:
    """SIGINT to a real dqn-report that cannot have finished: its tables are larger than the
    pipe they go to, which the test does not read until after the signal."""
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_SETPIPE_SZ"):
        pytest.skip("needs Linux's F_SETPIPE_SZ to size the pipe")
    # A damaged event file in the first run: its warning says dqn-report is in main(), reading
    # the runs' curves.
    broken = sweep_dir / "0" / "events.out.tfevents.0.broken"
    broken.write_bytes(b"\x00garbage" * 40)
    # Incomplete runs with long names fill the "not in the tables" list.
    long = [write_run(sweep_dir / f"{i:02d}-{'x' * 200}", "Pong", "pong", 10 + i, None,
                      summary=False) for i in range(40)]  # fmt: skip
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
        capacity = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
        assert sum(len(str(p)) for p in long) > 2 * capacity
        proc = subprocess.Popen(
            [sys.executable, "-m", "dqn_atari.report", sweep_dir, "--no-plots"],
            cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
            # Python turns SIGINT into KeyboardInterrupt only where it is not ignored already,
            # as it is under a launcher without job control.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        os.close(write_end)
        write_end = -1
        try:
            assert proc.stderr is not None
            first = proc.stderr.readline()
            assert first.startswith("dqn-report: warning: cannot read the event file"), first
            assert str(broken) in first
            os.kill(proc.pid, signal.SIGINT)
            with os.fdopen(read_end, "rb") as tables:
                read_end = -1
                tables.read()
            rest = proc.stderr.read()
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
    assert code == 130, rest
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest
    assert rest.splitlines() == ["dqn-report: interrupted"]


def test_a_closed_pipe_ends_quietly(sweep_dir: Path, tmp_path: Path) -> None:
    """`dqn-report runs | head` where head has gone: no BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # before dqn-report starts, so that its first write fails
    try:
        result = subprocess.run(
            [sys.executable, "-m", "dqn_atari.report", sweep_dir, "--no-plots"],
            cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.returncode == 1
    assert result.stderr == ""


def test_the_report_does_not_import_torch() -> None:
    """A report needs no torch: importing it costs seconds of start-up before main() can turn a
    Ctrl-C into one line."""
    code = "import sys, dqn_atari.report; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_dqn_report_is_a_console_script() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["dqn-report"] == "dqn_atari.report:main"
    assert callable(report.main)
