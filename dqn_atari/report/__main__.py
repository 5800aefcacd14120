"""`python -m dqn_atari.report DIR...` is `dqn-report DIR...`."""

from dqn_atari.report.cli import main

main()
