"""Uniform sampling over every valid slot of every game, on the device."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from dqn_atari.replay import sum_tree
from dqn_atari.replay.draws import HostDrawnUniforms
from dqn_atari.replay.errors import ReplayMemoryError
from dqn_atari.replay.sampler import SlotSampler, ValidityChange
from dqn_atari.replay.staging import Staging


class UniformSampler(SlotSampler):
    """Draws with replacement, each valid slot with the same probability.

    Transition k of a batch takes the rank floor(u_k * count) among the valid slots and finds
    it in the two-level sum tree of sum_tree.py: the leaves are the storage's own validity
    flags (`valid`, viewed as blocks), the upper level a count per block, kept here. The
    uniforms u come from the memory's own generator on the host (draws.py).
    """

    def __init__(
        self,
        valid: torch.Tensor,
        layout: sum_tree.BlockLayout,
        seed: int,
        max_batch_size: int,
    ) -> None:
        if valid.shape != (layout.padded,):
            raise ValueError(f"flags of shape {tuple(valid.shape)} for {layout}")
        self.layout = layout
        self._leaves = valid.view(layout.num_blocks, layout.block_size)
        self.block_counts = torch.zeros(layout.num_blocks, dtype=torch.int64, device=valid.device)
        self._block_counts = np.zeros(layout.num_blocks, np.int64)  # host mirror
        self.uniforms = HostDrawnUniforms(seed, max_batch_size, valid.device)

    def staging_bytes(self, max_changes: int) -> int:
        blocks = min(max_changes, self.layout.num_blocks)
        return 2 * Staging.section_bytes(blocks, torch.int64)

    def stage(self, change: ValidityChange, staging: Staging) -> list[int]:
        blocks = change.slots // self.layout.block_size
        np.add.at(self._block_counts, blocks, change.after.astype(np.int64) - change.before)
        blocks = np.unique(blocks)
        return [
            staging.put(blocks, torch.int64),
            staging.put(self._block_counts[blocks], torch.int64),
        ]

    def apply(self, sections: Sequence[int], sent: Sequence[torch.Tensor]) -> None:
        blocks, counts = (sent[i] for i in sections)
        self.block_counts.index_copy_(0, blocks, counts)

    def prepare(self, batch_size: int) -> None:
        self.uniforms.check(batch_size)
        if not self._block_counts.any():
            raise ReplayMemoryError("cannot sample from an empty replay memory")
        self.uniforms.prepare(batch_size)

    def draw(self, batch_size: int) -> torch.Tensor:
        u = self.uniforms.take(batch_size)
        counts = self.block_counts
        cumulative = torch.cumsum(counts, 0)
        total = cumulative[-1]
        # u < 1, so the rank is below total; the minimum guards against the product rounding.
        rank = torch.minimum((u * total).long(), total - 1)
        return sum_tree.find(cumulative, counts, self._leaves, rank)

    def sampling_state(self) -> list[torch.Tensor]:
        return [self.uniforms.counter]

    # ------------------------------------------------------------------ saving and loading

    def state_dict(self) -> dict[str, Any]:
        # The block counts follow from the storage's flags; only the uniforms are the sampler's.
        return self.uniforms.state_dict()

    def check_state(self, state: Mapping[str, Any]) -> str | None:
        return self.uniforms.check_state(state)

    def load_state_dict(self, state: Mapping[str, Any], valid: npt.NDArray[np.bool_]) -> None:
        self._block_counts = valid.reshape(self.layout.num_blocks, -1).sum(1).astype(np.int64)
        self.block_counts.copy_(torch.from_numpy(self._block_counts))
        self.uniforms.load_state_dict(state)
