"""A run owns its directory: an OS lock held for the process's life, and a writability check.

The lock is `flock` on `DIR/.dqn-train.lock`, taken before anything else is written there. The
kernel releases it when the process ends, however it ends (SIGKILL and out-of-memory too), so a
dead run never leaves a stale lock; the file itself stays and only names the last owner's PID.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from pathlib import Path

LOCK_FILE = ".dqn-train.lock"


class RunDirError(RuntimeError):
    """A run directory that cannot be used: another run holds it, or it cannot be written."""


def check_writable(run_dir: Path) -> None:
    """The run directory (or the nearest folder that exists above it) must take new files."""
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise RunDirError(
            f"cannot write the run directory {run_dir} ({existing}: {err.strerror or err}); "
            "choose another with hydra.run.dir=DIR"
        ) from None


class RunDirLock:
    """Held from `acquire()` to `release()` or the end of the process."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / LOCK_FILE
        self._fd: int | None = None
        self._created = False  # the directory did not exist before this run took it
        self._made_file = False  # nor did the lock file

    def acquire(self) -> None:
        """Create the directory and take its lock, or raise RunDirError naming the owner."""
        check_writable(self.run_dir)
        self._created = not self.run_dir.exists()
        while True:
            self._made_file = not self.path.exists()
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise RunDirError(
                    f"cannot write the run directory {self.run_dir}: {err.strerror or err}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunDirError(
                    f"{self.run_dir} is in use by another dqn-train (PID {owner}); wait for it "
                    "to end, or pick another hydra.run.dir"
                ) from None
            # A refused run removes a lock file it made (release): locked just as it went, the
            # file is no longer the directory's lock, so take the one at the path again.
            try:
                if self.path.stat().st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self, refused: bool = False) -> None:
        """Let go of the lock. A directory this run created and left holding nothing but the
        lock file (the run was refused before it wrote anything) is removed; so is the lock
        file a `refused` run made in a directory it then did not use."""
        if self._fd is None:
            return
        if self._created and [p.name for p in self.run_dir.iterdir()] == [LOCK_FILE]:
            self.path.unlink()
            self.run_dir.rmdir()
        elif refused and self._made_file:
            self.path.unlink(missing_ok=True)  # while still holding it: see acquire
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
