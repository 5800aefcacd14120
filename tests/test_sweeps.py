"""End-to-end sweeps: real `dqn-train -m` with Hydra's joblib launcher and submitit's local
executor (the Slurm launcher's engine, run on this machine), a pre-empted job that is requeued
and continues, and `dqn-report` on what they wrote. Tiny Pong runs on the CPU."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

TRAIN = shutil.which("dqn-train")
if TRAIN is None:  # pragma: no cover - the README install provides it
    pytest.fail("dqn-train is not installed: pip install -e '.[dev]'", pytrace=False)

TINY = [
    "env=Pong",
    "seed=0,1",
    "learning_starts=100",
    "buffer_size=2000",
    "eval_interval=0",
    "final_eval_episodes=2",
    "eval_max_episode_frames=400",
    "progress_interval_s=60",
]


def summaries(sweep_dir: Path) -> dict[int, dict[str, Any]]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")}


def dqn_report(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dqn_atari.report", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def check_report(sweep_dir: Path, tmp_path: Path) -> None:
    """dqn-report's table, JSON and PNG hold the runs' own numbers."""
    runs = summaries(sweep_dir)
    out, plots = tmp_path / "report.json", tmp_path / "plots"
    result = dqn_report(sweep_dir, "--json", out, "--plots", plots, "--reps", 2000, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    (group,) = json.loads(out.read_text())["groups"]
    (pong,) = group["games"]
    assert pong["game"] == "Pong" and pong["seeds"] == [0, 1]
    assert pong["scores"] == [runs[0]["evaluation"]["return_mean"],
                              runs[1]["evaluation"]["return_mean"]]  # fmt: skip
    mean = sum(pong["scores"]) / 2
    assert pong["human_normalized"] == pytest.approx((mean + 20.7) / 35.3)
    assert group["aggregate"]["mean"]["estimate"] == pytest.approx(pong["human_normalized"])
    assert f"| Pong | 2 | 0, 1 | {mean:,.1f} ± " in result.stdout
    assert (plots / "Pong.png").read_bytes()[:4] == b"\x89PNG"


def test_joblib_sweep_runs_two_jobs_and_reports_them(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY, "total_steps=300"]
    result = subprocess.run(
        [TRAIN, *args, "device=auto", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = summaries(sweep_dir)
    assert sorted(runs) == [0, 1]
    for job, summary in runs.items():
        assert summary["status"] == "finished" and summary["seed"] == job
        assert summary["agent_steps"] == summary["total_steps"] == 300
        assert summary["protocol"] == "Nature" and summary["game"] == "Pong"
        assert summary["evaluation"]["kind"] == "final"
        assert len(summary["evaluation"]["returns"]) == 2
        assert "device=auto" in summary["overrides"]
        assert summary["device"] == "cpu"  # job_device(0 GPUs, job) on this machine
    check_report(sweep_dir, tmp_path)


def _tasks(sweep_dir: Path) -> list[int]:
    """PIDs of the job processes submitit's local controllers started (the folder of each job
    under .submitit/ is named after its controller's PID)."""
    pids = []
    for folder in (sweep_dir / ".submitit").iterdir():
        if folder.name.isdigit():
            children = Path(f"/proc/{folder.name}/task/{folder.name}/children")
            pids += [int(pid) for pid in children.read_text().split()]
    return pids


