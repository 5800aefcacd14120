"""Runs that never lose work: exact resume, signals, full disks, divergence, bad checkpoints.

Every test drives the installed `dqn-train` / `dqn-eval` as a subprocess on the real ALE.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = pytest.mark.slow

TRAIN = shutil.which("dqn-train") or "dqn-train"
EVAL = shutil.which("dqn-eval") or "dqn-eval"

# Breakout with life-loss terminals, truncated games, evaluation and the replay saved: every
# piece of state a resume has to carry is in play within 1,000 agent steps.
RUN = [
    "env=Breakout",
    "device=cpu",
    "seed=7",
    "learning_starts=300",
    "buffer_size=3000",
    "checkpoint_interval=500",
    "save_replay=true",
    "log_interval=100",
    "progress_interval_s=60",
    "env.max_episode_frames=2000",
    "eval_interval=400",
    "eval_episodes=1",
    "eval_max_episode_frames=500",
    "final_eval_episodes=0",
]


@pytest.fixture(autouse=True, scope="module")
def _ctrl_c_reaches_the_commands() -> Iterator[None]:
    """A test runner started in the background (`cmd &` in a script, nohup) ignores SIGINT, and
    the commands these tests start would inherit that and never see their Ctrl-C: with a handler
    here, they start with the default one (exec resets handled signals, not ignored ones)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def train(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRAIN, *args], cwd=cwd, capture_output=True, text=True, timeout=600, **kwargs
    )


