"""A sum tree of two levels: slots in blocks of about sqrt(slots), searched by prefix sums.

A binary sum tree (Schaul et al., 2016, as in Dopamine's `sum_tree.py`) finds the slot holding
a given rank in log2(slots) dependent steps, one per level. On a device that cost is launches,
not arithmetic, so this tree has two levels: the per-block totals, and the slots' own values
viewed as (num_blocks, block_size). A search is a cumulative sum over the blocks, one
searchsorted into it, then a cumulative sum of only each sought block and a second
searchsorted: a fixed handful of ops for a whole batch, with static shapes, whatever the
capacity. Uniform sampling keeps 0/1 flags and integer counts in it (`find`); prioritized
sampling keeps float priorities and their block sums in the same layout (`find_weighted`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class BlockLayout(NamedTuple):
    """How `slots` slots split into blocks; the last block is padded with never-valid slots."""

    block_size: int
    num_blocks: int

    @property
    def padded(self) -> int:
        """Slots including the padding: the length of every per-slot tensor viewed as blocks."""
        return self.block_size * self.num_blocks


def block_layout(slots: int) -> BlockLayout:
    """Blocks of about sqrt(slots) slots (a power of two, at least 64), so that both cumulative
    sums of a search (over the blocks, and over one block per sought rank) stay small."""
    block_size = max(64, 1 << math.ceil(math.log2(math.isqrt(slots) + 1)))
    return BlockLayout(block_size, -(-slots // block_size))


def find(
    cumulative: torch.Tensor, totals: torch.Tensor, leaves: torch.Tensor, rank: torch.Tensor
) -> torch.Tensor:
    """The slot of each `rank` (B,): the first slot whose inclusive prefix sum exceeds it.

    `totals` (num_blocks,) are the blocks' sums and `cumulative` their cumulative sum; `leaves`
    is the slots' values viewed as (num_blocks, block_size). Each rank must lie in
    [0, cumulative[-1]).
    """
    block = torch.searchsorted(cumulative, rank, right=True)
    within = rank - cumulative[block] + totals[block]
    position = torch.searchsorted(torch.cumsum(leaves[block], 1), within[:, None], right=True)
    return block * leaves.shape[1] + position[:, 0]


def find_weighted(
    cumulative: torch.Tensor, totals: torch.Tensor, leaves: torch.Tensor, rank: torch.Tensor
) -> torch.Tensor:
    """`find` for float weights (float64): the slot of each `rank` (B,) in [0, cumulative[-1]),
    the first slot whose inclusive prefix sum exceeds it.

    With integer counts both levels add up exactly. With floats the blocks' sums, their
    cumulative sum and a block's own cumulative sum round differently, so the rank left for a
    block can be an ulp or so outside [0, the block's sum): about once in 1e16 draws a rank
    lands on the slot before or after the one it should, which may be one of weight 0 or, past
    the last block, one past the last slot. The caller clamps the slot into range and gives a
    draw of weight 0 no weight (prioritized.py); that is cheaper than clamping every rank into
    its block, and a GPU's tree-ordered cumulative sum could still step by an ulp at a slot of
    weight 0. The block is clamped: with no weight at all (an empty memory, sampled only by the
    learner's dry run) every rank lies past the last block.
    """
    block = torch.searchsorted(cumulative, rank, right=True).clamp_(max=leaves.shape[0] - 1)
    within = rank - (cumulative - totals)[block]
    position = torch.searchsorted(torch.cumsum(leaves[block], 1), within[:, None], right=True)
    return block * leaves.shape[1] + position[:, 0]
