"""The console scripts `dqn-train` and `dqn-eval`, kept free of heavy imports.

Importing the CLI takes seconds (torch, Hydra, the emulator); a Ctrl-C in that time would be a
KeyboardInterrupt traceback from whichever import it hit. Here only the standard library is
imported before the CLI, inside a handler that makes that Ctrl-C the usual one line and exit 130.
"""

from __future__ import annotations

import sys


def _start(prog: str, entry: str) -> None:
    try:
        from dqn_atari import cli
    except KeyboardInterrupt:
        print(f"{prog}: error: interrupted while starting; nothing was written", file=sys.stderr)
        sys.exit(130)
    getattr(cli, entry)()


def train() -> None:
    """`dqn-train`."""
    _start("dqn-train", "train_entry")


def evaluate() -> None:
    """`dqn-eval`."""
    _start("dqn-eval", "eval_entry")
