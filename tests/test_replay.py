"""Replay memory: stacks rebuilt from single frames, episode boundaries, wrap-around, N games in
one memory, n-step returns against ones worked out by hand, uniform sampling on the device
through the two-level sum tree, saving and loading (and reading what the previous version
saved), and a fixed op count."""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from reference_replay import ReplayMemory as ReferenceMemory
from torch.profiler import ProfilerActivity, profile

from dqn_atari.envs import make_atari_env
from dqn_atari.replay import (
    Batch,
    ReplayMemory,
    ReplayMemoryError,
    check_fits,
    min_capacity,
    replay_bytes,
    sum_tree,
)


def _frame(value: int, shape: tuple[int, int] = (2, 2)) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint8)


def _one(value: object, dtype: type = np.int64) -> np.ndarray:
    return np.array([value], dtype=dtype)


def _step(
    memory: ReplayMemory,
    action: int,
    reward: float,
    terminal: bool,
    end: bool,
    frame: np.ndarray,
    next_first: np.ndarray | None = None,
) -> None:
    """One step of a single game through the N-game interface."""
    memory.add_step(
        _one(action),
        _one(reward, np.float64),
        _one(terminal, np.bool_),
        _one(end, np.bool_),
        frame[None],
        (frame if next_first is None else next_first)[None],
    )


def _newest_values(batch_obs: torch.Tensor) -> list[list[int]]:
    """Each stack as the list of its frames' (constant) values, oldest first."""
    return batch_obs[:, :, 0, 0].tolist()


def test_stacks_at_episode_start_repeat_the_first_frame_and_never_cross_episodes() -> None:
    memory = ReplayMemory(capacity=32, frame_shape=(2, 2), stack=4)
    # Game A: frames 10, 11, 12, ends terminal on the third action; game B: frames 20, 21, 22.
    memory.start(_frame(10)[None])
    _step(memory, 0, 1.0, False, False, _frame(11))
    _step(memory, 1, 0.0, False, False, _frame(12))
    _step(memory, 2, -1.0, True, True, _frame(13), next_first=_frame(20))  # 13 is never needed
    _step(memory, 3, 0.0, False, False, _frame(21))
    _step(memory, 0, 0.5, False, False, _frame(22))

    # Slots: 0..2 game A (frames 10, 11, 12), 3..5 game B (20, 21, 22); slot 5 awaits an action.
    assert memory.sampleable_slots().tolist() == [0, 1, 2, 3, 4]
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
    assert batch.action_tm1.dtype == torch.int64
    assert batch.reward_t.tolist() == [1.0, 0.0, -1.0, 0.0, 0.5]
    # gamma (0.99 by default) is in the discount; float32, as the rewards.
    assert torch.equal(batch.discount_t, torch.tensor([0.99, 0.99, 0.0, 0.99, 0.99]))
    assert len(memory) == 5  # the newest frame has no action yet


def test_truncated_game_keeps_its_final_frame_for_bootstrapping_and_never_samples_it() -> None:
    memory = ReplayMemory(capacity=16, frame_shape=(2, 2), stack=4, seed=3)
    memory.start(_frame(1)[None])
    _step(memory, 0, 0.0, False, False, _frame(2))
    _step(memory, 1, 0.0, False, True, _frame(3), next_first=_frame(7))  # truncated at frame 3
    _step(memory, 2, 0.0, False, False, _frame(8))

    # Slot 2 holds frame 3 (the end slot); slot 3 starts game B.
    truncated = memory.gather(torch.tensor([1]))
    assert _newest_values(truncated.obs_t) == [[1, 1, 2, 3]]
    assert torch.equal(truncated.discount_t, torch.tensor([0.99]))  # bootstraps
    assert memory.sampleable_slots().tolist() == [0, 1, 3]  # not the end slot, not pending

    batch = memory.sample(4096)
    newest = batch.obs_tm1[:, -1, 0, 0]
    assert set(newest.tolist()) == {1, 2, 7}  # frame 3 never starts a transition
    counts = torch.bincount(newest.long(), minlength=8)[[1, 2, 7]].float()
    assert (counts / 4096 - 1 / 3).abs().max() < 0.04  # uniform over the three transitions


_RECORDINGS: dict[tuple, list[dict]] = {}


def _play(games: list[str], steps: int, seed: int, **options: object) -> list[dict]:
    """Random play of N games on the real ALE, stepped together; every vector step as the
    environments produced it, with each game's observations for identifying transitions.
    Recorded once per set of arguments (tests read the recording, never change it)."""
    key = (tuple(games), steps, seed, tuple(sorted(options.items())))
    if key not in _RECORDINGS:
        _RECORDINGS[key] = _record(games, steps, seed, **options)
    return _RECORDINGS[key]


