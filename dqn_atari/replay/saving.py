"""A replay memory on disk: writing it, and reading it back only when every part checks out.

A saved memory is a directory of two files: `frames.u8`, the written slots' raw uint8 frames
game by game, and `meta.pt`, a plain dict of tensors and numbers (format 2):

    format, num_games, ring_capacity, frame_shape, stack      what memory it is
    written, pending, sampleable                               the storage's host bookkeeping
    stacks, actions, rewards, discounts, next_slots            the written slots' rows
    <the sampler's own state>                                  the uniform sampler's: generator,
                                                               uniforms, draws, filled; the
                                                               prioritized one's adds priorities,
                                                               block_sums, max_priority and
                                                               batches_drawn

Nothing depends on how the memory is read (gamma, n-step): those are computed when sampling.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dqn_atari.checkpoint import load_error_reason, load_untrusted
from dqn_atari.replay.errors import ReplayMemoryError
from dqn_atari.replay.prioritized import PRIORITY_KEYS
from dqn_atari.replay.sampler import SlotSampler
from dqn_atari.replay.storage import FrameStorage, filled_ranges

FORMAT = 2  # of a saved memory's meta.pt; 1 was the one-ring-per-game memory before 0.2
FRAMES_FILE = "frames.u8"
META_FILE = "meta.pt"
_CHUNK_FRAMES = 16_384  # 116 MB of 84x84 frames: bounds the host copy of a GPU ring
_STORAGE_KEYS = {"format", "num_games", "ring_capacity", "frame_shape", "stack", "written"}
_STORAGE_KEYS |= {"pending", "sampleable", *FrameStorage.PER_SLOT}


def save(storage: FrameStorage, sampler: SlotSampler, directory: Path) -> None:
    """Write the written slots to `directory`: raw uint8 frames in chunks, plus metadata.

    Frames go out a chunk at a time, so saving a GPU memory never holds a second copy of it in
    host memory. The caller makes the directory's appearance atomic (see checkpoint.py).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ranges = storage.filled_ranges()
    with (directory / FRAMES_FILE).open("wb") as f:
        for first, stop in ranges:
            for start in range(first, stop, _CHUNK_FRAMES):
                chunk = storage.frames[start : min(start + _CHUNK_FRAMES, stop)]
                f.write(chunk.cpu().numpy().data.cast("B"))  # on the CPU, a view: no copy
        f.flush()
        os.fsync(f.fileno())

    def filled(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t[a:b] for a, b in ranges]).cpu()

    own = sampler.state_dict()
    if clash := _STORAGE_KEYS & set(own):
        raise ValueError(f"the sampler's state uses the storage's keys {sorted(clash)}")
    meta = {
        "format": FORMAT,
        "num_games": storage.num_games,
        "ring_capacity": storage.ring_capacity,
        "frame_shape": list(storage.frame_shape),
        "stack": storage.stack,
        "written": torch.from_numpy(storage.written.copy()),
        "pending": torch.from_numpy(storage.pending.copy()),
        "sampleable": torch.from_numpy(storage.valid_host.copy()),
        **{name: filled(getattr(storage, name)) for name in FrameStorage.PER_SLOT},
        **own,
    }
    with (directory / META_FILE).open("wb") as f:
        torch.save(meta, f)
        f.flush()
        os.fsync(f.fileno())


def load(storage: FrameStorage, sampler: SlotSampler, directory: Path) -> None:
    """Restore what `save` wrote into this (same-shaped) storage and sampler. Every way the
    saved files can be missing or damaged is a ReplayMemoryError with a one-line reason, raised
    before anything is changed (but for a frames file that ends early while it is read)."""
    meta = read_meta(storage, sampler, directory)
    path = directory / FRAMES_FILE
    if not path.is_file():
        raise ReplayMemoryError(f"the saved replay memory is incomplete: {path} is missing")
    written = meta["written"].numpy().astype(np.int64)
    ranges = filled_ranges(written, storage.ring_capacity)
    frame_bytes = storage.frame_shape[0] * storage.frame_shape[1]
    expected = sum(b - a for a, b in ranges) * frame_bytes
    if path.stat().st_size != expected:
        raise ReplayMemoryError(
            f"{path} is truncated or corrupt: {path.stat().st_size} bytes, expected {expected}"
        )
    staging = torch.empty((_CHUNK_FRAMES, *storage.frame_shape), dtype=torch.uint8)
    with path.open("rb") as f:
        for first, stop in ranges:
            for start in range(first, stop, _CHUNK_FRAMES):
                count = min(_CHUNK_FRAMES, stop - start)
                if f.readinto(staging[:count].numpy().data.cast("B")) != count * frame_bytes:
                    raise ReplayMemoryError(f"{path} ended early (truncated?)")
                storage.frames[start : start + count].copy_(staging[:count])
    offset = 0
    for a, b in ranges:
        for name in FrameStorage.PER_SLOT:
            getattr(storage, name)[a:b] = meta[name][offset : offset + b - a].to(storage.device)
        offset += b - a
    valid = meta["sampleable"].numpy().astype(np.bool_)
    storage.restore(written, meta["pending"].numpy(), valid)
    sampler.load_state_dict(meta, valid)


def read_meta(storage: FrameStorage, sampler: SlotSampler, directory: Path) -> dict[str, Any]:
    """meta.pt, checked field by field against this storage and sampler before anything is
    changed."""
    path = directory / META_FILE
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
    s = storage
    here = (s.num_games, s.ring_capacity, list(s.frame_shape), s.stack)
    if saved != here:
        raise ReplayMemoryError(
            f"the saved replay memory in {directory} holds {saved[0]} game(s) of {saved[1]} "
            f"frames of "
            f"{saved[2]} stacked by {saved[3]}; this run has {here[0]} of {here[1]} of "
            f"{here[2]} stacked by {here[3]} (buffer_size or num_envs differ?)"
        )
    n, ring, padded = s.num_games, s.ring_capacity, s.valid.shape[0]
    tensors = {
        "written": (torch.int64, (n,)),
        "pending": (torch.int64, (n,)),
        "sampleable": (torch.bool, (padded,)),
    }
    for name, (dtype, shape) in tensors.items():
        value = meta.get(name)
        if not isinstance(value, torch.Tensor) or (value.dtype, tuple(value.shape)) != (
            dtype,
            shape,
        ):
            raise ReplayMemoryError(f"{path} is corrupt: '{name}' is not {dtype} {shape}")
    # Loaded into a memory sampled uniformly, a prioritized one would lose its priorities
    # without a word; the other way round, it would have none.
    mine, theirs = set(sampler.state_dict()), set(meta) - _STORAGE_KEYS
    if (mine ^ theirs) >= PRIORITY_KEYS:
        kind = "by priority" if theirs >= PRIORITY_KEYS else "uniformly"
        raise ReplayMemoryError(
            f"the saved replay memory in {directory} was sampled {kind}, this one is not "
            "(algo.prioritized differs?)"
        )
    if (reason := sampler.check_state(meta)) is not None:
        raise ReplayMemoryError(f"{path} is corrupt: {reason}")
    written = meta["written"]
    if bool((written < 0).any()) or bool((meta["pending"] < -1).any()):
        raise ReplayMemoryError(f"{path} is corrupt: negative counters")
    filled = int(torch.clamp(written, max=ring).sum())
    for name in FrameStorage.PER_SLOT:
        mine = getattr(s, name)
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
        if filled and not bool(((meta[name] >= 0) & (meta[name] < s.capacity)).all()):
            raise ReplayMemoryError(f"{path} is corrupt: '{name}' points outside the memory")
    return meta