def latest(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def one_error_line(stderr: str, prog: str = "dqn-train") -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,000 agent steps in one go."""
    work = tmp_path_factory.mktemp("straight")
    result = train(*RUN, "total_steps=1000", f"hydra.run.dir={work / 'run'}", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "run"


def assert_same_training(a: Path, b: Path) -> None:
    sa, sb = latest(a), latest(b)
    assert sa["counters"] == sb["counters"]
    for part in ("online", "target"):
        for name, tensor in sa["learner"][part].items():
            assert torch.equal(tensor, sb["learner"][part][name]), f"{part}.{name} differs"
    for tag in ("train/loss", "train/episode_return", "eval/return_mean"):
        assert scalars(a, tag) == scalars(b, tag), tag


def test_stop_at_k_and_resume_to_2k_gives_identical_weights(straight: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = train(*RUN, "total_steps=500", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = train(f"resume={run_dir}", "total_steps=1000", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "with its replay memory" in second.stderr
    # Weights, optimizer-driven target, counters, losses, returns and evaluations all match:
    # the emulator, the replay memory and every RNG continued exactly.
    assert_same_training(straight, run_dir)
    sa, sb = latest(straight), latest(run_dir)
    for name, tensors in sa["learner"]["optimizer"].items():
        if isinstance(tensors, list):
            for a, b in zip(tensors, sb["learner"]["optimizer"][name], strict=True):
                assert torch.equal(a, b), name


def test_same_seed_same_run_and_another_seed_another(straight: Path, tmp_path: Path) -> None:
    again = train(*RUN, "total_steps=1000", f"hydra.run.dir={tmp_path / 'again'}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_training(straight, tmp_path / "again")

    other = train(
        *RUN, "seed=8", "total_steps=400", f"hydra.run.dir={tmp_path / 'other'}", cwd=tmp_path
    )
    assert other.returncode == 0, other.stderr[-3000:]
    # Random Breakout scores are mostly 0 or 1; the games' lengths tell the seeds apart.
    first_games = scalars(straight, "train/episode_length")
    other_games = scalars(tmp_path / "other", "train/episode_length")
    assert other_games and other_games != first_games[: len(other_games)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_finish_the_step_checkpoint_and_exit_conventionally(
    sig: signal.Signals, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [TRAIN, *RUN, "total_steps=1000000", "progress_interval_s=0", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "steps |" in line and "| 0/" not in line:
            break
    time.sleep(0.5)
    proc.send_signal(sig)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 128 + sig
    assert f"stopped by {sig.name}" in rest and f"resume={run_dir}" in rest
    assert "Traceback" not in rest
    stopped_at = latest(run_dir)["counters"]["step"]
    assert 0 < stopped_at < 1_000_000
    # The message's command continues the run, from exactly that step. Past learning_starts
    # (300) wherever a loaded box let the signal land: a total_steps that no update fits in is
    # refused by design.
    target = max(stopped_at, 300) + 50
    resumed = train(f"resume={run_dir}", f"total_steps={target}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert latest(run_dir)["counters"]["step"] == target


def test_sigkill_loses_at_most_one_checkpoint_interval(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [TRAIN, *RUN, "total_steps=1000000", "checkpoint_interval=200", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        stderr=subprocess.DEVNULL,
    )
    ckpt = run_dir / "checkpoints" / "step_000000600.pt"
    deadline = time.monotonic() + 300
    while not ckpt.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ckpt.exists(), "no periodic checkpoint appeared"
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    state = latest(run_dir)  # whatever moment the kill hit, latest.pt is whole
    saved = state["counters"]["step"]
    assert saved >= 600 and saved % 200 == 0
    resumed = train(f"resume={run_dir}", f"total_steps={saved + 200}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "with its replay memory" in resumed.stderr
    assert latest(run_dir)["counters"]["step"] == saved + 200
    leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def _file_size_limit(limit_bytes: int):
    def apply() -> None:
        # A full disk, as the process sees it: writes past the limit fail with EFBIG.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(
    straight: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    before = (run_dir / "checkpoints" / "latest.pt").read_bytes()
    result = train(
        f"resume={run_dir}",
        "total_steps=1500",
        cwd=tmp_path,
        preexec_fn=_file_size_limit(2_000_000),
    )
    assert result.returncode == 3
    line = one_error_line(result.stderr)
    assert "cannot write checkpoint" in line and "File too large" in line
    assert "latest.pt is unchanged" in line
    assert (run_dir / "checkpoints" / "latest.pt").read_bytes() == before
    assert latest(run_dir)["counters"]["step"] == 1000
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))


def test_an_unwritable_run_directory_is_refused_before_anything_runs(tmp_path: Path) -> None:
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: use a read-only file system
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(target)])
        if mounted.returncode != 0:
            pytest.skip("root without mount: cannot make a read-only directory here")
    else:
        target.chmod(0o555)
    try:
        result = train(*RUN, f"hydra.run.dir={target / 'run'}", cwd=tmp_path)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(target)], check=True)
        else:
            target.chmod(0o755)
    assert result.returncode == 2
    assert "cannot write the run directory" in one_error_line(result.stderr)


def test_divergence_stops_with_the_step_and_keeps_the_finite_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = train(
        "env=Pong",
        "total_steps=1000",
        "learning_starts=200",
        "buffer_size=2000",
        "checkpoint_interval=200",
        "log_interval=100",
        "algo.lr=1e30",  # the first updates blow the weights up
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 3
    line = one_error_line(result.stderr)
    assert "diverged by agent step 300" in line
    state = latest(run_dir)
    assert state["counters"]["step"] == 200
    assert all(torch.isfinite(t).all() for t in state["learner"]["online"].values())


def test_resume_refuses_another_game_or_action_set(straight: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    game = train(f"resume={run_dir}", "env=Pong", "total_steps=1200", cwd=tmp_path)
    assert game.returncode == 2
    assert "cannot change env.game (Breakout -> Pong)" in one_error_line(game.stderr)
    actions = train(
        f"resume={run_dir}", "env.full_action_space=true", "total_steps=1200", cwd=tmp_path
    )
    assert actions.returncode == 2
    assert "cannot change env.full_action_space (False -> True)" in one_error_line(actions.stderr)
    assert latest(run_dir)["counters"]["step"] == 1000


def test_resume_refuses_a_directory_without_a_good_checkpoint(
    straight: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = train(f"resume={empty}", cwd=tmp_path)
    assert result.returncode == 2
    assert "no checkpoint at" in one_error_line(result.stderr)

    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    ckpt = run_dir / "checkpoints" / "latest.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:4096])
    result = train(f"resume={run_dir}", cwd=tmp_path)
    assert result.returncode == 2
    assert "truncated or corrupt" in one_error_line(result.stderr)


def test_eval_refuses_a_checkpoint_whose_network_does_not_fit(
    straight: Path, tmp_path: Path
) -> None:
    state = latest(straight)
    state["num_actions"] = 18
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    result = subprocess.run(
        [EVAL, f"checkpoint={bad}", "episodes=1"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "has 18 actions but breakout here has 4" in one_error_line(result.stderr, "dqn-eval")


# ---------------------------------------------------------------- a hostile new user's cases


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [TRAIN, *args], cwd=cwd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )


def _wait_for(proc: subprocess.Popen[str], text: str) -> list[str]:
    """The process's stderr lines up to and including the first that holds `text`."""
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"the run ended before printing {text!r}: {''.join(seen)[-2000:]}")


