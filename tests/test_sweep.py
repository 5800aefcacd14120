"""Sweep decisions on their own: the device rule, same-job detection, game lists, the launcher
presets, and the pre-emption signal taken by the run's stop flag (real signals, this process)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import hydra
import pytest
from hydra.core.global_hydra import GlobalHydra

from dqn_atari import sweep
from dqn_atari.cli import CONFIG_DIR, StopFlag, compose, register_schemas, route_game
from dqn_atari.envs import UnknownGameError

TRAIN = shutil.which("dqn-train")


@pytest.mark.parametrize(
    ("cuda_count", "job_num", "device"),
    [
        (0, 0, "cpu"),
        (0, 7, "cpu"),
        (1, 0, "cuda:0"),
        (1, 5, "cuda:0"),
        (2, 0, "cuda:0"),
        (2, 1, "cuda:1"),
        (2, 2, "cuda:0"),
        (4, 6, "cuda:2"),
        (8, 15, "cuda:7"),
    ],
)
def test_job_device_goes_round_robin_over_the_gpus(
    cuda_count: int, job_num: int, device: str
) -> None:
    assert sweep.job_device(cuda_count, job_num) == device


def test_job_device_spreads_each_batch_of_jobs_evenly() -> None:
    # n_jobs = 2 x GPUs: every batch of jobs running together puts two on each GPU.
    for start in range(0, 24, 8):
        batch = [sweep.job_device(4, j) for j in range(start, start + 8)]
        assert sorted(batch) == [f"cuda:{gpu}" for gpu in (0, 0, 1, 1, 2, 2, 3, 3)]


def test_job_device_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        sweep.job_device(-1, 0)


def test_only_auto_in_a_sweep_follows_the_rule() -> None:
    assert sweep.sweep_device("auto", 2, 3) == "cuda:1"
    assert sweep.sweep_device("auto", 2, None) == "auto"  # a single run: resolve_device decides
    assert sweep.sweep_device("cuda:0", 2, 3) == "cuda:0"  # asked for: kept
    assert sweep.sweep_device("cpu", 2, 3) == "cpu"


def test_same_job_compares_the_overrides_as_a_set_without_resume() -> None:
    saved = ["env=Pong", "seed=1", "total_steps=300"]
    assert sweep.same_job(saved, ["seed=1", "total_steps=300", "env=Pong"])
    assert sweep.same_job(saved, [*saved, "resume=/runs/x"])
    assert not sweep.same_job(saved, ["env=Pong", "seed=2", "total_steps=300"])
    assert not sweep.same_job(saved, ["env=Pong", "seed=1"])


def test_a_list_of_games_stays_a_sweep() -> None:
    assert route_game(["env=Pong,Breakout", "seed=0,1"]) == ["env=Pong,Breakout", "seed=0,1"]
    assert route_game(["env=pong,breakout"]) == ["env=Pong,Breakout"]
    # A game without a preset sends every game through the generic preset.
    assert route_game(["env=Pong,space_invaders"]) == [
        "env=atari",
        "env.game=Pong,SpaceInvaders",
    ]
    with pytest.raises(UnknownGameError, match="Breakot"):
        route_game(["env=Pong,Breakot"])


def test_a_launcher_without_its_plugin_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    sweep.check_launcher(["hydra/launcher=joblib", "hydra/launcher=submitit_local"])  # installed
    monkeypatch.setitem(sweep.LAUNCHER_PLUGINS, "joblib", ("no_such_plugin_module", "some-pkg"))
    message = r'some-pkg plugin: pip install "dqn-atari\[sweep'
    with pytest.raises(sweep.LauncherError, match=message):
        sweep.check_launcher(["env=Pong", "hydra/launcher=joblib"])


def test_preemption_signal_is_submitits_inside_its_jobs_only() -> None:
    assert sweep.preemption_signal({}) is None
    assert sweep.preemption_signal({"SUBMITIT_EXECUTOR": "slurm"}) == signal.SIGUSR2
    env = {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_PREEMPT_SIGNAL": "USR1"}
    assert sweep.preemption_signal(env) == signal.SIGUSR1


@pytest.fixture
def submitit_job(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """This process as a submitit job: a recording USR2 handler stands where submitit puts its
    requeue handler, and SIGTERM is ignored as submitit's bypass does."""
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    calls: list[int] = []

    def requeue(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)

    old_usr2 = signal.signal(signal.SIGUSR2, requeue)
    old_term = signal.signal(signal.SIGTERM, lambda s, f: None)
    yield calls
    signal.signal(signal.SIGUSR2, old_usr2)
    signal.signal(signal.SIGTERM, old_term)


