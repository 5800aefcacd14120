"""dqn-atari: Deep Q-Networks on Atari, the DeepMind Nature recipe."""

# The one place the version is written: hatchling reads it from here for the package metadata
# ([tool.hatch.version] in pyproject.toml), so a checkout run without reinstalling (an editable
# install whose metadata is older, PYTHONPATH) records the version of the code it runs.
__version__ = "0.2.0"
