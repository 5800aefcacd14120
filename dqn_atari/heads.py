"""Heads of the DQN family: the torso's features (B, F) -> QOutput.

`QHead` is the Nature head (Mnih et al. 2015), `DuelingHead` the dueling one (Wang et al. 2016);
either outputs one value per action, or C51's logits over a fixed support (Bellemare et al.
2017), or QR-DQN's quantiles (Dabney et al. 2018), as its `ValueDistribution` says. Any head
builds its dense layers with the `linear` factory it is given: `nn.Linear`, or `NoisyLinear`
for noisy nets (Fortunato et al. 2018).

The per-action values of a distributional head are laid out action-major: output unit
a * atoms + k is atom (or quantile) k of action a.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dqn_atari.losses import QOutput, categorical_support

LinearFactory = Callable[[int, int], nn.Module]  # (in_features, out_features) -> layer
DISTRIBUTIONS = ("none", "c51", "qr")


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    """x in the forward pass; the gradient times `scale` in the backward pass.

    x.detach() + (x - x.detach()) * scale: the second term is exactly 0 for finite x, so the
    forward is x itself (`x * scale + x.detach() * (1 - scale)` would round), and autograd sends
    back grad * scale. Plain tensor arithmetic, so torch.func.grad and torch.compile see
    through it (a custom autograd.Function would need functorch's extra staticmethods)."""
    detached = x.detach()
    return detached + (x - detached) * scale


@dataclass(frozen=True)
class ValueDistribution:
    """What a head outputs per action: issue 21's `algo.distribution`."""

    kind: str = "none"  # none: one Q-value; c51: logits over a fixed support; qr: quantiles
    atoms: int = 1  # outputs per action: 1 for none, C51's atoms, QR-DQN's quantiles (N)
    v_min: float = -10.0  # C51's support, return units (Bellemare et al. 2017, section 5)
    v_max: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got '{self.kind}'"
            )
        if self.kind == "none" and self.atoms != 1:
            raise ValueError(f"distribution none has 1 output per action, got atoms={self.atoms}")
        if self.kind == "c51" and self.atoms < 2:
            raise ValueError(f"c51 needs at least 2 atoms, got {self.atoms}")
        if self.kind == "c51" and not self.v_min < self.v_max:
            raise ValueError(f"c51 needs v_min < v_max, got {self.v_min} and {self.v_max}")
        if self.kind == "qr" and self.atoms < 1:
            raise ValueError(f"qr needs at least 1 quantile, got {self.atoms}")


def _support_or_none(distribution: ValueDistribution) -> Tensor | None:
    if distribution.kind != "c51":
        return None
    return categorical_support(distribution.atoms, distribution.v_min, distribution.v_max)


def _readout(values: Tensor, distribution: ValueDistribution, support: Tensor | None) -> QOutput:
    """Per-action values (B, A, atoms) -> QOutput, q_values the expected return of each action:
    C51's sum_i z_i p_i (Bellemare et al. 2017, eq. 1 with Algorithm 1's Q(x', a)), QR-DQN's
    mean of N equally likely quantiles (Dabney et al. 2018, Algorithm 1)."""
    if distribution.kind == "c51":
        assert support is not None
        return QOutput(q_values=(F.softmax(values, dim=-1) * support).sum(dim=-1), logits=values)
    if distribution.kind == "qr":
        return QOutput(q_values=values.mean(dim=-1), quantiles=values)
    return QOutput(q_values=values.squeeze(-1))


class QHead(nn.Sequential):
    """The Nature head: Linear(F, 512) -> ReLU -> Linear(512, A * atoms) (Mnih et al. 2015).

    An nn.Sequential, so inside NatureQNetwork as `head` its parameters keep today's keys
    (`head.0.*`, `head.2.*`) and today's checkpoints load into the plain DQN network. C51's
    support is a buffer outside the state dict (it follows from the distribution)."""

    support: Tensor | None

    def __init__(
        self,
        features: int,
        num_actions: int,
        hidden: int = 512,
        distribution: ValueDistribution | None = None,
        linear: LinearFactory = nn.Linear,
    ) -> None:
        distribution = distribution or ValueDistribution()
        super().__init__(
            linear(features, hidden), nn.ReLU(), linear(hidden, num_actions * distribution.atoms)
        )
        self.in_features = features
        self.num_actions = num_actions
        self.distribution = distribution
        self.register_buffer("support", _support_or_none(distribution), persistent=False)

    def forward(self, features: Tensor) -> QOutput:
        assert features.dim() == 2 and features.shape[1] == self.in_features, features.shape
        values = super().forward(features)
        if self.distribution.kind == "none":
            return QOutput(q_values=values)  # (B, A) as today, no reshape
        values = values.view(features.shape[0], self.num_actions, self.distribution.atoms)
        return _readout(values, self.distribution, self.support)


