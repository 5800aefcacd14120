"""The report's files (the PNGs' folder, the JSON), and why one could not be written, in a line
a person can act on."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any


def make_folder(folder: Path) -> None:
    """mkdir -p, where a file in the way is 'a file, not a folder', not mkdir's 'File exists'."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "a file, not a folder", str(folder))
    folder.mkdir(parents=True, exist_ok=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    make_folder(path.parent)
    path.write_text(json.dumps(data, indent=1) + "\n")


def why_not_written(err: OSError, target: Path) -> str:
    """An OSError's reason without Python's '[Errno N]', after the path it concerns where that
    is not `target` itself."""
    reason = err.strerror or str(err)
    if err.filename and Path(err.filename) != target:
        return f"{err.filename}: {reason}"
    return reason
