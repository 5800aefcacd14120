"""Uniform numbers for sampling, drawn ahead on the host and read on the device by a counter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from dqn_atari.replay.errors import ReplayMemoryError


class HostDrawnUniforms:
    """U[0, 1) float64 numbers from the memory's own generator, on the device.

    The numbers live in a ring of two halves on the device, refilled on the host half a ring at
    a time. Drawing them on the host is what makes the CPU and CUDA sample the same slots, and
    what lets a CUDA graph replay sampling: the device side only reads the ring at a counter and
    advances the counter. `prepare(count)` (host) must precede each `take(count)` (device).
    """

    def __init__(self, seed: int, max_batch_size: int, device: torch.device) -> None:
        self.device = device
        self.half = max(4096, max_batch_size)  # numbers per refill
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        self.ring = torch.zeros(2 * self.half, dtype=torch.float64, device=device)
        self._staging = [
            torch.empty(self.half, dtype=torch.float64, pin_memory=device.type == "cuda")
            for _ in range(2)
        ]
        self._copied: list[Any] = [None, None]
        self.counter = torch.zeros((), dtype=torch.int64, device=device)  # numbers taken
        self._taken_host = 0  # the same count, kept by the host without reading the device
        self._filled = 0  # numbers written into the ring so far
        # Built here, not on first use: made inside a compiled update, it would fail the
        # compiled graph's guards at the next call and recompile the whole update.
        self._range = torch.arange(self.half, device=device)

    def check(self, count: int) -> None:
        """Fail if `count` numbers are more than one `take` can read."""
        if count > self.half:
            raise ReplayMemoryError(
                f"batch of {count} is larger than this memory samples at once "
                f"({self.half}); build it with max_batch_size={count}"
            )

    def prepare(self, count: int) -> None:
        """Host side: make sure the next `count` numbers are on the device."""
        self.check(count)
        while self._taken_host + count > self._filled:
            half = (self._filled // self.half) % 2
            staging = self._staging[half]
            if self._copied[half] is not None:
                self._copied[half].synchronize()
            torch.rand(self.half, dtype=torch.float64, generator=self.generator, out=staging)
            target = self.ring[half * self.half : (half + 1) * self.half]
            if self.device.type == "cuda":
                target.copy_(staging, non_blocking=True)
                self._copied[half] = torch.cuda.Event()
                self._copied[half].record(torch.cuda.current_stream(self.device))
            else:
                target.copy_(staging)
            self._filled += self.half
        self._taken_host += count

    def take(self, count: int) -> torch.Tensor:
        """Device side: the next `count` numbers (float64), advancing the counter."""
        u = self.ring[(self.counter + self._range[:count]) % self.ring.shape[0]]
        self.counter += count
        return u

    # ------------------------------------------------------------------ saving and loading

    def state_dict(self) -> dict[str, Any]:
        """The generator, the ring and both counters (the host's: no device read)."""
        return {
            "generator": self.generator.get_state(),
            "uniforms": self.ring.cpu(),
            "draws": self._taken_host,
            "filled": self._filled,
        }

    def check_state(self, state: Mapping[str, Any]) -> str | None:
        """Why `state` cannot be loaded into these uniforms, or None."""
        uniforms = state.get("uniforms")
        shape = tuple(self.ring.shape)
        if not isinstance(uniforms, torch.Tensor) or (
            uniforms.dtype,
            tuple(uniforms.shape),
        ) != (torch.float64, shape):
            return f"'uniforms' is not {torch.float64} {shape}"
        if not isinstance(state.get("draws"), int) or not isinstance(state.get("filled"), int):
            return "sampler counters missing"
        generator = state.get("generator")
        if not isinstance(generator, torch.Tensor) or generator.dtype != torch.uint8:
            return "no sampler generator state"
        return None

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned (checked with `check_state` first)."""
        self.generator.set_state(state["generator"])
        self.ring.copy_(state["uniforms"])
        self._taken_host = int(state["draws"])
        self.counter.fill_(self._taken_host)
        self._filled = int(state["filled"])
