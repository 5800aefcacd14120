"""Proportional prioritized replay on the device (Schaul et al., 2016, "Prioritized Experience
Replay", section 3.3 and Algorithm 1), drawn and updated inside the compiled update.

Every slot has a priority p_i = (|delta_i| + eps)^alpha, float64 on the device, and 0 for a
slot that cannot start a transition (never written, overwritten, its stack or its transition
incomplete, an end slot, padding): the storage's validity flags decide, as for uniform sampling.
The priorities are the leaves of the two-level sum tree of sum_tree.py, viewed as
(num_blocks, block_size); `block_sums` is its upper level, each block's sum recomputed from its
slots whenever one of them changes (never by adding differences, which would drift).

    write (host, then device; eager, once per vector step)
        a slot that becomes valid enters at the running maximum priority (Algorithm 1, line 6:
        p_t = max_{i<t} p_i), one that stops being valid goes to 0; the touched blocks' sums
        are recomputed.
    draw (device, in the update)
        stratified: the mass [0, total) cut into B equal segments, one uniform rank in each
        (appendix B.2.1), each rank's slot found by `sum_tree.find_weighted`; the importance-
        sampling weights w_i = (N P(i))^-beta / max_j (N P(j))^-beta (section 3.4, Algorithm 1
        line 10, the maximum over the batch as in DQN Zoo and Dopamine), which is
        (p_min / p_i)^beta with p_min the batch's smallest priority: N and the total cancel.
    update_priorities (device, in the update, after the loss; Algorithm 1, line 12)
        p_i = (|delta_i| + eps)^alpha scattered into the batch's slots, their blocks' sums
        recomputed, the running maximum raised. A slot drawn twice in a batch takes the larger
        of its two new priorities (a max is the same in any order, so duplicates stay
        deterministic on a GPU, where a plain scatter keeps an arbitrary one).

beta rises linearly from beta_start to 1 over `beta_updates` batches (section 3.4: "linearly
annealing beta from its initial value beta_0 to 1" by the end of learning). The host works it
out from its count of batches and writes it into a device scalar in `prepare`, before the
update, as the uniforms are put there: a Python float read by the update would recompile the
compiled update at every change or be frozen into its CUDA graph.

The uniforms come from the memory's own generator on the host (draws.py), as for uniform
sampling, so the CPU and CUDA draw the same slots from the same priorities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from dqn_atari.replay import sum_tree
from dqn_atari.replay.draws import HostDrawnUniforms
from dqn_atari.replay.errors import ReplayMemoryError
from dqn_atari.replay.sampler import Draw, SlotSampler, ValidityChange
from dqn_atari.replay.staging import Staging

# What a saved prioritized memory holds beside a uniform one's state (saving.py tells them apart).
PRIORITY_KEYS = frozenset({"priorities", "block_sums", "max_priority", "batches_drawn"})


@dataclass(frozen=True)
class Prioritization:
    """How a prioritized memory weighs its slots (Schaul et al., 2016, section 4 for the
    proportional variant's values)."""

    beta_updates: int  # batches over which beta rises to 1 (a run's updates)
    alpha: float = 0.6  # priority exponent: 0 is uniform sampling
    beta_start: float = 0.4  # importance-sampling exponent of the first batch, annealed to 1
    eps: float = 1e-6  # added to |delta| so that no transition stops being drawn
    updates_before: int = 0  # batches drawn before this memory was built (a refilled resume)


class PrioritizedSampler(SlotSampler):
    """Draws with replacement, slot i with probability p_i / sum_j p_j (see the module
    docstring); `capacity` slots exist, the layout pads them to whole blocks."""

    def __init__(
        self,
        layout: sum_tree.BlockLayout,
        capacity: int,
        device: torch.device,
        seed: int,
        max_batch_size: int,
        settings: Prioritization,
    ) -> None:
        if capacity > layout.padded:
            raise ValueError(f"{capacity} slots in {layout}")
        self.layout = layout
        self.capacity = capacity
        self.settings = settings
        f64 = torch.float64
        self.priorities = torch.zeros(layout.padded, dtype=f64, device=device)
        self._leaves = self.priorities.view(layout.num_blocks, layout.block_size)
        self.block_sums = torch.zeros(layout.num_blocks, dtype=f64, device=device)
        # Algorithm 1 starts the maximum at 1 (p_1 = 1), as DQN Zoo and Dopamine do. Scalars of
        # shape (1,), not (): compiled (torch 2.13, aot_eager and inductor on the CPU), an
        # in-place write to a 0-dim float64 tensor is lost.
        self.max_priority = torch.ones(1, dtype=f64, device=device)
        self.beta = torch.full((1,), settings.beta_start, dtype=f64, device=device)
        self.batches_drawn = settings.updates_before  # host: batches prepared
        self._valid_count = 0  # host: slots that can be drawn
        self.uniforms = HostDrawnUniforms(seed, max_batch_size, device)
        # Built here, not in `draw`: a tensor made inside a compiled update fails the compiled
        # graph's guards at the next call and recompiles the whole update.
        self._strata = torch.arange(self.uniforms.half, dtype=f64, device=device)

    # ------------------------------------------------------------------ writing

    def staging_bytes(self, max_changes: int) -> int:
        blocks = min(max_changes, self.layout.num_blocks)
        return (
            Staging.section_bytes(max_changes, torch.int64)
            + Staging.section_bytes(max_changes, torch.bool)
            + Staging.section_bytes(blocks, torch.int64)
        )

    def stage(self, change: ValidityChange, staging: Staging) -> list[int]:
        # A touched slot that stays valid keeps its priority; every other touched slot is set.
        set_ = ~(change.before & change.after)
        slots = change.slots[set_]
        self._valid_count += int(change.after.sum()) - int(change.before.sum())
        return [
            staging.put(slots, torch.int64),
            staging.put(change.after[set_], torch.bool),
            staging.put(np.unique(slots // self.layout.block_size), torch.int64),
        ]

    def apply(self, sections: Sequence[int], sent: Sequence[torch.Tensor]) -> None:
        slots, enters, blocks = (sent[i] for i in sections)
        self.priorities.index_copy_(0, slots, torch.where(enters, self.max_priority, 0.0))
        self._refresh(blocks)

    def _refresh(self, blocks: torch.Tensor) -> None:
        """Recompute the sums of `blocks` (duplicates write the same sum) from their slots."""
        self.block_sums.index_copy_(0, blocks, self._leaves[blocks].sum(1))

    # ------------------------------------------------------------------ drawing

    def prepare(self, batch_size: int) -> None:
        self.uniforms.check(batch_size)
        if self._valid_count == 0:
            raise ReplayMemoryError("cannot sample from an empty replay memory")
        self.uniforms.prepare(batch_size)
        self.beta.fill_(self.beta_at(self.batches_drawn))
        self.batches_drawn += 1

    def beta_at(self, batches: int) -> float:
        """The importance-sampling exponent of the batch drawn after `batches` others."""
        start, fraction = self.settings.beta_start, batches / self.settings.beta_updates
        return start + (1.0 - start) * min(fraction, 1.0)

    def draw(self, batch_size: int) -> torch.Tensor:
        return self.draw_weighted(batch_size).slots

    def draw_weighted(self, batch_size: int) -> Draw:
        """Device side: `batch_size` slots drawn by priority, one per segment of the total
        mass, and their importance-sampling weights (float32, the largest 1)."""
        u = self.uniforms.take(batch_size)
        totals = self.block_sums
        cumulative = torch.cumsum(totals, 0)
        rank = (self._strata[:batch_size] + u) * (cumulative[-1] / batch_size)
        found = sum_tree.find_weighted(cumulative, totals, self._leaves, rank)
        # Past the last slot only by rounding, or in an empty memory (the dry run's).
        slot = found.clamp_(max=self.capacity - 1)
        p = self.priorities[slot]
        drawn = p > 0  # all but about one draw in 1e16 (see sum_tree.find_weighted)
        p_min = torch.where(drawn, p, torch.inf).amin()
        weights = torch.where(drawn, (p_min / p) ** self.beta, 0.0)
        return Draw(slot, weights.float())

    def update_priorities(self, slots: torch.Tensor, priority: torch.Tensor) -> None:
        """Device side, after the loss: the batch's new priorities from `priority` (B,) >= 0,
        detached (|TD error|, or C51's cross-entropy), into the slots `slots` it came from.
        Each slot's block is summed again whole (B * block_size reads): made for a batch."""
        new = (priority.double() + self.settings.eps) ** self.settings.alpha
        # A slot of priority 0 stays 0: it cannot start a transition (see draw_weighted).
        new = torch.where(self.priorities[slots] > 0, new, 0.0)
        self.priorities.scatter_reduce_(0, slots, new, "amax", include_self=False)
        self._refresh(torch.div(slots, self.layout.block_size, rounding_mode="floor"))
        self.max_priority.copy_(torch.maximum(self.max_priority, new.amax()))

    def sampling_state(self) -> list[torch.Tensor]:
        # beta is written by `prepare`, on the host's side of the update, not by the update.
        return [self.uniforms.counter, self.priorities, self.block_sums, self.max_priority]

    # ------------------------------------------------------------------ saving and loading

    def state_dict(self) -> dict[str, Any]:
        # The block sums are saved, not recomputed: the compiled update sums a block in another
        # order than eager code does, and an exact resume needs the very same bits.
        return {
            **self.uniforms.state_dict(),
            "priorities": self.priorities.cpu(),
            "block_sums": self.block_sums.cpu(),
            "max_priority": self.max_priority.cpu(),
            "batches_drawn": self.batches_drawn,
        }

    def check_state(self, state: Mapping[str, Any]) -> str | None:
        if (reason := self.uniforms.check_state(state)) is not None:
            return reason
        shapes = {
            "priorities": (self.layout.padded,),
            "block_sums": (self.layout.num_blocks,),
            "max_priority": (1,),
        }
        for name, shape in shapes.items():
            value = state.get(name)
            if not isinstance(value, torch.Tensor) or (value.dtype, tuple(value.shape)) != (
                torch.float64,
                shape,
            ):
                return f"'{name}' is not {torch.float64} {shape}"
            if not bool((torch.isfinite(value) & (value >= 0)).all()):
                return f"'{name}' holds a negative or non-finite priority"
        priorities = state["priorities"]
        if not bool(state["max_priority"] > 0):
            return "'max_priority' is not positive"
        drawn = state.get("batches_drawn")
        if not isinstance(drawn, int) or drawn < 0:
            return "'batches_drawn' is not a count"
        # The storage's flags, saved beside (saving.py): a slot that cannot start a transition
        # must have priority 0, or a draw could reach it.
        valid = state.get("sampleable")
        if (
            isinstance(valid, torch.Tensor)
            and valid.shape == priorities.shape
            and bool((priorities[~valid.bool()] != 0).any())
        ):
            return "a slot that cannot be sampled has a priority"
        sums = priorities.view(self.layout.num_blocks, -1).sum(1)
        if not torch.allclose(sums, state["block_sums"], rtol=1e-9, atol=0.0):
            return "'block_sums' are not the sums of the priorities"
        return None

    def load_state_dict(self, state: Mapping[str, Any], valid: npt.NDArray[np.bool_]) -> None:
        self.uniforms.load_state_dict(state)
        self.priorities.copy_(state["priorities"])
        self.block_sums.copy_(state["block_sums"])
        self.max_priority.copy_(state["max_priority"])
        self.batches_drawn = int(state["batches_drawn"])
        self._valid_count = int(valid.sum())