def test_submitit_sweep_is_preempted_requeued_and_continues(tmp_path: Path) -> None:
    """Both jobs get submitit's pre-emption signal (SIGUSR2) mid-run: each stops at its step with
    a checkpoint, submitit requeues it, and the requeued job continues the same run."""
    sweep_dir = tmp_path / "sweep"
    total = 20_000  # mostly random play before learning_starts: fast, and long enough to signal
    args = ["-m", "hydra/launcher=submitit_local", *TINY, f"total_steps={total}"]
    args += [f"learning_starts={total - 100}", "checkpoint_interval=100", "device=cpu"]
    proc = subprocess.Popen(
        [TRAIN, *args, f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        checkpoints = [sweep_dir / str(j) / "checkpoints" / "latest.pt" for j in (0, 1)]
        while not all(c.exists() for c in checkpoints):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the jobs wrote no checkpoint"
            time.sleep(0.2)
        tasks = _tasks(sweep_dir)
        assert len(tasks) == 2
        for pid in tasks:
            os.kill(pid, signal.SIGUSR2)
        output, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    logs = "".join(p.read_text() for p in (sweep_dir / ".submitit").glob("*/*_log.err"))
    assert logs.count("stopped by SIGUSR2 at agent step") == 2, logs[-3000:]
    assert logs.count("submitit requeues this job") == 2
    runs = summaries(sweep_dir)
    for job in (0, 1):
        summary = runs[job]
        assert summary["status"] == "finished" and summary["agent_steps"] == total
        first, second = summary["segments"]  # the pre-empted process and the requeued one
        assert first["start_step"] == 0 and 0 < first["end_step"] < total
        assert second == {**second, "start_step": first["end_step"], "end_step": total}
        assert f"resumed {sweep_dir / str(job)} at agent step {first['end_step']:,}" in logs
        assert summary["evaluation"]["kind"] == "final"
    check_report(sweep_dir, tmp_path)


def test_a_diverged_run_writes_its_summary(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["env=Pong", "total_steps=600", "learning_starts=200", "buffer_size=2000"]
    args += ["log_interval=100", "eval_interval=0", "algo.lr=1e30", "device=cpu"]
    result = subprocess.run(
        [TRAIN, *args, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert summary["error"].startswith("training diverged by agent step")
    assert 200 < summary["agent_steps"] < 600 and summary["total_steps"] == 600
    report = dqn_report(run_dir, "--no-plots", cwd=tmp_path)
    assert report.returncode == 1 and "diverged at" in report.stdout


# ---------------------------------------------------------------- a job that fails

FAILING = [
    "env=Pong",
    "device=cpu",
    "total_steps=400",
    "learning_starts=200",
    "buffer_size=1000",
    "checkpoint_interval=100",
    "log_interval=100",
    "eval_interval=0",
    "final_eval_episodes=0",
    "progress_interval_s=60",
]


def sweep_errors(stderr: str) -> list[str]:
    """The sweep's own report: one "dqn-train: error:" line per failed job (a job's own line
    names the job: "dqn-train (job 1): error: ...")."""
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.startswith("dqn-train: error:")]


def test_a_diverging_job_does_not_stop_the_healthy_one(tmp_path: Path) -> None:
    """The issue's sweep: job 1 diverges (exit 3) while job 0 runs beside it, under joblib.
    Job 0 was killed mid-run (no summary) and only job 1's line was printed."""
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *FAILING]
    args += ["algo.optimizer=adam", "algo.lr=0.0001,1e30", f"hydra.sweep.dir={sweep_dir}"]
    result = subprocess.run(
        [TRAIN, *args], cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 3, result.stderr[-3000:]
    runs = summaries(sweep_dir)
    assert runs[0]["status"] == "finished" and runs[0]["agent_steps"] == 400
    assert runs[1]["status"] == "diverged"
    (line,) = sweep_errors(result.stderr)
    assert line.startswith(
        "dqn-train: error: job 1 of 2 (algo.lr=1e+30) failed: training diverged by agent step 300"
    ), line
    assert f"continue with dqn-train resume={sweep_dir / '1'}" in line


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local"])
def test_a_job_with_a_bad_value_fails_alone_and_is_reported(tmp_path: Path, launcher: str) -> None:
    """`seed=0,-1` (and `-1,0`, the bad job first): the valid job never ran, and nothing said
    so; now it runs to its end and the bad one is reported. Under submitit each job is its own
    process; the report is the same."""
    sweep_dir = tmp_path / "sweep"
    args = ["-m"] + ([f"hydra/launcher={launcher}"] if launcher != "basic" else [])
    args += [*FAILING, "seed=-1,0", "total_steps=200", "learning_starts=100"]
    result = subprocess.run(
        [TRAIN, *args, f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    runs = summaries(sweep_dir)
    assert sorted(runs) == [1]
    assert runs[1]["status"] == "finished" and runs[1]["seed"] == 0
    assert runs[1]["agent_steps"] == 200
    (line,) = sweep_errors(result.stderr)
    assert line == (
        "dqn-train: error: job 0 of 2 (seed=-1) failed: seed must be in [0, "
        "18446744073709551615], got -1: numpy takes no seed below 0, torch none above 2**64 - 1"
    )
