"""Which config settings change how fast a run goes but never what it learns.

Runs that differ only in these are one experiment: `dqn-report` groups them together, and the
mechanisms behind them (`perf.py`, the compiled and CUDA-graphed update in `learner.py`) must
keep it so. This module imports nothing, so that the report can use the list without torch.
"""

# The same algorithm on the same data: CPU and GPU kernels, a compiled update and one replayed as
# a CUDA graph differ at most in the last bits of floating point, so their scores are draws from
# one distribution. Not here, because they change results:
# - precision: bf16 rounds the update's activations and gradients, a different computation;
# - num_envs: N games at once change the experience itself, not only its speed: the replay
#   interleaves N games' transitions, each game's next action comes from a network N / train_every
#   updates newer (not one update every train_every of its own steps), and with worker processes
#   the updates read the memory as it was before the step's transitions. So num_envs=1 and
#   num_envs=16 are two experiments, each named in its report heading.
SPEED_ONLY = ("device", "compile", "cuda_graph")
