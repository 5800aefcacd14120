"""dqn-atari: Deep Q-Networks on Atari, the DeepMind Nature recipe."""

__version__ = "0.1.0"
