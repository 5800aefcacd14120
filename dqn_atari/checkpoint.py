"""Checkpoints as explicit state dicts: written atomically, read without running code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, saved with
`torch.save` and loaded with `torch.load(weights_only=True)`, which refuses any pickle that
would construct arbitrary objects. It is written to a temporary file in the same directory,
flushed to disk and renamed over `latest.pt`, so a crash at any moment leaves the previous
checkpoint whole.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Protocol

import torch

# 2: one replay memory for N games, own optimizer state (0.2). 1: one ring per game (0.1);
# dqn-eval still reads it, resume refuses it.
FORMAT = "dqn-atari/2"
FORMATS_READ = ("dqn-atari/1", FORMAT)
LATEST = "latest.pt"
_PERIODIC = re.compile(r"step_(\d+)\.pt")


class SavesReplay(Protocol):
    """A replay memory that writes itself to a directory (ReplayMemory, vector.ReplaySet)."""

    def save(self, directory: Path) -> None: ...


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found or read."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint that cannot be written (unwritable directory, full disk)."""


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a dqn-atari checkpoint into host memory; every failure is a CheckpointError with a
    one-line reason.

    Always onto the CPU, whatever device wrote it: host-side state (the game's frames, RNG
    states) must stay numpy-convertible, and each component moves what lives on the training
    device there itself (`load_state_dict` of modules and optimizers copies onto their device).
    """
    path = Path(path)
    if path.is_dir():
        path = path / LATEST
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a PyTorch checkpoint archive "
            "(truncated or corrupt?)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"refused checkpoint {path}: it would build Python objects when loaded; only tensors "
            "and plain data are accepted (torch.load weights_only=True)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path} (truncated or corrupt?): {first}"
        ) from None
    if not isinstance(state, dict) or state.get("format") not in FORMATS_READ:
        raise CheckpointError(f"{path} is not a dqn-atari checkpoint (format {FORMAT})")
    return state


def check_resumable(state: dict[str, Any], path: Path) -> None:
    """Only this version's layout can be resumed; older ones can still be scored."""
    if state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {state.get('format')} (an earlier dqn-atari); this "
            f"version resumes format {FORMAT} only: score it with dqn-eval, or start a new run"
        )


class CheckpointManager:
    """`latest.pt` plus periodic `step_NNNNNNNNN.pt` files in one directory, keeping the last K."""

    def __init__(self, directory: Path, keep: int = 0) -> None:
        self.directory = directory
        self.keep = keep  # periodic files kept; 0 = all

    @property
    def latest(self) -> Path:
        return self.directory / LATEST

    def save(
        self,
        state: dict[str, Any],
        step: int,
        periodic: bool,
        replay: SavesReplay | None = None,
    ) -> Path:
        """Replace latest.pt; with `periodic`, also keep this state as step_<step>.pt.

        With `replay`, the memory is first written whole to `replay_<step>/` (through a
        temporary directory and a rename) and latest.pt names it; the replay of the previous
        latest.pt is removed only once the new latest.pt is in place.
        """
        try:
            if replay is not None:
                state = {**state, "replay": self._save_replay(replay, step)}
            save_atomic(state, self.latest)
            if periodic:
                self._keep_copy(step)
            self._remove_stale(keep_replay=state.get("replay"))
        except OSError as err:
            raise CheckpointWriteError(
                f"cannot write checkpoint in {self.directory}: {err.strerror or err}; "
                f"{self.latest} is unchanged"
            ) from None
        return self.latest

    def _save_replay(self, replay: SavesReplay, step: int) -> str:
        name = f"replay_{step:09d}"
        tmp = self.directory / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            replay.save(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = self.directory / name
        if final.exists():  # the same step saved again (a stop right after a checkpoint)
            old = self.directory / f".{name}.old.tmp"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        return name

    def _remove_stale(self, keep_replay: str | None) -> None:
        """Replays no checkpoint names any more, and temporary files a crash left behind."""
        for path in self.directory.glob("replay_*"):
            if path.name != keep_replay:
                shutil.rmtree(path, ignore_errors=True)
        for path in self.directory.glob(".*.tmp"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def replay_of(self, state: dict[str, Any]) -> Path | None:
        """The replay directory a loaded latest.pt names, if it names one that exists."""
        name = state.get("replay")
        if not name:
            return None
        path = self.directory / str(name)
        return path if path.is_dir() else None

    def _keep_copy(self, step: int) -> None:
        copy = self.directory / f"step_{step:09d}.pt"
        copy.unlink(missing_ok=True)
        try:
            # latest.pt is replaced by rename, never rewritten, so a hard link is a safe copy.
            os.link(self.latest, copy)
        except OSError:
            save_atomic(torch.load(self.latest, weights_only=True), copy)
        if self.keep > 0:
            for old in self.periodic()[: -self.keep]:
                old.unlink(missing_ok=True)

    def periodic(self) -> list[Path]:
        """Periodic checkpoint files, oldest first."""
        found = [p for p in self.directory.glob("step_*.pt") if _PERIODIC.fullmatch(p.name)]
        return sorted(found, key=lambda p: int(_PERIODIC.fullmatch(p.name).group(1)))  # type: ignore[union-attr]
