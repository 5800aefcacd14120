"""dqn-report on fixed inputs: IQM and the stratified bootstrap against hand-computed values,
normalization tables, grouping, and bad input. Run folders are written here the way dqn-train
writes them (summary.json, config.yaml, TensorBoard events); test_sweeps.py runs the real thing."""

from __future__ import annotations

import json
import subprocess
import sys
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


def test_dqn_report_is_a_console_script() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["dqn-report"] == "dqn_atari.report:main"
    assert callable(report.main)
