"""How big a replay memory must be, how many bytes it takes, and whether it fits."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dqn_atari.replay.errors import ReplayMemoryError


def min_capacity(stack: int, num_games: int) -> int:
    """The smallest capacity (slots, all games together) a memory of `num_games` games' frames
    stacked by `stack` accepts.

    Each game has its own ring. A step that completes a transition must keep the `stack` frames
    of its obs_tm1 while it writes the frames that follow: one, or two when the game was
    truncated (its final frame and its next first one), hence `stack + 2` slots a game.
    """
    return (stack + 2) * num_games


def replay_bytes(capacity: int, frame_shape: tuple[int, int] = (84, 84), stack: int = 4) -> int:
    """Bytes a ReplayMemory of `capacity` slots allocates on its device for its slots."""
    # Besides the frame: uint8 action, float32 reward and discount, int32 next slot, an int32
    # stack row, the bool flag of a slot that can start a transition.
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
