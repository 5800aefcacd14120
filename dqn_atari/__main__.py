"""`python -m dqn_atari ...` is `dqn-train ...`."""

from dqn_atari.cli import train_entry

train_entry()