def _record(games: list[str], steps: int, seed: int, **options: object) -> list[dict]:
    envs = [make_atari_env(game, seed=seed + i, **options) for i, game in enumerate(games)]
    rng = np.random.default_rng(seed)
    obs = [env.reset()[0] for env in envs]
    events: list[dict] = [{"start": np.stack(obs)}]
    for _ in range(steps):
        actions = np.array([rng.integers(env.num_actions) for env in envs])
        step: dict = {"obs_tm1": list(obs), "actions": actions, "obs_t": []}
        rewards, terminals, ends, next_obs = [], [], [], []
        for i, env in enumerate(envs):
            after, reward, terminated, truncated, info = env.step(int(actions[i]))
            step["obs_t"].append(after)
            rewards.append(float(reward))
            terminals.append(bool(info["td_terminal"]))
            ends.append(terminated or truncated)
            next_obs.append(env.reset()[0] if ends[-1] else after)
        step.update(
            rewards=np.array(rewards),
            terminals=np.array(terminals),
            ends=np.array(ends),
            next_obs=next_obs,
        )
        events.append(step)
        obs = next_obs
    for env in envs:
        env.close()
    return events


def _key(obs_tm1, action, reward, terminal, obs_t) -> tuple:
    digest = hashlib.sha1(np.ascontiguousarray(obs_tm1).tobytes()).hexdigest()
    # A terminal transition's obs_t is masked by discount 0, so it is not part of its identity.
    next_digest = (
        None if terminal else hashlib.sha1(np.ascontiguousarray(obs_t).tobytes()).hexdigest()
    )
    return (digest, int(action), float(reward), bool(terminal), next_digest)


def _fill(memory: ReplayMemory, events: list[dict]) -> list[list[tuple]]:
    """Write the vector steps in order; return each game's stored transitions, oldest first."""
    keys: list[list[tuple]] = []
    for e in events:
        if "start" in e:
            memory.start(e["start"][:, -1])
            keys = [[] for _ in range(len(e["start"]))]
            continue
        finals = np.stack([o[-1] for o in e["obs_t"]])
        memory.add_step(
            e["actions"],
            e["rewards"],
            e["terminals"],
            e["ends"],
            finals,
            np.stack([o[-1] for o in e["next_obs"]]),
        )
        for i, game_keys in enumerate(keys):
            game_keys.append(
                _key(
                    e["obs_tm1"][i],
                    e["actions"][i],
                    e["rewards"][i],
                    e["terminals"][i],
                    e["obs_t"][i],
                )
            )
    return keys


def _batch_keys(batch: Batch) -> list[tuple]:
    obs_tm1, obs_t = batch.obs_tm1.cpu().numpy(), batch.obs_t.cpu().numpy()
    return [
        _key(obs_tm1[i], batch.action_tm1[i], batch.reward_t[i], batch.discount_t[i] == 0, obs_t[i])
        for i in range(obs_tm1.shape[0])
    ]


def test_every_sampled_transition_is_one_the_real_game_produced() -> None:
    # Breakout with life-loss terminals, plus a frame cap short enough to truncate games.
    events = _play(["Breakout"], 1500, seed=0, terminal_on_life_loss=True, max_episode_frames=600)
    ends = [(e["ends"][0], e["terminals"][0]) for e in events[1:] if e["ends"][0]]
    assert any(terminal for _, terminal in ends) and any(not terminal for _, terminal in ends)
    memory = ReplayMemory(capacity=4000, seed=1, max_batch_size=30_000)
    (stored,) = _fill(memory, events)
    assert len(memory) == len(stored) == 1500

    sampled = _batch_keys(memory.sample(30_000))
    assert set(sampled) <= set(stored), "a sampled stack mixes frames the game never showed"
    assert set(sampled) == set(stored), "uniform sampling should reach every transition"


def test_wrap_around_keeps_only_the_newest_transitions() -> None:
    events = _play(["Pong"], 900, seed=2, max_episode_frames=2000)
    capacity = 200
    memory = ReplayMemory(capacity=capacity, seed=4, max_batch_size=8000)
    (stored,) = _fill(memory, events)
    # Once wrapped, the first stack-1 slots of the window are skipped (their stacks would reach
    # overwritten frames), and the newest slot awaits its action.
    assert len(memory) <= capacity - 1 - (memory.stack - 1)
    assert len(memory) >= capacity - 1 - (memory.stack - 1) - 2  # at most two end slots here
    recent = set(stored[-len(memory) :])
    sampled = set(_batch_keys(memory.sample(8000)))
    assert sampled <= set(stored)
    assert sampled == recent


