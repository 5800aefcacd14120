"""`python -m dqn_atari ...` is `dqn-train ...`."""

from dqn_atari.entry import train

train()
