"""Replay memory: stacks rebuilt from single frames, episode boundaries, wrap-around, capacity."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from dqn_atari.envs import make_atari_env
from dqn_atari.replay import (
    Batch,
    ReplayMemory,
    ReplayMemoryError,
    check_fits,
    replay_bytes,
)


def _frame(value: int, shape: tuple[int, int] = (2, 2)) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint8)


def _newest_values(batch_obs: torch.Tensor) -> list[list[int]]:
    """Each stack as the list of its frames' (constant) values, oldest first."""
    return batch_obs[:, :, 0, 0].tolist()


def test_stacks_at_episode_start_repeat_the_first_frame_and_never_cross_episodes() -> None:
    memory = ReplayMemory(capacity=32, frame_shape=(2, 2), stack=4)
    # Game A: frames 10, 11, 12, ends terminal on the third action.
    memory.start_episode(_frame(10))
    memory.add(0, 1.0, False, False, _frame(11))
    memory.add(1, 0.0, False, False, _frame(12))
    memory.add(2, -1.0, True, True, _frame(13))  # terminal: frame 13 is never needed
    # Game B: frames 20, 21, 22.
    memory.start_episode(_frame(20))
    memory.add(3, 0.0, False, False, _frame(21))
    memory.add(0, 0.5, False, False, _frame(22))

    # Slots: 0..2 game A (frames 10, 11, 12), 3..5 game B (20, 21, 22); slot 5 awaits an action.
    batch = memory.gather(torch.arange(5))
    assert _newest_values(batch.obs_tm1) == [
        [10, 10, 10, 10],
        [10, 10, 10, 11],
        [10, 10, 11, 12],
        [20, 20, 20, 20],  # not [11, 12, 13, 20]: the stack stops at the episode start
        [20, 20, 20, 21],
    ]
    assert _newest_values(batch.obs_t)[:2] == [[10, 10, 10, 11], [10, 10, 11, 12]]
    assert _newest_values(batch.obs_t)[3:] == [[20, 20, 20, 21], [20, 20, 21, 22]]
    assert batch.action_tm1.tolist() == [0, 1, 2, 3, 0]
    assert batch.reward_t.tolist() == [1.0, 0.0, -1.0, 0.0, 0.5]
    assert batch.discount_t.tolist() == [1.0, 1.0, 0.0, 1.0, 1.0]
    assert len(memory) == 5  # the newest frame has no action yet


def test_truncated_game_keeps_its_final_frame_for_bootstrapping_and_never_samples_it() -> None:
    memory = ReplayMemory(capacity=16, frame_shape=(2, 2), stack=4, seed=3)
    memory.start_episode(_frame(1))
    memory.add(0, 0.0, False, False, _frame(2))
    memory.add(1, 0.0, False, True, _frame(3))  # truncated: bootstraps from frame 3
    memory.start_episode(_frame(7))
    memory.add(2, 0.0, False, False, _frame(8))

    # Slot 2 holds frame 3 (the end slot); slot 3 starts game B.
    truncated = memory.gather(torch.tensor([1]))
    assert _newest_values(truncated.obs_t) == [[1, 1, 2, 3]]
    assert truncated.discount_t.tolist() == [1.0]
    assert len(memory) == 3  # slots 0, 1 and 3; not the end slot 2, not the pending slot 4

    batch = memory.sample(4096)
    newest = batch.obs_tm1[:, -1, 0, 0]
    assert set(newest.tolist()) == {1, 2, 7}  # frame 3 never starts a transition
    counts = torch.bincount(newest.long(), minlength=8)[[1, 2, 7]].float()
    assert (counts / 4096 - 1 / 3).abs().max() < 0.04  # uniform over the three transitions


def _play(game: str, steps: int, seed: int, **options: object) -> list[dict]:
    """Random play on the real ALE; every transition as the environment produced it."""
    env = make_atari_env(game, seed=seed, **options)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset()
    events: list[dict] = [{"start": obs}]
    for _ in range(steps):
        action = int(rng.integers(env.num_actions))
        next_obs, reward, terminated, truncated, info = env.step(action)
        events.append(
            {
                "obs_tm1": obs,
                "action": action,
                "reward": float(reward),
                "td_terminal": bool(info["td_terminal"]),
                "end": terminated or truncated,
                "obs_t": next_obs,
            }
        )
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
            events.append({"start": obs})
    env.close()
    return events


