"""The TensorBoard tag names a run logs, in one place for the writer and the readers.

`metrics.Metrics` writes them; `dqn-report` reads some back. This module imports nothing, so
that the report can name a tag without loading torch or TensorBoard's writer.
"""

TRAIN_EPISODE_RETURN = "train/episode_return"  # raw score of a finished game (all lives)
TRAIN_EPISODE_LENGTH = "train/episode_length"  # agent steps of a finished game
TRAIN_LOSS = "train/loss"  # mean TD loss over the last log_interval agent steps
TRAIN_Q_MEAN = "train/q_mean"  # mean Q(s, a) of the sampled transitions, same window
TRAIN_EPSILON = "train/epsilon"  # exploration rate
PERF_SPS = "perf/sps"  # agent steps per second since the last log
EVAL_RETURN_MEAN = "eval/return_mean"  # evaluation during training: mean raw score
EVAL_RETURN_STD = "eval/return_std"  # and its standard deviation over the games
