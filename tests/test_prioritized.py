"""Proportional prioritized replay (Schaul et al., 2016) on the device: draws that follow the
priorities (chi-square) one per segment of the mass, importance-sampling weights and updated
priorities against values worked out by hand, new transitions at the running maximum, slots
that cannot start a transition never drawn (wrap-around, 2 games, n-step), the compiled update
against eager, saving and loading, and an exact resume of a real run."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_learner import EXAMPLE_OBS, TinyQ
from test_replay import _ops

from dqn_atari.config import AlgoConfig, ConfigError, TrainConfig, check_algo, resolve_settings
from dqn_atari.learner import Learner, prepare_update
from dqn_atari.loop import Schedule
from dqn_atari.optim import make_optimizer
from dqn_atari.replay import (
    Draw,
    Prioritization,
    PrioritizedSampler,
    ReplayMemory,
    ReplayMemoryError,
)
from dqn_atari.run import build_replay

ALPHA, EPS = 0.6, 1e-6  # the paper's alpha (section 4); AlgoConfig's eps


def _memory(
    capacity: int = 2 * 40,
    num_games: int = 2,
    seed: int = 0,
    batch: int = 32,
    beta_updates: int = 10,
    n_step: int = 1,
) -> ReplayMemory:
    return ReplayMemory(
        capacity,
        frame_shape=(2, 2),
        stack=2,
        seed=seed,
        num_games=num_games,
        max_batch_size=batch,
        n_step=n_step,
        prioritized=Prioritization(alpha=ALPHA, beta_start=0.4, eps=EPS, beta_updates=beta_updates),
    )


def _writes(memory: ReplayMemory, steps: int, rng: np.random.Generator) -> None:
    """Random frames, some games ending (half terminal, half truncated: an end slot each)."""
    n = memory.num_games
    if (memory.storage.pending < 0).all():
        memory.start(rng.integers(0, 256, (n, 2, 2), dtype=np.uint8))
    for _ in range(steps):
        ended = rng.random(n) < 0.1
        memory.add_step(
            rng.integers(4, size=n),
            rng.normal(size=n),
            ended & (rng.random(n) < 0.5),
            ended,
            rng.integers(0, 256, (n, 2, 2), dtype=np.uint8),
            rng.integers(0, 256, (n, 2, 2), dtype=np.uint8),
        )


def _sampler(memory: ReplayMemory) -> PrioritizedSampler:
    assert isinstance(memory.sampler, PrioritizedSampler)
    return memory.sampler


def _priorities(memory: ReplayMemory) -> np.ndarray:
    return _sampler(memory).priorities.cpu().numpy()


def _hand_priority(delta: float) -> float:
    return (abs(delta) + EPS) ** ALPHA


def _set_priorities(memory: ReplayMemory, deltas: np.ndarray) -> np.ndarray:
    """Every sampleable slot's priority from its |TD error| `deltas[k]`, through the update the
    learner makes; returns the slots."""
    slots = memory.sampleable_slots()
    memory.update_priorities(torch.from_numpy(slots), torch.from_numpy(deltas).float())
    return slots


# ---------------------------------------------------------------------------- drawing


def test_draws_follow_the_priorities() -> None:
    memory = _memory(capacity=2 * 80, seed=1)
    _writes(memory, 70, np.random.default_rng(0))  # no wrap-around: 70 steps in 80 slots
    valid = memory.sampleable_slots()
    deltas = 0.25 + np.arange(len(valid)) % 9 * 0.5  # |TD errors| 0.25 to 4.25
    _set_priorities(memory, deltas.astype(np.float32))
    weight = np.array([_hand_priority(float(np.float32(d))) for d in deltas])
    expected_share = weight / weight.sum()
    counts = collections.Counter()
    batches = 1000
    for _ in range(batches):
        memory.prepare_sample(32)
        counts.update(memory.sample_slots(32).tolist())
    draws = 32 * batches
    assert set(counts) <= set(valid.tolist())
    observed = np.array([counts[s] for s in valid])
    expected = draws * expected_share
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    # The two games hold 140 transitions here (70 steps each), so 139 degrees of freedom: the
    # 0.1% tail of the chi-square distribution starts at 196.3 (scipy.stats.chi2.ppf(0.999,
    # 139)). Stratified draws vary less than independent ones
    # (within a batch each segment gets exactly one), so the bound is conservative.
    assert len(valid) == 140, len(valid)
    assert chi2 < 196.3, chi2
    # The same counts reject uniform sampling outright: the test can tell the two apart.
    uniform = draws / len(valid)
    assert float(((observed - uniform) ** 2 / uniform).sum()) > 10 * 196.3


def test_each_draw_of_a_batch_lies_in_its_own_segment_of_the_mass() -> None:
    """Rank k of B is (k + u_k) / B of the total (the paper's stratified sampling); its slot is
    found by hand from the very uniforms the draw reads, with numpy's cumulative sum."""
    memory = _memory(capacity=2 * 200, batch=64)
    rng = np.random.default_rng(3)
    _writes(memory, 150, rng)
    valid = memory.sampleable_slots()
    _set_priorities(memory, rng.exponential(size=len(valid)).astype(np.float32))
    sampler = _sampler(memory)
    for _ in range(3):
        memory.prepare_sample(64)
        counter = int(sampler.uniforms.counter)
        ring = sampler.uniforms.ring.numpy()
        u = ring[(counter + np.arange(64)) % len(ring)]
        slots = memory.sample_slots(64).numpy()
        cumulative = np.cumsum(_priorities(memory))
        total = cumulative[-1]
        rank = (np.arange(64) + u) * total / 64
        assert slots.tolist() == np.searchsorted(cumulative, rank, side="right").tolist()
        # Each draw in its own segment: the slot's mass overlaps [k/B, (k+1)/B) of the total.
        before = np.where(slots > 0, cumulative[slots - 1], 0.0)
        assert (cumulative[slots] > np.arange(64) * total / 64).all()
        assert (before < (np.arange(64) + 1) * total / 64).all()
        assert (np.diff(slots) >= 0).all()


def test_importance_sampling_weights_are_the_papers_worked_out_by_hand() -> None:
    """w_i = (N P(i))^-beta / max_j w_j over the batch (section 3.4), beta rising linearly from
    0.4 to 1 over beta_updates = 10 batches, then held at 1."""
    memory = _memory(batch=16, beta_updates=10)
    rng = np.random.default_rng(5)
    _writes(memory, 30, rng)
    valid = memory.sampleable_slots()
    deltas = rng.uniform(0, 3, size=len(valid)).astype(np.float32)
    _set_priorities(memory, deltas)
    by_slot = {s: _hand_priority(float(d)) for s, d in zip(valid.tolist(), deltas, strict=True)}
    total, n = sum(by_slot.values()), len(valid)
    for k in range(13):
        memory.prepare_sample(16)
        drawn = memory.draw(16)
        assert drawn.weights is not None and drawn.weights.dtype == torch.float32
        beta = min(0.4 + 0.6 * k / 10, 1.0)
        w = [(n * by_slot[s] / total) ** -beta for s in drawn.slots.tolist()]
        expected = [x / max(w) for x in w]
        assert drawn.weights.tolist() == pytest.approx(expected, rel=1e-6), k
    assert max(drawn.weights.tolist()) == 1.0


def test_uniform_draws_carry_no_weights() -> None:
    memory = ReplayMemory(capacity=2 * 40, frame_shape=(2, 2), stack=2, num_games=2)
    _writes(memory, 20, np.random.default_rng(0))
    memory.prepare_sample(8)
    drawn = memory.draw(8)
    assert drawn.weights is None and drawn.slots.dtype == torch.int64
    with pytest.raises(ReplayMemoryError, match="uniformly"):
        memory.update_priorities(drawn.slots, torch.ones(8))


# ---------------------------------------------------------------------------- priorities


def test_updated_priorities_read_back_as_worked_out_by_hand() -> None:
    memory = _memory()
    _writes(memory, 30, np.random.default_rng(1))
    a, b, c = memory.sampleable_slots()[[0, 5, -1]].tolist()
    assert a // 64 == 0 and c // 64 == 1  # blocks of 64 slots: two blocks touched
    # Slot b drawn twice in the batch: it keeps the larger of its two new priorities.
    slots = torch.tensor([a, b, c, b])
    memory.update_priorities(slots, torch.tensor([0.5, 3.0, 0.0, 2.0]))  # the larger first
    p = _priorities(memory)
    assert p[a] == pytest.approx((0.5 + 1e-6) ** 0.6, rel=1e-12)
    assert p[b] == pytest.approx((3.0 + 1e-6) ** 0.6, rel=1e-12)
    assert p[c] == pytest.approx(1e-6**0.6, rel=1e-12)  # 2.5e-4: a zero error stays drawable
    # The other sampleable slots keep the priority they entered with (the initial maximum, 1).
    others = np.setdiff1d(memory.sampleable_slots(), [a, b, c])
    assert (p[others] == 1.0).all()
    # The blocks' sums are their slots' sums, and the running maximum is the largest priority.
    sampler = _sampler(memory)
    layout = sampler.layout
    sums = p.reshape(layout.num_blocks, layout.block_size).sum(1)
    assert np.allclose(sampler.block_sums.numpy(), sums, rtol=1e-12)
    assert float(sampler.max_priority) == pytest.approx(3.000001**0.6, rel=1e-12)


def test_new_transitions_enter_at_the_running_maximum_and_it_never_falls() -> None:
    memory = _memory(capacity=2 * 40)
    rng = np.random.default_rng(2)
    _writes(memory, 20, rng)
    old = memory.sampleable_slots()
    memory.update_priorities(torch.from_numpy(old[:2]), torch.tensor([4.0, 0.25]))
    top = (4.0 + 1e-6) ** 0.6
    memory.update_priorities(torch.from_numpy(old[2:3]), torch.tensor([0.1]))  # a lower one
    assert float(_sampler(memory).max_priority) == pytest.approx(top, rel=1e-12)
    before = _priorities(memory).copy()
    _writes(memory, 5, rng)  # no wrap yet: 25 of 40 slots
    p = _priorities(memory)
    new = np.setdiff1d(memory.sampleable_slots(), old)
    assert len(new) == 10  # each vector step completes a transition of each game
    assert (p[new] == float(_sampler(memory).max_priority)).all()
    assert (p[old] == before[old]).all()


def test_slots_that_cannot_start_a_transition_have_priority_0_and_are_never_drawn() -> None:
    """Two games, each ring wrapped many times, terminals and truncations (end slots), 3-step
    returns: after every vector step the slots with a priority are exactly the sampleable ones,
    the blocks' sums are their slots', and every draw is sampleable."""
    memory = _memory(capacity=2 * 30, n_step=3)
    rng = np.random.default_rng(4)
    _writes(memory, 10, rng)
    layout = _sampler(memory).layout
    for _ in range(200):  # 200 steps in rings of 30
        _writes(memory, 1, rng)
        memory.prepare_sample(32)
        drawn = memory.draw(32)
        valid = memory.storage.valid_host
        assert valid[drawn.slots.numpy()].all()
        assert drawn.weights is not None and (drawn.weights > 0).all()
        memory.update_priorities(drawn.slots, torch.from_numpy(rng.exponential(size=32)).float())
        p = _priorities(memory)
        assert ((p > 0) == valid).all()
        sums = p.reshape(layout.num_blocks, layout.block_size).sum(1)
        assert np.allclose(_sampler(memory).block_sums.numpy(), sums, rtol=1e-12)
    assert int(memory.storage.written.min()) > 3 * 30  # wrapped around more than 3 times


def test_writing_drawing_and_updating_take_the_same_ops_for_1_and_16_games() -> None:
    """Like the uniform sampler's (test_replay.py): a vector step's writes, a draw and a priority
    update cost a number of tensor ops that does not grow with the number of games."""
    counts = {}
    for n in (1, 16):
        memory = _memory(capacity=n * 40, num_games=n)
        rng = np.random.default_rng(0)
        _writes(memory, 60, rng)
        memory.prepare_sample(32)
        drawn = memory.draw(32)
        ones = torch.ones(32)
        counts[n] = (
            _ops(lambda m=memory, r=rng: _writes(m, 1, r)),
            _ops(lambda m=memory: m.draw(32)),
            _ops(lambda m=memory, d=drawn, o=ones: m.update_priorities(d.slots, o)),
        )
    assert counts[1] == counts[16]
    write_ops, draw_ops, update_ops = (sum(ops.values()) for ops in counts[16])
    # Measured (torch 2.13 on the CPU), against the uniform sampler's 22 for the writes and 23
    # for the draw: the writes' priorities add 5 (the new slots' values, their copy, and the
    # touched blocks' gather, sum and copy); the draw adds 9 (the stratified ranks, the block
    # clamp, the slot clamp, the drawn priorities, their minimum and the weights); the update
    # is 14 (the new priorities, the guard of slots at 0, the scatter, the blocks' refresh and
    # the maximum with its copy). prepare() adds one more outside the update: beta's fill.
    assert write_ops <= 22 + 5, counts[16][0]
    assert draw_ops <= 23 + 9, counts[16][1]
    assert update_ops <= 14, counts[16][2]


# ---------------------------------------------------------------------------- configuration


def test_the_run_anneals_beta_over_its_updates_and_continues_from_a_resumes() -> None:
    config = TrainConfig(total_steps=1000, learning_starts=300, buffer_size=100, num_envs=1)
    config.algo.prioritized = True
    config.env.screen_size = 8
    schedule = Schedule.of(config)
    updates = sum(schedule.learns_at(t, config.learning_starts) for t in range(1, 1001))
    assert updates == 1000 // 4 - 300 // 4 == 175
    run_settings = resolve_settings(config, torch.device("cpu"))
    memory = build_replay(config, run_settings, updates_before=40)
    settings = _sampler(memory).settings
    assert (settings.alpha, settings.beta_start, settings.eps) == (0.6, 0.4, 1e-6)
    assert settings.beta_updates == 175
    assert _sampler(memory).batches_drawn == 40
    assert _sampler(memory).beta_at(40) == pytest.approx(0.4 + 0.6 * 40 / 175)
    config.algo.prioritized = False
    assert not build_replay(config, run_settings).prioritized


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("priority_alpha", 1.5, r"algo.priority_alpha must be in \[0, 1\], got 1.5"),
        ("priority_beta_start", -0.1, r"algo.priority_beta_start must be in \[0, 1\], got -0.1"),
        ("priority_eps", 0.0, r"algo.priority_eps must be a finite number > 0, got 0.0 \(a"),
    ],
)
def test_priority_settings_out_of_range_are_one_line_errors(
    key: str, value: float, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        check_algo(AlgoConfig(prioritized=True, **{key: value}))
    assert "\n" not in str(err.value)


def test_a_learner_refuses_a_memory_sampled_the_other_way() -> None:
    net = TinyQ()
    algo = AlgoConfig(prioritized=True)
    uniform = ReplayMemory(capacity=40, frame_shape=(1, 5), stack=2)
    with pytest.raises(ValueError, match="prioritized is False, the algorithm's True"):
        Learner(net, make_optimizer(algo, list(net.parameters())), algo, replay=uniform)


# ---------------------------------------------------------------------------- the update


def _tiny_learner(compile: bool, device: str = "cpu", graph: bool = False) -> Learner:
    """test_learner's tiny learner, its memory prioritized."""
    replay = ReplayMemory(
        capacity=200,
        frame_shape=(1, 5),
        stack=2,
        device=device,
        seed=0,
        max_batch_size=8,
        prioritized=Prioritization(beta_updates=4),
    )
    rng = np.random.default_rng(0)
    replay.start(rng.integers(0, 256, (1, 1, 5), dtype=np.uint8))
    no = np.zeros(1, np.bool_)
    for _ in range(60):
        frame = rng.integers(0, 256, (1, 1, 5), dtype=np.uint8)
        replay.add_step(rng.integers(3, size=1), rng.normal(size=1), no, no, frame, frame)
    torch.manual_seed(0)
    net = TinyQ().to(device)
    algo = AlgoConfig(optimizer="adam", lr=1e-2, prioritized=True)
    return Learner(
        net,
        make_optimizer(algo, list(net.parameters())),
        algo,
        replay=replay,
        batch_size=8,
        device=torch.device(device),
        compile=compile,
        cuda_graph=graph,
    )


def _updates(learner: Learner, count: int) -> tuple[list[float], list[torch.Tensor]]:
    losses = []
    for _ in range(count):
        learner.update()
        means = learner.take_means()
        assert means is not None
        losses.append(means[0].item())
    return losses, [t.detach().cpu().clone() for t in learner.replay.sampling_state()]


def test_the_update_weights_the_loss_and_sets_the_batchs_priorities() -> None:
    """One eager update by hand: the loss is mean(w * huber), and the drawn slots' priorities
    become (|TD error| + eps)^alpha of the TD errors of the weights before the step."""
    learner = _tiny_learner(compile=False)
    replay = learner.replay
    assert isinstance(replay, ReplayMemory)
    rng = np.random.default_rng(8)
    _set_priorities(replay, rng.exponential(size=len(replay)).astype(np.float32))
    state = [t.clone() for t in replay.sampling_state()]
    replay.prepare_sample(8)
    drawn = replay.draw(8)
    assert drawn.weights is not None and drawn.weights.min() < 0.9  # not the plain mean
    batch = replay.gather(drawn.slots)
    torch._foreach_copy_(replay.sampling_state(), state)  # the update draws the same batch
    with torch.no_grad():
        q = learner.online(batch.obs_tm1).q_values.gather(1, batch.action_tm1[:, None])[:, 0]
        target = batch.reward_t + batch.discount_t * learner.target(batch.obs_t).q_values.amax(1)
    delta = (target - q).double()
    huber = torch.where(delta.abs() <= 1, 0.5 * delta**2, delta.abs() - 0.5)
    expected_loss = float((drawn.weights.double() * huber).mean())
    learner._step()  # the update, without a second prepare (its uniforms are on the device)
    assert float(learner.loss_sum) == pytest.approx(expected_loss, rel=1e-5)
    p = _priorities(replay)
    last = {s: i for i, s in enumerate(drawn.slots.tolist())}  # duplicates: the same error
    for s, i in last.items():
        assert p[s] == pytest.approx((abs(float(delta[i])) + 1e-6) ** 0.6, rel=1e-5), s


@pytest.mark.slow
def test_the_compiled_update_with_prioritized_replay_matches_eager_and_compiles_once() -> None:
    from torch._dynamo.utils import counters

    eager_losses, eager_state = _updates(_tiny_learner(compile=False), 6)
    torch._dynamo.reset()
    counters.clear()
    compiled = _tiny_learner(compile=True)
    # Compiling at start-up (the dry run) changes no priority, sum, maximum or count.
    before = [t.clone() for t in compiled.replay.sampling_state()]
    assert prepare_update(compiled, EXAMPLE_OBS, compile_auto=False, cuda_graph_auto=False) == []
    for a, b in zip(compiled.replay.sampling_state(), before, strict=True):
        assert torch.equal(a, b)
    assert counters["stats"]["unique_graphs"] == 2  # the update and the act forward
    compiled_losses, compiled_state = _updates(compiled, 6)
    assert counters["stats"]["unique_graphs"] == 2  # never again: beta changes nothing traced
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-5)
    counter, priorities, sums, top = compiled_state
    assert torch.equal(counter, eager_state[0])
    assert isinstance(compiled.replay, ReplayMemory)
    assert _sampler(compiled.replay).batches_drawn == 6
    assert torch.allclose(priorities, eager_state[1], rtol=1e-5)
    assert torch.allclose(sums, eager_state[2], rtol=1e-5)
    assert torch.allclose(top, eager_state[3], rtol=1e-5)
    assert ((priorities > 0) == compiled.replay.storage.valid).all()


