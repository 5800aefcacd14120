"""files.write_atomic: the one atomic write behind checkpoints, summary.json and config.yaml."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dqn_atari.files import write_atomic


def test_a_write_replaces_the_whole_file_with_open_s_permissions(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    write_atomic(path, "old: 1\n")
    write_atomic(path, b"new: 2\n")
    assert path.read_bytes() == b"new: 2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would make it


def test_a_failed_rename_leaves_what_was_there_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    target.mkdir()  # a folder holding a file: the rename over it fails with the OS's reason
    (target / "kept").write_text("x")
    with pytest.raises(OSError):
        write_atomic(target, "{}")
    assert (target / "kept").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
