"""Replay memory on the training device for N games, storing every 84x84 frame once.

memory.py    ReplayMemory: storage, sampler and staging put together (the public face)
storage.py   FrameStorage: the rings of frames and per-slot rows, the validity flags, the
             host bookkeeping, the write path and the gather (with n-step returns)
sampler.py   SlotSampler: the interface of how slots are drawn; ValidityChange
uniform.py   UniformSampler: uniform draws over the valid slots
prioritized.py  PrioritizedSampler: proportional prioritized draws, weights and updates
sum_tree.py  the two-level (square-root-decomposed) sum tree a sampler searches
draws.py     uniforms drawn ahead on the host from the memory's own generator
staging.py   Staging: the pinned host buffer and its device twin, one copy per step
saving.py    save and load of a memory, and the checks of a saved one
sizing.py    min_capacity, replay_bytes, available_bytes, check_fits
batch.py     Batch;  errors.py: ReplayMemoryError
"""

from dqn_atari.replay.batch import Batch
from dqn_atari.replay.errors import ReplayMemoryError
from dqn_atari.replay.memory import ReplayMemory
from dqn_atari.replay.prioritized import Prioritization, PrioritizedSampler
from dqn_atari.replay.sampler import Draw, SlotSampler, ValidityChange
from dqn_atari.replay.sizing import available_bytes, check_fits, min_capacity, replay_bytes
from dqn_atari.replay.storage import FrameStorage
from dqn_atari.replay.uniform import UniformSampler

__all__ = [
    "Batch",
    "Draw",
    "FrameStorage",
    "Prioritization",
    "PrioritizedSampler",
    "ReplayMemory",
    "ReplayMemoryError",
    "SlotSampler",
    "UniformSampler",
    "ValidityChange",
    "available_bytes",
    "check_fits",
    "min_capacity",
    "replay_bytes",
]