@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.is_available() is False"
)
@pytest.mark.parametrize("compile", [False, True])
def test_the_prioritized_update_as_one_cuda_graph_matches_the_cpu(compile: bool) -> None:
    """On CUDA the draw, the weighted loss and the priority update replay inside the update's
    CUDA graph (3 warm-up calls, then the capture replayed): the CPU's losses and priorities,
    the slots of priority 0 exactly the unsampleable ones."""
    cpu_losses, cpu_state = _updates(_tiny_learner(compile=False), 8)
    graphed = _tiny_learner(compile=compile, device="cuda", graph=True)
    losses, state = _updates(graphed, 8)
    assert graphed._step.graph is not None
    assert losses == pytest.approx(cpu_losses, rel=1e-4)
    assert torch.equal(state[0], cpu_state[0])  # the same uniforms read
    for a, b in zip(state[1:], cpu_state[1:], strict=True):
        assert torch.allclose(a, b, rtol=1e-4)
    assert isinstance(graphed.replay, ReplayMemory)
    assert ((state[1] > 0) == graphed.replay.storage.valid.cpu()).all()


# ---------------------------------------------------------------------------- saving


def _continue(memory: ReplayMemory, steps: int = 20) -> list[Draw]:
    """Writes, draws and priority updates from a fixed seed; the draws."""
    rng = np.random.default_rng(7)
    draws = []
    for _ in range(steps):
        _writes(memory, 1, rng)
        memory.prepare_sample(32)
        drawn = memory.draw(32)
        memory.update_priorities(drawn.slots, torch.from_numpy(rng.exponential(size=32)).float())
        draws.append(drawn)
    return draws