def test_a_second_run_in_a_live_runs_directory_is_refused_naming_its_pid(tmp_path: Path) -> None:
    """The issue's two starts into one hydra.run.dir, before the first checkpoint: the second
    is refused (and so is a resume of it); a SIGKILLed owner leaves no stale lock."""
    run_dir = tmp_path / "cc"
    args = [*RUN, "total_steps=1000000", "checkpoint_interval=200", "progress_interval_s=0"]
    first = _start([*args, f"hydra.run.dir={run_dir}"], tmp_path)
    try:
        _wait_for(first, "steps |")
        second = train(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert second.returncode == 2
        line = one_error_line(second.stderr)
        assert f"in use by another dqn-train (PID {first.pid})" in line, line
        while not (run_dir / "checkpoints" / "latest.pt").exists():
            time.sleep(0.05)
        resumed = train(f"resume={run_dir}", cwd=tmp_path)
        assert resumed.returncode == 2
        assert f"PID {first.pid}" in one_error_line(resumed.stderr)
    finally:
        first.kill()
        first.wait(timeout=60)
    # The kernel released the lock with the process: the run continues.
    saved = latest(run_dir)["counters"]["step"]
    # Past learning_starts (300) whichever checkpoint the kill left: a total_steps that no
    # update fits in is refused by design.
    after = train(f"resume={run_dir}", f"total_steps={saved + 400}", cwd=tmp_path)
    assert after.returncode == 0, after.stderr[-2000:]


def test_a_missing_replay_memory_is_refused_unless_a_refill_is_asked_for(
    straight: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    (replay,) = (run_dir / "checkpoints").glob("replay_*")
    shutil.rmtree(replay)
    before = (run_dir / "checkpoints" / "latest.pt").read_bytes()
    refused = train(f"resume={run_dir}", "total_steps=1200", cwd=tmp_path)
    assert refused.returncode == 2
    line = one_error_line(refused.stderr)
    assert f"{replay.name}/, which is missing" in line and "refill_replay=true" in line
    assert (run_dir / "checkpoints" / "latest.pt").read_bytes() == before
    refilled = train(f"resume={run_dir}", "total_steps=1200", "refill_replay=true", cwd=tmp_path)
    assert refilled.returncode == 0, refilled.stderr[-2000:]
    assert "is missing (refill_replay=true)" in refilled.stderr
    assert "learning resumes after 300 agent steps of refilling" in refilled.stderr
    # The permission was for that resume: the saved config does not carry it on.
    assert "refill_replay: false" in (run_dir / "config.yaml").read_text()


@pytest.mark.parametrize(
    "damage",
    ["garbage meta.pt", "text meta.pt", "no frames.u8", "short frames.u8", "no meta.pt"],
)
def test_a_damaged_replay_memory_is_one_line_and_the_checkpoint_stays(
    straight: Path, tmp_path: Path, damage: str
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    (replay,) = (run_dir / "checkpoints").glob("replay_*")
    name = damage.split()[-1]
    if damage.startswith("garbage"):
        (replay / name).write_bytes(b"\x80garbage" * 64)
    elif damage.startswith("text"):
        (replay / name).write_bytes(b"garbage")  # torch's advice: retry with weights_only=False
    elif damage.startswith("short"):
        (replay / name).write_bytes((replay / name).read_bytes()[:-100])
    else:
        (replay / name).unlink()
    before = (run_dir / "checkpoints" / "latest.pt").read_bytes()
    result = train(f"resume={run_dir}", "total_steps=1200", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert name in one_error_line(result.stderr)
    # Never the advice to load an unknown file with weights_only=False, nor torch's warnings.
    assert "weights_only" not in result.stderr and "Warning" not in result.stderr
    assert (run_dir / "checkpoints" / "latest.pt").read_bytes() == before


def test_sigterm_during_an_evaluation_stops_within_seconds_and_resumes_it(
    tmp_path: Path,
) -> None:
    """A stop never waits for an evaluation (10 full games here, over a minute on 2 cores): the
    evaluation is abandoned, the checkpoint says it is due, and the resumed run plays it."""
    run_dir = tmp_path / "run"
    args = [
        "env=Pong", "device=cpu", "seed=5", "learning_starts=50", "buffer_size=2000",
        "total_steps=1000000", "eval_interval=100", "eval_episodes=10",
        "eval_max_episode_frames=18000", "checkpoint_interval=1000000", "log_interval=100",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    proc = _start(args, tmp_path)
    _wait_for(proc, "evaluating at agent step 100")
    time.sleep(1.0)  # well into the first game
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    rest = proc.stderr.read()
    code = proc.wait(timeout=300)
    took_s = time.monotonic() - sent
    assert code == 128 + signal.SIGTERM, rest[-2000:]
    # Measured here: about 1 s (the checkpoint write). The whole evaluation takes over 60 s.
    assert took_s < 15, took_s
    state = latest(run_dir)
    assert state["counters"]["step"] == 100 and state["counters"]["eval_due"] == 100
    assert "eval/return_mean" not in scalars_tags(run_dir)  # nothing half-logged

    resumed = train(
        f"resume={run_dir}", "total_steps=104", "eval_episodes=1", "eval_max_episode_frames=2000",
        "final_eval_episodes=0", cwd=tmp_path,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [step for step, _ in scalars(run_dir, "eval/return_mean")] == [100]
    assert latest(run_dir)["counters"]["eval_due"] is None


def scalars_tags(run_dir: Path) -> list[str]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return list(events.Tags()["scalars"])


def test_two_quick_ctrl_cs_leave_a_true_message_and_nothing_half_written(
    tmp_path: Path,
) -> None:
    """The second Ctrl-C lands wherever the run is (the step, or the first checkpoint with its
    replay memory): whichever, the message is true and no replay folder is left unnamed."""
    run_dir = tmp_path / "run"
    proc = _start([*RUN, "total_steps=1000000", "progress_interval_s=0",
                   f"hydra.run.dir={run_dir}"], tmp_path)  # fmt: skip
    _wait_for(proc, "steps |")
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130
    assert "Traceback" not in rest
    checkpoints = run_dir / "checkpoints"
    replays = sorted(p.name for p in checkpoints.glob("replay_*")) if checkpoints.exists() else []
    if (checkpoints / "latest.pt").exists():
        step = latest(run_dir)["counters"]["step"]
        assert f"at agent step {step:,}, is kept" in rest or "stopped by SIGINT" in rest, rest
        assert replays == [latest(run_dir)["replay"]]
    else:
        line = one_error_line(rest)
        assert "no checkpoint had been written yet" in line, line
        assert replays == []
    assert not list(run_dir.rglob("*.tmp"))


def test_the_printed_resume_command_works_for_a_directory_with_a_space(tmp_path: Path) -> None:
    run_dir = tmp_path / "my runs" / "pong 1"
    proc = _start(
        ["env=Pong", "device=cpu", "learning_starts=100", "buffer_size=2000",
         "total_steps=1000000", "progress_interval_s=0", "eval_interval=0",
         f"hydra.run.dir={run_dir}"],
        tmp_path,
    )  # fmt: skip
    _wait_for(proc, "steps |")
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 143
    (command,) = [
        line.split("Continue with: ")[1] for line in rest.splitlines() if "Continue" in line
    ]
    stopped_at = latest(run_dir)["counters"]["step"]
    # As a user pastes it into a shell.
    shell = subprocess.run(
        ["bash", "-c", f"{command} total_steps={stopped_at + 200} final_eval_episodes=0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert shell.returncode == 0, shell.stderr[-2000:]
    assert latest(run_dir)["counters"]["step"] == stopped_at + 200


def test_eval_of_a_checkpoints_folder_writes_the_video_beside_latest(
    straight: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    result = subprocess.run(
        [EVAL, f"checkpoint={run_dir / 'checkpoints'}", "episodes=1", "video=true",
         "max_episode_frames=400"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    video = run_dir / "checkpoints" / "latest_eval.mp4"
    assert video.is_file() and not (run_dir / "checkpoints_eval.mp4").exists()
    assert json.loads(result.stdout.strip().splitlines()[-1])["video"] == str(video)


def test_divergence_before_the_first_checkpoint_says_there_is_none(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = train(
        "env=Pong", "total_steps=1000", "learning_starts=200", "buffer_size=2000",
        "checkpoint_interval=100000", "log_interval=100", "algo.lr=1e30",
        f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 3
    line = one_error_line(result.stderr)
    assert "diverged by agent step 300" in line
    assert "no checkpoint had been written yet" in line and "is kept" not in line
    assert not (run_dir / "checkpoints" / "latest.pt").exists()


def test_ctrl_c_during_dqn_eval_is_one_line_and_leaves_no_half_video(
    straight: Path, tmp_path: Path
) -> None:
    ckpt = tmp_path / "model.pt"
    shutil.copy(straight / "checkpoints" / "latest.pt", ckpt)
    proc = subprocess.Popen(
        [EVAL, f"checkpoint={ckpt}", "episodes=30", "video=true"],
        cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    video = tmp_path / "model_eval.mp4"
    _wait_for_recording(tmp_path, "model")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "No video was written" in one_error_line(err, "dqn-eval")
    assert not video.exists() and not _recordings(tmp_path)


def _recordings(folder: Path) -> list[Path]:
    """dqn-eval's video being recorded: a temporary file beside the final one."""
    return list(folder.glob(".*.tmp.mp4"))


def _wait_for_recording(folder: Path, stem: str) -> None:
    deadline = time.monotonic() + 120
    while not list(folder.glob(f".{stem}_eval.*.tmp.mp4")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _recordings(folder), "the recording never began"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_stopped_dqn_eval_keeps_the_earlier_video_and_says_so(
    straight: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGTERM used to kill dqn-eval mid-recording, leaving a 44-byte video; Ctrl-C said
    "nothing was written" and deleted the earlier, complete video."""
    ckpt = tmp_path / "model.pt"
    shutil.copy(straight / "checkpoints" / "latest.pt", ckpt)
    video = tmp_path / "model_eval.mp4"
    first = subprocess.run(
        [EVAL, f"checkpoint={ckpt}", "episodes=1", "video=true", "max_episode_frames=400"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    earlier = video.read_bytes()
    assert len(earlier) > 1000
    proc = subprocess.Popen(
        [EVAL, f"checkpoint={ckpt}", "episodes=30", "video=true"],
        cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for_recording(tmp_path, "model")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig
    line = one_error_line(err, "dqn-eval")
    assert f"interrupted by {sig.name}" in line
    assert f"The earlier video {video} is left as it was" in line, line
    assert video.read_bytes() == earlier
    assert not _recordings(tmp_path)
    assert out == ""  # no scores of an evaluation that did not finish


# ---------------------------------------------------------------- a disk that really fills


@contextlib.contextmanager
def small_filesystem(path: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of `size_bytes` mounted at `path`: a disk that really fills up."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_disk_that_fills_while_checkpointing_is_one_line_and_exit_3(
    straight: Path, tmp_path: Path
) -> None:
    """The issue's case: on a full disk torch.save raised `RuntimeError: [enforce fail at
    inline_container.cc...]`, a traceback and exit 1. Room for one checkpoint and a half: the
    first (agent step 500) fits, the second cannot be written beside it."""
    size = (straight / "checkpoints" / "latest.pt").stat().st_size  # this run's network
    with small_filesystem(tmp_path / "disk", size * 3 // 2) as disk:
        run_dir = disk / "run"
        result = train(
            *RUN, "save_replay=false", "total_steps=1500", f"hydra.run.dir={run_dir}",
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 3, result.stderr[-3000:]
        line = one_error_line(result.stderr)
        assert f"cannot write checkpoint in {run_dir / 'checkpoints'}: No space left" in line
        assert "latest.pt is unchanged" in line
        assert latest(run_dir)["counters"]["step"] == 500
        assert not list(run_dir.rglob("*.tmp"))


# ---------------------------------------------------------------- Ctrl-C while starting


def _mapped(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def test_ctrl_c_while_the_command_starts_is_one_line(tmp_path: Path) -> None:
    """The imports take seconds; a Ctrl-C in them was a KeyboardInterrupt traceback. The
    process is frozen (SIGSTOP) once torch's library is loaded and before the CLI's later
    imports (OpenCV) are: the Ctrl-C then lands inside the imports, however loaded the box."""
    # The console script as pyproject.toml declares it (the installed one may predate it).
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    spec = re.search(r'^dqn-train = "([\w.]+):(\w+)"', pyproject, re.MULTILINE)
    assert spec is not None
    module, function = spec.groups()
    command = [sys.executable, "-c", f"from {module} import {function}; {function}()"]
    for _ in range(5):
        proc = subprocess.Popen(
            [*command, "env=Pong", f"hydra.run.dir={tmp_path / 'run'}"],
            cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        while proc.poll() is None and "libtorch_cpu" not in _mapped(proc.pid):
            time.sleep(0.002)
        proc.send_signal(signal.SIGSTOP)
        importing = "/cv2/" not in _mapped(proc.pid)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
        if importing:
            break
    else:
        pytest.skip("the imports never stopped between torch's and OpenCV's library")
    assert proc.returncode == 130, err
    assert "interrupted while starting; nothing was written" in one_error_line(err)
    assert not (tmp_path / "run").exists()
