"""The DQN algorithm (Mnih et al., 2015, Algorithm 1) for N games at once, in one function.

`train` reads top to bottom: act epsilon-greedily in the N games -> store their transitions ->
learn when due -> sync the target when due. When each happens is `Schedule`'s, by agent step
(summed over the games). Everything else a run does between agent steps (logging, progress,
evaluation, checkpoints, stopping) is behind `StepHooks`, which the loop calls once a step.

Everything here is handed in already built (see `run.py`): the loop only moves data in one
direction, games -> replay -> learner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch

from dqn_atari.config import TrainConfig
from dqn_atari.networks import QFunction
from dqn_atari.schedules import LinearSchedule
from dqn_atari.vector import Games, VectorStep


class Replay(Protocol):
    """What the loop needs of a replay memory (see replay.ReplayMemory)."""

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


class Learner(Protocol):
    """What the loop needs of a learner (see learner.Learner)."""

    q_online: QFunction

    def update(self) -> None: ...

    def sync_target(self) -> None: ...


class StepHooks(Protocol):
    """The run's work besides the algorithm (see hooks.RunHooks)."""

    def start(self, state: TrainState) -> None: ...

    def after_step(
        self, previous: int, state: TrainState, epsilon: float, out: VectorStep
    ) -> bool: ...


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


@dataclass(frozen=True)
class Schedule:
    """When DQN explores how much, learns and syncs its target, by agent step (summed over
    the games, so none of it depends on how many games play at once)."""

    total_steps: int  # agent steps to train
    train_every: int  # agent steps between updates (Nature: 4)
    target_update_interval: int  # agent steps between target syncs (Nature: 10,000)
    epsilon: LinearSchedule  # by agent step: 1.0 -> 0.1 over 1M from learning_starts (Nature)

    @classmethod
    def of(cls, config: TrainConfig) -> Schedule:
        algo = config.algo
        epsilon = LinearSchedule(
            algo.epsilon_start,
            algo.epsilon_end,
            algo.epsilon_decay_steps,
            begin_step=config.learning_starts,
        )
        if algo.noisy:  # noisy nets explore with their noise (Fortunato et al., 2018): no epsilon
            epsilon = LinearSchedule(0.0, 0.0, 0)
        return cls(
            total_steps=config.total_steps,
            train_every=algo.train_every,
            target_update_interval=algo.target_update_interval,
            epsilon=epsilon,
        )

    def learns_at(self, step: int, learn_from_step: int) -> bool:
        return step > learn_from_step and step % self.train_every == 0

    def syncs_at(self, step: int) -> bool:
        return step % self.target_update_interval == 0


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


def learn(
    learner: Learner, schedule: Schedule, state: TrainState, previous: int, step: int
) -> None:
    """The learner's share of agent steps (previous, step], in agent-step order: an update of
    one sampled batch every `train_every` agent steps after `learn_from_step`, and the target
    network synced every `target_update_interval`."""
    for t in range(previous + 1, step + 1):
        if schedule.learns_at(t, state.learn_from_step):
            learner.update()
            state.updates += 1
        if schedule.syncs_at(t):
            learner.sync_target()


def train(
    games: Games,
    learner: Learner,
    replay: Replay,
    schedule: Schedule,
    state: TrainState,
    rng: np.random.Generator,
    device: torch.device,
    hooks: StepHooks,
    start_obs: npt.NDArray[np.uint8] | None = None,
) -> TrainState:
    """DQN from `state.step` to `schedule.total_steps` agent steps; returns the final state.

    `start_obs` continues games whose state and replay memory were restored; without it the
    loop starts new games. `rng` draws the exploration; `hooks.after_step` returns True when
    the run must stop (it has written the checkpoint).
    """
    n = games.num_envs
    hooks.start(state)
    if start_obs is None:
        start_obs = games.reset()
        replay.start(start_obs[:, -1])
    obs = start_obs
    # With games in worker processes, the updates due run while the workers emulate, from the
    # memory as it was before this step's transitions (learn, then store); in-process there is
    # nothing to overlap, and the order is the paper's (store, then learn).
    learn_while_emulating = games.overlaps
    while state.step < schedule.total_steps:
        previous = state.step
        epsilon = schedule.epsilon(previous)
        actions = select_actions(learner.q_online, obs, epsilon, games.num_actions, rng, device)
        games.step_async(actions)
        if learn_while_emulating:
            learn(learner, schedule, state, previous, previous + n)
        out = games.step_wait()
        state.step = previous + n
        state.episodes += int(out.ended.sum())
        replay.add_step(
            actions, out.rewards, out.td_terminal, out.ended, out.final_frames, out.next_obs[:, -1]
        )
        if not learn_while_emulating:
            learn(learner, schedule, state, previous, state.step)
        obs = out.next_obs
        if hooks.after_step(previous, state, epsilon, out):
            break
    return state
