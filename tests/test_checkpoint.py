"""Checkpoint files: atomic replacement, retention, safe loading, replay save and load."""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from dqn_atari.checkpoint import (
    FORMAT,
    CheckpointError,
    CheckpointManager,
    CheckpointWriteError,
    load_checkpoint,
    load_error_reason,
    save_atomic,
)
from dqn_atari.envs import make_atari_env
from dqn_atari.replay import ReplayMemory, ReplayMemoryError


def _state(step: int) -> dict:
    return {"format": FORMAT, "state": {"step": step}, "weights": torch.full((3,), float(step))}


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path: Path) -> None:
    path = tmp_path / "latest.pt"
    save_atomic(_state(1), path)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises, the file must survive
        save_atomic({"format": FORMAT, "unpicklable": lambda: None}, path)
    assert load_checkpoint(path)["state"]["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]  # no temporary file left


def test_checkpoint_files_get_ordinary_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        save_atomic(_state(1), tmp_path / "latest.pt")
    finally:
        os.umask(umask)
    assert (tmp_path / "latest.pt").stat().st_mode & 0o777 == 0o644


def test_manager_keeps_the_last_k_periodic_files_and_cleans_crash_leftovers(
    tmp_path: Path,
) -> None:
    manager = CheckpointManager(tmp_path, keep=2)
    (tmp_path).mkdir(exist_ok=True)
    (tmp_path / ".latest.pt.abc123.tmp").write_bytes(b"half a checkpoint")  # a crash mid-write
    for step in (100, 200, 300):
        manager.save(_state(step), step, periodic=True)
    manager.save(_state(350), 350, periodic=False)
    assert [p.name for p in manager.periodic()] == ["step_000000200.pt", "step_000000300.pt"]
    assert load_checkpoint(manager.latest)["state"]["step"] == 350
    assert load_checkpoint(tmp_path / "step_000000200.pt")["state"]["step"] == 200
    assert not list(tmp_path.glob(".*.tmp"))


def test_load_refuses_non_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a dqn-atari checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    save_atomic(_state(5), tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    flipped = bytearray(data)
    middle = len(flipped) // 2
    flipped[middle : middle + 64] = bytes(64)
    (tmp_path / "flipped.pt").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "flipped.pt")


def _filled_memory(capacity: int, steps: int, seed: int) -> ReplayMemory:
    env = make_atari_env("Breakout", seed=seed, max_episode_frames=500)
    memory = ReplayMemory(capacity, seed=seed)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset()
    memory.start(obs[None, -1])
    for _ in range(steps):
        action = int(rng.integers(4))
        obs, reward, terminated, truncated, info = env.step(action)
        final = obs[-1]
        ended = terminated or truncated
        if ended:
            obs, _ = env.reset()
        memory.add_step(
            np.array([action]),
            np.array([reward]),
            np.array([info["td_terminal"]]),
            np.array([ended]),
            final[None],
            obs[None, -1],
        )
    env.close()
    return memory


def test_replay_round_trip_samples_the_same_batches(tmp_path: Path) -> None:
    memory = _filled_memory(capacity=300, steps=700, seed=0)  # wrapped, with end slots
    memory.save(tmp_path / "replay")
    restored = ReplayMemory(300, seed=123)
    restored.load(tmp_path / "replay")
    assert len(restored) == len(memory)
    for _ in range(3):
        for a, b in zip(memory.sample(64), restored.sample(64), strict=True):
            assert torch.equal(a, b)
    # Writing goes on from the same place in both.
    frame = np.full((1, 84, 84), 7, np.uint8)
    for m in (memory, restored):
        m.add_step(
            np.array([1]), np.array([1.0]), np.array([False]), np.array([False]), frame, frame
        )
    for a, b in zip(memory.sample(64), restored.sample(64), strict=True):
        assert torch.equal(a, b)


def test_replay_load_refuses_a_mismatch_or_a_truncated_file(tmp_path: Path) -> None:
    memory = _filled_memory(capacity=100, steps=50, seed=1)
    memory.save(tmp_path / "replay")
    with pytest.raises(ReplayMemoryError, match="buffer_size"):
        ReplayMemory(200).load(tmp_path / "replay")
    frames = tmp_path / "replay" / "frames.u8"
    frames.write_bytes(frames.read_bytes()[:-10])
    with pytest.raises(ReplayMemoryError, match="truncated"):
        ReplayMemory(100).load(tmp_path / "replay")


def test_manager_writes_the_replay_beside_latest_and_drops_the_old_one(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    memory = _filled_memory(capacity=100, steps=30, seed=2)
    manager.save(_state(10), 10, periodic=False, replay=memory)
    manager.save(_state(20), 20, periodic=False, replay=memory)
    latest = load_checkpoint(manager.latest)
    assert latest["replay"] == "replay_000000020"
    assert (tmp_path / latest["replay"]).is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "replay_000000020"]
    # The same step again (a stop right after a checkpoint) replaces it in place.
    manager.save(_state(20), 20, periodic=False, replay=memory)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "replay_000000020"]


