"""Optimizers as in-place updates of fixed tensor lists: DeepMind's centered RMSProp, and Adam.

RMSProp is DeepMind's (the Nature DQN's), with eps inside the square root; the tests check it
against the formula computed by hand. Adam is torch.optim's arithmetic (the tests compare them).
What differs from torch.optim is the shape: the state is a fixed set of tensors created once,
updated in place by a handful of foreach ops, with no Python-number state that changes between
steps (Adam's step count is a tensor). That is what compiling the whole update as one graph, and
replaying it as one CUDA graph, need: between two updates only the contents of the same tensors
change.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from dqn_atari.config import OPTIMIZERS, AlgoConfig


class OptimizerStateError(ValueError):
    """A saved optimizer state that does not fit this optimizer."""


class Optimizer(Protocol):
    name: str

    def step_(self, params: list[Tensor], grads: list[Tensor]) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _load_into(name: str, current: list[Tensor], saved: Any) -> None:
    """Copy `saved` into `current` in place (a captured CUDA graph keeps the same tensors)."""
    if not isinstance(saved, (list, tuple)) or len(saved) != len(current):
        raise OptimizerStateError(f"optimizer state '{name}' does not match the network")
    for mine, theirs in zip(current, saved, strict=True):
        if not isinstance(theirs, Tensor) or theirs.shape != mine.shape:
            raise OptimizerStateError(f"optimizer state '{name}' does not match the network")
        mine.copy_(theirs)


# Square roots are taken of values raised to at least this, the smallest normal float32.
# torch's CPU square root of 0 or of a subnormal number is about 7x slower than of a normal number,
# and most of the Nature CNN's second-moment estimates are exactly 0 (on Pong, 2/3 of the first
# dense layer's: features that are 0 after ReLU on the static background). On a real run's state,
# one CPU thread: 7.6 ms per update for Adam's plain roots, 1.1 ms with the clamp. It changes
# nothing the update sees: Adam's root of 1.2e-38 is 3.4e-18 after bias correction, which vanishes
# when eps is added to it for any eps above 1e-10 (the config refuses eps <= 0). RMSProp adds its
# eps inside the root, so what it takes the root of is already at least eps; there the floor only
# keeps a variance that rounds below -eps from making the weights NaN.
_ROOT_FLOOR = torch.finfo(torch.float32).tiny


class CenteredRMSProp:
    """DeepMind's centered RMSProp (Graves, 2013, eq. 38-41), the Nature DQN's optimizer:

        n = alpha * n + (1 - alpha) * g^2          g_avg = alpha * g_avg + (1 - alpha) * g
        p -= lr * g / sqrt(n - g_avg^2 + eps)

    with eps *inside* the root, as in DeepMind's Lua code, DQN Zoo (optax's centered rmsprop)
    and Dopamine (TensorFlow's RMSProp). torch.optim's RMSprop(centered=True) adds eps outside
    the root instead: a different optimizer, whose steps are up to about 3x smaller where the
    centered variance is small. `eps` is for gradients of a batch-mean loss (see
    `AlgoConfig.rmsprop_eps`)."""

    name = "rmsprop"

    def __init__(self, params: list[Tensor], lr: float, alpha: float, eps: float) -> None:
        self.lr, self.alpha, self.eps = lr, alpha, eps
        self.square_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
        self.grad_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]

    def step_(self, params: list[Tensor], grads: list[Tensor]) -> None:
        alpha = self.alpha
        torch._foreach_mul_(self.square_avg, alpha)
        torch._foreach_addcmul_(self.square_avg, grads, grads, value=1 - alpha)
        torch._foreach_lerp_(self.grad_avg, grads, 1 - alpha)
        denom = torch._foreach_addcmul(self.square_avg, self.grad_avg, self.grad_avg, value=-1)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_clamp_min_(denom, _ROOT_FLOOR)
        torch._foreach_sqrt_(denom)
        torch._foreach_addcdiv_(params, grads, denom, value=-self.lr)

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "square_avg": self.square_avg, "grad_avg": self.grad_avg}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_name(state, self.name)
        _load_into("square_avg", self.square_avg, state.get("square_avg"))
        _load_into("grad_avg", self.grad_avg, state.get("grad_avg"))


class Adam:
    """Adam (Kingma and Ba, 2015) with betas (0.9, 0.999), the step count kept as a tensor."""

    name = "adam"

    def __init__(
        self, params: list[Tensor], lr: float, eps: float, betas: tuple[float, float] = (0.9, 0.999)
    ) -> None:
        self.lr, self.eps, self.betas = lr, eps, betas
        device = params[0].device
        self.step = torch.zeros((), dtype=torch.float32, device=device)
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]

    def step_(self, params: list[Tensor], grads: list[Tensor]) -> None:
        beta1, beta2 = self.betas
        self.step.add_(1)
        torch._foreach_lerp_(self.exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(self.exp_avg_sq, beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, value=1 - beta2)
        # The bias corrections follow the step tensor (torch.optim's "capturable" form):
        # param -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
        bias1 = 1 - torch.pow(beta1, self.step)
        bias2_sqrt = torch.sqrt(1 - torch.pow(beta2, self.step))
        denom = torch._foreach_clamp_min(self.exp_avg_sq, _ROOT_FLOOR)
        torch._foreach_sqrt_(denom)
        torch._foreach_div_(denom, bias2_sqrt)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_mul_(denom, -bias1 / self.lr)
        torch._foreach_addcdiv_(params, self.exp_avg, denom)

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "step": self.step,
            "exp_avg": self.exp_avg,
            "exp_avg_sq": self.exp_avg_sq,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_name(state, self.name)
        step = state.get("step")
        if not isinstance(step, Tensor) or step.numel() != 1:
            raise OptimizerStateError("optimizer state 'step' is missing")
        self.step.copy_(step.reshape(()))
        _load_into("exp_avg", self.exp_avg, state.get("exp_avg"))
        _load_into("exp_avg_sq", self.exp_avg_sq, state.get("exp_avg_sq"))


def _check_name(state: dict[str, Any], name: str) -> None:
    if not isinstance(state, dict) or state.get("name") != name:
        saved = state.get("name") if isinstance(state, dict) else None
        raise OptimizerStateError(
            f"the checkpoint's optimizer is {saved}, this run's is {name} (algo.optimizer differs)"
        )


def make_optimizer(algo: AlgoConfig, params: list[Tensor]) -> Optimizer:
    """`algo.optimizer` over `params`: DeepMind's centered RMSProp (Nature: lr 2.5e-4, decay
    0.95, min squared gradient 0.01 on summed gradients = 0.01 / 32^2 on batch means), or Adam."""
    if algo.optimizer == "rmsprop":
        return CenteredRMSProp(params, lr=algo.lr, alpha=algo.rmsprop_alpha, eps=algo.rmsprop_eps)
    if algo.optimizer == "adam":
        return Adam(params, lr=algo.lr, eps=algo.adam_eps)
    raise ValueError(
        f"algo.optimizer must be one of {', '.join(OPTIMIZERS)}, got '{algo.optimizer}'"
    )