def _fill(memory: ReplayMemory, events: list[dict]) -> list[tuple]:
    """Write events in order; return the key of every stored transition, oldest first."""
    keys = []
    for e in events:
        if "start" in e:
            memory.start_episode(e["start"][-1])
            continue
        memory.add(e["action"], e["reward"], e["td_terminal"], e["end"], e["obs_t"][-1])
        keys.append(_key(e["obs_tm1"], e["action"], e["reward"], e["td_terminal"], e["obs_t"]))
    return keys


def _key(obs_tm1, action, reward, terminal, obs_t) -> tuple:
    digest = hashlib.sha1(np.ascontiguousarray(obs_tm1).tobytes()).hexdigest()
    # A terminal transition's obs_t is masked by discount 0, so it is not part of its identity.
    next_digest = (
        None if terminal else hashlib.sha1(np.ascontiguousarray(obs_t).tobytes()).hexdigest()
    )
    return (digest, int(action), float(reward), bool(terminal), next_digest)


def _batch_keys(batch: Batch) -> list[tuple]:
    obs_tm1, obs_t = batch.obs_tm1.cpu().numpy(), batch.obs_t.cpu().numpy()
    return [
        _key(obs_tm1[i], batch.action_tm1[i], batch.reward_t[i], batch.discount_t[i] == 0, obs_t[i])
        for i in range(obs_tm1.shape[0])
    ]


def test_every_sampled_transition_is_one_the_real_game_produced() -> None:
    # Breakout with life-loss terminals, plus a frame cap short enough to truncate games.
    events = _play("Breakout", 1500, seed=0, terminal_on_life_loss=True, max_episode_frames=600)
    ends = [e for e in events if e.get("end")]
    assert any(e["td_terminal"] for e in ends) and any(not e["td_terminal"] for e in ends)
    memory = ReplayMemory(capacity=4000, seed=1)
    stored = _fill(memory, events)
    assert len(memory) == len(stored) == 1500

    sampled = _batch_keys(memory.sample(30_000))
    assert set(sampled) <= set(stored), "a sampled stack mixes frames the game never showed"
    assert set(sampled) == set(stored), "uniform sampling should reach every transition"


def test_wrap_around_keeps_only_the_newest_transitions() -> None:
    events = _play("Pong", 900, seed=2, max_episode_frames=2000)
    capacity = 200
    memory = ReplayMemory(capacity=capacity, seed=4)
    stored = _fill(memory, events)
    # Once wrapped, the first stack-1 slots of the window are skipped (their stacks would reach
    # overwritten frames), and the newest slot awaits its action.
    assert len(memory) <= capacity - 1 - (memory.stack - 1)
    assert len(memory) >= capacity - 1 - (memory.stack - 1) - 2  # at most two end slots here
    recent = set(stored[-len(memory) :])
    sampled = set(_batch_keys(memory.sample(8000)))
    assert sampled <= set(stored)
    assert sampled == recent


def test_capacity_and_bytes_of_one_million_frames() -> None:
    memory = ReplayMemory(capacity=1000)
    assert memory.nbytes == replay_bytes(1000) == 1000 * (84 * 84 + 17)
    assert memory.frames.dtype == torch.uint8 and memory.frames.shape == (1000, 84, 84)
    # The bound: a 1M-frame memory holds under 7.5 GB (7.07 GB).
    assert replay_bytes(1_000_000) < 7.5e9


def test_memory_check_fails_early_and_names_the_override() -> None:
    with pytest.raises(ReplayMemoryError, match=r"needs .* GB .* buffer_size="):
        check_fits(10**9, (84, 84), torch.device("cpu"))  # 7 TB
    check_fits(1000, (84, 84), torch.device("cpu"))


def test_misuse_is_an_error() -> None:
    memory = ReplayMemory(capacity=16, frame_shape=(2, 2))
    with pytest.raises(ReplayMemoryError, match="empty"):
        memory.sample(4)
    with pytest.raises(ReplayMemoryError, match="start_episode"):
        memory.add(0, 0.0, False, False, _frame(1))
    with pytest.raises(ReplayMemoryError, match="capacity"):
        ReplayMemory(capacity=3, frame_shape=(2, 2), stack=4)


def test_sampling_is_reproducible_with_a_seed() -> None:
    events = _play("Pong", 300, seed=5)
    a, b = ReplayMemory(1000, seed=9), ReplayMemory(1000, seed=9)
    _fill(a, events)
    _fill(b, events)
    for x, y in zip(a.sample(64), b.sample(64), strict=True):
        assert torch.equal(x, y)
