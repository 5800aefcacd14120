"""Game workers (num_envs > 1) under signals and deaths: a stop signal to the whole process group
stops the run as with one game, a dead worker is named with the checkpoint that is kept, and
num_envs is bounded by the usable cores. Real worker processes, real signals, the real ALE."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dqn_atari.config import GAMES_PER_CORE, ConfigError, check_num_envs, usable_cores
from dqn_atari.envs import AtariOptions, AtariPhiEnv
from dqn_atari.vector import GameWorkerError, WorkerGames

TRAIN = shutil.which("dqn-train") or "dqn-train"

# Two Pong games, learning after 200 agent steps: a few seconds to the first update on the CPU.
RUN = [
    "env=Pong",
    "device=cpu",
    "num_envs=2",
    "seed=3",
    "learning_starts=200",
    "buffer_size=2000",
    "save_replay=true",
    "log_interval=100",
    "eval_interval=0",
    "final_eval_episodes=0",
]


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (from /proc, in start order)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state not in "ZX":
            found.append(int(entry.name))
    return sorted(found)


def workers_of(pid: int) -> list[int]:
    """The game workers of dqn-train `pid`: the children of its fork server (its other child
    is multiprocessing's resource tracker, which has none)."""
    return [worker for child in children(pid) for worker in children(child)]


def session_members(sid: int) -> list[int]:
    """The processes still running in session `sid` (zombies have ended: only their parent's
    wait is missing)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # not a process, or gone meanwhile
            continue
        if int(fields[3]) == sid and fields[0] not in "ZX":
            found.append(int(entry.name))
    return found


def assert_nothing_left(proc: subprocess.Popen[str], within_s: float = 60) -> None:
    """No process of the run's session (its workers, their fork server) outlives the run."""
    deadline = time.monotonic() + within_s
    while session_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session_members(proc.pid) == [], "processes of the run outlived it"


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    """dqn-train in a process group of its own, as a terminal or a Slurm step runs it."""
    return subprocess.Popen(
        [TRAIN, *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_until(proc: subprocess.Popen[str], ready, what: str, within_s: float = 300) -> None:
    deadline = time.monotonic() + within_s
    while not ready():
        if proc.poll() is not None:
            assert proc.stderr is not None
            raise AssertionError(f"dqn-train ended before {what}: {proc.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, f"no {what} within {within_s} s"
        time.sleep(0.05)


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("dqn-train: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def latest(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)


def train(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRAIN, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


# ---------------------------------------------------------------- in this process


def test_workers_ignore_stop_signals_and_keep_their_games() -> None:
    """A stop signal sent to the workers themselves (as Ctrl-C to the group, or Slurm, sends it)
    changes nothing in their games: they play on exactly as single games with the same seeds,
    and answer for their state, which the stop's checkpoint needs."""
    games = WorkerGames("Pong", AtariOptions(), seed=11, num_envs=2)
    singles = [AtariPhiEnv("Pong", AtariOptions(), seed=11 + i) for i in range(2)]
    try:
        games.reset()
        for env in singles:
            env.reset()
        actions = np.random.default_rng(1).integers(6, size=(30, 2))
        for t, step_actions in enumerate(actions):
            if t == 10:
                for process in games.envs.processes:
                    for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):
                        os.kill(process.pid, sig)
            games.step_async(step_actions)
            out = games.step_wait()
            for i, env in enumerate(singles):
                obs, reward, *_ = env.step(int(step_actions[i]))
                np.testing.assert_array_equal(out.next_obs[i], obs)
                assert out.rewards[i] == reward
        assert all(process.is_alive() for process in games.envs.processes)
        for saved, env in zip(games.state_dicts(), singles, strict=True):
            expected = env.state_dict()  # the checkpoint's format: tensors and plain values
            assert saved.keys() == expected.keys()
            for key, value in expected.items():
                if isinstance(value, torch.Tensor):
                    assert isinstance(saved[key], torch.Tensor), key
                    assert torch.equal(saved[key], value), key
                else:
                    assert saved[key] == value, key
    finally:
        games.close()
        for env in singles:
            env.close()
    assert not any(process.is_alive() for process in games.envs.processes)


def test_saving_and_restoring_games_never_imports_torch_in_a_worker() -> None:
    """A worker that imports torch costs seconds and ~190 MB: a stop's checkpoint would wait
    for every worker to do it. Games restored from saved states continue the same games."""
    first = WorkerGames("Breakout", AtariOptions(), seed=4, num_envs=2)
    try:
        first.reset()
        actions = np.random.default_rng(2).integers(4, size=(20, 2))
        for step_actions in actions[:10]:
            first.step_async(step_actions)
            first.step_wait()
        states = first.state_dicts()
        second = WorkerGames("Breakout", AtariOptions(), seed=99, num_envs=2, states=states)
        try:
            np.testing.assert_array_equal(second.observations(), first.observations())
            for step_actions in actions[10:]:
                first.step_async(step_actions)
                second.step_async(step_actions)
                a, b = first.step_wait(), second.step_wait()
                np.testing.assert_array_equal(a.next_obs, b.next_obs)
                np.testing.assert_array_equal(a.rewards, b.rewards)
            second.state_dicts()
            for process in [*first.envs.processes, *second.envs.processes]:
                maps = Path(f"/proc/{process.pid}/maps").read_text()
                assert "libtorch" not in maps, f"worker {process.pid} loaded torch"
        finally:
            second.close()
    finally:
        first.close()


def test_a_killed_worker_is_named_and_closing_does_not_hang() -> None:
    games = WorkerGames("Pong", AtariOptions(), seed=0, num_envs=2)
    processes = list(games.envs.processes)
    try:
        games.reset()
        victim = processes[1].pid
        os.kill(victim, signal.SIGKILL)
        message = rf"game worker 1 of 2 \(PID {victim}\) was killed by SIGKILL"
        with pytest.raises(GameWorkerError, match=message):
            for _ in range(10):  # the kill shows at the next call that talks to that worker
                games.step_async(np.zeros(2, np.int64))
                games.step_wait()
        with pytest.raises(GameWorkerError, match="died earlier"):
            games.state_dicts()  # never a checkpoint of games that are not all there
    finally:
        started = time.monotonic()
        games.close()
        assert time.monotonic() - started < 60
    assert not any(process.is_alive() for process in processes)


def test_an_exception_in_a_workers_game_is_named() -> None:
    """Pong has 6 actions: action 99 fails inside worker 1's game, which then exits."""
    games = WorkerGames("Pong", AtariOptions(), seed=0, num_envs=2)
    try:
        games.reset()
        games.step_async(np.array([0, 99]))
        with pytest.raises(GameWorkerError, match=r"game worker 1 of 2 failed: IndexError"):
            games.step_wait()
    finally:
        games.close()
    assert not any(process.is_alive() for process in games.envs.processes)


def test_num_envs_is_bounded_by_the_usable_cores() -> None:
    check_num_envs(GAMES_PER_CORE * 2, cores=2)
    for num_envs in (GAMES_PER_CORE * 2 + 1, 64, 1000):
        with pytest.raises(ConfigError, match=rf"num_envs={num_envs} .*\(2 here: at most 16\)"):
            check_num_envs(num_envs, cores=2)


def test_num_envs_above_the_bound_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    too_many = GAMES_PER_CORE * usable_cores() + 1
    run_dir = tmp_path / "run"
    # A run that would start but for num_envs.
    result = train(
        *RUN, f"num_envs={too_many}", f"total_steps={too_many * 1000}", f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert f"num_envs={too_many} is more than {GAMES_PER_CORE} games per usable core" in line
    assert f"at most {too_many - 1}" in line
    assert not run_dir.exists()


# ---------------------------------------------------------------- dqn-train


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_to_the_process_group_checkpoints_and_resumes(
    sig: signal.Signals, tmp_path: Path
) -> None:
    """Ctrl-C in a terminal (SIGINT), or Slurm's SIGTERM, reaches the workers too: the run
    still stops at a step with a checkpoint of all its games, as with one game."""
    run_dir = tmp_path / "run"
    proc = start(
        [*RUN, "total_steps=1000000", "progress_interval_s=0", f"hydra.run.dir={run_dir}"],
        tmp_path,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "steps |" in line and "| 0/" not in line:
            break
    workers = workers_of(proc.pid)
    assert len(workers) == 2, workers
    time.sleep(0.5)
    os.killpg(proc.pid, sig)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 128 + sig
    assert "Traceback" not in rest and "error:" not in rest, rest[-3000:]
    stopped = re.search(rf"stopped by {sig.name} at agent step ([\d,]+); checkpoint saved", rest)
    assert stopped is not None, rest[-3000:]
    assert f"Continue with: dqn-train resume={run_dir}" in rest
    step = int(stopped.group(1).replace(",", ""))
    state = latest(run_dir)
    assert state["counters"]["step"] == step > 0
    assert len(state["games"]) == 2  # asked of the workers after the signal
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["stopped_by"]) == ("stopped", sig.name)
    assert summary["agent_steps"] == step
    assert_nothing_left(proc)

    resumed = train(f"resume={run_dir}", f"total_steps={step + 400}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "with its replay memory" in resumed.stderr
    assert latest(run_dir)["counters"]["step"] == step + 400


@pytest.mark.slow
def test_a_killed_worker_stops_the_run_naming_it_and_the_kept_checkpoint(tmp_path: Path) -> None:
    """SIGKILL, as the OOM killer sends it, to one game worker: one line naming the worker and
    the checkpoint to continue from, which stays as it was."""
    run_dir = tmp_path / "run"
    args = [*RUN, "total_steps=1000000", "checkpoint_interval=200", "progress_interval_s=60"]
    proc = start([*args, f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.stderr is not None
    wait_until(proc, lambda: (run_dir / "checkpoints" / "latest.pt").exists(), "a checkpoint")
    workers = workers_of(proc.pid)
    assert len(workers) == 2, workers
    victim = workers[-1]
    os.kill(victim, signal.SIGKILL)
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 3
    line = one_error_line(stderr)
    assert re.search(rf"game worker \d of 2 \(PID {victim}\) was killed by SIGKILL", line), line
    kept = latest(run_dir)["counters"]["step"]  # whole, and loadable
    assert kept >= 200 and kept % 200 == 0
    assert f"the last checkpoint, at agent step {kept:,}, is kept" in line, line
    assert f"continue with dqn-train resume={run_dir}" in line, line
    assert "cannot write" not in line
    assert_nothing_left(proc)

    resumed = train(f"resume={run_dir}", f"total_steps={kept + 400}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert latest(run_dir)["counters"]["step"] == kept + 400


@pytest.mark.slow
def test_sigterm_while_the_most_workers_start_stops_promptly(tmp_path: Path) -> None:
    """The largest num_envs this box allows, and SIGTERM to the group as the first worker
    appears: no traceback from the starting workers or their fork server, exit 143 well within
    a minute, and no worker left behind."""
    num_envs = GAMES_PER_CORE * usable_cores()
    run_dir = tmp_path / "run"
    proc = start(
        [
            *RUN,
            f"num_envs={num_envs}",
            f"total_steps={num_envs * 10_000}",
            f"buffer_size={num_envs * 100}",
            "progress_interval_s=60",
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
    )
    assert proc.stderr is not None
    wait_until(proc, lambda: bool(workers_of(proc.pid)), "a game worker")
    os.killpg(proc.pid, signal.SIGTERM)
    signalled = time.monotonic()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 143, stderr[-3000:]
    assert time.monotonic() - signalled < 60
    assert "Traceback" not in stderr and "error:" not in stderr, stderr[-3000:]
    assert "stopped by SIGTERM at agent step" in stderr
    assert_nothing_left(proc)
