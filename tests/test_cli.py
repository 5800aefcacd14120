"""End-to-end: the installed dqn-train and dqn-eval commands on the real ALE, tiny budgets."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import cv2
import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import dqn_atari

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TRAIN = shutil.which("dqn-train")
EVAL = shutil.which("dqn-eval")
if TRAIN is None or EVAL is None:  # pragma: no cover - the README install provides them
    pytest.fail("dqn-train/dqn-eval are not installed: pip install -e '.[dev]'", pytrace=False)

TAGS = {
    "train/episode_return",
    "train/episode_length",
    "train/loss",
    "train/q_mean",
    "train/epsilon",
    "perf/sps",
    "eval/return_mean",
}


def run(
    cmd: list[Any], cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def scalars(run_dir: Path) -> dict[str, list[int]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's run: Pong, 2000 agent steps, learning from 500, replay of 5000, on the CPU."""
    work = tmp_path_factory.mktemp("train")
    run_dir = work / "run"
    result = run(
        [
            TRAIN,
            "env=Pong",
            "total_steps=2000",
            "learning_starts=500",
            "buffer_size=5000",
            "device=cpu",
            "checkpoint_interval=1000",
            "log_interval=250",
            "eval_interval=1000",
            "eval_episodes=1",
            "eval_max_episode_frames=800",
            "final_eval_episodes=1",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=work,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_train_writes_config_checkpoints_and_tensorboard_tags(trained_run: Path) -> None:
    assert (trained_run / "config.yaml").read_text().count("game: Pong") == 1
    ckpts = trained_run / "checkpoints"
    assert {p.name for p in ckpts.glob("*.pt")} == {
        "latest.pt",
        "step_000001000.pt",
        "step_000002000.pt",
    }
    state = torch.load(ckpts / "latest.pt", weights_only=True)
    assert state["game"] == "pong"
    assert state["counters"]["step"] == 2000
    # One update every 4 agent steps after learning_starts: (2000 - 500) / 4.
    assert state["counters"]["updates"] == 375
    assert state["num_actions"] == 6
    assert torch.load(ckpts / "step_000001000.pt", weights_only=True)["counters"]["step"] == 1000
    assert not list(ckpts.glob("*.tmp")), "a temporary checkpoint file was left behind"

    logged = scalars(trained_run)
    assert set(logged) >= TAGS, TAGS - set(logged)
    assert logged["train/loss"] == [750, 1000, 1250, 1500, 1750, 2000]
    assert logged["eval/return_mean"] == [1000, 2000]
    assert len(logged["train/episode_return"]) >= 1  # random Pong games last ~800 agent steps


def test_resume_continues_the_run_in_place(trained_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    done = run([TRAIN, f"resume={run_dir}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nothing to do" in done.stderr

    result = run([TRAIN, f"resume={run_dir}", "total_steps=2600", "log_interval=100"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no replay memory was saved" in result.stderr
    state = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert state["game"] == "pong"  # the saved overrides (env=Pong) were kept
    assert state["counters"]["step"] == 2600
    # Refill of learning_starts=500 agent steps from 2000, then one update per 4 steps.
    assert state["counters"]["updates"] == 375 + (2600 - 2500) // 4
    logged = scalars(run_dir)
    # One TensorBoard history: the first run's scalars, then the resumed run's, no gap or overlap.
    assert logged["train/epsilon"] == [250 * k for k in range(1, 9)] + [
        2100 + 100 * k for k in range(6)
    ]
    assert logged["train/loss"][-1] == 2600


def test_new_run_refuses_a_directory_that_holds_one(trained_run: Path, tmp_path: Path) -> None:
    result = run([TRAIN, "env=Pong", f"hydra.run.dir={trained_run}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "already holds a run" in result.stderr and "resume=" in result.stderr


def test_an_earlier_format_is_refused_for_resume_and_still_scored(
    trained_run: Path, tmp_path: Path
) -> None:
    # dqn-atari 0.1 wrote format 1: its counters under "state", no per-game or N-game layout.
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    latest = run_dir / "checkpoints" / "latest.pt"
    state = torch.load(latest, weights_only=True)
    state["format"] = "dqn-atari/1"
    state["state"] = state.pop("counters")
    torch.save(state, latest)
    before = latest.read_bytes()

    refused = run([TRAIN, f"resume={run_dir}", "total_steps=4000"], cwd=tmp_path)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "format dqn-atari/1" in line and "score it with dqn-eval" in line
    assert latest.read_bytes() == before  # nothing of the old run was touched

    scored = run(
        [EVAL, f"checkpoint={latest}", "episodes=1", "max_episode_frames=400"], cwd=tmp_path
    )
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert json.loads(scored.stdout.strip().splitlines()[-1])["checkpoint_step"] == 2000


def test_eval_prints_json_last_and_writes_a_video(trained_run: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.pt"
    shutil.copy(trained_run / "checkpoints" / "latest.pt", ckpt)
    result = run(
        [EVAL, f"checkpoint={ckpt}", "episodes=2", "max_episode_frames=800", "video=true"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 2 and len(summary["returns"]) == 2
    assert summary["return_mean"] == pytest.approx(sum(summary["returns"]) / 2)
    assert all(-21 <= r <= 21 for r in summary["returns"])
    # 800 emulator frames at most per game: 200 agent steps minus the no-op/reset frames.
    assert 0 < summary["steps"] <= 2 * 200
    video = cv2.VideoCapture(str(tmp_path / "model_eval.mp4"))
    frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    assert frames == summary["lengths"][0] + 1  # reset screen + one per agent step
    assert (video.get(cv2.CAP_PROP_FRAME_WIDTH), video.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (160, 210)


def test_eval_refuses_a_checkpoint_that_would_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "dqn-atari/1", "payload": Exploit()}, evil)
    result = run([EVAL, f"checkpoint={evil}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "refused" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


def _truncated(tmp_path: Path, trained_run: Path) -> Path:
    data = (trained_run / "checkpoints" / "latest.pt").read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["env=Breakot"], "did you mean Breakout"),
        (["not_a_key=1"], "unknown config key 'not_a_key'"),
        (["batch_size=abc"], "batch_size=abc"),
        (["buffer_size=-5"], "buffer_size must be"),
        (["batch_size=64", "buffer_size=32"], "must not exceed buffer_size"),
        (["learning_starts=100", "total_steps=10"], "must not exceed total_steps"),
        (["device=tpu"], "device must be"),
        (["algo=sarsa"], "algo/sarsa"),
        (["resume=/nonexistent/run"], "no such run directory"),
        # Hydra followed these out of the group's folder: "Could not find 'env/algo/dqn'".
        (["env=../config"], "unknown Atari game '../config'"),
        (
            ["algo=../config"],
            "Could not find 'algo/../config'; options: c51, double_dqn, dqn, dueling, "
            "prioritized, qr_dqn, rainbow",
        ),
    ],
)
def test_bad_training_input_is_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = run([TRAIN, *args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("dqn-train: error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # refused before Hydra made the run directory


# Values that validation used to let through: the run crashed with a traceback (exit 1) and
# left a run directory holding only .hydra/ and dqn-train.log.
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["seed=-1"], "seed must be in [0, 18446744073709551615], got -1"),
        (["algo.lr=nan"], "algo.lr must be a finite number > 0, got nan"),
        (["env.screen_size=35"], "env.screen_size must be in [36, 210] pixels, got 35"),
    ],
)
def test_a_value_the_run_cannot_use_is_refused_before_the_run_directory(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = run([TRAIN, "env=Pong", *args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dqn-train: error: {message}"), lines
    assert not (tmp_path / "run").exists()


def test_eval_refuses_a_seed_before_reading_the_checkpoint(tmp_path: Path) -> None:
    result = run([EVAL, "checkpoint=missing.pt", "seed=-1"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dqn-eval: error: seed must be in"), lines
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_without_cuda_is_an_error(tmp_path: Path) -> None:
    result = run([TRAIN, "device=cuda", f"hydra.run.dir={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 2 and "CUDA is not available" in result.stderr


def test_compile_without_a_compiler_is_refused_before_the_run(tmp_path: Path) -> None:
    # A PATH with only the interpreter: inductor finds no g++ to build its kernels with.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k not in ("CXX", "CC")}
    env["PATH"] = str(bin_dir)
    # Without the check, this run would fail at its first update, after learning_starts.
    args = ["env=Pong", "compile=true", "total_steps=300", "learning_starts=100"]
    args += ["buffer_size=1000", f"hydra.run.dir={tmp_path / 'run'}"]
    result = run([TRAIN, *args], tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("dqn-train: error:")]
    assert len(lines) == 1 and "No working C++ compiler" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bad_eval_input_is_one_line_and_exit_2(trained_run: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    cases = {
        "checkpoint=" + str(tmp_path / "missing.pt"): "checkpoint not found",
        "checkpoint=" + str(garbage): "not a PyTorch checkpoint",
        "checkpoint=" + str(_truncated(tmp_path, trained_run)): "truncated or corrupt",
    }
    for arg, message in cases.items():
        result = run([EVAL, arg], cwd=tmp_path)
        assert result.returncode == 2, arg
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    missing = run([EVAL], cwd=tmp_path)
    assert missing.returncode == 2 and "checkpoint is required" in missing.stderr


def test_installed_wheel_finds_its_configs(tmp_path: Path) -> None:
    """A wheel (not an editable checkout) carries configs/ and runs from any directory."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("dqn_atari-*.whl")
    assert "dqn_atari/configs/env/Breakout.yaml" in zipfile.ZipFile(wheel).namelist()
    # The package's metadata takes its version from the code's one __version__.
    assert wheel.name.startswith(f"dqn_atari-{dqn_atari.__version__}-")
    # Installed beside, not over, the checkout: PYTHONPATH puts the wheel's copy first. (A venv
    # would not do: made from inside a venv, --system-site-packages sees the base Python's
    # packages, not the ones this test runs with.)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), wheel],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = run(
        [sys.executable, "-c", "import dqn_atari.cli as c; print(c.CONFIG_DIR)"], tmp_path, env=env
    )
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    shown = run(
        [sys.executable, site / "bin" / "dqn-train", "--cfg", "job", "env=Seaquest"],
        tmp_path,
        env=env,
    )
    assert shown.returncode == 0, shown.stderr
    assert "game: Seaquest" in shown.stdout and "batch_size: 32" in shown.stdout
    version = run([sys.executable, site / "bin" / "dqn-train", "--version"], tmp_path, env=env)
    assert version.stdout.startswith(f"dqn-train {dqn_atari.__version__} ")


# ---------------------------------------------------------------- a hostile user, round 2

# A budget that ends in seconds, for the cases that used to start a run (the default one is
# 12.5M agent steps with a 7 GB replay memory).
TINY = ["env=Pong", "device=cpu", "total_steps=200", "learning_starts=100", "buffer_size=1000"]
TINY += ["eval_interval=0", "final_eval_episodes=0"]


def one_error_line(result: subprocess.CompletedProcess[str], prog: str = "dqn-train") -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_an_empty_resume_or_run_dir_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    """`resume=$RUN` with RUN unset started a fresh run; `hydra.run.dir=` meant the current
    directory."""
    (tmp_path / "notes.txt").write_text("mine")
    for args, message in [
        (["resume="], "resume= is empty (an unset variable?)"),
        (["hydra.run.dir="], "hydra.run.dir is empty (an unset variable?)"),
    ]:
        result = run([TRAIN, *TINY, *args], cwd=tmp_path)
        assert result.returncode == 2, result.stderr[-2000:]
        assert message in one_error_line(result)
        assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # Hydra's multi-line error and exit 1; +lr=1 ran the sweep with the key ignored.
        (["lr=1"], "unknown config key 'lr'"),
        (["+lr=1"], "unknown config key 'lr'"),
        (["batch_size=abc"], "Error merging override batch_size=abc"),
        # resume= was ignored: each job started a new run.
        (["resume=/some/run", "seed=0,1"], "resume=DIR continues one run"),
    ],
)
def test_bad_sweep_input_is_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run([TRAIN, "-m", *TINY, *args, f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in one_error_line(result)
    assert not sweep_dir.exists()


def test_a_path_hydra_cannot_parse_says_how_to_quote_it(trained_run: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckptü.pt"
    shutil.copy(trained_run / "checkpoints" / "latest.pt", ckpt)
    args = ["episodes=1", "max_episode_frames=400"]
    refused = run([EVAL, f"checkpoint={ckpt}", *args], cwd=tmp_path)
    assert refused.returncode == 2
    line = one_error_line(refused, "dqn-eval")
    assert "LexerNoViableAltException" not in line
    quoted = shlex.quote(f'checkpoint="{ckpt}"')
    assert f"quote its value for Hydra, as in {quoted}" in line, line
    # The line's advice, as a shell passes it.
    scored = run(["bash", "-c", f"{EVAL} {quoted} {' '.join(args)}"], cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert json.loads(scored.stdout.strip().splitlines()[-1])["checkpoint_step"] == 2000
    tilde = run([TRAIN, *TINY, "hydra.run.dir=~/x"], cwd=tmp_path)
    assert tilde.returncode == 2
    assert """'hydra.run.dir="~/x"'""" in one_error_line(tilde)


def _copy(trained_run: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    return run_dir


def _files(run_dir: Path) -> dict[str, bytes]:
    """The run's files (the lock file aside: it names whichever dqn-train locked it last)."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in run_dir.rglob("*")
        if p.is_file() and p.name != ".dqn-train.lock"
    }


@pytest.mark.parametrize(
    ("args", "changes"),
    [
        (
            ["env.frame_skip=2", "env.sticky_action_prob=0.25"],
            "env.frame_skip (4 -> 2), env.sticky_action_prob (0.0 -> 0.25)",
        ),
        (["seed=5"], "seed (0 -> 5)"),
        (["algo.lr=0.001", "batch_size=64"], "algo.lr (0.00025 -> 0.001), batch_size (32 -> 64)"),
        # "Invalid type assigned: str is not a subclass of AlgoConfig"
        (["algo=double_dqn"], "algo (dqn -> double_dqn)"),
        (["env=Breakout"], "env.game (Pong -> Breakout)"),
        (["env.full_action_space=true"], "env.full_action_space (False -> True)"),
    ],
)
def test_a_resume_that_would_change_the_experiment_is_refused(
    trained_run: Path, tmp_path: Path, args: list[str], changes: str
) -> None:
    run_dir = _copy(trained_run, tmp_path)
    before = _files(run_dir)
    result = run([TRAIN, f"resume={run_dir}", "total_steps=2400", *args], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    line = one_error_line(result)
    assert f"resume={run_dir} cannot change {changes}: that defines the experiment" in line, line
    assert "a resume may change only total_steps, checkpoint_interval," in line
    assert _files(run_dir) == before


def test_a_hand_edited_seed_in_config_yaml_is_refused_too(
    trained_run: Path, tmp_path: Path
) -> None:
    run_dir = _copy(trained_run, tmp_path)
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("\nseed: 0\n", "\nseed: 3\n"))
    result = run([TRAIN, f"resume={run_dir}", "total_steps=2400"], cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot change seed (0 -> 3)" in one_error_line(result)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # A parser traceback.
        (("batch_size: 32", "batch_size: [32"), "is not valid YAML at line"),
        # "ValidationError raised while composing config:", without the key.
        (
            ("batch_size: 32", "batch_size: lots"),
            "cannot be used at batch_size: Value 'lots' of type 'str' could not be converted",
        ),
        (("batch_size: 32", "batch_sise: 32"), "has an unknown key 'batch_sise'"),
        # "unknown config key 'total_steps'"
        (None, "is empty"),
    ],
)
def test_a_broken_config_yaml_names_the_file_and_the_key(
    trained_run: Path, tmp_path: Path, edit: tuple[str, str] | None, message: str
) -> None:
    run_dir = _copy(trained_run, tmp_path)
    config = run_dir / "config.yaml"
    config.write_text("" if edit is None else config.read_text().replace(*edit))
    result = run([TRAIN, f"resume={run_dir}", "total_steps=2400"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"the run's config {config} {message}" in one_error_line(result)


def test_cfg_job_of_a_resume_prints_the_config_it_would_run_with(
    trained_run: Path, tmp_path: Path
) -> None:
    result = run([TRAIN, "--cfg", "job", f"resume={trained_run}", "total_steps=4000"], tmp_path)
    assert result.returncode == 0, result.stderr
    shown = OmegaConf.create(result.stdout)
    # The run's own values (the package's defaults are Breakout, 50,000 and 1,000,000).
    assert shown.env.game == "Pong" and shown.total_steps == 4000
    assert shown.learning_starts == 500 and shown.buffer_size == 5000
    refused = run([TRAIN, "--cfg", "job", f"resume={trained_run}", "seed=1"], tmp_path)
    assert refused.returncode == 2 and "cannot change seed" in one_error_line(refused)


def test_a_new_run_never_takes_a_folder_that_holds_files(trained_run: Path, tmp_path: Path) -> None:
    run_dir = _copy(trained_run, tmp_path)
    (run_dir / "checkpoints" / "latest.pt").unlink()  # only step_*.pt left
    before = _files(run_dir)
    result = run([TRAIN, *TINY, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    line = one_error_line(result)
    assert f"{run_dir} holds a run whose checkpoints/latest.pt is gone" in line
    assert _files(run_dir) == before
    # The line's way back, pasted into a shell: the run continues from its newest step file.
    advice = line.split("to continue from it, ")[1].split("; or pick")[0]
    resumed = run(["bash", "-c", advice], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "already reached total_steps=2,000; nothing to do" in resumed.stderr
    state = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert state["counters"]["step"] == 2000

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my: notes\n")
    result = run([TRAIN, *TINY, f"hydra.run.dir={mine}"], cwd=tmp_path)
    assert result.returncode == 2
    assert f"{mine} is not empty (config.yaml)" in one_error_line(result)
    assert [p.name for p in mine.iterdir()] == ["config.yaml"]


def test_eval_names_what_does_not_fit_in_the_network(trained_run: Path, tmp_path: Path) -> None:
    state = torch.load(trained_run / "checkpoints" / "latest.pt", weights_only=True)
    online = state["learner"]["online"]
    name = next(k for k in online if k.endswith("weight") and online[k].shape[0] == 6)
    online[name] = torch.zeros(5, online[name].shape[1])
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    result = run([EVAL, f"checkpoint={bad}", "episodes=1"], cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result, "dqn-eval")
    # It ended in "Error(s) in loading state_dict for NatureQNetwork:".
    assert f"size mismatch for {name}: copying a param with shape torch.Size([5, 512])" in line


def test_version_is_ours_and_one_source(trained_run: Path, tmp_path: Path) -> None:
    # The version dqn-atari 0.2's layouts (checkpoint format dqn-atari/2) belong to.
    assert dqn_atari.__version__ == "0.2.0"
    for prog in (TRAIN, EVAL):
        shown = run([prog, "--version"], cwd=tmp_path)
        assert shown.returncode == 0
        assert shown.stdout.startswith(f"{Path(prog).name} 0.2.0 "), shown.stdout  # not Hydra's
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["version"] == "0.2.0"
    assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text()


def test_eval_help_lists_only_what_eval_takes(tmp_path: Path) -> None:
    shown = run([EVAL, "--help"], cwd=tmp_path)
    assert shown.returncode == 0
    assert "checkpoint: ???" in shown.stdout and "episodes: 30" in shown.stdout
    # dqn-train's groups, which dqn-eval refuses.
    assert "Configuration groups" not in shown.stdout and "double_dqn" not in shown.stdout
