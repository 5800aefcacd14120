"""The training loop for N >= 1 games (act -> store -> learn every k -> sync -> log ->
checkpoint), and evaluation.

Everything here is handed in already built (see `run.py`): the loop only moves data in one
direction, games -> replay -> learner -> metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch

from dqn_atari.config import TrainConfig
from dqn_atari.envs import AtariPhiEnv
from dqn_atari.learner import Learner
from dqn_atari.metrics import Metrics
from dqn_atari.networks import QFunction
from dqn_atari.schedules import LinearSchedule
from dqn_atari.vector import Games


class Replay(Protocol):
    """What the loop needs of a replay memory (see replay.py)."""

    def start(self, frames: npt.NDArray[np.uint8]) -> None: ...

    def add_step(
        self,
        actions: npt.NDArray[np.int64],
        rewards: npt.NDArray[np.float64],
        td_terminal: npt.NDArray[np.bool_],
        ended: npt.NDArray[np.bool_],
        final_frames: npt.NDArray[np.uint8],
        next_frames: npt.NDArray[np.uint8],
    ) -> None: ...


@dataclass
class TrainState:
    """Counters that, with the networks, optimizer and RNGs, define where a run stands. The
    exploration rate has no state of its own: it is a function of the agent step."""

    step: int = 0  # agent steps taken
    episodes: int = 0  # games finished
    updates: int = 0  # gradient updates
    learn_from_step: int = 0  # first agent step that may update (learning_starts, or a refill)
    # The agent step of an evaluation a stop request interrupted: run first when resumed, so the
    # resumed run logs what the uninterrupted one would have. None = none pending.
    eval_due: int | None = None
    stopped_by: str | None = field(default=None, compare=False)  # signal name, if interrupted

    _SAVED = ("step", "episodes", "updates", "learn_from_step", "eval_due")

    def state_dict(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in self._SAVED}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TrainState:
        values = {name: state.get(name) for name in cls._SAVED}
        for name, value in values.items():
            if not isinstance(value, int) and not (name == "eval_due" and value is None):
                raise ValueError(f"counter '{name}' is {value!r}, not a whole number")
        return cls(**values)  # type: ignore[arg-type]


def exploration(config: TrainConfig) -> LinearSchedule:
    """Epsilon by agent step: start -> end over epsilon_decay_steps from learning_starts."""
    algo = config.algo
    return LinearSchedule(
        algo.epsilon_start,
        algo.epsilon_end,
        algo.epsilon_decay_steps,
        begin_step=config.learning_starts,
    )


def select_actions(
    network: QFunction,
    obs: npt.NDArray[np.uint8],
    epsilon: float,
    num_actions: int,
    rng: np.random.Generator,
    device: torch.device,
) -> npt.NDArray[np.int64]:
    """Epsilon-greedy for N games: each explores with probability epsilon, the others take
    argmax Q(obs, .) from one forward pass over all N (one copy of the observations to the
    device, one host sync for the actions). With N = 1 this draws exactly what the single-game
    rule "explore, else argmax" draws, so the Nature loop is unchanged."""
    n = obs.shape[0]
    explore: npt.NDArray[np.bool_] = np.asarray(rng.random(n) < epsilon)
    actions = np.zeros(n, np.int64)
    if explore.any():
        actions[explore] = rng.integers(num_actions, size=int(explore.sum()))
    if not explore.all():
        with torch.no_grad():
            q = network(torch.from_numpy(obs).to(device))
        # The one host sync of a vector step: the emulators need the actions.
        greedy = q.argmax(dim=1).cpu().numpy()
        actions[~explore] = greedy[~explore]
    return actions


@dataclass(frozen=True)
class EvalResult:
    returns: list[float]  # raw game returns, all lives
    lengths: list[int]  # agent steps per game

    @property
    def return_mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def return_std(self) -> float:
        return float(np.std(self.returns))

    def summary(self) -> dict[str, Any]:
        return {
            "episodes": len(self.returns),
            "return_mean": self.return_mean,
            "return_std": self.return_std,
            "returns": self.returns,
            "lengths": self.lengths,
            "steps": int(sum(self.lengths)),
        }


def evaluate(
    network: QFunction,
    env: AtariPhiEnv,
    episodes: int,
    epsilon: float,
    rng: np.random.Generator,
    device: torch.device,
    on_frame: Callable[[int, np.ndarray], None] | None = None,
    stop_requested: Callable[[], object] = lambda: None,
) -> EvalResult | None:
    """Play `episodes` full games; `on_frame(episode, rgb)` sees every raw screen (for video).

    Returns None, at once, when `stop_requested()` turns true: a stop never waits for the rest
    of an evaluation, which can take minutes. The Nature network has no dropout or batch norm,
    so train/eval modes do not matter here.
    """
    returns: list[float] = []
    lengths: list[int] = []
    num_actions = env.num_actions
    for episode in range(episodes):
        obs, _ = env.reset()
        if on_frame is not None:
            on_frame(episode, env.render())  # type: ignore[arg-type]
        while True:
            if stop_requested():
                return None
            action = select_actions(network, obs[None], epsilon, num_actions, rng, device)[0]
            obs, _reward, terminated, truncated, info = env.step(action)
            if on_frame is not None:
                on_frame(episode, env.render())  # type: ignore[arg-type]
            if terminated or truncated:
                returns.append(float(info["episode"]["r"]))
                lengths.append(int(info["episode"]["l"]))
                break
    return EvalResult(returns=returns, lengths=lengths)


class DivergenceError(RuntimeError):
    """The loss or Q-values stopped being finite (at agent step `step`)."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


