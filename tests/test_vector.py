"""num_envs > 1: N games in worker processes, one memory for all, the same learning per step."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from dqn_atari.envs import AtariOptions, AtariPhiEnv
from dqn_atari.loop import select_actions
from dqn_atari.vector import WorkerGames

TRAIN = shutil.which("dqn-train") or "dqn-train"
CPU = torch.device("cpu")


def test_worker_games_play_exactly_our_phi_env() -> None:
    """num_envs=N runs the project's own AtariPhiEnv in each worker: game i, seeded seed + i,
    returns byte for byte what a single AtariPhiEnv with that seed returns for the same actions.
    (ale-py's AtariVectorEnv has its own phi, grayscale before the max-pool; see benchmark.py.)"""
    options = AtariOptions(terminal_on_life_loss=True, clip_rewards=True)
    games = WorkerGames("Breakout", options, seed=7, num_envs=2)
    singles = [AtariPhiEnv("Breakout", options, seed=7 + i) for i in range(2)]
    try:
        assert (games.num_actions, games.game, games.display_name) == (4, "breakout", "Breakout")
        obs = games.reset()
        for i, env in enumerate(singles):
            np.testing.assert_array_equal(obs[i], env.reset()[0])
        actions = np.random.default_rng(0).integers(4, size=(400, 2))
        games_ended = 0
        for step_actions in actions:
            games.step_async(step_actions)
            out = games.step_wait()
            for i, env in enumerate(singles):
                single_obs, reward, single_term, single_trunc, info = env.step(step_actions[i])
                assert out.ended[i] == (single_term or single_trunc)
                assert out.rewards[i] == reward
                assert out.td_terminal[i] == info["td_terminal"]
                # The frame the action led to, even where the game ended and was reset.
                np.testing.assert_array_equal(out.final_frames[i], single_obs[-1])
                if single_term or single_trunc:
                    # Same-step autoreset: obs already starts the next game, seeded from the
                    # same emulator stream.
                    games_ended += 1
                    assert out.episode_returns[i] == info["episode"]["r"]
                    assert out.episode_lengths[i] == info["episode"]["l"]
                    single_obs, _ = env.reset()
                else:
                    assert out.episode_lengths[i] == 0
                np.testing.assert_array_equal(out.next_obs[i], single_obs)
        assert games_ended >= 2  # random Breakout games last about 200 agent steps
        np.testing.assert_array_equal(games.observations(), out.next_obs)
    finally:
        games.close()


def test_select_actions_explores_per_game_and_is_greedy_otherwise() -> None:
    q_values = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])

    def network(obs: torch.Tensor) -> torch.Tensor:
        return q_values[obs[:, 0, 0, 0].long()]

    obs = np.zeros((3, 4, 84, 84), np.uint8)
    obs[:, 0, 0, 0] = [0, 1, 2]
    rng = np.random.default_rng(0)
    assert select_actions(network, obs, 0.0, 3, rng, CPU).tolist() == [1, 0, 2]
    random_actions = np.stack([select_actions(network, obs, 1.0, 3, rng, CPU) for _ in range(300)])
    assert set(random_actions.ravel().tolist()) == {0, 1, 2}


RUN = [
    "env=Breakout",
    "num_envs=2",
    "device=cpu",
    "seed=3",
    "learning_starts=300",
    "buffer_size=3000",
    "checkpoint_interval=500",
    "save_replay=true",
    "log_interval=100",
    "eval_interval=0",
    "progress_interval_s=60",
    "env.max_episode_frames=1500",
    "final_eval_episodes=0",
]


def train(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRAIN, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_games_learn_at_the_nature_ratio_and_resume_exactly(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    result = train(*RUN, "total_steps=1000", f"hydra.run.dir={straight}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    full = torch.load(straight / "checkpoints" / "latest.pt", weights_only=True)
    # Agent steps are summed over both games; one update of 32 per 4 of them after 300.
    assert full["counters"]["step"] == 1000
    assert full["counters"]["updates"] == (1000 - 300) // 4
    assert full["num_envs"] == 2 and len(full["games"]) == 2
    saved = sorted(p.name for p in (straight / "checkpoints" / "replay_000001000").iterdir())
    assert saved == ["frames.u8", "meta.pt"]  # one memory for both games

    split = tmp_path / "split"
    first = train(*RUN, "total_steps=500", f"hydra.run.dir={split}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = train(f"resume={split}", "total_steps=1000", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = torch.load(split / "checkpoints" / "latest.pt", weights_only=True)
    assert resumed["counters"] == full["counters"]
    for name, tensor in full["learner"]["online"].items():
        assert torch.equal(tensor, resumed["learner"]["online"][name]), name

    other = train(f"resume={split}", "num_envs=1", "total_steps=1500", cwd=tmp_path)
    assert other.returncode == 2 and "num_envs (2 -> 1)" in other.stderr


def test_total_steps_must_divide_among_the_games(tmp_path: Path) -> None:
    result = train("num_envs=4", "total_steps=1001", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert result.returncode == 2 and "multiple of num_envs" in result.stderr
