"""CUDA runs, checked on a GPU box with `pytest -m cuda` (or `scripts/gpu_check.sh`).

Every test here is marked `cuda` and skipped where `torch.cuda.is_available()` is False, so the
CPU CI passes them as skipped. The CLI tests drive dqn-train and dqn-eval as subprocesses on the
real ALE with tiny budgets, as tests/test_faults.py does, but through `python -m` with this
checkout first on PYTHONPATH: a GPU box without network needs no installed console scripts, only
the dependencies on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.is_available() is False"
    ),
]

TRAIN = [sys.executable, "-m", "dqn_atari"]
EVAL = [sys.executable, "-c", "from dqn_atari.cli import eval_entry; eval_entry()"]
LEARNING_STARTS = 200  # agent steps
# Breakout with life-loss terminals and the replay saved on every checkpoint: the CUDA replay
# ring goes to disk on SIGTERM and comes back on resume.
RUN = [
    "env=Breakout",
    "device=cuda",
    "seed=3",
    f"learning_starts={LEARNING_STARTS}",
    "buffer_size=4000",
    "save_replay=true",
    "checkpoint_interval=100000",
    "log_interval=100",
    "progress_interval_s=0",  # a progress line per loop iteration: the test reads the step
    "env.max_episode_frames=2000",
    "eval_interval=0",
]
PROGRESS = re.compile(r"([\d,]+)/[\d,]+ steps \|")


def checkout_env() -> dict[str, str]:
    """The environment for the subprocesses: this checkout's dqn_atari, installed or not."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=checkout_env()
    )


def latest(run_dir: Path) -> dict:
    # No map_location: tensors saved from the GPU come back on the GPU.
    return torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("dqn-train: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def train_until_learning_then_sigterm(run_dir: Path, cwd: Path, num_envs: int) -> int:
    """Start an open-ended run, SIGTERM it once it has made updates; returns the saved step."""
    proc = subprocess.Popen(
        [*TRAIN, *RUN, f"num_envs={num_envs}", "total_steps=1000000", f"hydra.run.dir={run_dir}"],
        cwd=cwd,
        stderr=subprocess.PIPE,
        text=True,
        env=checkout_env(),
    )
    assert proc.stderr is not None
    watchdog = threading.Timer(300, proc.kill)  # a hung run fails the test instead of pytest
    watchdog.start()
    seen: list[str] = []
    try:
        for line in proc.stderr:
            seen.append(line)
            match = PROGRESS.search(line)
            if match and int(match.group(1).replace(",", "")) >= LEARNING_STARTS + 100:
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.stderr.read()
        code = proc.wait(timeout=120)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    output = "".join(seen[-20:]) + rest
    assert code == 128 + signal.SIGTERM, output[-3000:]
    assert "stopped by SIGTERM" in rest and f"resume={run_dir}" in rest, output[-3000:]
    assert "Traceback" not in rest
    return int(latest(run_dir)["state"]["step"])


@pytest.mark.slow
@pytest.mark.parametrize("num_envs", [1, 4])
def test_train_sigterm_resume_and_eval_with_video_on_cuda(num_envs: int, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    stopped_at = train_until_learning_then_sigterm(run_dir, tmp_path, num_envs)
    state = latest(run_dir)
    assert stopped_at >= LEARNING_STARTS + 100
    assert stopped_at % num_envs == 0
    assert state["state"]["updates"] > 0
    # The networks were trained on the GPU, and the GPU replay ring was written beside them.
    assert all(t.device.type == "cuda" for t in state["learner"]["online"].values())
    assert (run_dir / "checkpoints" / f"replay_{stopped_at:09d}").is_dir()

    resumed = run([*TRAIN, f"resume={run_dir}", f"total_steps={stopped_at + 200}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "with its replay memory" in resumed.stderr
    after = latest(run_dir)
    assert after["state"]["step"] == stopped_at + 200
    # One update every 4 agent steps, learning from the first step after the resume: 200 / 4.
    assert after["state"]["updates"] == state["state"]["updates"] + 50
    assert after["num_envs"] == num_envs
    moved = [
        not torch.equal(after["learner"]["online"][name], tensor)
        for name, tensor in state["learner"]["online"].items()
    ]
    assert any(moved), "the resumed run's updates did not change the weights"

    ckpt = run_dir / "checkpoints" / "latest.pt"
    evaluated = run(
        [*EVAL, f"checkpoint={ckpt}", "device=cuda", "episodes=1", "max_episode_frames=800",
         "video=true"],
        tmp_path,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    summary = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 1 and summary["checkpoint_step"] == stopped_at + 200
    video = cv2.VideoCapture(summary["video"])
    assert Path(summary["video"]) == run_dir / "checkpoints" / "latest_eval.mp4"
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == summary["lengths"][0] + 1


@pytest.mark.slow
def test_a_replay_larger_than_free_gpu_memory_is_one_line_before_allocating(
    tmp_path: Path,
) -> None:
    free_bytes, total_bytes = torch.cuda.mem_get_info()
    frame_bytes = 84 * 84 + 17  # one slot of the ring, with its metadata
    too_many = 2 * total_bytes // frame_bytes  # twice the whole device, however free it is
    run_dir = tmp_path / "run"
    result = run(
        [*TRAIN, "env=Breakout", "device=cuda", f"buffer_size={too_many}",
         f"hydra.run.dir={run_dir}"],
        tmp_path,
    )  # fmt: skip
    # Had the ring been allocated first, CUDA's out-of-memory error would be a traceback.
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_error_line(result.stderr)
    assert f"replay memory of {too_many:,} frames needs" in line
    assert "GB is free" in line and "buffer_size=" in line
    # Nothing of a run was started: no checkpoints, no TensorBoard file.
    assert not list(run_dir.glob("checkpoints/*"))
    assert not list(run_dir.glob("events.out.tfevents.*"))
    assert free_bytes < too_many * frame_bytes