def test_games_in_one_memory_never_mix_and_are_sampled_in_proportion() -> None:
    events = _play(["Pong", "Breakout", "Breakout"], 400, seed=6, max_episode_frames=1200)
    memory = ReplayMemory(capacity=3 * 1000, seed=2, num_games=3, max_batch_size=9000)
    stored = _fill(memory, events)
    owner = {key: game for game, keys in enumerate(stored) for key in keys}
    sampled = _batch_keys(memory.sample(9000))
    assert set(sampled) <= set(owner), "a sampled stack mixes games or frames never shown"
    per_game = collections.Counter(owner[key] for key in sampled)
    # Every game holds 400 transitions: a third of the batch each (3 sd of a binomial: 134).
    assert all(abs(per_game[g] - 3000) < 150 for g in range(3)), per_game


def _reference_slots(ring: ReferenceMemory) -> list[int]:
    """The slots today's one-game ring could sample (its window, less its end slots)."""
    first, stop = ring._window()
    return [a % ring.capacity for a in range(first, stop) if a not in set(ring._end_slots)]


@pytest.mark.parametrize(
    ("games", "steps", "ring"),
    [
        (["Breakout"], 300, 1000),
        (["Breakout"], 900, 200),
        (["Pong", "Breakout", "Breakout"], 700, 150),
    ],
)
def test_same_transitions_and_batches_as_one_reference_ring_per_game(
    games: list[str], steps: int, ring: int
) -> None:
    """The memory for N games holds exactly what N rings of the 0.1 memory (kept in
    tests/reference_replay.py) held for the same real-game transitions: the same sampleable
    slots, and identical batches from them, with episode ends, truncations and wrap-around."""
    events = _play(games, steps, seed=0, terminal_on_life_loss=True, max_episode_frames=400)
    memory = ReplayMemory(capacity=ring * len(games), num_games=len(games), seed=1)
    _fill(memory, events)
    references = [ReferenceMemory(ring, seed=1) for _ in games]
    for e in events:
        if "start" in e:
            for i, reference in enumerate(references):
                reference.start_episode(e["start"][i, -1])
            continue
        for i, reference in enumerate(references):
            final = e["obs_t"][i][-1]
            reference.add(
                int(e["actions"][i]),
                float(e["rewards"][i]),
                bool(e["terminals"][i]),
                bool(e["ends"][i]),
                final,
            )
            if e["ends"][i]:
                reference.start_episode(e["next_obs"][i][-1])

    expected = [g * ring + s for g, r in enumerate(references) for s in _reference_slots(r)]
    slots = memory.sampleable_slots()
    assert slots.tolist() == sorted(expected)
    assert len(memory) == sum(len(r) for r in references)
    batch = memory.gather(torch.from_numpy(slots))
    bootstrap = torch.randn(len(slots), generator=torch.Generator().manual_seed(0)) * 10
    for g, reference in enumerate(references):
        mine = torch.from_numpy(slots // ring == g)
        ref = reference.gather(torch.from_numpy(slots[slots // ring == g] % ring))
        # The reference's discount is the 0/1 flag; gamma (0.99) now comes with the batch.
        theirs = ref._replace(discount_t=ref.discount_t * 0.99)
        for name, a, b in zip(Batch._fields, batch, theirs, strict=True):
            assert torch.equal(a[mine], b), (g, name)
        # The TD target the learner will compute, `reward_t + discount_t * bootstrap`, is bit
        # for bit today's `reward_t + gamma * discount_t * bootstrap` on the 0/1 discount.
        today = ref.reward_t + 0.99 * ref.discount_t * bootstrap[mine]
        assert torch.equal(batch.reward_t[mine] + batch.discount_t[mine] * bootstrap[mine], today)


def test_n_step_returns_of_two_small_games_worked_out_by_hand() -> None:
    """n = 3 and gamma = 1/2 (exact in float32) over two games of 6 slots, stack 2. Game A ends
    on a terminal with a reward, game B is truncated; both rings wrap. Each expected value is
    (reward_t, discount_t, obs_t's frames; None where the discount masks obs_t)."""
    memory = ReplayMemory(
        capacity=12, frame_shape=(2, 2), stack=2, num_games=2, n_step=3, gamma=0.5
    )
    memory.start(np.stack([_frame(10), _frame(50)]))
    no, yes = False, True
    steps = [  # rewards (A, B), TD terminal, ended, final frames, next first frames
        ((1, -1), (no, no), (no, no), (11, 51), (11, 51)),
        ((2, -2), (no, no), (no, yes), (12, 52), (12, 60)),  # B truncated after frame 52
        ((4, -4), (yes, no), (yes, no), (13, 61), (20, 61)),  # A over: 13 is never stored
        ((8, -8), (no, no), (no, no), (21, 62), (21, 62)),
        ((16, -16), (no, no), (no, no), (22, 63), (22, 63)),
        ((32, -32), (no, no), (no, no), (23, 64), (23, 64)),
        ((64, -64), (no, no), (no, no), (24, 65), (24, 65)),
    ]

    def play(some: list[tuple]) -> None:
        for rewards, terminal, ended, finals, firsts in some:
            memory.add_step(
                np.zeros(2, np.int64),
                np.array(rewards, np.float64),
                np.array(terminal),
                np.array(ended),
                np.stack([_frame(v) for v in finals]),
                np.stack([_frame(v) for v in firsts]),
            )

    def check(expected: dict[int, tuple[float, float, list[int] | None]]) -> None:
        slots = sorted(expected)
        assert memory.sampleable_slots().tolist() == slots
        batch = memory.gather(torch.tensor(slots))
        obs_t = _newest_values(batch.obs_t)
        for i, slot in enumerate(slots):
            reward, discount, frames = expected[slot]
            got = (batch.reward_t[i].item(), batch.discount_t[i].item())
            assert got == (reward, discount), (slot, got)
            if frames is not None:
                assert obs_t[i] == frames, (slot, obs_t[i])

    # A: frames 10 11 12 20 21 in slots 0-4 (21 awaits its action); B: 50 51 52 60 61 62 in
    # slots 6-11, 52 the end slot (never valid), 62 awaiting its action.
    play(steps[:4])
    check(
        {
            0: (1 + 2 / 2 + 4 / 4, 0.0, None),  # three steps, the third one terminal
            1: (2 + 4 / 2, 0.0, None),  # cut at the terminal: nothing after its reward
            2: (4, 0.0, None),
            3: (8, 0.5, [20, 21]),  # cut at the newest write
            6: (-1 - 2 / 2, 0.25, [51, 52]),  # cut at the truncation, bootstrapping from 52
            7: (-2, 0.5, [51, 52]),
            9: (-4 - 8 / 2, 0.25, [61, 62]),
            10: (-8, 0.5, [61, 62]),
        }
    )
    # Both rings wrapped: A's 23 and 24 in slots 0 and 1, B's 63 64 65 in slots 6-8; each
    # write also invalidated the slot after it (its stack would reach the overwritten frame).
    play(steps[4:])
    check(
        {
            3: (8 + 16 / 2 + 32 / 4, 0.125, [22, 23]),
            4: (16 + 32 / 2 + 64 / 4, 0.125, [23, 24]),  # slots 4, 5, 0: across the wrap
            5: (32 + 64 / 2, 0.25, [23, 24]),
            0: (64, 0.5, [23, 24]),
            10: (-8 - 16 / 2 - 32 / 4, 0.125, [63, 64]),  # slots 10, 11, 6
            11: (-16 - 32 / 2 - 64 / 4, 0.125, [64, 65]),
            6: (-32 - 64 / 2, 0.25, [64, 65]),
            7: (-64, 0.5, [64, 65]),
        }
    )


def _game_transitions(events: list[dict], game: int) -> list[dict]:
    """Game `game`'s transitions in the order it played them, as recorded."""
    return [
        {
            "obs_tm1": e["obs_tm1"][game],
            "action": int(e["actions"][game]),
            "reward": float(e["rewards"][game]),
            "terminal": bool(e["terminals"][game]),
            "ended": bool(e["ends"][game]),
            "obs_t": e["obs_t"][game],
        }
        for e in events[1:]
    ]


def _hand_n_step(played: list[dict], t: int, n: int, gamma: float) -> dict:
    """The n-step return from transition t, worked out from the recording alone.

    sum_{k<m} gamma^k r_{t+k}, where m grows until it is n, or the transition just summed was
    TD terminal (discount 0: no bootstrap), or its game was cut there (truncated: the next
    transition starts a new game), or it is the newest one (the game's next action is not
    taken yet); but for a terminal, the target bootstraps from the observation after
    transition t+m-1 with gamma^m."""
    reward, m = 0.0, 0
    while True:
        step = played[t + m]
        reward += gamma**m * step["reward"]
        m += 1
        if step["terminal"]:
            return {"reward": reward, "discount": 0.0, "obs_t": None, "m": m, "cut": "terminal"}
        cut = "n" if m == n else "truncated" if step["ended"] else None
        if cut is None and t + m == len(played):
            cut = "newest"
        if cut is not None:
            return {"reward": reward, "discount": gamma**m, "obs_t": step["obs_t"], "m": m,
                    "cut": cut}  # fmt: skip


def _digest(obs: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(obs).tobytes()).hexdigest()


@pytest.mark.parametrize(
    ("games", "steps", "ring", "n", "gamma"),
    [
        (["Breakout"], 900, 200, 3, 0.99),
        (["Breakout"], 900, 200, 5, 0.9),
        (["Pong", "Breakout", "Breakout"], 700, 150, 3, 0.99),
    ],
)
def test_n_step_returns_are_the_ones_worked_out_by_hand_from_the_real_games(
    games: list[str], steps: int, ring: int, n: int, gamma: float
) -> None:
    """Every transition the memory holds, gathered with n-step returns, against the return
    computed from the recorded real-game transitions by `_hand_n_step`: life-loss terminals,
    truncated games, the newest write, and chains that run across the ring's wrap-around."""
    events = _play(games, steps, seed=0, terminal_on_life_loss=True, max_episode_frames=400)
    options = {"capacity": ring * len(games), "num_games": len(games), "seed": 1}
    memory = ReplayMemory(**options, n_step=n, gamma=gamma)
    one_step = ReplayMemory(**options)  # its batches tell which transition each slot holds
    stored = _fill(one_step, events)
    _fill(memory, events)
    slots = memory.sampleable_slots()
    assert slots.tolist() == one_step.sampleable_slots().tolist()
    batch = memory.gather(torch.from_numpy(slots))
    keys = _batch_keys(one_step.gather(torch.from_numpy(slots)))
    obs_tm1, obs_t = batch.obs_tm1.numpy(), batch.obs_t.numpy()
    cuts: collections.Counter = collections.Counter()
    later_rewards = wrapped_chains = 0
    for g in range(len(games)):
        played = _game_transitions(events, g)
        assert len(played) == len(stored[g])
        # The game's slots in ring order are its newest transitions in time order, rotated.
        mine = np.flatnonzero(slots // ring == g)
        newest = stored[g][-len(mine) :]
        (turn,) = [r for r in range(len(mine)) if [keys[i] for i in np.roll(mine, -r)] == newest]
        in_time_order = np.roll(mine, -turn)
        first = len(played) - len(mine)  # the transition the oldest valid slot holds
        for age, i in enumerate(in_time_order):
            t = first + age
            want = _hand_n_step(played, t, n, gamma)
            assert _digest(obs_tm1[i]) == _digest(played[t]["obs_tm1"])
            assert int(batch.action_tm1[i]) == played[t]["action"]
            assert float(batch.reward_t[i]) == pytest.approx(want["reward"], rel=1e-6, abs=1e-6)
            assert batch.discount_t[i].item() == np.float32(want["discount"]), (t, want)
            if want["obs_t"] is not None:
                assert _digest(obs_t[i]) == _digest(want["obs_t"]), (t, want["cut"])
            cuts[want["cut"]] += 1
            later_rewards += any(played[t + k]["reward"] for k in range(1, want["m"]))
            ring_slots = slots[in_time_order[age : age + want["m"]]] % ring
            wrapped_chains += bool((np.diff(ring_slots) < 0).any())
    # The recording holds every case the chain rule has to cut, rewards past the first step
    # and chains through the ring's wrap-around (more frames were written than a ring holds).
    assert all(cuts[cut] for cut in ("n", "terminal", "truncated", "newest")), cuts
    assert later_rewards and wrapped_chains, (later_rewards, wrapped_chains)


def test_the_two_level_sum_tree_finds_the_slot_of_each_rank() -> None:
    """Rank r goes to the slot holding the (r+1)-th valid slot, across blocks, skipping an
    empty one; blocks are about sqrt(slots) slots, a power of two and at least 64."""
    leaves = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]], dtype=torch.bool)
    totals = leaves.sum(1)
    slots = sum_tree.find(torch.cumsum(totals, 0), totals, leaves, torch.arange(5))
    assert slots.tolist() == [0, 2, 9, 10, 11]
    assert sum_tree.block_layout(1000) == (64, 16)  # sqrt 31.6: the floor of 64
    assert sum_tree.block_layout(1_000_000) == (1024, 977)  # 977 * 1024 = 1,000,448 flags


def test_sampling_is_uniform_over_every_sampleable_slot() -> None:
    events = _play(["Pong", "Breakout"], 300, seed=3, terminal_on_life_loss=True)
    memory = ReplayMemory(capacity=2 * 500, num_games=2, seed=5, max_batch_size=20_000)
    _fill(memory, events)
    valid = memory.sampleable_slots()
    memory.prepare_sample(20_000)
    counts = np.bincount(memory.sample_slots(20_000).numpy(), minlength=memory.capacity)
    assert set(np.flatnonzero(counts)) == set(valid.tolist())
    expected = 20_000 / len(valid)
    chi2 = float((((counts[valid] - expected) ** 2) / expected).sum())
    # 300 transitions a game (no truncated games here), so 599 degrees of freedom: the 0.1%
    # tail of the chi-square distribution starts at 711.7 (scipy.stats.chi2.ppf(0.999, 599)).
    assert len(valid) == 600 and chi2 < 711.7, chi2


def test_capacity_and_bytes_of_one_million_frames() -> None:
    memory = ReplayMemory(capacity=1000)
    assert memory.nbytes == replay_bytes(1000) + (memory.storage.valid.numel() - 1000)
    assert replay_bytes(1000) == 1000 * (84 * 84 + 30)
    frames = memory.storage.frames
    assert frames.dtype == torch.uint8 and frames.shape == (1000, 84, 84)
    # The CUDA issue's bound: a 1M-frame memory holds at most 7.1 GB (7.086 GB); the indices stay
    # int32 in memory and are widened where they index the frames.
    assert replay_bytes(1_000_000) < 7.1e9


def test_memory_check_fails_early_and_names_the_override() -> None:
    with pytest.raises(ReplayMemoryError, match=r"needs .* GB .* buffer_size="):
        check_fits(10**9, (84, 84), torch.device("cpu"))  # 7 TB
    check_fits(1000, (84, 84), torch.device("cpu"))


def test_the_smallest_memory_keeps_a_truncated_games_last_transition_whole() -> None:
    """min_capacity gives a game stack + 2 slots: a truncated game writes two frames in the step
    that completes its last transition, and the stack of that transition must survive them."""
    assert min_capacity(4, 3) == 18
    with pytest.raises(ReplayMemoryError, match=r">= 18 for 3 game\(s\) stacked by 4, got 17"):
        ReplayMemory(capacity=17, frame_shape=(2, 2), stack=4, num_games=3)
    memory = ReplayMemory(capacity=min_capacity(2, 1), frame_shape=(2, 2), stack=2)  # 4 slots
    memory.start(_frame(1)[None])
    _step(memory, 0, 0.0, False, False, _frame(2))
    _step(memory, 1, 0.0, False, False, _frame(3))
    # Frames 4 (the final one, slot 3) and 9 (the next first one) wrap onto slot 0, frame 1's;
    # in a ring of 3 slots, 9 would land on frame 2, inside the completed transition's stack.
    _step(memory, 2, 0.5, False, True, _frame(4), next_first=_frame(9))
    assert memory.sampleable_slots().tolist() == [2]  # slot 1's stack reached frame 1
    batch = memory.gather(torch.tensor([2]))
    assert _newest_values(batch.obs_tm1) == [[2, 3]]
    assert _newest_values(batch.obs_t) == [[3, 4]]
    assert batch.reward_t.tolist() == [0.5]


def test_misuse_is_an_error() -> None:
    memory = ReplayMemory(capacity=16, frame_shape=(2, 2))
    with pytest.raises(ReplayMemoryError, match="empty"):
        memory.sample(4)
    with pytest.raises(ReplayMemoryError, match="start"):
        _step(memory, 0, 0.0, False, False, _frame(1))
    with pytest.raises(ReplayMemoryError, match="capacity"):
        ReplayMemory(capacity=3, frame_shape=(2, 2), stack=4)
    with pytest.raises(ReplayMemoryError, match="capacity"):
        ReplayMemory(capacity=20, frame_shape=(2, 2), stack=4, num_games=4)  # 5 a game
    with pytest.raises(ReplayMemoryError, match="n_step must be >= 1, got 0"):
        ReplayMemory(capacity=16, frame_shape=(2, 2), n_step=0)
    with pytest.raises(ReplayMemoryError, match=r"gamma must be in \[0, 1\], got 1.5"):
        ReplayMemory(capacity=16, frame_shape=(2, 2), gamma=1.5)
    memory.start(_frame(1)[None])
    _step(memory, 0, 0.0, False, False, _frame(2))
    with pytest.raises(ReplayMemoryError, match="max_batch_size"):
        memory.sample(5000)


def test_sampling_is_reproducible_with_a_seed() -> None:
    events = _play(["Pong"], 300, seed=5)
    a, b = ReplayMemory(1000, seed=9), ReplayMemory(1000, seed=9)
    _fill(a, events)
    _fill(b, events)
    for _ in range(200):  # past several refills of the uniforms
        for x, y in zip(a.sample(64), b.sample(64), strict=True):
            assert torch.equal(x, y)


def _ops(fn) -> collections.Counter:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()

    def top(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return False
            parent = parent.cpu_parent
        return True

    return collections.Counter(
        e.name for e in prof.events() if e.name.startswith("aten::") and top(e)
    )


@pytest.mark.parametrize("n_step", [1, 3])
def test_writing_and_sampling_take_the_same_ops_for_1_and_16_games(n_step: int) -> None:
    """A vector step's writes, and a batch, cost a number of tensor ops that does not grow with
    the number of games (each op is at least one launch or copy on a GPU)."""
    counts = {}
    for n in (1, 16):
        memory = ReplayMemory(
            capacity=n * 100, frame_shape=(4, 4), num_games=n, seed=0, n_step=n_step
        )
        memory.start(np.zeros((n, 4, 4), np.uint8))
        rng = np.random.default_rng(0)

        def step(memory: ReplayMemory = memory, n: int = n, rng: np.random.Generator = rng) -> None:
            ended = rng.random(n) < 0.2
            memory.add_step(
                rng.integers(4, size=n),
                rng.random(n),
                ended & (rng.random(n) < 0.5),  # some terminal, some truncated
                ended,
                rng.integers(0, 255, (n, 4, 4), dtype=np.uint8),
                rng.integers(0, 255, (n, 4, 4), dtype=np.uint8),
            )

        for _ in range(150):  # past the wrap-around of every ring
            step()
        memory.prepare_sample(32)
        counts[n] = (_ops(step), _ops(lambda m=memory: m.gather(m.sample_slots(32))))
    assert counts[1] == counts[16]
    write_ops, sample_ops = counts[16]
    # Measured (torch 2.13 on the CPU): 22 ops for the writes. Sampling's 37 include a flatten
    # (a view: no launch) that lets the frame gather be an index_select, 8x faster than advanced
    # indexing of uint8 on the CPU, the int64 widening of its indices, and the product that
    # puts gamma into the discount. Each further step of an n-step return adds 13: the next
    # slot and its widening to int64 (indexing with int32 would convert inside each of the
    # three lookups that follow), its flag, reward and discount, the test whether the chain
    # goes on (2), two products, a sum, and three selects.
    assert sum(write_ops.values()) <= 22, counts[16]
    assert sum(sample_ops.values()) <= 37 + 13 * (n_step - 1), counts[16]


@pytest.mark.slow
def test_sampling_and_the_n_step_gather_compile_as_one_graph() -> None:
    """The update compiles sample_slots + gather with fullgraph=True (static shapes, no host
    sync, no graph break); compiled, they give the eager batch for the same uniforms."""
    events = _play(["Breakout"], 900, seed=0, terminal_on_life_loss=True, max_episode_frames=400)
    memory = ReplayMemory(capacity=200, seed=1, n_step=3)
    _fill(memory, events)
    torch._dynamo.reset()
    compiled = torch.compile(lambda: memory.gather(memory.sample_slots(64)), fullgraph=True)
    (counter,) = memory.sampling_state()
    for _ in range(3):
        memory.prepare_sample(64)
        before = counter.clone()
        eager = memory.gather(memory.sample_slots(64))
        counter.copy_(before)  # the same uniforms again
        for name, a, b in zip(Batch._fields, eager, compiled(), strict=True):
            assert torch.equal(a, b), name


def _filled_memory(n_step: int = 1) -> tuple[ReplayMemory, list[dict]]:
    events = _play(["Breakout", "Pong"], 260, seed=1, max_episode_frames=500)
    memory = ReplayMemory(capacity=2 * 200, num_games=2, seed=3, n_step=n_step)
    _fill(memory, events[:200])
    memory.sample(32)
    return memory, events


@pytest.mark.parametrize("n_step", [1, 3])
def test_save_and_load_continue_exactly(tmp_path: Path, n_step: int) -> None:
    """n-step returns are built from the single steps when sampling: nothing else is saved."""
    memory, events = _filled_memory(n_step)
    memory.save(tmp_path / "saved")
    # The seed is restored too.
    restored = ReplayMemory(capacity=2 * 200, num_games=2, seed=99, n_step=n_step)
    restored.load(tmp_path / "saved")
    # Both continue with the same writes and give the same samples.
    for e in events[200:]:
        for copy in (memory, restored):
            copy.add_step(
                e["actions"],
                e["rewards"],
                e["terminals"],
                e["ends"],
                np.stack([o[-1] for o in e["obs_t"]]),
                np.stack([o[-1] for o in e["next_obs"]]),
            )
        for x, y in zip(memory.sample(16), restored.sample(16), strict=True):
            assert torch.equal(x, y)
    assert memory.sampleable_slots().tolist() == restored.sampleable_slots().tolist()


# Written by dqn_atari/replay.py of commit 33ab06e (before replay became a package) from
# `_format2_writes` into ReplayMemory(**_FORMAT2_MEMORY).
FORMAT2_SAVED = Path(__file__).parent / "data" / "replay_format2"
_FORMAT2_MEMORY = {"capacity": 2 * 16, "frame_shape": (4, 4), "num_games": 2, "seed": 7}


def _format2_writes(memory: ReplayMemory, steps: int, seed: int = 20) -> None:
    """Random frames, terminals and truncations, past the wrap-around of both 16-slot rings."""
    rng = np.random.default_rng(seed)
    if seed == 20:
        memory.start(rng.integers(0, 256, (2, 4, 4), dtype=np.uint8))
    for _ in range(steps):
        ended = rng.random(2) < 0.15
        memory.add_step(
            rng.integers(4, size=2),
            rng.normal(size=2),
            ended & (rng.random(2) < 0.5),
            ended,
            rng.integers(0, 256, (2, 4, 4), dtype=np.uint8),
            rng.integers(0, 256, (2, 4, 4), dtype=np.uint8),
        )
        memory.sample(8)


def test_a_memory_saved_before_the_split_loads_and_continues_the_same(tmp_path: Path) -> None:
    """The on-disk format did not change: a memory saved by the single-module replay.py loads,
    holds what a memory given the same writes holds now, saves the same files, and continues
    with identical samples."""
    now = ReplayMemory(**_FORMAT2_MEMORY)
    _format2_writes(now, 40)
    loaded = ReplayMemory(**{**_FORMAT2_MEMORY, "seed": 0})
    loaded.load(FORMAT2_SAVED)
    assert loaded.sampleable_slots().tolist() == now.sampleable_slots().tolist()
    now.save(tmp_path / "now")
    ours = torch.load(tmp_path / "now" / "meta.pt", weights_only=True)
    theirs = torch.load(FORMAT2_SAVED / "meta.pt", weights_only=True)
    # Terminals, truncations (an end slot each: more frames than steps) and both rings wrapped.
    assert 0.0 in theirs["discounts"].tolist() and (theirs["written"] > 41).all()
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        tensor = isinstance(value, torch.Tensor)
        assert torch.equal(ours[key], value) if tensor else ours[key] == value, key
    frames = (tmp_path / "now" / "frames.u8").read_bytes()
    assert frames == (FORMAT2_SAVED / "frames.u8").read_bytes()
    for memory in (now, loaded):
        _format2_writes(memory, 10, seed=21)
    for _ in range(5):
        for x, y in zip(now.sample(16), loaded.sample(16), strict=True):
            assert torch.equal(x, y)


def _damage(directory: Path, how: str) -> None:
    meta, frames = directory / "meta.pt", directory / "frames.u8"
    if how == "garbage meta":
        meta.write_bytes(b"\x00garbage" * 100)
    elif how == "no meta":
        meta.unlink()
    elif how == "no frames":
        frames.unlink()
    elif how == "short frames":
        frames.write_bytes(frames.read_bytes()[:-7056])
    elif how == "empty meta":
        torch.save({}, meta)
    elif how == "old format":
        torch.save({"format": 1}, meta)
    else:
        state = torch.load(meta, weights_only=True)
        if how == "wrong shape":
            state["rewards"] = state["rewards"][:-1]
        elif how == "indices outside":
            state["stacks"][0, 0] = 10**6
        elif how == "other size":
            state["ring_capacity"] = 300
        torch.save(state, meta)


@pytest.mark.parametrize(
    "how",
    [
        "garbage meta",
        "no meta",
        "no frames",
        "short frames",
        "empty meta",
        "old format",
        "wrong shape",
        "indices outside",
        "other size",
    ],
)
def test_every_damaged_save_is_a_one_line_error(tmp_path: Path, how: str) -> None:
    memory, _ = _filled_memory()
    memory.save(tmp_path / "saved")
    _damage(tmp_path / "saved", how)
    with pytest.raises(ReplayMemoryError) as err:
        ReplayMemory(capacity=2 * 200, num_games=2).load(tmp_path / "saved")
    assert "\n" not in str(err.value) and str(tmp_path / "saved") in str(err.value)
