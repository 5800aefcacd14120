"""The training loop (act -> store -> learn every k -> sync -> log -> checkpoint) and evaluation.

Everything here is handed in already built (see `cli.py`): the loop only moves data in one
direction, env -> replay -> learner -> metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dqn_atari.envs import AtariPhiEnv
from dqn_atari.learner import Learner
from dqn_atari.metrics import Metrics
from dqn_atari.networks import QFunction
from dqn_atari.replay import ReplayMemory
from dqn_atari.schedules import LinearSchedule


@dataclass(frozen=True)
class LoopSettings:
    total_steps: int  # agent steps
    batch_size: int  # transitions per update
    train_every: int  # agent steps per update
    target_update_interval: int  # agent steps
    checkpoint_interval: int  # agent steps
    eval_interval: int  # agent steps; 0 = off
    eval_episodes: int  # games
    eval_epsilon: float
    log_interval: int  # agent steps


@dataclass
class TrainState:
    """Counters that, with the networks, optimizer and RNGs, define where a run stands."""

    step: int = 0  # agent steps taken
    episodes: int = 0  # games finished
    updates: int = 0  # gradient updates
    learn_from_step: int = 0  # first agent step that may update (learning_starts, or a refill)
    stopped_by: str | None = field(default=None, compare=False)  # signal name, if interrupted

    def as_dict(self) -> dict[str, int]:
        return {
            "step": self.step,
            "episodes": self.episodes,
            "updates": self.updates,
            "learn_from_step": self.learn_from_step,
        }


def select_action(
    network: QFunction,
    obs: np.ndarray,
    epsilon: float,
    num_actions: int,
    rng: np.random.Generator,
    device: torch.device,
) -> int:
    """Epsilon-greedy: a uniform action with probability epsilon, else argmax Q(obs, .)."""
    if rng.random() < epsilon:
        return int(rng.integers(num_actions))
    with torch.no_grad():
        q = network(torch.from_numpy(obs).to(device)[None])
    return int(q.argmax(dim=1)[0])  # one host sync per step: the emulator needs the action


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
) -> EvalResult:
    """Play `episodes` full games; `on_frame(episode, rgb)` sees every raw screen (for video).

    The Nature network has no dropout or batch norm, so train/eval modes do not matter here.
    """
    returns: list[float] = []
    lengths: list[int] = []
    num_actions = env.num_actions
    for episode in range(episodes):
        obs, _ = env.reset()
        if on_frame is not None:
            on_frame(episode, env.render())  # type: ignore[arg-type]
        while True:
            action = select_action(network, obs, epsilon, num_actions, rng, device)
            obs, _reward, terminated, truncated, info = env.step(action)
            if on_frame is not None:
                on_frame(episode, env.render())  # type: ignore[arg-type]
            if terminated or truncated:
                returns.append(float(info["episode"]["r"]))
                lengths.append(int(info["episode"]["l"]))
                break
    return EvalResult(returns=returns, lengths=lengths)


class DivergenceError(RuntimeError):
    """The loss or Q-values stopped being finite."""


def check_finite(step: int, loss: torch.Tensor, q_mean: torch.Tensor) -> tuple[float, float]:
    """The logged means on the host (the one sync per log interval); non-finite stops the run."""
    loss_value, q_value = loss.item(), q_mean.item()
    if not (math.isfinite(loss_value) and math.isfinite(q_value)):
        raise DivergenceError(
            f"training diverged by agent step {step:,}: loss {loss_value}, mean Q {q_value}; "
            "the last checkpoint was written before this and is kept"
        )
    return loss_value, q_value


def train(
    env: AtariPhiEnv,
    learner: Learner,
    replay: ReplayMemory,
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
    """Run from `state.step` to `settings.total_steps`; returns the final state.

    `save_checkpoint(state, periodic)` is called every `checkpoint_interval` agent steps and at
    the end. `evaluate_at(step)` runs every `eval_interval` agent steps; it must not draw from
    `rng`, so that evaluating never changes the course of training. `stop_requested()`
    returning a signal name ends the run early, with a checkpoint. `start_obs` continues a game
    whose environment and replay memory were restored; without it the loop starts a new game.
    """
    s = settings
    num_actions = env.num_actions
    online = learner.q_online
    if start_obs is None:
        obs, _ = env.reset()
        replay.start_episode(obs[-1])
    else:
        obs = start_obs
    saved_at = -1
    # Losses and Q-values stay on the device between logs, so updates never wait for the host.
    loss_sum = torch.zeros((), device=device)
    q_sum = torch.zeros((), device=device)
    updates_since_log = 0

    while state.step < s.total_steps:
        eps = epsilon(state.step)
        action = select_action(online, obs, eps, num_actions, rng, device)
        next_obs, reward, terminated, truncated, info = env.step(action)
        state.step += 1
        episode_end = terminated or truncated
        replay.add(action, float(reward), bool(info["td_terminal"]), episode_end, next_obs[-1])
        if episode_end:
            state.episodes += 1
            metrics.episode(state.step, info["episode"]["r"], info["episode"]["l"])
            obs, _ = env.reset()
            replay.start_episode(obs[-1])
        else:
            obs = next_obs

        step = state.step
        if step > state.learn_from_step and step % s.train_every == 0:
            out = learner.update(replay.sample(s.batch_size))
            loss_sum += out.loss
            q_sum += out.q_mean
            updates_since_log += 1
            state.updates += 1
        if step % s.target_update_interval == 0:
            learner.sync_target()
        if step % s.log_interval == 0:
            metrics.speed(step, eps)
            if updates_since_log:
                loss, q_mean = check_finite(
                    step, loss_sum / updates_since_log, q_sum / updates_since_log
                )
                metrics.learner(step, loss, q_mean)
                loss_sum.zero_()
                q_sum.zero_()
                updates_since_log = 0
        if evaluate_at is not None and s.eval_interval and step % s.eval_interval == 0:
            result = evaluate_at(step)
            metrics.evaluation(step, result.return_mean, result.return_std)
        if step % s.checkpoint_interval == 0 or step == s.total_steps:
            save_checkpoint(state, step % s.checkpoint_interval == 0)
            saved_at = step
        metrics.progress(step, eps, force=step == s.total_steps)
        stop = stop_requested()
        if stop is not None and step < s.total_steps:
            state.stopped_by = stop
            if saved_at != step:
                save_checkpoint(state, False)
            break
    return state
