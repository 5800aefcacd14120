"""ReplayMemory: the storage, a sampler (uniform or prioritized) and the staging copy, put
together.

Writing goes storage -> sampler -> one host-to-device copy -> both apply it (`add_step`);
sampling is `prepare_sample` on the host, then `draw` and `gather` on the device (and, when
prioritized, `update_priorities` after the loss), which an update compiles and graph-replays as
one function. What each part owns:

    storage.py   the N games' rings of frames and per-slot rows, their validity, the gather
    uniform.py   how slots are drawn uniformly (sampler.py: the interface a sampler implements)
    prioritized.py  how slots are drawn by priority, with importance-sampling weights
    staging.py   the pinned host buffer and its device twin: one copy per vector step
    saving.py    save and load, and the checks of a saved memory
    sizing.py    the minimum capacity, bytes per slot, and whether a memory fits
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from dqn_atari.replay import saving, sum_tree
from dqn_atari.replay.batch import Batch
from dqn_atari.replay.errors import ReplayMemoryError
from dqn_atari.replay.prioritized import Prioritization, PrioritizedSampler
from dqn_atari.replay.sampler import Draw
from dqn_atari.replay.sizing import min_capacity
from dqn_atari.replay.staging import Staging
from dqn_atari.replay.storage import FrameStorage, StagedWrite
from dqn_atari.replay.uniform import UniformSampler


class ReplayMemory:
    """N games' rings of single uint8 frames on `device`, sampled as stacked transitions of up
    to `n_step` steps, their discounts holding `gamma`'s powers: uniformly, or by priority with
    `prioritized` (Schaul et al., 2016).

    `capacity` slots are split evenly between the `num_games` games (the remainder is unused).
    See storage.py for the layout and which slots can start a transition, uniform.py and
    prioritized.py for the sampling.
    """

    def __init__(
        self,
        capacity: int,
        frame_shape: tuple[int, int] = (84, 84),
        stack: int = 4,
        device: torch.device | str = "cpu",
        seed: int = 0,
        num_games: int = 1,
        max_batch_size: int = 512,
        gamma: float = 0.99,
        n_step: int = 1,
        prioritized: Prioritization | None = None,
    ) -> None:
        if num_games < 1 or capacity < min_capacity(stack, num_games):
            raise ReplayMemoryError(
                f"replay capacity must be >= {min_capacity(stack, max(num_games, 1))} for "
                f"{num_games} game(s) stacked by {stack}, got {capacity}"
            )
        if n_step < 1:
            raise ReplayMemoryError(f"n_step must be >= 1, got {n_step}")
        if not 0.0 <= gamma <= 1.0:
            raise ReplayMemoryError(f"gamma must be in [0, 1], got {gamma}")
        self.num_games = num_games
        self.ring_capacity = capacity // num_games  # slots per game
        self.capacity = self.ring_capacity * num_games
        self.stack = stack
        self.frame_shape = frame_shape
        self.device = torch.device(device)
        self.gamma = gamma
        self.n_step = n_step
        self.max_batch_size = max_batch_size
        layout = sum_tree.block_layout(self.capacity)
        self.storage = FrameStorage(
            num_games,
            self.ring_capacity,
            frame_shape,
            stack,
            self.device,
            flag_slots=layout.padded,
            gamma=gamma,
            n_step=n_step,
        )
        self.prioritized = prioritized is not None
        self.sampler: UniformSampler | PrioritizedSampler
        if prioritized is None:
            self.sampler = UniformSampler(self.storage.valid, layout, seed, max_batch_size)
        else:
            self.sampler = PrioritizedSampler(
                layout, self.capacity, self.device, seed, max_batch_size, prioritized
            )
        staged = self.storage.staging_bytes()
        staged += self.sampler.staging_bytes(self.storage.max_changes)
        self._staging = Staging(staged, self.device)

    @property
    def nbytes(self) -> int:
        """Bytes held by the memory's per-slot tensors."""
        return self.storage.nbytes

    def __len__(self) -> int:
        """Number of transitions that can be sampled."""
        return self.storage.valid_count

    # ------------------------------------------------------------------ writing

    def start(self, frames: npt.NDArray[np.uint8]) -> None:
        """The newest frame of each game's first observation, (N, H, W)."""
        self._send(self.storage.stage_start(frames, self._begin()))

    def add_step(
        self,
        actions: npt.NDArray[np.int64],
        rewards: npt.NDArray[np.float64],
        td_terminal: npt.NDArray[np.bool_],
        ended: npt.NDArray[np.bool_],
        final_frames: npt.NDArray[np.uint8],
        next_frames: npt.NDArray[np.uint8],
    ) -> None:
        """One vector step of the N games.

        Game g's transition from its awaiting frame: `actions[g]`, then `rewards[g]` and
        `td_terminal[g]` (the target must not bootstrap: game over, or a lost life in training).
        `final_frames[g]`: the newest frame of the observation that followed. `ended[g]`: the
        game was reset (terminated or truncated), and `next_frames[g]` is the newest frame of
        its next first observation.
        """
        staged = self.storage.stage_step(
            actions, rewards, td_terminal, ended, final_frames, next_frames, self._begin()
        )
        self._send(staged)

    def _begin(self) -> Staging:
        self._staging.begin()
        return self._staging

    def _send(self, staged: StagedWrite) -> None:
        """The sampler's part of the write, then the one copy, then both parts' device writes."""
        sections = self.sampler.stage(staged.change, self._staging)
        sent = self._staging.send()
        self.storage.apply(staged, sent)
        self.sampler.apply(sections, sent)

    # ------------------------------------------------------------------ sampling

    def prepare_sample(self, batch_size: int) -> None:
        """Host side of `sample_slots`: check the memory can be sampled and that `batch_size`
        uniforms are on the device. Call before each sample (a CUDA graph replays only the
        device side)."""
        self.sampler.prepare(batch_size)

    def draw(self, batch_size: int) -> Draw:
        """Device side: `batch_size` slots that can start a transition, drawn with replacement
        (uniformly, or by priority), and their importance-sampling weights (None: uniform)."""
        if isinstance(self.sampler, PrioritizedSampler):
            return self.sampler.draw_weighted(batch_size)
        return Draw(self.sampler.draw(batch_size), None)

    def sample_slots(self, batch_size: int) -> torch.Tensor:
        """Device side: `draw`'s slots only (int64)."""
        return self.draw(batch_size).slots

    def update_priorities(self, slots: torch.Tensor, priority: torch.Tensor) -> None:
        """Device side, prioritized only: the drawn `slots` take new priorities from the
        batch's `priority` (LossOutput.priority), inside the same update."""
        if not isinstance(self.sampler, PrioritizedSampler):
            raise ReplayMemoryError("update_priorities() of a memory sampled uniformly")
        self.sampler.update_priorities(slots, priority)

    def sampling_state(self) -> list[torch.Tensor]:
        """The device tensors that sampling writes (the uniforms' counter; prioritized, also
        the priorities, their block sums, the running maximum and the batch count)."""
        return self.sampler.sampling_state()

    def gather(self, slot: torch.Tensor) -> Batch:
        """The transitions that start at slots `slot` (int64, on the device)."""
        return self.storage.gather(slot)

    def sample(self, batch_size: int) -> Batch:
        """`batch_size` transitions drawn with replacement, on the device (no weights)."""
        self.prepare_sample(batch_size)
        return self.gather(self.sample_slots(batch_size))

    def sampleable_slots(self) -> npt.NDArray[np.int64]:
        """Every slot a transition can be sampled from (host mirror; for tests and tools)."""
        return np.flatnonzero(self.storage.valid_host)

    # ------------------------------------------------------------------ saving and loading

    def save(self, directory: Path) -> None:
        """Write the memory to `directory` (see saving.py); the caller makes it atomic."""
        saving.save(self.storage, self.sampler, directory)

    def load(self, directory: Path) -> None:
        """Restore what `save` wrote into this (same-shaped) memory. Every way the saved files
        can be missing or damaged is a ReplayMemoryError with a one-line reason."""
        saving.load(self.storage, self.sampler, directory)
