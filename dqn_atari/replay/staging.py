"""Host-to-device staging: the writes of one vector step cross to the device in one copy."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch


class Staging:
    """A host buffer and its device twin.

    Writers `put` their arrays between `begin()` and `send()`; each `put` returns the index of
    its section in the list `send()` returns, so the storage and the sampler can each stage
    their own sections of one copy. Sections are packed at 8-byte-aligned offsets and read on
    the device as typed views. On CUDA the host side is pinned and the copy asynchronous; before
    the host buffer is refilled, the previous copy from it is waited for (it finished long
    before in practice: every vector step waits for the actions).
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
        self.nbytes = nbytes
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

    @staticmethod
    def section_bytes(count: int, dtype: torch.dtype) -> int:
        """Bytes a section of `count` elements of `dtype` may take, alignment included."""
        return count * torch.empty((), dtype=dtype).element_size() + 7

    def begin(self) -> None:
        if self._copied is not None:
            self._copied.synchronize()
        self._offset = 0
        self._parts = []

    def put(self, array: npt.NDArray[Any], dtype: torch.dtype) -> int:
        """Append `array` (C-contiguous after conversion to `dtype`); returns its section."""
        data: npt.NDArray[Any] = np.ascontiguousarray(array, dtype=self._NUMPY[dtype])
        start = -(-self._offset // 8) * 8
        stop = start + data.nbytes
        if stop > self.nbytes:
            raise RuntimeError(f"staging overflow: {stop} bytes in a {self.nbytes}-byte buffer")
        self.host_np[start:stop] = data.reshape(-1).view(np.uint8)
        self._parts.append((start, stop, dtype, data.shape))
        self._offset = stop
        return len(self._parts) - 1

    def send(self) -> list[torch.Tensor]:
        """The appended arrays as tensors on the device, in the order they were put."""
        if self.dev is not None:
            self.dev[: self._offset].copy_(self.host[: self._offset], non_blocking=True)
            self._copied = torch.cuda.Event()
            # The copy runs on the memory's device's stream, whatever the current device is.
            self._copied.record(torch.cuda.current_stream(self.device))
        parts = []
        for start, stop, dtype, shape in self._parts:
            size = self._typed[dtype].element_size()
            part = self._typed[dtype][start // size : stop // size]
            parts.append(part if len(shape) == 1 else part.view(shape))
        return parts
