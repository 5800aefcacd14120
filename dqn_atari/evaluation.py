"""Evaluation: playing full games with a fixed epsilon-greedy policy, and what they scored.

One function plays the games (`evaluate`); the periodic evaluation during training, the final
one of a run and dqn-eval all call it, each with its own game and random stream, so evaluating
never shifts the training streams.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dqn_atari.envs import AtariOptions, AtariPhiEnv
from dqn_atari.loop import select_actions
from dqn_atari.networks import QFunction


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


def play_games(
    network: QFunction,
    game: str,
    options: AtariOptions,
    episodes: int,
    epsilon: float,
    env_seed: int,
    rng_seed: list[int],
    device: torch.device,
    stop_requested: Callable[[], object] = lambda: None,
) -> EvalResult | None:
    """`evaluate` on a game of its own, seeded `env_seed`, with its own epsilon-greedy stream
    seeded `rng_seed`: the periodic and the final evaluation of a run (see run.py)."""
    env = AtariPhiEnv(game, options, seed=env_seed)
    try:
        return evaluate(
            network,
            env,
            episodes,
            epsilon,
            np.random.default_rng(rng_seed),
            device,
            stop_requested=stop_requested,
        )
    finally:
        env.close()