class DuelingHead(nn.Module):
    """Value and advantage streams, Q = V + (A - mean_a A) (Wang et al. 2016, eq. 9).

    Each stream is Linear(F, 512) -> ReLU -> Linear(512, .) as in the paper's Atari network
    (section 4.2). Distributional, the streams output `atoms` values per action and eq. 9 holds
    per atom: on C51's logits as in Rainbow (Hessel et al. 2018, "The Integrated Agent"),
    on QR's quantiles the same way. The gradient entering the torso from the two streams is
    scaled by 1/sqrt(2) (Wang et al. 2016, section 4.2: "we rescale the combined gradient
    entering the last convolutional layer by 1/sqrt(2)"), so the torso's updates keep the size
    of a single-stream network's."""

    support: Tensor | None
    GRADIENT_SCALE = 1.0 / math.sqrt(2.0)

    def __init__(
        self,
        features: int,
        num_actions: int,
        hidden: int = 512,
        distribution: ValueDistribution | None = None,
        linear: LinearFactory = nn.Linear,
    ) -> None:
        super().__init__()
        distribution = distribution or ValueDistribution()
        atoms = distribution.atoms
        self.value = nn.Sequential(linear(features, hidden), nn.ReLU(), linear(hidden, atoms))
        self.advantage = nn.Sequential(
            linear(features, hidden), nn.ReLU(), linear(hidden, num_actions * atoms)
        )
        self.in_features = features
        self.num_actions = num_actions
        self.distribution = distribution
        self.register_buffer("support", _support_or_none(distribution), persistent=False)

    def forward(self, features: Tensor) -> QOutput:
        assert features.dim() == 2 and features.shape[1] == self.in_features, features.shape
        batch, atoms = features.shape[0], self.distribution.atoms
        x = scale_gradient(features, self.GRADIENT_SCALE)
        value = self.value(x).view(batch, 1, atoms)
        advantage = self.advantage(x).view(batch, self.num_actions, atoms)
        values = value + (advantage - advantage.mean(dim=1, keepdim=True))
        return _readout(values, self.distribution, self.support)


# ---------------------------------------------------------------------- noisy nets


def signed_sqrt(x: Tensor) -> Tensor:
    """f(x) = sign(x) sqrt(|x|), the map of factorised noise (Fortunato et al. 2018, section 3)."""
    return x.sign() * x.abs().sqrt()


class NoisyLinear(nn.Module):
    """y = (mu_w + sigma_w * eps_w) x + mu_b + sigma_b * eps_b, factorised Gaussian noise
    (Fortunato et al. 2018, section 3): eps_w[j, i] = f(eps_out[j]) f(eps_in[i]),
    eps_b = f(eps_out), f = `signed_sqrt`, eps_in and eps_out standard normal.

    Initialised as section 3.2 says for factorised noise: every mu ~ U[-1/sqrt(p), 1/sqrt(p)],
    every sigma = sigma0 / sqrt(p), p = in_features (sigma0 = 0.5).

    The p + q unit normals live in two buffers (`noise_in`, `noise_out`) that `reset_noise`
    redraws in place, so a captured CUDA graph that reads them sees each new draw; f and the
    outer product are taken in `forward`, where a compiled graph fuses them. The buffers are in
    the state dict, so a checkpoint resumes with the noise it stopped with. With `use_noise`
    False the layer uses the mean weights mu (the parameters stay the same).
    """

    noise_in: Tensor
    noise_out: Tensor

    def __init__(self, in_features: int, out_features: int, sigma0: float = 0.5) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"NoisyLinear needs >= 1 feature, got {in_features}->{out_features}")
        self.in_features = in_features
        self.out_features = out_features
        self.sigma0 = sigma0
        self.use_noise = True
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_sigma = nn.Parameter(torch.empty(out_features, in_features))
        self.bias_mu = nn.Parameter(torch.empty(out_features))
        self.bias_sigma = nn.Parameter(torch.empty(out_features))
        self.register_buffer("noise_in", torch.zeros(in_features))
        self.register_buffer("noise_out", torch.zeros(out_features))
        self.reset_parameters()
        self.reset_noise()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight_mu.uniform_(-bound, bound)
            self.bias_mu.uniform_(-bound, bound)
            self.weight_sigma.fill_(self.sigma0 * bound)
            self.bias_sigma.fill_(self.sigma0 * bound)

    def reset_noise(self, generator: torch.Generator | None = None) -> None:
        """Draw eps_in, then eps_out, into the existing buffers (same storage)."""
        with torch.no_grad():
            self.noise_in.normal_(generator=generator)
            self.noise_out.normal_(generator=generator)

    def weight_and_bias(self) -> tuple[Tensor, Tensor]:
        """The weight (out, in) and bias (out,) the next forward uses."""
        if not self.use_noise:
            return self.weight_mu, self.bias_mu
        f_out = signed_sqrt(self.noise_out)
        weight = self.weight_mu + self.weight_sigma * torch.outer(f_out, signed_sqrt(self.noise_in))
        return weight, self.bias_mu + self.bias_sigma * f_out

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.weight_and_bias()
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"sigma0={self.sigma0}, use_noise={self.use_noise}"
        )


def noisy_layers(module: nn.Module) -> Iterable[NoisyLinear]:
    return (m for m in module.modules() if isinstance(m, NoisyLinear))


def reset_noise(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Redraw, in place, the noise of every NoisyLinear in `module`, in `modules()` order."""
    for layer in noisy_layers(module):
        layer.reset_noise(generator)


def set_noise(module: nn.Module, enabled: bool) -> None:
    """Noisy weights (True) or the mean weights mu (False) in every NoisyLinear of `module`.

    A Python attribute: a compiled forward guards on it (one graph per setting), and a CUDA
    graph captured with one setting keeps it."""
    for layer in noisy_layers(module):
        layer.use_noise = enabled
