"""The DQN loop's schedule against step numbers worked out by hand: one update every
`train_every` agent steps after `learn_from_step`, the target synced every
`target_update_interval`, epsilon by agent step, with N games stepping together."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from dqn_atari.config import AlgoConfig, TrainConfig
from dqn_atari.learner import Learner
from dqn_atari.loop import Schedule, TrainState, learn, train
from dqn_atari.losses import QOutput
from dqn_atari.optim import make_optimizer
from dqn_atari.replay import ReplayMemory
from dqn_atari.vector import InProcessGames, VectorStep


class Corridor(gym.Env):
    """A game of 7 agent steps: the observation is one 1x5 frame with the step count in it."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (1, 1, 5), np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.num_actions = 2
        self.steps = 0

    def _obs(self) -> np.ndarray:
        return np.full((1, 1, 5), self.steps, np.uint8)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        self.steps = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.steps += 1
        ended = self.steps == 7
        info: dict[str, Any] = {"td_terminal": ended}
        if ended:
            info["episode"] = {"r": 1.0, "l": 7}
        return self._obs(), float(action), ended, False, info


class CorridorQ(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, obs: torch.Tensor) -> QOutput:
        return QOutput(self.body(obs.float() / 255.0))


class Recorder:
    """Hooks that record, after every vector step, the steps it covered, its epsilon, the
    updates made so far and whether the target network changed during it."""

    def __init__(self, learner: Learner) -> None:
        self.learner = learner
        self.target = [p.clone() for p in learner.target_params]
        self.steps: list[tuple[int, int, float, int, bool]] = []

    def start(self, state: TrainState) -> None:
        pass

    def after_step(self, previous: int, state: TrainState, epsilon: float, out: VectorStep) -> bool:
        pairs = zip(self.target, self.learner.target_params, strict=True)
        synced = any(not torch.equal(a, b) for a, b in pairs)
        self.target = [p.clone() for p in self.learner.target_params]
        self.steps.append((previous, state.step, epsilon, state.updates, synced))
        return False


def _run(num_games: int, total_steps: int) -> tuple[Recorder, TrainState]:
    config = TrainConfig(
        total_steps=total_steps,
        learning_starts=12,
        algo=AlgoConfig(
            train_every=4,
            target_update_interval=15,
            epsilon_start=1.0,
            epsilon_end=0.2,
            epsilon_decay_steps=20,
            optimizer="adam",
            lr=1e-2,
        ),
    )
    torch.manual_seed(0)
    net = CorridorQ()
    replay = ReplayMemory(
        capacity=60 * num_games, frame_shape=(1, 5), stack=1, num_games=num_games, max_batch_size=4
    )
    learner = Learner(
        net, make_optimizer(config.algo, list(net.parameters())), config.algo, replay, batch_size=4
    )
    recorder = Recorder(learner)
    state = train(
        InProcessGames([Corridor() for _ in range(num_games)]),
        learner,
        replay,
        Schedule.of(config),
        TrainState(learn_from_step=config.learning_starts),
        rng=np.random.default_rng(0),
        device=torch.device("cpu"),
        hooks=recorder,
    )
    return recorder, state


@pytest.mark.parametrize("num_games", [1, 3])
def test_the_loop_learns_syncs_and_explores_on_the_hand_computed_steps(num_games: int) -> None:
    recorder, state = _run(num_games, total_steps=45)
    # Each game plays 45 / N agent steps of 7-step games: 6 games for N = 1, 3 x 2 for N = 3.
    assert state.step == 45 and state.episodes == 6
    # Updates at agent steps 16, 20, 24, ..., 44 (multiples of 4 above learning_starts = 12):
    # 8 of them, however many games play at once.
    assert state.updates == 8
    # Vector steps cover (0, N], (N, 2N], ...: the updates made by the end of each, counted by
    # hand from the multiples of 4 in 13..step.
    for previous, step, _, updates, _ in recorder.steps:
        assert updates == len([t for t in range(13, step + 1) if t % 4 == 0]), (previous, step)
    # The target syncs at agent steps 15, 30 and 45: a vector step changes the target exactly
    # when it covers one of them after an update has changed the weights (at 15 none has yet:
    # the online network is still the initial one, so the sync copies the same values).
    synced_in = [(p, s) for p, s, _, _, synced in recorder.steps if synced]
    expected = [(p, s) for p, s, *_ in recorder.steps if any(p < t <= s for t in (30, 45))]
    assert synced_in == expected
    # Epsilon is the schedule at the vector step's first agent step: 1.0 up to learning_starts,
    # then down by 0.8 / 20 per agent step to 0.2 at step 32, then held.
    for previous, _, epsilon, _, _ in recorder.steps:
        fraction = min(max(previous - 12, 0) / 20, 1.0)
        assert epsilon == pytest.approx(1.0 - 0.8 * fraction), previous


class Calls:
    """A learner that records which of its two calls the schedule makes, in order."""

    q_online = None

    def __init__(self) -> None:
        self.calls: list[str] = []

    def update(self) -> None:
        self.calls.append("update")

    def sync_target(self) -> None:
        self.calls.append("sync")


def test_learn_keeps_agent_step_order_within_a_vector_step() -> None:
    schedule = Schedule.of(
        TrainConfig(total_steps=100, algo=AlgoConfig(train_every=4, target_update_interval=10))
    )
    state = TrainState(learn_from_step=8)
    chunks = {}
    for previous in range(0, 24, 6):  # 6 games: (0, 6], (6, 12], (12, 18], (18, 24]
        calls = Calls()
        learn(calls, schedule, state, previous, previous + 6)  # type: ignore[arg-type]
        chunks[previous] = calls.calls
    assert chunks == {
        0: [],  # t = 4: before learn_from_step
        6: ["sync", "update"],  # t = 10 sync, t = 12 update
        12: ["update"],  # t = 16
        18: ["update", "sync", "update"],  # t = 20 update then sync, t = 24 update
    }
    assert state.updates == 4
