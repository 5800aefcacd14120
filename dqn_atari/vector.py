"""N games at once: subprocess workers, one batched forward to act, learning while they play.

`num_envs=1` keeps the exact Nature loop (`loop.train`). With N > 1, `train_vector` steps N
`AtariPhiEnv` games in worker processes (gymnasium's AsyncVectorEnv, so phi is the project's
own), picks all N actions with one forward pass, and runs the learner updates that fall due in
those N agent steps while the workers emulate them (`step_async` ... `step_wait`). Every count
(total_steps, learning_starts, epsilon, target sync, checkpoints, evaluation) is in agent steps
summed over the N games, and the replay ratio stays one update of `batch_size` per
`train_every` agent steps. Each game writes its own replay ring, so stacks never mix games.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode

from dqn_atari.envs import AtariOptions, AtariPhiEnv
from dqn_atari.learner import Learner
from dqn_atari.loop import Bookkeeper, EvalResult, LoopSettings, TrainState
from dqn_atari.metrics import Metrics
from dqn_atari.networks import QFunction
from dqn_atari.replay import Batch, ReplayMemory, ReplayMemoryError
from dqn_atari.schedules import LinearSchedule


def make_vector_env(
    game: str,
    options: AtariOptions,
    seed: int,
    num_envs: int,
    states: list[dict[str, Any]] | None = None,
) -> AsyncVectorEnv:
    """N games in worker processes; game i is seeded `seed + i`, or continues `states[i]`."""
    fns = [
        functools.partial(
            AtariPhiEnv, game, options, seed + i, None, None if states is None else states[i]
        )
        for i in range(num_envs)
    ]
    # forkserver: workers start from a clean process, not a fork of one whose torch and
    # OpenCV thread pools are already running.
    return AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP, context="forkserver")


class ReplaySet:
    """One replay ring per game; a batch draws from the rings in proportion to their sizes."""

    def __init__(
        self,
        num_rings: int,
        capacity: int,
        frame_shape: tuple[int, int],
        stack: int,
        device: torch.device | str,
        seed: int,
    ) -> None:
        per_ring = capacity // num_rings
        self.rings = [
            ReplayMemory(per_ring, frame_shape, stack, device, seed=seed + i)
            for i in range(num_rings)
        ]
        # Host-side split of each batch among the rings: no device sync to decide it.
        self._rng = np.random.default_rng(seed)

    @property
    def nbytes(self) -> int:
        return sum(ring.nbytes for ring in self.rings)

    def __len__(self) -> int:
        return sum(len(ring) for ring in self.rings)

    def sample(self, batch_size: int) -> Batch:
        sizes = np.array([len(ring) for ring in self.rings], dtype=float)
        if sizes.sum() == 0:
            raise ReplayMemoryError("cannot sample from an empty replay memory")
        counts = self._rng.multinomial(batch_size, sizes / sizes.sum())
        parts = [ring.sample(int(k)) for ring, k in zip(self.rings, counts, strict=True) if k]
        return Batch(*(torch.cat(field) for field in zip(*parts, strict=True)))

    def save(self, directory: Path) -> None:
        for i, ring in enumerate(self.rings):
            ring.save(directory / f"ring_{i}")
        (directory / "set.json").write_text(json.dumps({"rng": self._rng.bit_generator.state}))

    def load(self, directory: Path) -> None:
        for i, ring in enumerate(self.rings):
            ring.load(directory / f"ring_{i}")
        self._rng.bit_generator.state = json.loads((directory / "set.json").read_text())["rng"]


def select_actions(
    network: QFunction,
    obs: np.ndarray,
    epsilon: float,
    num_actions: int,
    rng: np.random.Generator,
    device: torch.device,
) -> np.ndarray:
    """Epsilon-greedy for N games: the greedy ones share one forward pass."""
    n = obs.shape[0]
    explore = np.asarray(rng.random(n) < epsilon)
    actions = np.asarray(rng.integers(num_actions, size=n))
    if not explore.all():
        with torch.no_grad():
            greedy = network(torch.from_numpy(obs).to(device)).argmax(dim=1).cpu().numpy()
        actions = np.where(explore, actions, greedy)
    return actions


def train_vector(
    envs: AsyncVectorEnv,
    learner: Learner,
    replay: ReplaySet,
    epsilon: LinearSchedule,
    settings: LoopSettings,
    metrics: Metrics,
    state: TrainState,
    rng: np.random.Generator,
    device: torch.device,
    save_checkpoint: Callable[[TrainState, bool], None],
    evaluate_at: Callable[[int], EvalResult] | None = None,
    stop_requested: Callable[[], str | None] = lambda: None,
    start_obs: np.ndarray | None = None,
) -> TrainState:
    """`loop.train` for N games; periodic work happens when its interval is crossed."""
    n = envs.num_envs
    num_actions = int(envs.single_action_space.n)  # type: ignore[attr-defined]
    book = Bookkeeper(
        learner, replay.sample, settings, metrics, state, device,
        save_checkpoint, evaluate_at, stop_requested,
    )  # fmt: skip
    if start_obs is None:
        obs, _ = envs.reset()
        for i in range(n):
            replay.rings[i].start_episode(obs[i, -1])
    else:
        obs = start_obs

    while state.step < settings.total_steps:
        previous = state.step
        eps = epsilon(previous)
        actions = select_actions(learner.q_online, obs, eps, num_actions, rng, device)
        envs.step_async(actions)
        # The updates that fall due in these n agent steps run while the games play them.
        for step in range(previous + 1, previous + n + 1):
            book.learn(step)
        next_obs, rewards, terminated, truncated, infos = envs.step_wait()
        state.step = step = previous + n
        final = infos.get("final_info", {})
        for i in range(n):
            ended = bool(terminated[i] or truncated[i])
            info = final if ended else infos
            last_obs = infos["final_obs"][i] if ended else next_obs[i]
            ring = replay.rings[i]
            td_terminal = bool(info["td_terminal"][i])
            ring.add(int(actions[i]), float(rewards[i]), td_terminal, ended, last_obs[-1])
            if ended:
                state.episodes += 1
                episode = final["episode"]
                metrics.episode(step, float(episode["r"][i]), int(episode["l"][i]))
                ring.start_episode(next_obs[i, -1])
        obs = next_obs
        if book.after(previous, step, eps):
            break
    return state
