"""How dqn-report speaks on stderr: every line starts with its name, a warning is one line and
the report goes on, and a ReportError is input that leaves nothing to report."""

from __future__ import annotations

import sys

PROG = "dqn-report"


class ReportError(Exception):
    """Input that leaves nothing to report: no such folder, no runs, an unknown table."""


def warn(message: str) -> None:
    print(f"{PROG}: warning: {' '.join(message.split())}", file=sys.stderr)
