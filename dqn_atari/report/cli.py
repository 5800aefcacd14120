"""The `dqn-report` command: its arguments and their limits, the order of its outputs (the
tables first, then the PNGs and the JSON, each of which may fail alone), and its exit codes
(0; 1 when nothing could be reported or an output could not be written; 2 for bad arguments;
130 on Ctrl-C)."""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from dqn_atari.report.markdown import render
from dqn_atari.report.messages import PROG, ReportError
from dqn_atari.report.outputs import why_not_written, write_json
from dqn_atari.report.plots import draw
from dqn_atari.report.references import References
from dqn_atari.report.results import build_report

# The bootstrap keeps the three aggregates of every resample for the percentiles (24 bytes a
# resample): a million is 24 MB and a second or so of work per group, far past what the
# intervals need (rliable's default is 2,000; the report's 50,000).
MAX_REPS = 1_000_000
# Bins of the training-return curve: more than a figure has pixels across is no gain.
MAX_BINS = 10_000


def _error(message: object) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)


def _fail(message: object, code: int = 2) -> NoReturn:
    _error(message)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console script `dqn-report`."""
    try:
        sys.exit(_main(argv))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # The reader went away (`dqn-report runs | head`): stop quietly, as a tool that SIGPIPE
        # ends would, and point stdout at /dev/null so that Python's last flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, as every other bad input, instead of argparse's usage block.
        _fail(f"{message} (see dqn-report --help)")


def _path(text: str) -> Path:
    """A path argument; an empty one (`dqn-report "$RUNS"` with RUNS unset) would be Path('.'),
    the working directory, and is refused instead."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path (an unset shell variable?)")
    return Path(text)


def _main(argv: list[str] | None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):
        # A folder name that is not UTF-8 (os.walk keeps its bytes as surrogates) must not end
        # the report in a UnicodeEncodeError where stdout's encoding is strict; stderr already
        # escapes such characters by default.
        sys.stdout.reconfigure(errors="backslashreplace")
    parser = _Parser(
        prog=PROG,
        description="Tables, aggregates with bootstrap confidence intervals and learning "
        "curves from folders of dqn-train runs. A run whose files cannot be used is a warning "
        "and the others are reported. The tables are printed first; PNGs or a JSON file that "
        "cannot be written are one error line each after them, and exit 1.",
    )
    parser.add_argument("dirs", nargs="+", type=_path, metavar="DIR", help="folders of runs")
    parser.add_argument("--json", type=_path, metavar="FILE", help="write every figure as JSON")
    parser.add_argument(
        "--plots",
        type=_path,
        default=Path("report"),
        metavar="DIR",
        help="folder for the learning-curve PNGs (default: report; if it cannot be written, "
        "the tables are still printed and the exit status is 1)",
    )
    parser.add_argument("--no-plots", action="store_true", help="write no PNG")
    parser.add_argument(
        "--include-incomplete",
        action="store_true",
        help="also report runs without a finished summary, by their last evaluation",
    )
    parser.add_argument(
        "--normalize",
        default="dqn_zoo",
        metavar="TABLE",
        help="random/human table: dqn_zoo (57 games, default) or nature",
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=50_000,
        help=f"bootstrap resamples, 1 to {MAX_REPS:,} (default 50,000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap, >= 0")
    parser.add_argument(
        "--bins",
        type=int,
        default=50,
        help=f"bins of agent steps for the training-return curve, 1 to {MAX_BINS:,}",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.reps <= MAX_REPS:
        # Every resample's aggregates are kept for the percentiles: 24 bytes each.
        _fail(f"--reps must be between 1 and {MAX_REPS:,}, got {args.reps:,}")
    if not 1 <= args.bins <= MAX_BINS:
        _fail(f"--bins must be between 1 and {MAX_BINS:,}, got {args.bins:,}")
    if args.seed < 0:
        _fail(f"--seed must be >= 0 (numpy seeds are non-negative), got {args.seed}")
    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    plots = None if args.no_plots else args.plots
    try:
        refs = References.load(args.normalize)
        data, figures = build_report(
            args.dirs,
            args.include_incomplete,
            refs,
            plots,
            args.reps,
            args.seed,
            args.bins,
        )
    except ReportError as err:
        _fail(err, code=1)
    text = render(data, args.include_incomplete)
    if not data["groups"]:
        print(text, end="")  # what could be said: the runs left out, and why
        _fail(
            f"no run to report: {len(data['left_out'])} incomplete, unscored or unreadable "
            "run(s) (--include-incomplete reports those with an evaluation)",
            code=1,
        )
    print(text, end="", flush=True)
    status = 0
    if figures:
        folder = figures[0].path.parent
        try:
            written = draw(figures)
        except OSError as err:
            _error(
                f"cannot write the learning curves to {folder}: {why_not_written(err, folder)} "
                "(the tables above are complete; --plots DIR puts the PNGs elsewhere, --no-plots "
                "skips them)"
            )
            status = 1
        else:
            print("\nLearning curves: " + ", ".join(map(str, written)))
    if args.json is not None:
        try:
            write_json(args.json, data)
        except OSError as err:
            _error(f"cannot write {args.json}: {why_not_written(err, args.json)}")
            status = 1
    return status
