"""The DQN update: a pure TD loss, and the learner that turns it into one step of one graph.

`Learner.update()` samples a batch from the replay memory, rebuilds its stacks, computes the TD
loss with both networks, its gradients, the optimizer step and the running sums for logging,
as one function with static shapes and no host sync (`_sample_and_train`). Eager by default;
with `compile` it is compiled whole (`fullgraph=True`); on CUDA with `cuda_graph` it is captured
once and replayed as a single CUDA graph per update.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dqn_atari.config import AlgoConfig
from dqn_atari.networks import QFunction, autocast_forward, q_function
from dqn_atari.optim import Optimizer, OptimizerStateError
from dqn_atari.perf import CudaGraphCall
from dqn_atari.replay import Batch


class TDLoss(NamedTuple):
    loss: Tensor  # scalar, differentiable w.r.t. the online network
    q_taken: Tensor  # (B,) Q(s_tm1, a_tm1), detached, for logging


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


def clip_grad_norm_(grads: list[Tensor], max_norm: float) -> None:
    """Scale `grads` in place so their global L2 norm is at most `max_norm` (no host sync)."""
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (norm + 1e-6), max=1.0))


class Sampler(Protocol):
    """What the learner needs of a replay memory (see replay.ReplayMemory)."""

    def prepare_sample(self, batch_size: int) -> None: ...

    def sample_slots(self, batch_size: int) -> Tensor: ...

    def gather(self, slot: Tensor) -> Batch: ...


class Learner:
    """Owns the online and target networks and the optimizer; `update()` is one gradient step.

    `q_online` is the online network's forward as used to act (fp32, compiled with `compile`);
    `online` / `target` hold the parameters; `precision` applies to the update. The running sums
    of the loss and of Q(s, a) stay on the device until `take_means()` reads them.
    """

    def __init__(
        self,
        online: nn.Module,
        optimizer: Optimizer,
        algo: AlgoConfig,
        replay: Sampler | None = None,
        batch_size: int = 32,
        device: torch.device | None = None,
        precision: str = "fp32",
        compile: bool = False,
        cuda_graph: bool = False,
    ) -> None:
        device = device or next(online.parameters()).device
        self.online = online
        self.target = copy.deepcopy(online).requires_grad_(False)
        self.optimizer = optimizer
        self.algo = algo
        self.replay = replay
        self.batch_size = batch_size
        self.device = device
        # Acting runs in fp32 whatever the update's precision: at batch 1 to N, bf16's casts
        # cost more than they save.
        self.q_online = q_function(self.online, device, "fp32", compile)
        self._names = [name for name, _ in online.named_parameters()]
        self.params: list[Tensor] = [p for _, p in online.named_parameters()]
        self.target_params: list[Tensor] = list(self.target.parameters())
        self._precision = precision
        self.loss_sum = torch.zeros((), device=device)
        self.q_sum = torch.zeros((), device=device)
        self.last_loss = torch.zeros((), device=device)
        self.updates_since_log = 0
        self._compiled = compile
        self._train_on: Callable[[Batch], None] = self._train_on_batch
        step: Callable[[], None] = self._sample_and_train
        if compile:
            self._train_on = torch.compile(self._train_on_batch, fullgraph=True)
            step = torch.compile(self._sample_and_train, fullgraph=True)
        if cuda_graph and device.type == "cuda":
            step = CudaGraphCall(step)
        self._step = step

    # ------------------------------------------------------------------ the update

    def _loss_and_grads(self, batch: Batch) -> tuple[Tensor, Tensor, list[Tensor]]:
        a, precision, device = self.algo, self._precision, self.device
        target = autocast_forward(self.target, device, precision)
        if not self._compiled:
            online = autocast_forward(self.online, device, precision)
            out = td_loss(online, target, batch, a.gamma, a.double, a.huber_delta)
            # Tensor.backward rather than autograd.grad: on a loaded 2-core CPU, autograd.grad
            # gave last-bit differences between a run and its exact resume of 2 games (4 of 19
            # resumes), backward none (0 of 10). In a CUDA graph capture, backward fills .grad
            # from the graph's own memory, which every replay reuses.
            for param in self.params:
                param.grad = None
            out.loss.backward()
            grads = [param.grad for param in self.params]
            assert all(g is not None for g in grads)
            return out.loss.detach(), out.q_taken, grads  # type: ignore[return-value]

        # Compiled: the same loss differentiated with torch.func, which dynamo traces whole
        # (Tensor.backward and autograd.grad would break the graph on most torch versions).
        def loss_of(params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            def online(obs: Tensor) -> Tensor:
                return torch.func.functional_call(self.online, params, (obs,))

            out = td_loss(
                autocast_forward(online, device, precision),
                target,
                batch,
                a.gamma,
                a.double,
                a.huber_delta,
            )
            return out.loss, out.q_taken

        params = {name: p.detach() for name, p in zip(self._names, self.params, strict=True)}
        grads, (loss, q_taken) = torch.func.grad_and_value(loss_of, has_aux=True)(params)
        return loss.detach(), q_taken, [grads[name] for name in self._names]

    def _train_on_batch(self, batch: Batch) -> None:
        loss, q_taken, grads = self._loss_and_grads(batch)
        if self.algo.max_grad_norm is not None:
            clip_grad_norm_(grads, self.algo.max_grad_norm)
        with torch.no_grad():
            self.optimizer.step_(self.params, grads)
            self.last_loss.copy_(loss)
            self.loss_sum.add_(loss)
            self.q_sum.add_(q_taken.mean())

    def _sample_and_train(self) -> None:
        assert self.replay is not None
        self._train_on_batch(self.replay.gather(self.replay.sample_slots(self.batch_size)))

    def update(self) -> None:
        """One update on a batch sampled from the replay memory."""
        if self.replay is None:
            raise RuntimeError("this learner has no replay memory to sample from; use update_on")
        self.replay.prepare_sample(self.batch_size)  # host side: checks, uniforms on the device
        self._step()
        self.updates_since_log += 1

    def update_on(self, batch: Batch) -> Tensor:
        """One update on `batch` (not graph-replayed); returns its loss (a device scalar)."""
        self._train_on(batch)
        self.updates_since_log += 1
        return self.last_loss.clone()

    def take_means(self) -> tuple[Tensor, Tensor] | None:
        """Mean loss and mean Q(s, a) over the updates since the last call (device scalars),
        or None when there were none; the sums start again from zero."""
        n = self.updates_since_log
        if n == 0:
            return None
        means = (self.loss_sum / n, self.q_sum / n)
        self.loss_sum.zero_()
        self.q_sum.zero_()
        self.updates_since_log = 0
        return means

    def sync_target(self) -> None:
        # In place: a captured CUDA graph reads these same tensors.
        with torch.no_grad():
            torch._foreach_copy_(self.target_params, self.params)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copies into the existing tensors (a captured CUDA graph keeps reading them)."""
        try:
            self.online.load_state_dict(state["online"])
            self.target.load_state_dict(state["target"])
            self.optimizer.load_state_dict(state["optimizer"])
        except OptimizerStateError as err:
            raise ValueError(str(err)) from None