def check_finite(step: int, loss: torch.Tensor, q_mean: torch.Tensor) -> tuple[float, float]:
    """The logged means on the host (the one sync per log interval); non-finite stops the run."""
    loss_value, q_value = loss.item(), q_mean.item()
    if not (math.isfinite(loss_value) and math.isfinite(q_value)):
        raise DivergenceError(
            f"training diverged by agent step {step:,}: loss {loss_value}, mean Q {q_value}",
            step,
        )
    return loss_value, q_value


def crossed(previous: int, step: int, interval: int) -> bool:
    """Whether a multiple of `interval` lies in (previous, step]; never for interval 0 (off)."""
    return interval > 0 and step // interval > previous // interval


class Bookkeeper:
    """The work between agent steps: updates at the replay ratio, target syncs, logs,
    evaluation, checkpoints and stopping. Losses stay on the device between logs, so updates
    never wait for the host."""

    def __init__(
        self,
        learner: Learner,
        config: TrainConfig,
        metrics: Metrics,
        state: TrainState,
        save_checkpoint: Callable[[TrainState, bool], None],
        evaluate_at: Callable[[int], EvalResult | None] | None,
        stop_requested: Callable[[], str | None],
    ) -> None:
        self.learner = learner
        self.config = config
        self.metrics = metrics
        self.state = state
        self.save_checkpoint = save_checkpoint
        self.evaluate_at = evaluate_at
        self.stop_requested = stop_requested
        self.saved_at = -1

    def train_learner(self, previous: int, step: int) -> None:
        """The learner's share of agent steps (previous, step]: one update every train_every
        agent steps after learn_from_step, and the target syncs, in agent-step order."""
        algo, state = self.config.algo, self.state
        for t in range(previous + 1, step + 1):
            if t > state.learn_from_step and t % algo.train_every == 0:
                self.learner.update()
                state.updates += 1
            if t % algo.target_update_interval == 0:
                self.learner.sync_target()

    def evaluate(self, step: int) -> None:
        """The evaluation of agent step `step`, logged; left due when a stop interrupts it."""
        if self.evaluate_at is None:
            return
        self.metrics.message(
            f"evaluating at agent step {step:,} ({self.config.eval_episodes} games)"
        )
        result = self.evaluate_at(step)
        if result is None:
            self.state.eval_due = step
            return
        self.state.eval_due = None
        self.metrics.evaluation(step, result.return_mean, result.return_std)

    def end_of_step(self, previous: int, step: int, epsilon: float) -> bool:
        """Logs, evaluation, checkpoints and stop requests due in (previous, step]; returns True
        when the run must stop now (a checkpoint is written first)."""
        config, state, metrics = self.config, self.state, self.metrics
        if crossed(previous, step, config.log_interval):
            metrics.speed(step, epsilon)
            means = self.learner.take_means()
            if means is not None:
                loss, q_mean = check_finite(step, *means)
                metrics.learner(step, loss, q_mean)
        if crossed(previous, step, config.eval_interval):
            self.evaluate(step)
        periodic = crossed(previous, step, config.checkpoint_interval)
        finished = step >= config.total_steps
        stop = self.stop_requested()
        if periodic or finished or stop is not None:
            self.save_checkpoint(state, periodic)
            self.saved_at = step
        metrics.progress(step, epsilon, force=finished)
        if stop is None or finished:
            return False
        state.stopped_by = stop
        return True


