"""The one error the replay memory raises."""


class ReplayMemoryError(RuntimeError):
    """The replay memory cannot be built, used or restored as asked."""
