"""The one atomic file write of the package: checkpoints, summary.json and config.yaml.

A reader (a resumed run, dqn-report, a person) sees either the old file or the whole new one,
never a half-written one, whatever kills the writer: the bytes go to a temporary file in the same
folder, are flushed to the disk and renamed over the target (a rename within one file system is
atomic), and the folder is synced so that the rename itself survives a power loss.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes | memoryview | str) -> None:
    """Replace `path` by `data` (str is written as UTF-8; a memoryview without a copy),
    atomically; a failed write (a full disk: the OSError with its reason) leaves the old file
    and no temporary file."""
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
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