def test_save_and_load_restore_priorities_and_the_maximum(tmp_path: Path) -> None:
    memory = _memory(capacity=2 * 40, seed=3)
    rng = np.random.default_rng(6)
    _writes(memory, 60, rng)  # wrapped
    for _ in range(5):
        memory.prepare_sample(32)
        drawn = memory.draw(32)
        memory.update_priorities(drawn.slots, torch.from_numpy(rng.exponential(size=32)).float())
    memory.save(tmp_path / "saved")
    restored = _memory(capacity=2 * 40, seed=99)
    restored.load(tmp_path / "saved")
    for a, b in zip(memory.sampling_state(), restored.sampling_state(), strict=True):
        assert torch.equal(a, b)
    # Both continue with the same writes, draws, weights and priority updates.
    for a, b in zip(_continue(memory), _continue(restored), strict=True):
        assert torch.equal(a.slots, b.slots)
        assert a.weights is not None and b.weights is not None
        assert torch.equal(a.weights, b.weights)
    for a, b in zip(memory.sampling_state(), restored.sampling_state(), strict=True):
        assert torch.equal(a, b)


def test_a_memory_sampled_the_other_way_or_damaged_priorities_are_one_line_errors(
    tmp_path: Path,
) -> None:
    memory = _memory(capacity=2 * 40)
    _writes(memory, 30, np.random.default_rng(0))
    memory.save(tmp_path / "prioritized")
    uniform = ReplayMemory(capacity=2 * 40, frame_shape=(2, 2), stack=2, num_games=2)
    _writes(uniform, 30, np.random.default_rng(0))
    uniform.save(tmp_path / "uniform")
    with pytest.raises(ReplayMemoryError, match="was sampled by priority, this one is not"):
        ReplayMemory(capacity=2 * 40, frame_shape=(2, 2), stack=2, num_games=2).load(
            tmp_path / "prioritized"
        )
    with pytest.raises(ReplayMemoryError, match="was sampled uniformly, this one is not"):
        _memory(capacity=2 * 40).load(tmp_path / "uniform")
    meta = tmp_path / "prioritized" / "meta.pt"
    saved = torch.load(meta, weights_only=True)
    invalid = int(np.flatnonzero(~saved["sampleable"].numpy())[0])
    for damage, reason in [
        ({"priorities": saved["priorities"].float()}, "'priorities' is not torch.float64"),
        ({"max_priority": -saved["max_priority"]}, "'max_priority' holds a negative"),
        ({"block_sums": saved["block_sums"] * 2}, "'block_sums' are not the sums"),
        (
            {"priorities": saved["priorities"].index_fill(0, torch.tensor([invalid]), 1.0)},
            "a slot that cannot be sampled has a priority",
        ),
    ]:
        torch.save({**saved, **damage}, meta)
        with pytest.raises(ReplayMemoryError, match=reason) as err:
            _memory(capacity=2 * 40).load(tmp_path / "prioritized")
        assert "\n" not in str(err.value) and "is corrupt" in str(err.value)


