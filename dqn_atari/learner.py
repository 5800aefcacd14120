"""The DQN update: a pure TD loss, and the learner that owns the optimizer and target network."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dqn_atari.networks import QFunction, q_function
from dqn_atari.replay import Batch


class TDLoss(NamedTuple):
    loss: torch.Tensor  # scalar, differentiable w.r.t. the online network
    q_taken: torch.Tensor  # (B,) Q(s_tm1, a_tm1), detached, for logging


def td_loss(
    online: QFunction,
    target: QFunction,
    batch: Batch,
    gamma: float,
    double: bool = False,
    huber_delta: float = 1.0,
) -> TDLoss:
    """Mean Huber loss between Q(s_tm1, a_tm1) and r_t + gamma * discount_t * max_a Q'(s_t, a).

    With `double`, the online network picks the bootstrap action and the target network values
    it (van Hasselt et al., 2016). Huber with delta 1 is the Nature paper's error clipping to
    [-1, 1] expressed as a loss.
    """
    batch_size = batch.action_tm1.shape[0]
    q_tm1 = online(batch.obs_tm1)
    assert q_tm1.shape[0] == batch_size, q_tm1.shape
    q_taken = q_tm1.gather(1, batch.action_tm1[:, None]).squeeze(1)
    with torch.no_grad():
        q_t_target = target(batch.obs_t)
        if double:
            best = online(batch.obs_t).argmax(dim=1, keepdim=True)
            bootstrap = q_t_target.gather(1, best).squeeze(1)
        else:
            bootstrap = q_t_target.max(dim=1).values
        td_target = batch.reward_t + gamma * batch.discount_t * bootstrap
    loss = F.huber_loss(q_taken, td_target, delta=huber_delta)
    return TDLoss(loss=loss, q_taken=q_taken.detach())


@dataclass(frozen=True)
class LearnerSettings:
    gamma: float = 0.99
    double: bool = False  # Double DQN bootstrap
    huber_delta: float = 1.0
    max_grad_norm: float | None = None  # clip the global gradient norm; None = off (Nature)


def make_optimizer(
    name: str,
    params: Any,
    lr: float,
    rmsprop_alpha: float = 0.95,
    rmsprop_eps: float = 0.01,
    adam_eps: float = 1.5e-4,
) -> torch.optim.Optimizer:
    """Nature's centered RMSProp (lr 2.5e-4, momentum 0.95, min squared gradient 0.01), or Adam."""
    if name == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=lr, alpha=rmsprop_alpha, eps=rmsprop_eps, centered=True
        )
    if name == "adam":
        # The fused kernel (CPU and CUDA) is one pass over all parameters: 0.7 ms a step on
        # the Nature network on 2 CPU cores against 6 ms for the default implementation.
        return torch.optim.Adam(params, lr=lr, eps=adam_eps, fused=True)
    raise ValueError(f"optimizer must be 'rmsprop' or 'adam', got '{name}'")


def _not_the_profiler_warning(record: logging.LogRecord) -> bool:
    """optimizer.step carries a profiler annotation that dynamo drops when compiling it, with a
    warning on the console of every run; it changes nothing here."""
    return "Profiler record function" not in record.getMessage()


class StepMetrics(NamedTuple):
    """Device tensors of one update; read them on the host only when logging."""

    loss: torch.Tensor
    q_mean: torch.Tensor


class Learner:
    """Owns the online and target networks and the optimizer; `update` is one gradient step.

    `q_online` is the online network's forward as used to act (fp32, compiled with `compile`,
    see `networks.q_function`); `online` / `target` hold the parameters; `precision` applies
    to the update. With `compile`, the update is compiled as two graphs: the TD loss with both
    forwards (its backward follows from it), and the optimizer step, which fuses the
    per-parameter arithmetic of RMSProp into one pass.
    """

    def __init__(
        self,
        online: nn.Module,
        optimizer: torch.optim.Optimizer,
        settings: LearnerSettings,
        device: torch.device | None = None,
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        device = device or next(online.parameters()).device
        self.online = online
        self.target = copy.deepcopy(online).requires_grad_(False)
        # Acting runs in fp32 whatever the update's precision: at batch 1 to N, bf16's casts
        # cost more than they save (0.92 against 0.51 ms a forward on 2 EPYC cores).
        self.q_online = q_function(self.online, device, "fp32", compile)
        self.optimizer = optimizer
        self.settings = settings
        # The loss is compiled whole rather than from compiled forwards: one graph holds the
        # uint8 scaling, both networks, the gather, the max and the Huber loss.
        learn_online, learn_target = (
            q_function(net, device, precision) for net in (self.online, self.target)
        )
        s = settings

        def loss(batch: Batch) -> TDLoss:
            return td_loss(learn_online, learn_target, batch, s.gamma, s.double, s.huber_delta)

        self._loss: Callable[[Batch], TDLoss] = loss
        self._step: Callable[[], object] = optimizer.step
        if compile:
            # On CUDA, "reduce-overhead" also captures CUDA graphs: one launch per forward and
            # backward. The optimizer step gets inductor's default mode, which fuses it.
            mode = "reduce-overhead" if device.type == "cuda" else None
            self._loss = torch.compile(loss, mode=mode)
            self._step = torch.compile(optimizer.step)
            logging.getLogger("torch._dynamo.variables.ctx_manager").addFilter(
                _not_the_profiler_warning
            )

    def update(self, batch: Batch) -> StepMetrics:
        out = self._loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if self.settings.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.online.parameters(), self.settings.max_grad_norm)
        self._step()
        return StepMetrics(loss=out.loss.detach(), q_mean=out.q_taken.mean())

    def sync_target(self) -> None:
        self.target.load_state_dict(self.online.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
