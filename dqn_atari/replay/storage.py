"""The replay's storage: N games' rings of single 84x84 frames on the training device.

Layout (after Dopamine's circular buffer): game g owns ring g, the slots [g*C, (g+1)*C) of one
set of tensors (C = capacity // N). Slot `i` of a ring holds the newest phi frame of an
observation the game saw, the action taken from it, the reward and TD-terminal flag that
followed, the slot its `obs_t` stack ends at, and the row of slots its own stack is made of.
A one-step transition at slot `i` is

    obs_tm1 = stack of frames ending at slot i      action_tm1, reward_t, discount of slot i
    obs_t   = stack of frames ending at next_slots[i] (slot i + 1 of the same ring)

Stacks are rebuilt with one gather from the index row per slot, written with the frame: frame
`i - j` for j = stack-1 .. 0, clamped to the episode's first frame, so a stack never reaches into
the previous episode (the environment pads episode starts the same way, by repeating the first
frame), nor into another game's ring. Working the indices out on the host at write time (a few
numpy ops per vector step) instead of on the device at every sample (a dozen ops per batch) is
what keeps an update's op count low. A game that ends (TD terminal) needs no next frame: its
`obs_t` is masked by discount 0 (it reads its own stack, which keeps the gather in range). A
game cut by the frame limit (truncated) still bootstraps, so its final frame is written to an
extra "end slot" that never starts a transition.

Which slots can start a transition is one flag per slot (`valid`), kept by the writes: a slot
becomes valid when its transition is complete, and stops being valid when it is overwritten,
or when its stack would reach overwritten frames (the stack-1 oldest slots of a ring that has
wrapped). End slots and the frame awaiting its action never are. Each write reports the flags
it touched (a `ValidityChange`) for the sampler; how slots are drawn is not the storage's job.

Writing: `stage_start(first_frames)` once, then `stage_step(...)` once per vector step of the
N games, each followed by `apply` once the staging buffer has crossed to the device. The host
keeps the bookkeeping (numpy, O(N) per step) and a mirror of the flags; what changes on the
device (up to 2N frames, N transitions, the flags) crosses in the caller's single copy and
lands with a fixed number of indexed writes, whatever N.

At 1M slots the storage holds 1M * (84*84 + 30) bytes = 7.09 GB, against 28-56 GB for stored
stacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from dqn_atari.replay.batch import Batch
from dqn_atari.replay.errors import ReplayMemoryError
from dqn_atari.replay.sampler import ValidityChange
from dqn_atari.replay.staging import Staging


class StagedWrite(NamedTuple):
    """A write staged on the host: the storage's sections of the copy, and the flags it
    touched (for the sampler)."""

    sections: list[int]
    change: ValidityChange


class FrameStorage:
    """N games' rings of single uint8 frames on `device`, rebuilt into batches of (n-step)
    transitions by `gather`. See the module docstring for the layout and the validity rules.

    `flag_slots` >= `num_games * ring_capacity` is the length of the validity flags: the slots
    past the capacity are never valid, and pad the flags to whole blocks for a sampler that
    views them as blocks (see sum_tree.py).
    """

    PER_SLOT = ("stacks", "actions", "rewards", "discounts", "next_slots")  # beside the frames

    def __init__(
        self,
        num_games: int,
        ring_capacity: int,
        frame_shape: tuple[int, int],
        stack: int,
        device: torch.device,
        flag_slots: int,
        gamma: float = 0.99,
        n_step: int = 1,
    ) -> None:
        self.num_games = num_games
        self.ring_capacity = ring_capacity  # slots per game
        self.capacity = ring_capacity * num_games
        if flag_slots < self.capacity:
            raise ValueError(f"{flag_slots} validity flags for {self.capacity} slots")
        self.stack = stack
        self.frame_shape = frame_shape
        self.device = device
        self.gamma = gamma
        self.n_step = n_step
        slots, dev = self.capacity, device
        self.frames = torch.empty((slots, *frame_shape), dtype=torch.uint8, device=dev)
        # Frame slots of each stack: int32 here (a slot number fits), widened to int64 where
        # they index `frames` (see `gather`).
        self.stacks = torch.zeros((slots, stack), dtype=torch.int32, device=dev)
        self.actions = torch.zeros(slots, dtype=torch.uint8, device=dev)  # ALE has 18 at most
        self.rewards = torch.zeros(slots, dtype=torch.float32, device=dev)
        self.discounts = torch.zeros(slots, dtype=torch.float32, device=dev)  # 0 = TD terminal
        self.next_slots = torch.zeros(slots, dtype=torch.int32, device=dev)  # where obs_t ends
        self.valid = torch.zeros(flag_slots, dtype=torch.bool, device=dev)
        self._back = np.arange(stack - 1, -1, -1, dtype=np.int64)  # [3, 2, 1, 0]
        # Host bookkeeping (no device reads): frames written per game, the step number of each
        # game's frame awaiting an action (-1: none), and a mirror of the flags with its count.
        self.written = np.zeros(num_games, np.int64)
        self.pending = np.full(num_games, -1, np.int64)
        self.valid_host = np.zeros(flag_slots, np.bool_)
        self.valid_count = 0
        self._games = np.arange(num_games, dtype=np.int64)

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-slot tensors."""
        tensors = (self.frames, *(getattr(self, name) for name in self.PER_SLOT), self.valid)
        return sum(t.element_size() * t.nelement() for t in tensors)

    @property
    def max_changes(self) -> int:
        """The most flags one write touches: per game, the slots its (up to two) new frames
        overwrite with the stack-1 slots after them, and the slot it completes."""
        return self.num_games * (self.stack + 2)

    def staging_bytes(self) -> int:
        """Bytes a write stages at most."""
        n, frame_bytes = self.num_games, self.frame_shape[0] * self.frame_shape[1]
        sizes = [
            (2 * n * frame_bytes, torch.uint8),  # frames
            (2 * n, torch.int64),  # their slots
            (2 * n * self.stack, torch.int32),  # their stack rows
            (n, torch.int64),  # completed slots
            (n, torch.uint8),  # actions
            (n, torch.float32),  # rewards
            (n, torch.float32),  # discounts
            (n, torch.int32),  # next slots
            (self.max_changes, torch.int64),  # touched flags' slots
            (self.max_changes, torch.bool),  # their values
        ]
        return sum(Staging.section_bytes(count, dtype) for count, dtype in sizes)

    def filled_ranges(self) -> list[tuple[int, int]]:
        """[start, stop) of each game's written slots."""
        return filled_ranges(self.written, self.ring_capacity)

    # ------------------------------------------------------------------ writing

    def stage_start(self, frames: npt.NDArray[np.uint8], staging: Staging) -> StagedWrite:
        """The newest frame of each game's first observation, (N, H, W)."""
        if frames.shape[0] != self.num_games:
            raise ReplayMemoryError(f"start() takes {self.num_games} frames, got {frames.shape}")
        if (self.pending >= 0).any():
            raise ReplayMemoryError("start() again while frames await their actions")
        none = np.zeros(0, np.int64)
        staged = self._stage(
            staging,
            frame_games=self._games,
            frame_order=np.zeros(self.num_games, np.int64),
            frame_sources=frames,
            frame_steps=np.zeros(self.num_games, np.int64),
            completed=none,
            actions=none,
            rewards=np.zeros(0, np.float32),
            terminals=np.zeros(0, np.bool_),
        )
        self.pending[:] = 0
        return staged

    def stage_step(
        self,
        actions: npt.NDArray[np.int64],
        rewards: npt.NDArray[np.float64],
        td_terminal: npt.NDArray[np.bool_],
        ended: npt.NDArray[np.bool_],
        final_frames: npt.NDArray[np.uint8],
        next_frames: npt.NDArray[np.uint8],
        staging: Staging,
    ) -> StagedWrite:
        """One vector step of the N games (see ReplayMemory.add_step for the arguments)."""
        if (self.pending < 0).any():
            raise ReplayMemoryError("add_step() needs start() first (no frame awaits an action)")
        ended = np.asarray(ended, np.bool_)
        td_terminal = np.asarray(td_terminal, np.bool_)
        # obs_t of a terminal transition is never read, so a game that ended on a terminal
        # stores only its next first frame; a truncated one stores its final frame too.
        keep_final = ~(ended & td_terminal)
        frame_games = np.concatenate([self._games[keep_final], self._games[ended]])
        frame_sources = np.concatenate([final_frames[keep_final], next_frames[ended]])
        frame_steps = np.concatenate(
            [self.pending[keep_final] + 1, np.zeros(int(ended.sum()), np.int64)]
        )
        # A truncated game's next first frame follows its final one in the ring.
        frame_order = np.concatenate(
            [np.zeros(int(keep_final.sum()), np.int64), keep_final[ended].astype(np.int64)]
        )
        staged = self._stage(
            staging,
            frame_games=frame_games,
            frame_order=frame_order,
            frame_sources=frame_sources,
            frame_steps=frame_steps,
            completed=self._games,
            actions=np.asarray(actions, np.int64),
            rewards=np.asarray(rewards, np.float32),
            terminals=td_terminal,
        )
        self.pending = np.where(ended, 0, self.pending + 1)
        return staged

    def _stage(
        self,
        staging: Staging,
        frame_games: npt.NDArray[np.int64],
        frame_order: npt.NDArray[np.int64],
        frame_sources: npt.NDArray[np.uint8],
        frame_steps: npt.NDArray[np.int64],
        completed: npt.NDArray[np.int64],
        actions: npt.NDArray[np.int64],
        rewards: npt.NDArray[np.float32],
        terminals: npt.NDArray[np.bool_],
    ) -> StagedWrite:
        """Store frames (in the order given, per game) with their step numbers in the episode,
        and complete the transitions of the games in `completed` from their awaiting frames."""
        ring, stack = self.ring_capacity, self.stack
        base = frame_games * ring
        # A game's frames of this step go to consecutive slots of its ring, `frame_order` apart.
        absolute = self.written[frame_games] + frame_order
        frame_slots = base + absolute % ring
        # Each frame's stack: the frames back to the episode's first, which repeats.
        back = np.minimum(self._back[None, :], frame_steps[:, None])
        stack_rows = base[:, None] + (absolute[:, None] - back) % ring
        done_base = completed * ring
        done_slots = done_base + (self.written[completed] - 1) % ring
        # obs_t ends at the frame stored next; a terminal transition reads its own (masked).
        next_slots = np.where(terminals, done_slots, done_base + self.written[completed] % ring)
        np.add.at(self.written, frame_games, 1)

        # Flags that fall: each written slot, and once a ring has wrapped, the stack-1 slots
        # after it, whose stacks would now reach an overwritten frame.
        reach = np.arange(stack)
        wrapped = absolute[:, None] >= ring
        falls = (reach[None, :] == 0) | wrapped
        fall_slots = np.unique((base[:, None] + (absolute[:, None] + reach[None, :]) % ring)[falls])
        touched = np.concatenate([fall_slots, done_slots])
        before = self.valid_host[touched]
        self.valid_host[fall_slots] = False
        self.valid_host[done_slots] = True
        after = self.valid_host[touched]
        self.valid_count += int(after.sum()) - int(before.sum())

        sections = [
            staging.put(frame_sources, torch.uint8),
            staging.put(frame_slots, torch.int64),
            staging.put(stack_rows, torch.int32),
            staging.put(done_slots, torch.int64),
            staging.put(actions, torch.uint8),
            staging.put(rewards, torch.float32),
            staging.put(np.where(terminals, 0.0, 1.0), torch.float32),
            staging.put(next_slots, torch.int32),
            staging.put(touched, torch.int64),
            staging.put(after, torch.bool),
        ]
        return StagedWrite(sections, ValidityChange(touched, before, after))

    def apply(self, staged: StagedWrite, sent: Sequence[torch.Tensor]) -> None:
        """The staged write, now on the device, into the tensors."""
        frames, slots, rows, done, acts, rews, discounts, nexts, flag_slots, flags = (
            sent[i] for i in staged.sections
        )
        self.frames.index_copy_(0, slots, frames)
        self.stacks.index_copy_(0, slots, rows)
        if done.numel():
            self.actions.index_copy_(0, done, acts)
            self.rewards.index_copy_(0, done, rews)
            self.discounts.index_copy_(0, done, discounts)
            self.next_slots.index_copy_(0, done, nexts)
        self.valid.index_copy_(0, flag_slots, flags)

    def restore(
        self,
        written: npt.NDArray[np.int64],
        pending: npt.NDArray[np.int64],
        valid: npt.NDArray[np.bool_],
    ) -> None:
        """Set the host bookkeeping and the flags (loading a saved memory)."""
        self.written = written.astype(np.int64)
        self.pending = pending.astype(np.int64)
        self.valid_host = valid.astype(np.bool_)
        self.valid_count = int(self.valid_host.sum())
        self.valid.copy_(torch.from_numpy(self.valid_host))

    # ------------------------------------------------------------------ reading

    def gather(self, slot: torch.Tensor) -> Batch:
        """The transitions that start at slots `slot` (int64, on the device), over up to
        `n_step` steps each (see `returns`)."""
        batch_size = slot.shape[0]
        reward, discount, last = self.returns(slot)
        both = torch.cat([slot, self.next_slots[last]])
        # index_select of whole frames, not frames[stacks[both]]: on the CPU advanced indexing
        # of uint8 copies element by element, 8x slower than index_select's row copies. The
        # slots are widened to int64 first: at 1M slots `frames` holds 7.06e9 elements, and a
        # compiled gather computing slot * 7056 from an int32 slot overflows past slot 304,346.
        frame_slots = self.stacks[both].flatten().long()
        rows = torch.index_select(self.frames, 0, frame_slots)
        frames = rows.view(2 * batch_size, self.stack, *self.frames.shape[1:])
        return Batch(
            obs_tm1=frames[:batch_size],
            action_tm1=self.actions[slot].long(),
            reward_t=reward,
            discount_t=discount,
            obs_t=frames[batch_size:],
        )

    def returns(self, slot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per slot (int64): the discounted reward sum, gamma^m (0 after a terminal) and the
        slot of the m-th step's transition, for up to `n_step` steps (Sutton, 1988).

        The transition at slot i continues at j = next_slots[i] while fewer than n steps are
        summed, i is not TD terminal, and j itself can start a transition: that cuts the sum at
        a terminal (discount 0: nothing is bootstrapped after its reward), at a truncation (the
        end slot is never valid) and at the game's newest write (the frame awaiting its action
        is not valid either), where the target bootstraps from the stack ending at
        next_slots[last] with gamma^m. The chain runs forward in time, toward newer slots of
        the same ring (wrapping around it), so it never meets the oldest slots a wrapped ring
        has invalidated. A static loop of vectorised ops: no per-sample Python, no host sync.
        """
        gamma = self.gamma
        reward = self.rewards[slot]
        # n_step=1: a float32 tensor times a Python float, the factors of today's
        # `gamma * discount_t`, so the target `reward + discount * bootstrap` is bit for bit
        # the one-step target.
        discount = self.discounts[slot] * gamma
        last = slot
        for k in range(1, self.n_step):
            step = self.next_slots[last].long()  # widened once, not inside each lookup
            # discount > 0: no terminal yet (with gamma = 0 the chain stops at once, which
            # changes nothing: every later term would be multiplied by 0).
            go = self.valid[step] & (discount > 0)
            reward = torch.where(go, reward + self.rewards[step] * gamma**k, reward)
            discount = torch.where(go, self.discounts[step] * gamma ** (k + 1), discount)
            last = torch.where(go, step, last)
        return reward, discount, last


def filled_ranges(written: npt.NDArray[np.int64], ring_capacity: int) -> list[tuple[int, int]]:
    """[start, stop) of each game's written slots, for `written` frames written per game."""
    ring = ring_capacity
    return [(g * ring, g * ring + min(int(w), ring)) for g, w in enumerate(written)]