# ---------------------------------------------------------------------------- a real run

PROGRESS = re.compile(r"([\d,]+)/[\d,]+ steps \|")
# `python -m dqn_atari` with this checkout first on PYTHONPATH (as tests/test_cuda.py runs it):
# the run is this checkout's whatever console script is installed.
TRAIN = [sys.executable, "-m", "dqn_atari"]
CHECKOUT_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    ),
}


def _train(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRAIN, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=CHECKOUT_ENV
    )


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["algo.prioritized=true", "algo=rainbow"])
def test_a_prioritized_run_stopped_by_sigterm_resumes_to_the_same_losses(
    algo: str, tmp_path: Path
) -> None:
    """test_faults.py's exact resume, with prioritized replay, and with Rainbow (noisy nets
    drawing from torch's generator, 3-step returns, C51, dueling): the run stopped by SIGTERM
    after its priorities have moved, resumed from its saved memory, ends with the weights,
    losses, returns and evaluations of the straight run."""
    from test_faults import RUN, assert_same_training, latest

    args = [*RUN, algo, "total_steps=1000"]
    straight = _train(*args, f"hydra.run.dir={tmp_path / 'straight'}", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    run_dir = tmp_path / "stopped"
    proc = subprocess.Popen(
        [*TRAIN, *args, "progress_interval_s=0", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env=CHECKOUT_ENV,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        match = PROGRESS.search(line)
        if match and int(match.group(1).replace(",", "")) >= 500:  # 50 updates made
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == 128 + signal.SIGTERM, rest[-3000:]
    stopped_at = latest(run_dir)["counters"]["step"]
    assert 500 <= stopped_at < 1000, stopped_at
    resumed = _train(f"resume={run_dir}", "total_steps=1000", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "with its replay memory" in resumed.stderr
    assert_same_training(tmp_path / "straight", run_dir)
