"""N games behind one interface: the training loop steps them together, whatever N is.

`num_envs=1` plays the one game in the training process itself (`InProcessGames`), so the loop
keeps the exact Nature order act -> store -> learn. With N > 1, `WorkerGames` steps N
`AtariPhiEnv` games in worker processes (gymnasium's AsyncVectorEnv, so phi is the project's
own); `step_async` returns at once, and the loop runs the learner updates that fall due while
the workers emulate. Either way a vector step hands back one `VectorStep` of arrays over the N
games, with same-step autoreset: a game that ended has already started its next episode.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
from gymnasium.vector import AsyncVectorEnv, AutoresetMode

from dqn_atari.envs import AtariOptions, AtariPhiEnv

Frames = npt.NDArray[np.uint8]


class VectorStep(NamedTuple):
    """One agent step of each of N games, as arrays over the games."""

    next_obs: Frames  # (N, stack, H, W); where a game ended, the next game's first observation
    rewards: npt.NDArray[np.float64]  # (N,) as the learner sees them (clipped when training)
    td_terminal: npt.NDArray[np.bool_]  # (N,) the TD target must not bootstrap past this step
    ended: npt.NDArray[np.bool_]  # (N,) terminated or truncated: the game was reset
    final_frames: Frames  # (N, H, W) newest frame of the observation the action led to
    episode_returns: npt.NDArray[np.float64]  # (N,) raw return of each game that ended, else 0
    episode_lengths: npt.NDArray[np.int64]  # (N,) agent steps of each game that ended, else 0


class Games(Protocol):
    """N games stepped together (see InProcessGames, WorkerGames)."""

    num_envs: int
    num_actions: int
    game: str  # ALE ROM id
    display_name: str
    action_meanings: list[str]
    # True when the games play in other processes between step_async and step_wait, so the
    # caller's work in between overlaps with emulation.
    overlaps: bool

    def reset(self) -> Frames: ...

    def observations(self) -> Frames: ...

    def step_async(self, actions: npt.NDArray[np.int64]) -> None: ...

    def step_wait(self) -> VectorStep: ...

    def state_dicts(self) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class InProcessGames:
    """Games played one after another in this process; each is a gymnasium-style env whose info
    carries `td_terminal`, and `episode` (`r`, `l`) when it ends (AtariPhiEnv's contract)."""

    overlaps = False

    def __init__(self, envs: list[Any]) -> None:
        self.envs = envs
        self.num_envs = len(envs)
        first = envs[0]
        self.num_actions = int(first.num_actions)
        self.game = str(getattr(first, "game", type(first).__name__))
        self.display_name = str(getattr(first, "display_name", self.game))
        self.action_meanings = list(getattr(first, "action_meanings", []))
        self._obs: Frames | None = None
        self._actions: npt.NDArray[np.int64] | None = None

    def reset(self) -> Frames:
        self._obs = np.stack([env.reset()[0] for env in self.envs])
        return self._obs

    def observations(self) -> Frames:
        """The current observations (after `reset`, a step, or a restored state)."""
        if self._obs is None:
            self._obs = np.stack([env.last_observation for env in self.envs])
        return self._obs

    def step_async(self, actions: npt.NDArray[np.int64]) -> None:
        self._actions = actions

    def step_wait(self) -> VectorStep:
        assert self._actions is not None, "step_async first"
        n = self.num_envs
        next_obs, final_frames = [], []
        rewards = np.zeros(n, np.float64)
        td_terminal = np.zeros(n, np.bool_)
        ended = np.zeros(n, np.bool_)
        returns = np.zeros(n, np.float64)
        lengths = np.zeros(n, np.int64)
        for i, env in enumerate(self.envs):
            obs, reward, terminated, truncated, info = env.step(int(self._actions[i]))
            rewards[i] = float(reward)
            td_terminal[i] = bool(info["td_terminal"])
            final_frames.append(obs[-1])
            if terminated or truncated:
                ended[i] = True
                returns[i] = float(info["episode"]["r"])
                lengths[i] = int(info["episode"]["l"])
                obs, _ = env.reset()
            next_obs.append(obs)
        self._actions = None
        self._obs = np.stack(next_obs)
        return VectorStep(
            self._obs, rewards, td_terminal, ended, np.stack(final_frames), returns, lengths
        )

    def state_dicts(self) -> list[dict[str, Any]]:
        return [env.state_dict() for env in self.envs]

    def close(self) -> None:
        for env in self.envs:
            env.close()


class WorkerGames:
    """N AtariPhiEnv games in worker processes, stepped with one batched call."""

    overlaps = True

    def __init__(
        self,
        game: str,
        options: AtariOptions,
        seed: int,
        num_envs: int,
        states: list[dict[str, Any]] | None = None,
    ) -> None:
        fns = [
            functools.partial(
                AtariPhiEnv, game, options, seed + i, None, None if states is None else states[i]
            )
            for i in range(num_envs)
        ]
        # forkserver: workers start from a clean process, not a fork of one whose torch and
        # OpenCV thread pools are already running.
        self.envs = AsyncVectorEnv(
            fns, autoreset_mode=AutoresetMode.SAME_STEP, context="forkserver"
        )
        self.num_envs = num_envs
        self.num_actions = int(self.envs.single_action_space.n)  # type: ignore[attr-defined]
        self.game = str(self.envs.get_attr("game")[0])
        self.display_name = str(self.envs.get_attr("display_name")[0])
        self.action_meanings = list(self.envs.get_attr("action_meanings")[0])

    def reset(self) -> Frames:
        obs, _ = self.envs.reset()
        return obs

    def observations(self) -> Frames:
        return np.stack(self.envs.get_attr("last_observation"))

    def step_async(self, actions: npt.NDArray[np.int64]) -> None:
        self.envs.step_async(actions)

    def step_wait(self) -> VectorStep:
        next_obs, rewards, terminated, truncated, infos = self.envs.step_wait()
        ended = np.logical_or(terminated, truncated)
        td_terminal = np.asarray(infos["td_terminal"], np.bool_)
        final_frames = next_obs[:, -1].copy()
        returns = np.zeros(self.num_envs, np.float64)
        lengths = np.zeros(self.num_envs, np.int64)
        if ended.any():
            # Same-step autoreset: an ended game's own last step is in final_obs / final_info.
            final = infos["final_info"]
            td_terminal = np.where(ended, np.asarray(final["td_terminal"], np.bool_), td_terminal)
            for i in np.flatnonzero(ended):
                final_frames[i] = infos["final_obs"][i][-1]
            returns = np.where(ended, np.asarray(final["episode"]["r"], np.float64), 0.0)
            lengths = np.where(ended, np.asarray(final["episode"]["l"], np.int64), 0)
        return VectorStep(
            next_obs,
            np.asarray(rewards, np.float64),
            td_terminal,
            ended,
            final_frames,
            returns,
            lengths,
        )

    def state_dicts(self) -> list[dict[str, Any]]:
        return list(self.envs.call("state_dict"))

    def close(self) -> None:
        self.envs.close()


def make_games(
    game: str,
    options: AtariOptions,
    seed: int,
    num_envs: int,
    states: list[dict[str, Any]] | None = None,
) -> Games:
    """N games of `game`; game i is seeded `seed + i`, or continues `states[i]`."""
    if num_envs == 1:
        state = None if states is None else states[0]
        return InProcessGames([AtariPhiEnv(game, options, seed, None, state)])
    return WorkerGames(game, options, seed, num_envs, states)
