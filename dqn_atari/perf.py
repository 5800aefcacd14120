"""Speed settings that are not part of the algorithm: CUDA graph replay, host memory reuse.

Each changes how fast a run goes, never what it computes; README's Performance section gives
the measurement behind each. The config settings that only change speed are listed once, as
`settings.SPEED_ONLY` (device, compile, cuda_graph): dqn-report groups runs that differ only in
them as one experiment, so a mechanism behind one of them may change the last bits of
floating point, never the algorithm.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch


class CudaGraphCall:
    """Runs `fn` (no arguments, no result) as one CUDA graph: one launch instead of one per op.

    `fn` must read and write only tensors that outlive this object, in place, with static
    shapes, and must not wait for the host (no `.item()`, no data-dependent shapes). The first
    `warmup` calls run it for real on a side stream, as CUDA's capture rules ask (cuBLAS and
    cuDNN pick their kernels; a compiled `fn` compiles); the next call records it and replays
    the recording, and every later call replays it. So no call is lost or repeated: each one
    does the work once.
    """

    def __init__(self, fn: Callable[[], None], device: torch.device, warmup: int = 3) -> None:
        self.fn = fn
        # Streams, events and the capture belong to one device: made under a guard for it, so
        # a run on cuda:1 records cuda:1's kernels whatever the current device is (with the
        # current device 0, the capture stream would be device 0's and record nothing of them).
        self.device = device
        self.warmup = warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self._side_stream: torch.cuda.Stream | None = None

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        with torch.cuda.device(self.device):
            if self.calls < self.warmup:
                if self._side_stream is None:
                    self._side_stream = torch.cuda.Stream(self.device)
                side = self._side_stream
                current = torch.cuda.current_stream(self.device)
                side.wait_stream(current)
                with torch.cuda.stream(side):
                    self.fn()
                current.wait_stream(side)
                self.calls += 1
                return
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.fn()  # recorded, not run
            self.graph = graph
            graph.replay()
            self.calls += 1


def keep_freed_host_memory() -> bool:
    """Ask glibc to keep freed heap blocks for reuse instead of handing them back to the OS.

    Every update allocates and frees the same activation and gradient buffers (fc1's gradient
    alone is 6.4 MB). By default glibc returns such blocks to the OS when they are freed, so the
    next update page-faults them in again (measured on 2 CPU cores: README, Performance). The
    transient working set of an update is tens of MB, so holding it costs nothing noticeable.
    Only host memory goes through malloc (CUDA tensors use torch's caching allocator). Returns
    False where the C library has no mallopt (not glibc); nothing changes there.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    # Blocks up to 32 MB (glibc's largest allowed threshold) come from the heap, and up to
    # 256 MB of free heap top is kept: the replay ring (GBs) is still mapped on its own.
    mmap_ok = mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    trim_ok = mallopt(m_trim_threshold, 256 * 1024 * 1024)
    return bool(mmap_ok and trim_ok)
