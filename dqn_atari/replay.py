"""Replay memory on the training device for N games, storing every 84x84 frame once.

Layout (after Dopamine's circular buffer): game g owns ring g, the slots [g*C, (g+1)*C) of one
set of tensors (C = capacity // N). Slot `i` of a ring holds the newest phi frame of an
observation the game saw, the action taken from it, the reward and TD-terminal flag that
followed, and the frame's step number within its episode. A transition sampled at slot `i` is

    obs_tm1 = stack of frames ending at slot i      action_tm1, reward_t, discount_t of slot i
    obs_t   = stack of frames ending at slot i + 1 (in the same ring)

Stacks are rebuilt with one gather from an index row per slot, written with the frame: frame
`i - j` for j = stack-1 .. 0, clamped to the episode's first frame, so a stack never reaches into
the previous episode (the environment pads episode starts the same way, by repeating the first
frame), nor into another game's ring; each transition also stores the slot its `obs_t` stack
ends at. Working the indices out on the host at write time (a few numpy ops per vector step)
instead of on the device at every sample (a dozen ops per batch) is what keeps an update's op
count low. A game that ends (TD terminal) needs no next frame: its `obs_t` is masked by discount
0 (it reads its own stack, which keeps the gather in range). A game cut by the frame limit
(truncated) still bootstraps, so its final frame is written to an extra "end slot" that never
starts a transition.

Which slots may start a transition is one flag per slot (`sampleable`), kept by the writes: a
slot becomes sampleable when its transition is complete, and stops being one when it is
overwritten, or when its stack would reach overwritten frames (the stack-1 oldest slots of a
ring that has wrapped). End slots and the frame awaiting its action never are.

Writing: `start(first_frames)` once, then `add_step(...)` once per vector step of the N games.
The host keeps the bookkeeping (numpy, O(N) per step) and a mirror of the flags; what changes
on the device (up to 2N frames, N transitions, flags and per-block counts) goes there with one
copy from a pinned buffer and a fixed number of indexed writes, whatever N.

Sampling is uniform over every sampleable slot of every game, entirely on the device, with a
fixed number of ops and no host sync: transition k of a batch takes the rank floor(u_k * count),
finds its block of `block_size` slots in a cumulative sum of per-block counts, then its slot in
a cumulative sum of that block's flags. The uniforms u come from the memory's own generator on
the host, drawn ahead in blocks, so the CPU and CUDA sample the same slots and a CUDA graph can
replay the sampling (it only advances a counter on the device).

At 1M slots the memory holds 1M * (84*84 + 30) bytes = 7.09 GB, against 28-56 GB for stored
stacks.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from dqn_atari.checkpoint import load_error_reason, load_untrusted


class Batch(NamedTuple):
    """Transitions (s_tm1, a_tm1, r_t, discount_t, s_t), time-indexed as in DQN Zoo."""

    obs_tm1: torch.Tensor  # uint8 (B, stack, H, W)
    action_tm1: torch.Tensor  # int64 (B,)
    reward_t: torch.Tensor  # float32 (B,)
    discount_t: torch.Tensor  # float32 (B,): 0 where the TD target must not bootstrap, else 1
    obs_t: torch.Tensor  # uint8 (B, stack, H, W)


class ReplayMemoryError(RuntimeError):
    """The replay memory cannot be built, used or restored as asked."""


FORMAT = 2  # of a saved memory's meta.pt; 1 was the one-ring-per-game memory before 0.2


def replay_bytes(capacity: int, frame_shape: tuple[int, int] = (84, 84), stack: int = 4) -> int:
    """Bytes a ReplayMemory of `capacity` slots allocates on its device for its slots."""
    # Besides the frame: uint8 action, float32 reward and discount, int32 next slot, an int32
    # stack row, the bool sampleable flag.
    return capacity * (frame_shape[0] * frame_shape[1] + 1 + 4 + 4 + 4 + 4 * stack + 1)


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


def check_fits(
    capacity: int, frame_shape: tuple[int, int], device: torch.device, stack: int = 4
) -> None:
    """Fail before allocating when the replay would not fit in free memory."""
    need = replay_bytes(capacity, frame_shape, stack)
    free = available_bytes(device)
    # Leave a quarter of the free memory for the networks, the batch and everything else.
    budget = int(free * 0.75)
    if need > budget:
        per_slot = replay_bytes(1, frame_shape, stack)
        fits = max(10_000, (budget // per_slot) // 10_000 * 10_000)
        raise ReplayMemoryError(
            f"replay memory of {capacity:,} frames needs {need / 1e9:.2f} GB on {device} but only "
            f"{free / 1e9:.2f} GB is free; lower it, e.g. buffer_size={fits}"
        )


def _block_size(slots: int) -> int:
    """Slots per counted block: about sqrt(slots), so that both cumulative sums of a sample
    (over the blocks, and over one block per transition) stay small."""
    return max(64, 1 << math.ceil(math.log2(math.isqrt(slots) + 1)))


class _Staging:
    """A host buffer and its device twin: a vector step's writes cross in one copy.

    Sections are packed at 8-byte-aligned offsets and read on the device as typed views. On CUDA
    the host side is pinned and the copy asynchronous; before the host buffer is refilled, the
    previous copy from it is waited for (it finished long before in practice: every vector step
    waits for the actions).
    """

    _NUMPY = {  # noqa: RUF012 (a constant table)
        torch.uint8: np.uint8,
        torch.bool: np.bool_,
        torch.int32: np.int32,
        torch.int64: np.int64,
        torch.float32: np.float32,
    }

    def __init__(self, nbytes: int, device: torch.device) -> None:
        nbytes = -(-nbytes // 8) * 8
        self.device = device
        self.on_cuda = device.type == "cuda"
        self.host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.on_cuda)
        self.host_np = self.host.numpy()
        self.dev = torch.empty(nbytes, dtype=torch.uint8, device=device) if self.on_cuda else None
        # The buffer the device reads, viewed once per element type: a section is then one slice.
        readable = self.host if self.dev is None else self.dev
        self._typed = {dtype: readable.view(dtype) for dtype in self._NUMPY}
        self._copied: Any = None  # torch.cuda.Event of the last copy
        self._offset = 0
        self._parts: list[tuple[int, int, torch.dtype, tuple[int, ...]]] = []

    def begin(self) -> None:
        if self._copied is not None:
            self._copied.synchronize()
        self._offset = 0
        self._parts = []

    def put(self, array: npt.NDArray[Any], dtype: torch.dtype) -> None:
        """Append `array` (C-contiguous after conversion to `dtype`)."""
        data: npt.NDArray[Any] = np.ascontiguousarray(array, dtype=self._NUMPY[dtype])
        start = -(-self._offset // 8) * 8
        stop = start + data.nbytes
        self.host_np[start:stop] = data.reshape(-1).view(np.uint8)
        self._parts.append((start, stop, dtype, data.shape))
        self._offset = stop

    def send(self) -> list[torch.Tensor]:
        """The appended arrays as tensors on the device, in order."""
        if self.dev is not None:
            self.dev[: self._offset].copy_(self.host[: self._offset], non_blocking=True)
            self._copied = torch.cuda.Event()
            self._copied.record()
        parts = []
        for start, stop, dtype, shape in self._parts:
            size = self._typed[dtype].element_size()
            part = self._typed[dtype][start // size : stop // size]
            parts.append(part if len(shape) == 1 else part.view(shape))
        return parts


class ReplayMemory:
    """N games' rings of single uint8 frames on `device`, sampled uniformly as stacked
    transitions. See the module docstring for the layout and the sampling."""

    def __init__(
        self,
        capacity: int,
        frame_shape: tuple[int, int] = (84, 84),
        stack: int = 4,
        device: torch.device | str = "cpu",
        seed: int = 0,
        num_games: int = 1,
        max_batch_size: int = 512,
    ) -> None:
        ring = capacity // num_games
        if num_games < 1 or ring < stack + 2:
            raise ReplayMemoryError(
                f"replay capacity must be >= {(stack + 2) * max(num_games, 1)} for {num_games} "
                f"game(s) stacked by {stack}, got {capacity}"
            )
        self.num_games = num_games
        self.ring_capacity = ring  # slots per game
        self.capacity = ring * num_games
        self.stack = stack
        self.frame_shape = frame_shape
        self.device = torch.device(device)
        slots, dev = self.capacity, self.device
        self.frames = torch.empty((slots, *frame_shape), dtype=torch.uint8, device=dev)
        self.stacks = torch.zeros((slots, stack), dtype=torch.int32, device=dev)  # frame slots
        self.actions = torch.zeros(slots, dtype=torch.uint8, device=dev)  # ALE has 18 at most
        self.rewards = torch.zeros(slots, dtype=torch.float32, device=dev)
        self.discounts = torch.zeros(slots, dtype=torch.float32, device=dev)  # 0 = TD terminal
        self.next_slots = torch.zeros(slots, dtype=torch.int32, device=dev)  # where obs_t ends
        self.block_size = _block_size(slots)
        self.num_blocks = -(-slots // self.block_size)
        padded = self.num_blocks * self.block_size
        self.sampleable = torch.zeros(padded, dtype=torch.bool, device=dev)
        self.block_counts = torch.zeros(self.num_blocks, dtype=torch.int64, device=dev)
        self._back = np.arange(stack - 1, -1, -1, dtype=np.int64)  # [3, 2, 1, 0]
        # Host bookkeeping (no device reads): frames written per game, the step number of each
        # game's frame awaiting an action (-1: none), and mirrors of the flags and counts.
        self._written = np.zeros(num_games, np.int64)
        self._pending = np.full(num_games, -1, np.int64)
        self._sampleable = np.zeros(padded, np.bool_)
        self._block_counts = np.zeros(self.num_blocks, np.int64)
        self._games = np.arange(num_games, dtype=np.int64)
        frame_bytes = frame_shape[0] * frame_shape[1]
        per_step = 2 * num_games * (frame_bytes + 8 * stack) + 8 * 16 * num_games * (stack + 2)
        per_step += 64 * 8
        self._staging = _Staging(per_step, dev)
        # Uniform numbers for sampling: a ring of two halves on the device, refilled on the host
        # from this memory's own generator half a ring at a time; `_draws` counts those used.
        self.max_batch_size = max_batch_size
        self._half = max(4096, max_batch_size)
        self._generator = torch.Generator()
        self._generator.manual_seed(seed)
        self._uniforms = torch.zeros(2 * self._half, dtype=torch.float64, device=dev)
        self._uniform_staging = [
            torch.empty(self._half, dtype=torch.float64, pin_memory=dev.type == "cuda")
            for _ in range(2)
        ]
        self._uniform_copied: list[Any] = [None, None]
        self._draws = torch.zeros((), dtype=torch.int64, device=dev)  # advanced by sampling
        self._draws_host = 0  # the same count, kept by the host without reading the device
        self._filled = 0  # uniforms written into the ring so far
        self._batch_range: dict[int, torch.Tensor] = {}

    @property
    def nbytes(self) -> int:
        """Bytes held by the memory's per-slot tensors."""
        tensors = (
            self.frames, self.stacks, self.actions, self.rewards, self.discounts,
            self.next_slots, self.sampleable,
        )  # fmt: skip
        return sum(t.element_size() * t.nelement() for t in tensors)

    def __len__(self) -> int:
        """Number of transitions that can be sampled."""
        return int(self._block_counts.sum())

    # ------------------------------------------------------------------ writing

    def start(self, frames: npt.NDArray[np.uint8]) -> None:
        """The newest frame of each game's first observation, (N, H, W)."""
        if frames.shape[0] != self.num_games:
            raise ReplayMemoryError(f"start() takes {self.num_games} frames, got {frames.shape}")
        if (self._pending >= 0).any():
            raise ReplayMemoryError("start() again while frames await their actions")
        none = np.zeros(0, np.int64)
        self._write(
            frame_games=self._games,
            frame_order=np.zeros(self.num_games, np.int64),
            frame_sources=frames,
            frame_steps=np.zeros(self.num_games, np.int64),
            completed=none,
            actions=none,
            rewards=np.zeros(0, np.float32),
            terminals=np.zeros(0, np.bool_),
        )
        self._pending[:] = 0

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
        if (self._pending < 0).any():
            raise ReplayMemoryError("add_step() needs start() first (no frame awaits an action)")
        ended = np.asarray(ended, np.bool_)
        td_terminal = np.asarray(td_terminal, np.bool_)
        # obs_t of a terminal transition is never read, so a game that ended on a terminal
        # stores only its next first frame; a truncated one stores its final frame too.
        keep_final = ~(ended & td_terminal)
        frame_games = np.concatenate([self._games[keep_final], self._games[ended]])
        frame_sources = np.concatenate([final_frames[keep_final], next_frames[ended]])
        frame_steps = np.concatenate(
            [self._pending[keep_final] + 1, np.zeros(int(ended.sum()), np.int64)]
        )
        # A truncated game's next first frame follows its final one in the ring.
        frame_order = np.concatenate(
            [np.zeros(int(keep_final.sum()), np.int64), keep_final[ended].astype(np.int64)]
        )
        self._write(
            frame_games=frame_games,
            frame_order=frame_order,
            frame_sources=frame_sources,
            frame_steps=frame_steps,
            completed=self._games,
            actions=np.asarray(actions, np.int64),
            rewards=np.asarray(rewards, np.float32),
            terminals=td_terminal,
        )
        self._pending = np.where(ended, 0, self._pending + 1)

    def _write(
        self,
        frame_games: npt.NDArray[np.int64],
        frame_order: npt.NDArray[np.int64],
        frame_sources: npt.NDArray[np.uint8],
        frame_steps: npt.NDArray[np.int64],
        completed: npt.NDArray[np.int64],
        actions: npt.NDArray[np.int64],
        rewards: npt.NDArray[np.float32],
        terminals: npt.NDArray[np.bool_],
    ) -> None:
        """Store frames (in the order given, per game) with their step numbers in the episode,
        and complete the transitions of the games in `completed` from their awaiting frames."""
        ring, stack = self.ring_capacity, self.stack
        base = frame_games * ring
        # A game's frames of this step go to consecutive slots of its ring, `frame_order` apart.
        absolute = self._written[frame_games] + frame_order
        frame_slots = base + absolute % ring
        # Each frame's stack: the frames back to the episode's first, which repeats.
        back = np.minimum(self._back[None, :], frame_steps[:, None])
        stack_rows = base[:, None] + (absolute[:, None] - back) % ring
        done_base = completed * ring
        done_slots = done_base + (self._written[completed] - 1) % ring
        # obs_t ends at the frame stored next; a terminal transition reads its own (masked).
        next_slots = np.where(terminals, done_slots, done_base + self._written[completed] % ring)
        np.add.at(self._written, frame_games, 1)

        # Flags that fall: each written slot, and once a ring has wrapped, the stack-1 slots
        # after it, whose stacks would now reach an overwritten frame.
        reach = np.arange(stack)
        wrapped = absolute[:, None] >= ring
        falls = (reach[None, :] == 0) | wrapped
        fall_slots = np.unique((base[:, None] + (absolute[:, None] + reach[None, :]) % ring)[falls])
        touched = np.concatenate([fall_slots, done_slots])
        before = self._sampleable[touched]
        self._sampleable[fall_slots] = False
        self._sampleable[done_slots] = True
        blocks = touched // self.block_size
        np.add.at(self._block_counts, blocks, self._sampleable[touched].astype(np.int64) - before)
        blocks = np.unique(blocks)

        staging = self._staging
        staging.begin()
        staging.put(frame_sources, torch.uint8)
        staging.put(frame_slots, torch.int64)
        staging.put(stack_rows, torch.int32)
        staging.put(done_slots, torch.int64)
        staging.put(actions, torch.uint8)
        staging.put(rewards, torch.float32)
        staging.put(np.where(terminals, 0.0, 1.0), torch.float32)
        staging.put(next_slots, torch.int32)
        staging.put(touched, torch.int64)
        staging.put(self._sampleable[touched], torch.bool)
        staging.put(blocks, torch.int64)
        staging.put(self._block_counts[blocks], torch.int64)
        (
            frames, slots, rows, done, acts, rews, discounts, nexts, flag_slots, flags, block_ids,
            counts,
        ) = staging.send()  # fmt: skip
        self.frames.index_copy_(0, slots, frames)
        self.stacks.index_copy_(0, slots, rows)
        if done.numel():
            self.actions.index_copy_(0, done, acts)
            self.rewards.index_copy_(0, done, rews)
            self.discounts.index_copy_(0, done, discounts)
            self.next_slots.index_copy_(0, done, nexts)
        self.sampleable.index_copy_(0, flag_slots, flags)
        self.block_counts.index_copy_(0, block_ids, counts)

    # ------------------------------------------------------------------ sampling

    def prepare_sample(self, batch_size: int) -> None:
        """Host side of `sample_slots`: check the memory can be sampled and that `batch_size`
        uniforms are on the device. Call before each sample (a CUDA graph replays only the
        device side)."""
        if batch_size > self._half:
            raise ReplayMemoryError(
                f"batch of {batch_size} is larger than this memory samples at once "
                f"({self._half}); build it with max_batch_size={batch_size}"
            )
        if len(self) == 0:
            raise ReplayMemoryError("cannot sample from an empty replay memory")
        while self._draws_host + batch_size > self._filled:
            half = (self._filled // self._half) % 2
            staging = self._uniform_staging[half]
            if self._uniform_copied[half] is not None:
                self._uniform_copied[half].synchronize()
            torch.rand(self._half, dtype=torch.float64, generator=self._generator, out=staging)
            target = self._uniforms[half * self._half : (half + 1) * self._half]
            if self.device.type == "cuda":
                target.copy_(staging, non_blocking=True)
                self._uniform_copied[half] = torch.cuda.Event()
                self._uniform_copied[half].record()
            else:
                target.copy_(staging)
            self._filled += self._half
        self._draws_host += batch_size

    def sample_slots(self, batch_size: int) -> torch.Tensor:
        """Device side: `batch_size` sampleable slots (int64), uniform with replacement."""
        batch_range = self._batch_range.get(batch_size)
        if batch_range is None:
            batch_range = torch.arange(batch_size, device=self.device)
            self._batch_range[batch_size] = batch_range
        u = self._uniforms[(self._draws + batch_range) % self._uniforms.shape[0]]
        self._draws += batch_size
        counts = self.block_counts
        cumulative = torch.cumsum(counts, 0)
        total = cumulative[-1]
        # u < 1, so the rank is below total; the minimum guards against the product rounding.
        rank = torch.minimum((u * total).long(), total - 1)
        block = torch.searchsorted(cumulative, rank, right=True)
        within = rank - cumulative[block] + counts[block]
        flags = self.sampleable.view(self.num_blocks, self.block_size)[block]
        position = torch.searchsorted(torch.cumsum(flags, 1), within[:, None], right=True)
        return block * self.block_size + position[:, 0]

    def sample(self, batch_size: int) -> Batch:
        """`batch_size` transitions drawn uniformly, with replacement, on the device."""
        self.prepare_sample(batch_size)
        return self.gather(self.sample_slots(batch_size))

    def gather(self, slot: torch.Tensor) -> Batch:
        """The transitions that start at slots `slot` (int64, on the device)."""
        batch_size = slot.shape[0]
        both = torch.cat([slot, self.next_slots[slot]])
        # index_select of whole frames, not frames[stacks[both]]: on the CPU advanced indexing
        # of uint8 copies element by element, 8x slower than index_select's row copies.
        rows = torch.index_select(self.frames, 0, self.stacks[both].flatten())
        frames = rows.view(2 * batch_size, self.stack, *self.frames.shape[1:])
        return Batch(
            obs_tm1=frames[:batch_size],
            action_tm1=self.actions[slot].long(),
            reward_t=self.rewards[slot],
            discount_t=self.discounts[slot],
            obs_t=frames[batch_size:],
        )

    def sampleable_slots(self) -> npt.NDArray[np.int64]:
        """Every slot a transition can be sampled from (host mirror; for tests and tools)."""
        return np.flatnonzero(self._sampleable)

    # ------------------------------------------------------------------ saving and loading

    _FRAMES_FILE = "frames.u8"
    _META_FILE = "meta.pt"
    _PER_SLOT = ("stacks", "actions", "rewards", "discounts", "next_slots")
    _CHUNK_FRAMES = 16_384  # 116 MB of 84x84 frames: bounds the host copy of a GPU ring

    def _filled_ranges(self) -> list[tuple[int, int]]:
        """[start, stop) of each game's written slots."""
        ring = self.ring_capacity
        return [(g * ring, g * ring + min(int(w), ring)) for g, w in enumerate(self._written)]

    def save(self, directory: Path) -> None:
        """Write the written slots to `directory`: raw uint8 frames in chunks, plus metadata.

        Frames go out a chunk at a time, so saving a GPU memory never holds a second copy of it
        in host memory. The caller makes the directory's appearance atomic (see checkpoint.py).
        """
        directory.mkdir(parents=True, exist_ok=True)
        ranges = self._filled_ranges()
        with (directory / self._FRAMES_FILE).open("wb") as f:
            for first, stop in ranges:
                for start in range(first, stop, self._CHUNK_FRAMES):
                    chunk = self.frames[start : min(start + self._CHUNK_FRAMES, stop)]
                    f.write(chunk.cpu().numpy().data.cast("B"))  # on the CPU, a view: no copy
            f.flush()
            os.fsync(f.fileno())

        def filled(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t[a:b] for a, b in ranges]).cpu()

        meta = {
            "format": FORMAT,
            "num_games": self.num_games,
            "ring_capacity": self.ring_capacity,
            "frame_shape": list(self.frame_shape),
            "stack": self.stack,
            "written": torch.from_numpy(self._written.copy()),
            "pending": torch.from_numpy(self._pending.copy()),
            "sampleable": torch.from_numpy(self._sampleable.copy()),
            **{name: filled(getattr(self, name)) for name in self._PER_SLOT},
            "generator": self._generator.get_state(),
            "uniforms": self._uniforms.cpu(),
            "draws": self._draws_host,
            "filled": self._filled,
        }
        with (directory / self._META_FILE).open("wb") as f:
            torch.save(meta, f)
            f.flush()
            os.fsync(f.fileno())

    def load(self, directory: Path) -> None:
        """Restore what `save` wrote into this (same-shaped) memory. Every way the saved files
        can be missing or damaged is a ReplayMemoryError with a one-line reason."""
        meta = self._read_meta(directory)
        path = directory / self._FRAMES_FILE
        if not path.is_file():
            raise ReplayMemoryError(f"the saved replay memory is incomplete: {path} is missing")
        self._written = meta["written"].numpy().astype(np.int64)
        ranges = self._filled_ranges()
        frame_bytes = self.frame_shape[0] * self.frame_shape[1]
        expected = sum(b - a for a, b in ranges) * frame_bytes
        if path.stat().st_size != expected:
            raise ReplayMemoryError(
                f"{path} is truncated or corrupt: {path.stat().st_size} bytes, expected {expected}"
            )
        staging = torch.empty((self._CHUNK_FRAMES, *self.frame_shape), dtype=torch.uint8)
        with path.open("rb") as f:
            for first, stop in ranges:
                for start in range(first, stop, self._CHUNK_FRAMES):
                    count = min(self._CHUNK_FRAMES, stop - start)
                    if f.readinto(staging[:count].numpy().data.cast("B")) != count * frame_bytes:
                        raise ReplayMemoryError(f"{path} ended early (truncated?)")
                    self.frames[start : start + count].copy_(staging[:count])
        offset = 0
        for a, b in ranges:
            for name in self._PER_SLOT:
                getattr(self, name)[a:b] = meta[name][offset : offset + b - a].to(self.device)
            offset += b - a
        self._pending = meta["pending"].numpy().astype(np.int64)
        self._sampleable = meta["sampleable"].numpy().astype(np.bool_)
        self._block_counts = self._sampleable.reshape(self.num_blocks, -1).sum(1).astype(np.int64)
        self.sampleable.copy_(torch.from_numpy(self._sampleable))
        self.block_counts.copy_(torch.from_numpy(self._block_counts))
        self._generator.set_state(meta["generator"])
        self._uniforms.copy_(meta["uniforms"])
        self._draws_host = int(meta["draws"])
        self._draws.fill_(self._draws_host)
        self._filled = int(meta["filled"])

    def _read_meta(self, directory: Path) -> dict[str, Any]:
        """meta.pt, checked field by field against this memory before anything is changed."""
        path = directory / self._META_FILE
        if not path.is_file():
            raise ReplayMemoryError(f"the saved replay memory is incomplete: {path} is missing")
        try:
            meta = load_untrusted(path)
        except Exception as err:  # torch.load raises many types on damaged bytes
            raise ReplayMemoryError(
                f"cannot read {path} (truncated or corrupt?): {load_error_reason(err)}"
            ) from None
        if not isinstance(meta, dict) or "format" not in meta:
            raise ReplayMemoryError(f"{path} is not a saved dqn-atari replay memory")
        if meta["format"] != FORMAT:
            raise ReplayMemoryError(
                f"{path} holds a replay memory of format {meta['format']} (an earlier "
                f"dqn-atari); this version reads format {FORMAT}"
            )
        saved = (
            meta.get("num_games"), meta.get("ring_capacity"), meta.get("frame_shape"),
            meta.get("stack"),
        )  # fmt: skip
        here = (self.num_games, self.ring_capacity, list(self.frame_shape), self.stack)
        if saved != here:
            raise ReplayMemoryError(
                f"the saved replay memory in {directory} holds {saved[0]} game(s) of {saved[1]} "
                f"frames of "
                f"{saved[2]} stacked by {saved[3]}; this run has {here[0]} of {here[1]} of "
                f"{here[2]} stacked by {here[3]} (buffer_size or num_envs differ?)"
            )
        n, ring, padded = self.num_games, self.ring_capacity, self.sampleable.shape[0]
        tensors = {
            "written": (torch.int64, (n,)),
            "pending": (torch.int64, (n,)),
            "sampleable": (torch.bool, (padded,)),
            "uniforms": (torch.float64, tuple(self._uniforms.shape)),
        }
        for name, (dtype, shape) in tensors.items():
            value = meta.get(name)
            if not isinstance(value, torch.Tensor) or (value.dtype, tuple(value.shape)) != (
                dtype,
                shape,
            ):
                raise ReplayMemoryError(f"{path} is corrupt: '{name}' is not {dtype} {shape}")
        written = meta["written"]
        if bool((written < 0).any()) or bool((meta["pending"] < -1).any()):
            raise ReplayMemoryError(f"{path} is corrupt: negative counters")
        filled = int(torch.clamp(written, max=ring).sum())
        for name in self._PER_SLOT:
            mine = getattr(self, name)
            shape = (filled, *mine.shape[1:])
            value = meta.get(name)
            if not isinstance(value, torch.Tensor) or (value.dtype, value.shape) != (
                mine.dtype,
                shape,
            ):
                raise ReplayMemoryError(f"{path} is corrupt: '{name}' is not {mine.dtype} {shape}")
        # Indices that point outside the memory would make a later gather fail (or, on CUDA,
        # assert); a damaged file must be refused here, before training starts.
        for name in ("stacks", "next_slots"):
            if filled and not bool(((meta[name] >= 0) & (meta[name] < self.capacity)).all()):
                raise ReplayMemoryError(f"{path} is corrupt: '{name}' points outside the memory")
        if not isinstance(meta.get("draws"), int) or not isinstance(meta.get("filled"), int):
            raise ReplayMemoryError(f"{path} is corrupt: sampler counters missing")
        generator = meta.get("generator")
        if not isinstance(generator, torch.Tensor) or generator.dtype != torch.uint8:
            raise ReplayMemoryError(f"{path} is corrupt: no sampler generator state")
        return meta