def train(
    games: Games,
    learner: Learner,
    replay: Replay,
    config: TrainConfig,
    metrics: Metrics,
    state: TrainState,
    rng: np.random.Generator,
    device: torch.device,
    save_checkpoint: Callable[[TrainState, bool], None],
    evaluate_at: Callable[[int], EvalResult | None] | None = None,
    stop_requested: Callable[[], str | None] = lambda: None,
    start_obs: npt.NDArray[np.uint8] | None = None,
) -> TrainState:
    """Run from `state.step` to `config.total_steps`; returns the final state.

    Each vector step: act in all N games -> store their transitions -> learn. Every count is in
    agent steps summed over the games, so the replay ratio (one update of `batch_size` per
    `train_every` agent steps), epsilon, target syncs, logs, evaluations and checkpoints do not
    depend on N. With games in worker processes (`games.overlaps`), the updates that fall due
    run while the workers emulate, from the memory as it was before this step's transitions;
    in-process (N = 1) they run after the store: the exact Nature order.

    `save_checkpoint(state, periodic)` is called every `checkpoint_interval` agent steps, at the
    end, and when a stop is requested. `evaluate_at(step)` runs every `eval_interval` agent
    steps; it must not draw from `rng`, so that evaluating never changes the course of training,
    and returns None when a stop interrupted it. `stop_requested()` returning a signal name ends
    the run early, with a checkpoint. `start_obs` continues games whose state and replay memory
    were restored; without it the loop starts new games.
    """
    n = games.num_envs
    epsilon = exploration(config)
    book = Bookkeeper(learner, config, metrics, state, save_checkpoint, evaluate_at, stop_requested)
    if state.eval_due is not None:  # interrupted by the stop that ended the last process
        book.evaluate(state.eval_due)
    if start_obs is None:
        obs = games.reset()
        replay.start(obs[:, -1])
    else:
        obs = start_obs

    while state.step < config.total_steps:
        previous = state.step
        eps = epsilon(previous)
        actions = select_actions(learner.q_online, obs, eps, games.num_actions, rng, device)
        games.step_async(actions)
        if games.overlaps:
            book.train_learner(previous, previous + n)
        out = games.step_wait()
        state.step = previous + n
        replay.add_step(
            actions, out.rewards, out.td_terminal, out.ended, out.final_frames, out.next_obs[:, -1]
        )
        for i in np.flatnonzero(out.ended):
            state.episodes += 1
            metrics.episode(state.step, float(out.episode_returns[i]), int(out.episode_lengths[i]))
        obs = out.next_obs
        if not games.overlaps:
            book.train_learner(previous, state.step)
        if book.end_of_step(previous, state.step, eps):
            break
    return state