def test_usr2_stops_the_run_and_is_handed_on_after_the_checkpoint(
    submitit_job: list[int],
) -> None:
    stop = StopFlag()
    stop.install()
    preemption = sweep.Preemption(stop, lambda: stop.signal_name is not None)
    preemption.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stop.signal_name == "SIGUSR2"  # the loop stops at its step and saves
        assert submitit_job == []  # submitit has not requeued yet
        # Schedulers may follow with SIGTERM: the run is stopping already, it must not abort.
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signal_name == "SIGUSR2"
    finally:
        preemption.restore()
        stop.restore()
    assert preemption.requeue
    preemption.hand_over()
    assert submitit_job == [signal.SIGUSR2]


def test_sigterm_in_a_submitit_job_stops_without_requeueing(submitit_job: list[int]) -> None:
    stop = StopFlag()
    stop.install()
    preemption = sweep.Preemption(stop, lambda: stop.signal_name is not None)
    preemption.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
    finally:
        preemption.restore()
        stop.restore()
    assert stop.signal_name == "SIGTERM" and not preemption.requeue
    preemption.hand_over()
    assert submitit_job == []


def test_outside_submitit_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    before = signal.getsignal(signal.SIGUSR2)
    preemption = sweep.Preemption(lambda s, f: None, lambda: False)
    preemption.install()
    assert signal.getsignal(signal.SIGUSR2) is before
    preemption.restore()
    preemption.hand_over()  # nothing to hand over


# ---------------------------------------------------------------- presets


@pytest.fixture
def fresh_hydra() -> Iterator[None]:
    register_schemas()
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


def test_atari5_is_the_five_games_of_the_paper(fresh_hydra: None) -> None:
    with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra.compose("config", ["+experiment=atari5"], return_hydra_config=True)
    games = cfg.hydra.sweeper.params["env.game"].split(",")
    assert games == ["BattleZone", "DoubleDunk", "NameThisGame", "Phoenix", "Qbert"]
    assert cfg.env.frame_skip == 4 and cfg.env.sticky_action_prob == 0.0  # Nature otherwise


def test_a_run_of_the_atari5_preset_composes(fresh_hydra: None) -> None:
    cfg = compose(CONFIG_DIR, "config", ["+experiment=atari5", "env.game=Qbert", "seed=2"])
    assert Path(str(cfg.hydra.run.dir)).parts[-2] == "Qbert"


@pytest.mark.skipif(TRAIN is None, reason="dqn-train is not installed")
def test_slurm_launcher_composes_with_the_documented_keys(tmp_path: Path) -> None:
    args = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]
    args += ["hydra.launcher.timeout_min=600", "hydra.launcher.gpus_per_node=2", "--cfg", "hydra"]
    result = subprocess.run(
        [str(TRAIN), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    expected = [
        "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
        "partition: gpu",
        "timeout_min: 600",
        "gpus_per_node: 2",
        "cpus_per_task: 4",
        "mem_gb: 16",
        "signal_delay_s: 120",
        "max_num_timeout: 20",
    ]
    for line in expected:
        assert f"    {line}\n" in text, line


def test_the_sweep_report_names_each_failed_job_by_what_sets_it_apart() -> None:
    ok, diverged, bad = (
        sweep.FinishedJob(0, ["env=Pong", "seed=0"], sweep.JobOutcome()),
        sweep.FinishedJob(1, ["env=Pong", "seed=1"], sweep.JobOutcome(3, "diverged at 300")),
        sweep.FinishedJob(2, ["env=Pong", "seed=-1"], sweep.JobOutcome(2, "seed must be >= 0")),
    )
    lines, code = sweep.failure_report([ok, diverged, bad])
    assert lines == [
        "job 1 of 3 (seed=1) failed: diverged at 300",
        "job 2 of 3 (seed=-1) failed: seed must be >= 0",
    ]
    assert code == 3  # a run that had to stop outranks bad input
    stopped = sweep.FinishedJob(3, ["env=Pong", "seed=3"], sweep.JobOutcome(130, "SIGINT"))
    lines, code = sweep.failure_report([ok, bad, stopped])
    assert lines[-1] == "job 3 of 3 (seed=3) stopped: SIGINT" and code == 130
    assert sweep.failure_report([ok]) == ([], 0)
    # One job: its overrides are all there is to name it by.
    lines, _ = sweep.failure_report([bad])
    assert lines == ["job 2 of 1 (env=Pong seed=-1) failed: seed must be >= 0"]
