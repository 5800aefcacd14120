"""The replay memory of dqn-atari 0.1 (commit 308d3ff), one ring per game, kept unchanged as the
reference that tests/test_replay.py checks the N-game memory against.

Replay memory on the training device that stores every 84x84 frame once.

Layout (after Dopamine's circular buffer): slot `i` of a ring holds the newest phi frame of the
observation the agent saw at one time step, the action taken from it, the reward and TD-terminal
flag that followed, and the frame's step number within its episode. A transition sampled at slot
`i` is

    obs_tm1 = stack of frames ending at slot i      action_tm1, reward_t, discount_t of slot i
    obs_t   = stack of frames ending at slot i + 1

Stacks are rebuilt with one gather: frame `i - j` for j = stack-1 .. 0, clamped to the episode's
first frame by the stored step number, so a stack never reaches into the previous episode (the
environment pads episode starts the same way, by repeating the first frame).

A game that ends (TD terminal) needs no next frame: its `obs_t` is masked by discount 0. A game
cut by the frame limit (truncated) still bootstraps, so its final frame is written to an extra
"end slot" that is never sampled as the start of a transition.

At 1M slots the ring holds 1M * (84*84 + 17) bytes = 7.07 GB, against 28-56 GB for stored stacks.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch


class Batch(NamedTuple):
    """Transitions (s_tm1, a_tm1, r_t, discount_t, s_t), time-indexed as in DQN Zoo."""

    obs_tm1: torch.Tensor  # uint8 (B, stack, H, W)
    action_tm1: torch.Tensor  # int64 (B,)
    reward_t: torch.Tensor  # float32 (B,)
    discount_t: torch.Tensor  # float32 (B,): 0 where the TD target must not bootstrap, else 1
    obs_t: torch.Tensor  # uint8 (B, stack, H, W)


class ReplayMemoryError(RuntimeError):
    """The replay memory cannot be built or used as asked."""


# Per slot: the frame, int64 action, float32 reward, bool terminal, int32 step in episode.
_METADATA_BYTES_PER_SLOT = 8 + 4 + 1 + 4


def replay_bytes(capacity: int, frame_shape: tuple[int, int] = (84, 84)) -> int:
    """Bytes a ReplayMemory of `capacity` slots allocates on its device."""
    return capacity * (frame_shape[0] * frame_shape[1] + _METADATA_BYTES_PER_SLOT)


def available_bytes(device: torch.device) -> int:
    """Free memory where the replay will live: the CUDA device, or the host's RAM."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def check_fits(capacity: int, frame_shape: tuple[int, int], device: torch.device) -> None:
    """Fail before allocating when the replay would not fit in free memory."""
    need = replay_bytes(capacity, frame_shape)
    free = available_bytes(device)
    # Leave a quarter of the free memory for the networks, the batch and everything else.
    budget = int(free * 0.75)
    if need > budget:
        per_slot = replay_bytes(1, frame_shape)
        fits = max(10_000, (budget // per_slot) // 10_000 * 10_000)
        raise ReplayMemoryError(
            f"replay memory of {capacity:,} frames needs {need / 1e9:.2f} GB on {device} but only "
            f"{free / 1e9:.2f} GB is free; lower it, e.g. buffer_size={fits}"
        )


class ReplayMemory:
    """A ring of single uint8 frames on `device`, sampled uniformly as stacked transitions.

    Writing follows the environment: `start_episode(first_frame)` after each reset, then
    `add(action, reward, td_terminal, episode_end, next_frame)` after each step.
    """

    def __init__(
        self,
        capacity: int,
        frame_shape: tuple[int, int] = (84, 84),
        stack: int = 4,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ) -> None:
        if capacity < stack + 2:
            raise ReplayMemoryError(f"replay capacity must be >= {stack + 2}, got {capacity}")
        self.capacity = capacity
        self.stack = stack
        self.frame_shape = frame_shape
        self.device = torch.device(device)
        self.frames = torch.empty((capacity, *frame_shape), dtype=torch.uint8, device=self.device)
        self.actions = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        self.rewards = torch.zeros(capacity, dtype=torch.float32, device=self.device)
        self.terminals = torch.zeros(capacity, dtype=torch.bool, device=self.device)
        self.steps = torch.zeros(capacity, dtype=torch.int32, device=self.device)
        self._offsets = torch.arange(stack - 1, -1, -1, device=self.device)  # [3, 2, 1, 0]
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(seed)
        self._written = 0  # slots written since creation; slot of absolute index a is a % capacity
        self._pending_step: int | None = None  # step of the newest frame while awaiting its action
        self._end_slots: deque[int] = (
            deque()
        )  # absolute indices of truncated episodes' final frames
        self._end_key: torch.Tensor | None = None  # cached searchsorted keys of the end slots
        self._end_key_of: tuple[int, int] = (-1, 0)  # (first end slot, count) the cache is for

    @property
    def nbytes(self) -> int:
        """Bytes held by the ring's tensors."""
        tensors = (self.frames, self.actions, self.rewards, self.terminals, self.steps)
        return sum(t.element_size() * t.nelement() for t in tensors)

    # ------------------------------------------------------------------ saving and loading

    _FRAMES_FILE = "frames.u8"
    _META_FILE = "meta.pt"
    _CHUNK_FRAMES = 16_384  # 116 MB of 84x84 frames: bounds the host copy of a GPU ring

    def save(self, directory: Path) -> None:
        """Write the filled slots to `directory`: raw uint8 frames in chunks, plus metadata.

        Frames go out a chunk at a time, so saving a GPU ring never holds a second copy of it
        in host memory. The caller makes the directory's appearance atomic (see checkpoint.py).
        """
        directory.mkdir(parents=True, exist_ok=True)
        filled = min(self._written, self.capacity)
        with (directory / self._FRAMES_FILE).open("wb") as f:
            for start in range(0, filled, self._CHUNK_FRAMES):
                chunk = self.frames[start : min(start + self._CHUNK_FRAMES, filled)]
                f.write(chunk.cpu().numpy().data.cast("B"))  # on the CPU, a view: no copy
            f.flush()
            os.fsync(f.fileno())
        meta = {
            "capacity": self.capacity,
            "frame_shape": list(self.frame_shape),
            "stack": self.stack,
            "written": self._written,
            "pending_step": self._pending_step,
            "end_slots": list(self._end_slots),
            "generator": self._generator.get_state(),
            "actions": self.actions[:filled].cpu(),
            "rewards": self.rewards[:filled].cpu(),
            "terminals": self.terminals[:filled].cpu(),
            "steps": self.steps[:filled].cpu(),
        }
        with (directory / self._META_FILE).open("wb") as f:
            torch.save(meta, f)
            f.flush()
            os.fsync(f.fileno())

    def load(self, directory: Path) -> None:
        """Restore what `save` wrote into this (same-sized) memory."""
        try:
            meta = torch.load(directory / self._META_FILE, weights_only=True)
        except (OSError, RuntimeError, EOFError) as err:
            raise ReplayMemoryError(
                f"cannot read the saved replay memory in {directory}: {err}"
            ) from None
        if (meta["capacity"], tuple(meta["frame_shape"]), meta["stack"]) != (
            self.capacity,
            self.frame_shape,
            self.stack,
        ):
            raise ReplayMemoryError(
                f"the saved replay memory holds {meta['capacity']:,} frames of "
                f"{tuple(meta['frame_shape'])} stacked by {meta['stack']}; this run has "
                f"buffer_size={self.capacity} of {self.frame_shape} stacked by {self.stack}"
            )
        filled = min(int(meta["written"]), self.capacity)
        frame_bytes = self.frame_shape[0] * self.frame_shape[1]
        path = directory / self._FRAMES_FILE
        if path.stat().st_size != filled * frame_bytes:
            raise ReplayMemoryError(f"{path} is truncated: expected {filled * frame_bytes} bytes")
        staging = torch.empty(
            (min(self._CHUNK_FRAMES, filled), *self.frame_shape), dtype=torch.uint8
        )
        with path.open("rb") as f:
            for start in range(0, filled, self._CHUNK_FRAMES):
                count = min(self._CHUNK_FRAMES, filled - start)
                f.readinto(staging[:count].numpy().data.cast("B"))
                self.frames[start : start + count].copy_(staging[:count])
        for name in ("actions", "rewards", "terminals", "steps"):
            getattr(self, name)[:filled] = meta[name].to(self.device)
        self._written = int(meta["written"])
        self._pending_step = meta["pending_step"]
        self._end_slots = deque(int(e) for e in meta["end_slots"])
        self._end_key = None
        self._generator.set_state(meta["generator"].cpu())

    def _write_frame(self, frame: torch.Tensor | npt.NDArray[np.uint8], step: int) -> None:
        slot = self._written % self.capacity
        # The slot being overwritten may be an old end slot.
        if self._end_slots and self._end_slots[0] == self._written - self.capacity:
            self._end_slots.popleft()
        self.frames[slot] = torch.as_tensor(frame).to(self.device, non_blocking=True)
        self.steps[slot] = step
        self._written += 1

    def start_episode(self, frame: torch.Tensor | npt.NDArray[np.uint8]) -> None:
        """Store the newest frame of an episode's first observation."""
        self._write_frame(frame, 0)
        self._pending_step = 0

    def add(
        self,
        action: int,
        reward: float,
        td_terminal: bool,
        episode_end: bool,
        next_frame: torch.Tensor | npt.NDArray[np.uint8],
    ) -> None:
        """Complete the transition from the newest frame and store the frame that followed.

        `td_terminal`: the target must not bootstrap (game over, or a lost life in training).
        `episode_end`: the environment reports terminated or truncated; reset comes next.
        """
        if self._pending_step is None:
            raise ReplayMemoryError("add() needs start_episode() first (no frame awaits an action)")
        slot = (self._written - 1) % self.capacity
        self.actions[slot] = action
        self.rewards[slot] = reward
        self.terminals[slot] = td_terminal
        step = self._pending_step + 1
        self._pending_step = None
        if episode_end and td_terminal:
            return  # obs_t is never read for a terminal transition
        self._write_frame(next_frame, step)
        if episode_end:
            self._end_slots.append(self._written - 1)
        else:
            self._pending_step = step

    def _window(self) -> tuple[int, int]:
        """Absolute [first, stop) of the slots that may start a sampled transition."""
        oldest = max(0, self._written - self.capacity)
        # Once the ring wraps, the oldest slots' stacks would reach overwritten frames.
        first = oldest + (self.stack - 1 if self._written > self.capacity else 0)
        stop = self._written - (1 if self._pending_step is not None else 0)
        return first, stop

    def __len__(self) -> int:
        """Number of transitions that can be sampled."""
        first, stop = self._window()
        return max(0, stop - first - sum(1 for e in self._end_slots if first <= e < stop))

    def sample(self, batch_size: int) -> Batch:
        """`batch_size` transitions drawn uniformly, with replacement, on the device."""
        first, stop = self._window()
        ends = [e for e in self._end_slots if first <= e < stop]
        count = stop - first - len(ends)
        if count <= 0:
            raise ReplayMemoryError("cannot sample from an empty replay memory")
        rank = torch.randint(count, (batch_size,), generator=self._generator, device=self.device)
        if ends:
            # The rank-th sampleable slot skips every end slot at or before it: with end slots
            # e_0 < e_1 < ..., it is rank + #{j : e_j - j <= first + rank}.
            if self._end_key is None or self._end_key_of != (ends[0], len(ends)):
                keys = torch.tensor(ends, dtype=torch.int64) - torch.arange(len(ends))
                self._end_key = keys.to(self.device)
                self._end_key_of = (ends[0], len(ends))
            rank = rank + torch.searchsorted(self._end_key, rank + first, right=True)
        return self.gather((rank + first) % self.capacity)

    def gather(self, slot: torch.Tensor) -> Batch:
        """The transitions that start at ring slots `slot` (int64, on the device)."""
        batch_size = slot.shape[0]
        terminal = self.terminals[slot]
        # A terminal transition's obs_t is masked; reading its own stack keeps the gather in range.
        next_slot = torch.where(terminal, slot, (slot + 1) % self.capacity)
        both = torch.cat([slot, next_slot])
        back = torch.minimum(self._offsets[None, :], self.steps[both][:, None].long())
        frames = self.frames[(both[:, None] - back) % self.capacity]
        return Batch(
            obs_tm1=frames[:batch_size],
            action_tm1=self.actions[slot],
            reward_t=self.rewards[slot],
            discount_t=(~terminal).float(),
            obs_t=frames[batch_size:],
        )