def test_an_interrupted_checkpoint_leaves_no_replay_folder_behind(tmp_path: Path) -> None:
    """Stopped between the replay memory and latest.pt (a second Ctrl-C, a full disk): the new
    replay folder, which no checkpoint names, goes; the previous checkpoint and its replay stay."""
    manager = CheckpointManager(tmp_path)
    memory = _filled_memory(capacity=100, steps=30, seed=2)
    manager.save(_state(10), 10, periodic=False, replay=memory)
    before = manager.latest.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - what the failed write raises does not matter
        manager.save({**_state(20), "unpicklable": lambda: None}, 20, periodic=False, replay=memory)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "replay_000000010"]
    assert manager.latest.read_bytes() == before


class _InterruptedReplay:
    """A replay memory whose save is cut short by a second Ctrl-C half way."""

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True)
        (directory / "frames.u8").write_bytes(b"half")
        raise KeyboardInterrupt


def test_a_ctrl_c_while_saving_the_replay_leaves_nothing_half_written(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        manager.save(_state(10), 10, periodic=False, replay=_InterruptedReplay())
    assert list(tmp_path.iterdir()) == []


def test_orphans_of_a_killed_run_are_removed_when_the_next_starts(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    memory = _filled_memory(capacity=100, steps=30, seed=2)
    manager.save(_state(10), 10, periodic=False, replay=memory)
    memory.save(tmp_path / "replay_000000020")  # renamed into place, then SIGKILL
    (tmp_path / ".latest.pt.x.tmp").write_bytes(b"half")
    manager.remove_orphans()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "replay_000000010"]


# ---------------------------------------------------------------- a real full disk


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path`: a disk that really fills up."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_full_disk_is_the_oses_own_error_and_the_old_checkpoint_stays(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "disk", "1m") as disk:
        save_atomic(_state(1), disk / "latest.pt")
        big = {"format": FORMAT, "state": {"step": 2}, "weights": torch.zeros(500_000)}  # 2 MB
        # torch.save writing to the file itself raised "RuntimeError: [enforce fail at
        # inline_container.cc...] unexpected pos", which said nothing of the disk.
        with pytest.raises(OSError, match="No space left on device"):
            save_atomic(big, disk / "latest.pt")
        assert load_checkpoint(disk / "latest.pt")["state"]["step"] == 1
        assert [p.name for p in disk.iterdir()] == ["latest.pt"]


class _TorchSavedReplay:
    """A replay memory that saves its metadata as ReplayMemory does: torch.save into an open
    file, where torch's zip writer, not Python, meets the full disk."""

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True)
        with (directory / "meta.pt").open("wb") as f:
            torch.save({"frames": torch.zeros(500_000)}, f)


def test_a_replay_save_that_fills_the_disk_is_a_write_error(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "disk", "1m") as disk:
        manager = CheckpointManager(disk / "checkpoints")
        manager.save(_state(1), 1, periodic=False)
        with pytest.raises(CheckpointWriteError) as raised:
            manager.save(_state(2), 2, periodic=False, replay=_TorchSavedReplay())
        message = str(raised.value)
        assert "the write failed (a full disk?)" in message and "latest.pt is unchanged" in message
        assert load_checkpoint(manager.latest)["state"]["step"] == 1
        assert [p.name for p in manager.directory.iterdir()] == ["latest.pt"]


# ---------------------------------------------------------------- torch's messages


def _weights_only_error(tmp_path: Path) -> pickle.UnpicklingError:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"garbage")  # not a zip: torch's legacy loader, refused by weights_only
    with pytest.raises(pickle.UnpicklingError) as raised:
        torch.load(path, weights_only=True)
    return raised.value


def test_torch_advice_to_drop_weights_only_is_never_repeated(tmp_path: Path) -> None:
    err = _weights_only_error(tmp_path)
    assert "weights_only` set to `False` will likely succeed" in str(err)  # what torch says
    assert load_error_reason(err) == "not a file torch.save wrote (Unsupported operand 103)"


def test_a_state_dict_mismatch_gives_the_detail_not_the_heading() -> None:
    with pytest.raises(RuntimeError) as raised:
        torch.nn.Linear(2, 3).load_state_dict({"weight": torch.zeros(4, 2), "bias": torch.zeros(3)})
    assert str(raised.value).startswith("Error(s) in loading state_dict for Linear:")
    assert load_error_reason(raised.value) == (
        "size mismatch for weight: copying a param with shape torch.Size([4, 2]) from checkpoint, "
        "the shape in current model is torch.Size([3, 2])."
    )


def test_a_corrupt_zip_gives_the_reason_without_the_advice(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(b"PK\x03\x04garbage" * 10)
    with pytest.raises(RuntimeError) as raised:
        torch.load(path, weights_only=True)
    assert "If you are seeing this error" in str(raised.value)
    assert load_error_reason(raised.value) == (
        "PytorchStreamReader failed reading zip archive: failed finding central directory."
    )
