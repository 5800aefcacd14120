"""Sweeps (`dqn-train -m ...`): the device a job takes, how a re-run job finds its own run, how
a Slurm pre-emption becomes the run's own stop-and-checkpoint, and what a job that fails
returns.

The launchers are Hydra's (joblib on one box, submitit for Slurm); nothing here schedules jobs.
These are the few decisions dqn-train makes differently inside a sweep's job, each a small
function that the CLI calls and the tests check on their own.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from dqn_atari.envs import display_name, resolve_game

# Launcher presets and the plugin each needs (both in the `sweep` extra).
LAUNCHER_PLUGINS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
}


class LauncherError(ValueError):
    """A launcher whose Hydra plugin is not installed."""


def check_launcher(args: Iterable[str]) -> None:
    """`hydra/launcher=NAME` needs NAME's plugin; say how to get it instead of Hydra's report."""
    for arg in args:
        match = re.fullmatch(r"hydra/launcher=(\w+)", arg)
        if match is None or match.group(1) not in LAUNCHER_PLUGINS:
            continue
        module, package = LAUNCHER_PLUGINS[match.group(1)]
        if importlib.util.find_spec(module) is None:
            raise LauncherError(f'{arg} needs the {package} plugin: pip install "dqn-atari[sweep]"')


def route_game_list(value: str, has_preset: Callable[[str], bool]) -> list[str]:
    """`env=Pong,Breakout` (a sweep over games) as overrides Hydra can sweep.

    When every game has a preset the list stays a sweep over `env`; otherwise all of them go
    through the generic preset, `env=atari env.game=A,B` (a preset is that file plus its game,
    so both spellings compose the same config).
    """
    names = [name.strip() for name in value.split(",")]
    displays = [display_name(resolve_game(name)) for name in names]
    if all(has_preset(name) for name in displays):
        return [f"env={','.join(displays)}"]
    return ["env=atari", f"env.game={','.join(displays)}"]


def job_device(cuda_count: int, job_num: int) -> str:
    """The device of job `job_num` of a sweep on a box with `cuda_count` visible GPUs.

    Jobs go round-robin over the GPUs, `cuda:(job_num mod cuda_count)`, and to the CPU when there
    is none. With `hydra.launcher.n_jobs` a multiple of `cuda_count`, the jobs running at once
    start spread evenly over the GPUs. Under Slurm each job sees only the GPUs it was given
    (CUDA_VISIBLE_DEVICES), so with one GPU a job this is always cuda:0, the job's own.
    """
    if cuda_count < 0 or job_num < 0:
        raise ValueError(f"cuda_count and job_num must be >= 0, got {cuda_count}, {job_num}")
    return f"cuda:{job_num % cuda_count}" if cuda_count else "cpu"


def sweep_device(device: str, cuda_count: int, job_num: int | None) -> str:
    """`device=auto` in a sweep's job follows `job_device`; any other choice stays as asked."""
    if device != "auto" or job_num is None:
        return device
    return job_device(cuda_count, job_num)


def same_job(saved_overrides: Iterable[str], job_overrides: Iterable[str]) -> bool:
    """Whether a run directory's checkpoint was written by this very job of a sweep.

    A sweep's job writes into `<sweep dir>/<job number>`; a job that finds a checkpoint there
    made with exactly its own overrides is the same job run again (requeued after a pre-emption
    or time limit, or the sweep launched again into the same folder), and continues that run.
    """

    def key(overrides: Iterable[str]) -> list[str]:
        return sorted(o for o in overrides if not o.startswith("resume="))

    return key(saved_overrides) == key(job_overrides)


def preemption_signal(environ: Mapping[str, str] | None = None) -> signal.Signals | None:
    """The signal submitit requeues a job on (USR2 unless SUBMITIT_PREEMPT_SIGNAL names another),
    inside a job submitit runs (local or Slurm); None elsewhere."""
    environ = os.environ if environ is None else environ
    if not environ.get("SUBMITIT_EXECUTOR"):
        return None
    name = "SIG" + environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal.Signals, name, None)


Handler = Callable[[int, FrameType | None], Any]


class Preemption:
    """Inside a submitit job: its pre-emption signal stops the run at a step, as SIGTERM does.

    Slurm sends USR2 `signal_delay_s` seconds before the time limit and, where the cluster sets
    `preempt_send_user_signal`, on pre-emption. submitit's own handler would requeue the job at
    once and lose the steps since the last periodic checkpoint. Instead the run's stop flag takes
    the signal: the loop finishes its step and writes `latest.pt`, then `hand_over` calls
    submitit's handler, which requeues the job with the same overrides (and exits). The requeued
    job finds its checkpoint in its own directory and continues (see `same_job`).

    submitit ignores SIGTERM in its jobs (some clusters send it together with USR2); here SIGTERM
    also stops the run with a checkpoint, and a signal that arrives once the run is already
    stopping is not taken as a second Ctrl-C, so a scheduler's pair of signals never skips the
    checkpoint.
    """

    def __init__(self, stop: Handler, stopping: Callable[[], bool]) -> None:
        self.signum = preemption_signal()
        self.requeue = False
        self._stop = stop
        self._stopping = stopping
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == self.signum:
            self.requeue = True
        if not self._stopping():
            self._stop(signum, frame)

    def install(self) -> None:
        if self.signum is None:
            return
        for sig in (signal.SIGTERM, self.signum):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def hand_over(self) -> None:
        """After the run stopped on the pre-emption signal and saved, let submitit requeue it."""
        handler = self._previous.get(self.signum) if self.signum is not None else None
        if self.requeue and self.signum is not None and callable(handler):
            handler(int(self.signum), None)  # submitit's: requeue, then exit this process


@dataclass(frozen=True)
class JobOutcome:
    """What one job of a sweep returns: its exit code and, when it failed, its one-line error.

    A job returns this rather than raise or exit. Hydra records a job that raises as failed, and
    its sweeper then raises that error once the batch is back, before the next batch is
    launched; a job that calls sys.exit goes further, through joblib, which cancels the jobs
    still running. Returned, the outcome travels back with the launcher's JobReturn (pickled by
    joblib and submitit), and dqn-train reports every failed job once the sweep is over.
    """

    code: int = 0  # the exit code the job would have had as a single run
    error: str | None = None  # the job's one-line error (printed in its own log too)


@dataclass(frozen=True)
class FinishedJob:
    """One job as the launcher handed it back."""

    num: int
    overrides: Sequence[str]
    outcome: JobOutcome


def failure_report(jobs: Sequence[FinishedJob]) -> tuple[list[str], int]:
    """One line per failed job (its number, the overrides that set it apart from the other jobs,
    its error) and the sweep's exit code: 0 when every job succeeded, else the highest of the
    failed jobs' codes (a signal's 128 + N above a stopped run's 3 above bad input's 2)."""
    failed = [job for job in jobs if job.outcome.code != 0]
    if not failed:
        return [], 0
    everyone = set.intersection(*(set(job.overrides) for job in jobs))
    lines = []
    for job in sorted(failed, key=lambda j: j.num):
        own = [o for o in job.overrides if o not in everyone] or list(job.overrides)
        shown = " ".join(o for o in own if not o.startswith("hydra.")) or "no overrides"
        error = job.outcome.error or f"exit code {job.outcome.code}"
        verb = "stopped" if job.outcome.code > 128 else "failed"  # by a signal, or on its own
        lines.append(f"job {job.num} of {len(jobs)} ({shown}) {verb}: {error}")
    return lines, max(job.outcome.code for job in failed)
