"""The Q-networks: the Nature torso (Mnih et al., 2015) with the DQN family's heads, built in
one place from a recorded spec, and how they are run fast."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dqn_atari.heads import (
    DuelingHead,
    LinearFactory,
    NoisyLinear,
    QHead,
    ValueDistribution,
    reset_noise,
)
from dqn_atari.losses import QOutput

QFunction = Callable[[torch.Tensor], torch.Tensor]  # uint8 observations -> float32 Q-values
NetForward = Callable[[torch.Tensor], QOutput]  # uint8 observations -> a network's whole output
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


@dataclass(frozen=True)
class NetworkSpec:
    """Which Q-network a run trains, as a checkpoint records it: `dqn-eval` rebuilds the
    network from the checkpoint alone (`build_network(NetworkSpec.from_dict(...))`)."""

    num_actions: int
    frames: int = 4  # stacked phi frames (agent history length)
    frame_size: int = 84  # pixels, side of a phi frame
    dueling: bool = False  # value and advantage streams (Wang et al., 2016)
    distribution: str = "none"  # none | c51 (Bellemare et al., 2017) | qr (Dabney et al., 2018)
    atoms: int = 1  # outputs per action: C51's atoms, QR-DQN's quantiles; 1 for none
    v_min: float = -10.0  # C51's support, return units
    v_max: float = 10.0
    noisy: bool = False  # factorised NoisyLinear dense layers (Fortunato et al., 2018)
    sigma0: float = 0.5  # initial noise scale of the noisy layers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NetworkSpec:
        """A recorded spec, checked field by field: ValueError names what is wrong."""
        if not isinstance(values, dict):
            raise ValueError(f"the network spec is {type(values).__name__}, not a mapping")
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"the network spec has unknown fields {unknown}")
        kinds: dict[str, type | tuple[type, ...]] = {
            "int": int, "float": (int, float), "bool": bool, "str": str,
        }  # fmt: skip
        for name, value in values.items():
            kind = kinds[str(known[name])]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"the network spec's {name} is {value!r}")
        return cls(**values)

    @property
    def value_distribution(self) -> ValueDistribution:
        return ValueDistribution(self.distribution, self.atoms, self.v_min, self.v_max)


class NatureQNetwork(nn.Module):
    """The Nature torso (conv 32x8x8/4 -> conv 64x4x4/2 -> conv 64x3x3/1, ReLUs, flatten) and a
    head: the Nature one (fc 512 -> one value per action), dueling streams, C51's logits or
    QR-DQN's quantiles, with noisy dense layers or not (`heads.py`). Returns a QOutput; acting
    reads its q_values.

    Takes uint8 observations (B, frames, size, size) and scales them to [0, 1] inside `forward`,
    so the replay memory and the acting path move bytes, not floats. The plain network's
    parameters keep 0.1's names (`features.*`, `head.0.*`, `head.2.*`).
    """

    def __init__(
        self,
        num_actions: int,
        frames: int = 4,
        frame_size: int = 84,
        *,
        spec: NetworkSpec | None = None,
    ) -> None:
        super().__init__()
        spec = spec or NetworkSpec(num_actions, frames, frame_size)
        self.spec = spec
        self.num_actions = spec.num_actions
        self.frames = spec.frames
        self.frame_size = spec.frame_size
        if spec.frame_size < (smallest := min_frame_size()):
            raise ValueError(
                f"frame_size must be >= {smallest} pixels for the Nature network's convolutions, "
                f"got {spec.frame_size}"
            )
        layers: list[nn.Module] = []
        channels = spec.frames
        for out_channels, kernel, stride in CONV_LAYERS:
            layers += [nn.Conv2d(channels, out_channels, kernel, stride), nn.ReLU()]
            channels = out_channels
        self.features = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():  # the flattened size follows from the input size: 3136 at 84x84
            flat = self.features(torch.zeros(1, spec.frames, spec.frame_size, spec.frame_size))
        linear: LinearFactory = nn.Linear
        if spec.noisy:
            linear = functools.partial(NoisyLinear, sigma0=spec.sigma0)
        head = DuelingHead if spec.dueling else QHead
        self.head = head(
            flat.shape[1], spec.num_actions, distribution=spec.value_distribution, linear=linear
        )

    def forward(self, obs: torch.Tensor) -> QOutput:
        assert obs.shape[1:] == (self.frames, self.frame_size, self.frame_size), obs.shape
        out: QOutput = self.head(self.features(obs.float() / 255.0))
        return out


def build_network(spec: NetworkSpec) -> NatureQNetwork:
    """The one place a Q-network is made, from its spec."""
    return NatureQNetwork(spec.num_actions, spec=spec)


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


def autocast_forward(forward: NetForward, device: torch.device, precision: str) -> NetForward:
    """`forward` under bf16 autocast when `precision` is bf16 (outputs back as float32, so TD
    targets are computed in full precision); `forward` itself for fp32.

    The autocast cache stays off: it keeps casts of the weights between forwards, which a
    captured CUDA graph must not rely on (PyTorch's CUDA-graph notes ask for cache_enabled=False).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if precision == "fp32":
        return forward

    def bf16_forward(obs: torch.Tensor) -> QOutput:
        with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False):
            out = forward(obs)
        return QOutput(
            out.q_values.float(),
            None if out.logits is None else out.logits.float(),
            None if out.quantiles is None else out.quantiles.float(),
        )

    return bf16_forward


def q_function(
    net: nn.Module,
    device: torch.device,
    precision: str = "fp32",
    compile: bool = False,
    backend: str | Callable[..., object] = "inductor",
    fresh_noise: bool = False,
) -> QFunction:
    """`net`'s Q-values as used for acting: optionally compiled, optionally in bf16; with
    `fresh_noise`, its noisy layers draw new noise before every forward (every acting step,
    as Fortunato et al. act).

    The parameters stay `net`'s own (float32; the optimizer and checkpoints see only them).
    """
    forward = autocast_forward(net, device, precision)

    def q_values(obs: torch.Tensor) -> torch.Tensor:
        if fresh_noise:
            reset_noise(net)
        return forward(obs).q_values

    if compile:
        # On CUDA, "reduce-overhead" also captures CUDA graphs: one launch per forward. The
        # batch is the number of games, fixed for a run (no dynamic shapes, no recompiles).
        mode = "reduce-overhead" if device.type == "cuda" and backend == "inductor" else None
        return torch.compile(q_values, mode=mode, backend=backend, dynamic=False)
    return q_values
