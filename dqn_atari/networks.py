"""The Nature DQN Q-network (Mnih et al., 2015), and how it is run fast."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

QFunction = Callable[[torch.Tensor], torch.Tensor]  # uint8 observations -> float32 Q-values
PRECISIONS = ("fp32", "bf16")
# Nature DQN's convolutions as (output channels, kernel side, stride), pixels, no padding.
CONV_LAYERS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))


def min_frame_size() -> int:
    """The smallest square input, pixels, that leaves every convolution at least one output.

    A valid convolution maps a side of n pixels to (n - kernel) // stride + 1; walking the
    layers backwards from one output pixel gives the smallest input: 36 for the Nature network.
    """
    side = 1
    for _, kernel, stride in reversed(CONV_LAYERS):
        side = (side - 1) * stride + kernel
    return side


class NatureQNetwork(nn.Module):
    """conv 32x8x8/4 -> conv 64x4x4/2 -> conv 64x3x3/1 -> fc 512 -> one Q-value per action.

    Takes uint8 observations (B, frames, size, size) and scales them to [0, 1] inside `forward`,
    so the replay memory and the acting path move bytes, not floats.
    """

    def __init__(self, num_actions: int, frames: int = 4, frame_size: int = 84) -> None:
        super().__init__()
        self.num_actions = num_actions
        self.frames = frames
        self.frame_size = frame_size
        if frame_size < (smallest := min_frame_size()):
            raise ValueError(
                f"frame_size must be >= {smallest} pixels for the Nature network's convolutions, "
                f"got {frame_size}"
            )
        layers: list[nn.Module] = []
        channels = frames
        for out_channels, kernel, stride in CONV_LAYERS:
            layers += [nn.Conv2d(channels, out_channels, kernel, stride), nn.ReLU()]
            channels = out_channels
        self.features = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():  # the flattened size follows from the input size: 3136 at 84x84
            flat = self.features(torch.zeros(1, frames, frame_size, frame_size)).shape[1]
        self.head = nn.Sequential(nn.Linear(flat, 512), nn.ReLU(), nn.Linear(512, num_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        assert obs.shape[1:] == (self.frames, self.frame_size, self.frame_size), obs.shape
        return self.head(self.features(obs.float() / 255.0))


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays off on CUDA, and on CPUs with native bf16 (AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return False
    flags = cpuinfo.read_text()
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.cache  # checked by the command line's precheck and again by the run, in one process
def compile_error(device: torch.device) -> str | None:
    """Why torch.compile cannot run on `device` here, or None when it can.

    Compiles and runs a one-line function. Inductor builds C++ kernels on the CPU and Triton
    kernels on CUDA, both with a system compiler; without one the first update would fail
    mid-run, so this is checked before a run starts (a few seconds, cached across runs).
    """
    try:
        probe = torch.compile(lambda x: x * 2.0 + 1.0)
        result = probe(torch.ones(4, device=device))
        if not bool((result == 3.0).all()):
            return "the compiled probe computed a wrong result"
    except Exception as err:  # any failure of the compiler stack means: cannot compile here
        # Dynamo wraps the backend's error and appends debugging advice; the cause is the
        # wrapped exception, or else the first line ("InvalidCxxCompiler: No working C++ ...").
        inner = getattr(err, "inner_exception", None) or err
        lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
        return f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__
    return None


def autocast_forward(forward: QFunction, device: torch.device, precision: str) -> QFunction:
    """`forward` under bf16 autocast when `precision` is bf16 (Q-values back as float32, so
    TD targets are computed in full precision); `forward` itself for fp32.

    The autocast cache stays off: it keeps casts of the weights between forwards, which a
    captured CUDA graph must not rely on (PyTorch's CUDA-graph notes ask for cache_enabled=False).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if precision == "fp32":
        return forward

    def bf16_forward(obs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False):
            return forward(obs).float()

    return bf16_forward


def q_function(
    net: nn.Module,
    device: torch.device,
    precision: str = "fp32",
    compile: bool = False,
    backend: str | Callable[..., object] = "inductor",
) -> QFunction:
    """`net`'s forward as used for acting: optionally compiled, optionally in bf16.

    The parameters stay `net`'s own (float32; the optimizer and checkpoints see only them).
    """
    forward: QFunction = net
    if compile:
        # On CUDA, "reduce-overhead" also captures CUDA graphs: one launch per forward. The
        # batch is the number of games, fixed for a run (no dynamic shapes, no recompiles).
        mode = "reduce-overhead" if device.type == "cuda" and backend == "inductor" else None
        forward = torch.compile(net, mode=mode, backend=backend, dynamic=False)
    return autocast_forward(forward, device, precision)
