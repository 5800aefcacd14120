"""The DQN update: a pure TD loss, and the learner that turns it into one step of one graph.

`Learner.update()` samples a batch from the replay memory, rebuilds its stacks, computes the TD
loss with both networks (weighted, with prioritized replay, and then the batch's priorities set
from its TD errors), its gradients, the optimizer step and the running sums for logging, as one
function with static shapes and no host sync (`_sample_and_train`). Eager by default;
with `compile` it is compiled whole (`fullgraph=True`); on CUDA with `cuda_graph` it is captured
once and replayed as a single CUDA graph per update.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from dqn_atari.config import AlgoConfig, ConfigError
from dqn_atari.heads import noisy_layers, reset_noise, set_noise
from dqn_atari.losses import (
    LossOutput,
    QOutput,
    categorical_losses,
    categorical_support,
    q_learning_losses,
    quantile_losses,
)
from dqn_atari.networks import NetForward, QFunction, autocast_forward, q_function
from dqn_atari.optim import Optimizer, OptimizerStateError
from dqn_atari.perf import CudaGraphCall
from dqn_atari.replay import Batch, Draw

LossFn = Callable[[QOutput, Tensor, Tensor, Tensor, QOutput, QOutput | None], LossOutput]


def loss_function(algo: AlgoConfig, device: torch.device) -> LossFn:
    """The algorithm's per-transition loss (`losses.py`): DQN's Huber TD error, C51's
    cross-entropy to the projected target distribution, or QR-DQN's quantile Huber loss.
    `algo.huber_delta` is the Huber threshold of both DQN (the Nature error clip) and QR-DQN
    (its kappa)."""
    if algo.distribution == "c51":
        support = categorical_support(algo.atoms, algo.v_min, algo.v_max).to(device)
        return functools.partial(categorical_losses, support=support)
    if algo.distribution == "qr":
        return functools.partial(quantile_losses, kappa=algo.huber_delta)
    return functools.partial(q_learning_losses, huber_delta=algo.huber_delta)


def batch_losses(
    online: NetForward, target: NetForward, batch: Batch, loss: LossFn, double: bool
) -> LossOutput:
    """The per-transition losses of one batch, a pure function of the two networks' forwards:
    the online network at s_tm1 (differentiated), the target network at s_t, and with `double`
    the online network at s_t to pick the bootstrap action (van Hasselt et al., 2016)."""
    q_tm1 = online(batch.obs_tm1)
    assert q_tm1.q_values.shape[0] == batch.action_tm1.shape[0], q_tm1.q_values.shape
    with torch.no_grad():
        q_t_target = target(batch.obs_t)
        q_t_online = online(batch.obs_t) if double else None
    return loss(q_tm1, batch.action_tm1, batch.reward_t, batch.discount_t, q_t_target, q_t_online)


def mean_loss(per_transition: Tensor, weights: Tensor | None) -> Tensor:
    """A batch's loss: the mean of its per-transition losses, each scaled by its importance-
    sampling weight with prioritized replay (Schaul et al., 2016, Algorithm 1, line 13: the
    update sums w_j * delta_j * grad Q). Without weights, the plain mean."""
    if weights is None:
        return per_transition.mean()
    return (weights * per_transition).mean()


def clip_grad_norm_(grads: list[Tensor], max_norm: float) -> None:
    """Scale `grads` in place so their global L2 norm is at most `max_norm` (no host sync)."""
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (norm + 1e-6), max=1.0))


class Sampler(Protocol):
    """What the learner needs of a replay memory (see replay.ReplayMemory)."""

    def prepare_sample(self, batch_size: int) -> None: ...

    def sampling_state(self) -> list[Tensor]: ...

    gamma: float
    n_step: int
    prioritized: bool

    def draw(self, batch_size: int) -> Draw: ...

    def gather(self, slot: Tensor) -> Batch: ...

    def update_priorities(self, slots: Tensor, priority: Tensor) -> None: ...


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
        compile_backend: str | Callable[..., Any] = "inductor",
    ) -> None:
        device = device or next(online.parameters()).device
        # The replay folds the discount into its batches (discount_t = gamma^k): its gamma and
        # n-step are the algorithm's; so is whether it samples by priority.
        for name in ("gamma", "n_step", "prioritized"):
            if replay is not None and getattr(replay, name) != getattr(algo, name):
                raise ValueError(
                    f"the replay memory's {name} is {getattr(replay, name)}, the algorithm's "
                    f"{getattr(algo, name)}"
                )
        self.online = online
        self.target = copy.deepcopy(online).requires_grad_(False)
        self.optimizer = optimizer
        self.algo = algo
        self.replay = replay
        self.batch_size = batch_size
        self.device = device
        self._names = [name for name, _ in online.named_parameters()]
        self.noisy = any(True for _ in noisy_layers(online))
        self.params: list[Tensor] = [p for _, p in online.named_parameters()]
        self.target_params: list[Tensor] = list(self.target.parameters())
        self._precision = precision
        self.loss = loss_function(algo, device)
        self.loss_sum = torch.zeros((), device=device)
        self.q_sum = torch.zeros((), device=device)
        self.updates_since_log = 0
        self._backend = compile_backend
        self.set_speed(compile, cuda_graph)

    def set_speed(self, compile: bool, cuda_graph: bool) -> None:
        """Build the update and the act forward eager or compiled, replayed as a CUDA graph or
        not. Only how they run changes: the parameters, the optimizer state and the running
        sums stay the same tensors."""
        self.compiled = compile
        self.graphed = cuda_graph and self.device.type == "cuda"
        # Acting runs in fp32 whatever the update's precision: at batch 1 to N, bf16's casts
        # cost more than they save.
        self.q_online = q_function(
            self.online, self.device, "fp32", compile, self._backend, fresh_noise=self.noisy
        )
        update: Callable[[], None] = self._sample_and_train
        if compile:
            update = torch.compile(self._sample_and_train, fullgraph=True, backend=self._backend)
        self._update = update
        self._step: Callable[[], None] = (
            CudaGraphCall(update, self.device) if self.graphed else update
        )

    def evaluation_policy(self) -> QFunction:
        """The online network's Q-values as evaluation plays them: eager at batch 1 (the
        compiled act forward keeps the one shape it was compiled for, the number of games, and
        never recompiles), and for noisy nets with the mean weights, on a copy taken now. The
        noise is the agent's exploration, as epsilon is DQN's; the mean network is the policy
        it learned, and evaluation then explores only as its protocol says (eval_epsilon)."""
        network = self.online
        if self.noisy:
            network = copy.deepcopy(self.online)
            set_noise(network, False)
        return q_function(network, self.device, "fp32")

    def _written_tensors(self) -> list[Tensor]:
        """Every tensor an update (or an act forward) writes in place: weights, the networks'
        buffers (noisy layers' noise), optimizer state, running sums and the sampler's state
        (its counter; with prioritized replay, the priorities too)."""
        tensors = [*self.params, *self.online.buffers(), *self.target.buffers()]
        tensors += [self.loss_sum, self.q_sum]
        for value in self.optimizer.state_dict().values():
            tensors += [t for t in (value if isinstance(value, list) else [value])
                        if isinstance(t, Tensor)]  # fmt: skip
        if self.replay is not None:
            tensors += self.replay.sampling_state()
        return tensors

    def dry_run(self, example_obs: Tensor, capture: bool) -> None:
        """One act forward on `example_obs` and the update as the run will make them (with
        `capture`, through the CUDA graph's warm-up and capture), then every tensor they wrote
        put back: compiling and capturing happen now, before acting, and change nothing.

        The update samples whatever the memory holds (an empty memory's slot 0 is a valid
        index into its buffers); the host-side sampling (`prepare_sample`) is not called, and
        torch's generators, which noisy layers draw from, are put back too."""
        written = self._written_tensors()
        saved = [t.detach().clone() for t in written]
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        try:
            with torch.no_grad():
                self.q_online(example_obs)
            if capture and isinstance(self._step, CudaGraphCall):
                while self._step.graph is None:
                    self._step()
            else:
                self._update()
        finally:
            with torch.no_grad():
                torch._foreach_copy_(written, saved)
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.synchronize(self.device)
                torch.cuda.set_rng_state(cuda_rng, self.device)

    # ------------------------------------------------------------------ the update

    def _loss_and_grads(
        self, batch: Batch, weights: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        """The batch's mean loss (`mean_loss`), its Q(s, a), its priorities for the replay
        (detached), and the gradients of the mean loss."""
        precision, device, double = self._precision, self.device, self.algo.double
        target = autocast_forward(self.target, device, precision)
        if not self.compiled:
            online = autocast_forward(self.online, device, precision)
            out = batch_losses(online, target, batch, self.loss, double)
            loss = mean_loss(out.per_transition, weights)
            # Tensor.backward rather than autograd.grad: on a loaded 2-core CPU, autograd.grad
            # gave last-bit differences between a run and its exact resume of 2 games (4 of 19
            # resumes), backward none (0 of 10). In a CUDA graph capture, backward fills .grad
            # from the graph's own memory, which every replay reuses.
            for param in self.params:
                param.grad = None
            loss.backward()
            grads = [param.grad for param in self.params]
            assert all(g is not None for g in grads)
            return loss.detach(), out.q_taken, out.priority, grads  # type: ignore[return-value]

        # Compiled: the same loss differentiated with torch.func, which dynamo traces whole
        # (Tensor.backward and autograd.grad would break the graph on most torch versions).
        def loss_of(params: dict[str, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
            def online(obs: Tensor) -> QOutput:
                out: QOutput = torch.func.functional_call(self.online, params, (obs,))
                return out

            out = batch_losses(
                autocast_forward(online, device, precision), target, batch, self.loss, double
            )
            return mean_loss(out.per_transition, weights), (out.q_taken, out.priority)

        params = {name: p.detach() for name, p in zip(self._names, self.params, strict=True)}
        grads, (loss, (q_taken, priority)) = torch.func.grad_and_value(loss_of, has_aux=True)(
            params
        )
        return loss.detach(), q_taken, priority, [grads[name] for name in self._names]

    def _sample_and_train(self) -> None:
        """The whole update, one function with static shapes and no host sync: sample a batch
        on the device, rebuild its stacks, the loss and its gradients (with prioritized replay,
        the batch's new priorities), the optimizer step and the running sums."""
        assert self.replay is not None
        if self.noisy:  # fresh noise for every update, online and target (Fortunato et al.)
            reset_noise(self.online)
            reset_noise(self.target)
        drawn = self.replay.draw(self.batch_size)
        batch = self.replay.gather(drawn.slots)
        loss, q_taken, priority, grads = self._loss_and_grads(batch, drawn.weights)
        if drawn.weights is not None:
            # Schaul et al., 2016, Algorithm 1, line 12: the drawn transitions' priorities from
            # the TD errors just computed, in the same update.
            self.replay.update_priorities(drawn.slots, priority)
        if self.algo.max_grad_norm is not None:
            clip_grad_norm_(grads, self.algo.max_grad_norm)
        with torch.no_grad():
            self.optimizer.step_(self.params, grads)
            self.loss_sum.add_(loss)
            self.q_sum.add_(q_taken.mean())

    def update(self) -> None:
        """One update on a batch sampled from the replay memory."""
        if self.replay is None:
            raise RuntimeError("this learner has no replay memory to sample from")
        self.replay.prepare_sample(self.batch_size)  # host side: checks, uniforms on the device
        self._step()
        self.updates_since_log += 1

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


class SpeedSettingError(ConfigError):
    """compile=true or cuda_graph=true asked for, and the update cannot run that way here."""


def _reason(err: BaseException) -> str:
    """The first line of what went wrong, with the wrapped error of a dynamo failure."""
    inner = getattr(err, "inner_exception", None) or err
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    return f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__


def prepare_update(
    learner: Learner, example_obs: Tensor, compile_auto: bool, cuda_graph_auto: bool
) -> list[str]:
    """Compile the real update and the act forward (and on CUDA capture the update) once, at
    start-up, before any acting (`Learner.dry_run`, which changes no weight and no random
    stream). The probe at config time compiles a one-line function; this compiles what the run
    will run (torch.func over both networks, the foreach optimizer, the sampler's cumsum and
    searchsorted), which can still fail on a user's torch, driver or compiler.

    A setting that was `auto` falls back (eager, then no graph) and the returned warnings say
    so, naming the error; one asked for explicitly raises SpeedSettingError instead."""
    warnings: list[str] = []
    device = learner.device
    if learner.compiled:
        try:
            learner.dry_run(example_obs, capture=False)
        except Exception as err:  # any failure of the compiler stack: fall back or refuse
            if not compile_auto:
                raise SpeedSettingError(
                    f"compile=true, but the compiled update fails on {device}: {_reason(err)}; "
                    "use compile=false or compile=auto"
                ) from None
            warnings.append(
                f"compile=auto: the compiled update fails on {device} ({_reason(err)}); "
                "the update runs eagerly"
            )
            learner.set_speed(compile=False, cuda_graph=learner.graphed)
    if learner.graphed:
        try:
            learner.dry_run(example_obs, capture=True)
        except Exception as err:  # a capture that fails: fall back or refuse
            if not cuda_graph_auto:
                raise SpeedSettingError(
                    f"cuda_graph=true, but the update cannot be captured as a CUDA graph on "
                    f"{device}: {_reason(err)}; use cuda_graph=false or cuda_graph=auto"
                ) from None
            warnings.append(
                f"cuda_graph=auto: the update cannot be captured as a CUDA graph on {device} "
                f"({_reason(err)}); it runs without one"
            )
            learner.set_speed(compile=learner.compiled, cuda_graph=False)
    return warnings
