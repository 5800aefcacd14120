"""bf16 autocast and torch.compile give the fp32 eager results within stated tolerances."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from dqn_atari.config import AlgoConfig
from dqn_atari.learner import Learner
from dqn_atari.networks import NatureQNetwork, bf16_supported, q_function
from dqn_atari.optim import make_optimizer
from dqn_atari.replay import Batch, ReplayMemory

CPU = torch.device("cpu")


def _fixed_batch() -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(
        obs_tm1=torch.randint(0, 256, (32, 4, 84, 84), dtype=torch.uint8, generator=g),
        action_tm1=torch.randint(0, 6, (32,), generator=g),
        reward_t=torch.randn(32, generator=g),
        discount_t=(torch.rand(32, generator=g) > 0.1).float(),
        obs_t=torch.randint(0, 256, (32, 4, 84, 84), dtype=torch.uint8, generator=g),
    )


def _networks() -> tuple[NatureQNetwork, NatureQNetwork]:
    torch.manual_seed(0)
    online = NatureQNetwork(6)
    target = copy.deepcopy(online)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return online, target


def _learner(online: NatureQNetwork, precision: str = "fp32", compiled: bool = False) -> Learner:
    algo = AlgoConfig(optimizer="adam", max_grad_norm=10.0)
    return Learner(
        online,
        make_optimizer(algo, list(online.parameters())),
        algo,
        replay=_filled_replay(seed=4),
        batch_size=32,
        device=CPU,
        precision=precision,
        compile=compiled,
    )


def _first_loss(learner: Learner) -> float:
    """The loss of one update, which is the loss of the weights it starts from."""
    learner.update()
    means = learner.take_means()
    assert means is not None
    return means[0].item()


@pytest.mark.skipif(not bf16_supported(CPU), reason="this CPU has no native bf16")
@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_bf16_matches_fp32_within_two_percent_of_the_q_scale(compiled: bool) -> None:
    online, target = _networks()
    batch = _fixed_batch()
    q32 = q_function(online, CPU)(batch.obs_tm1)
    q16 = q_function(online, CPU, "bf16")(batch.obs_tm1)  # the update's forward
    assert q16.dtype == torch.float32  # TD targets are computed in full precision
    # bf16 keeps 8 bits of mantissa: about 0.4% per operation, under 2% after five layers.
    assert (q16 - q32).abs().max() <= 0.02 * q32.abs().max()
    fp32 = _learner(copy.deepcopy(online))
    bf16 = _learner(online, "bf16", compiled)
    for learner in (fp32, bf16):
        learner.target.load_state_dict(target.state_dict())
    if not compiled:  # acting stays fp32 whatever the update's precision
        assert torch.equal(bf16.q_online(batch.obs_tm1), q32)
    # The same batch (same replay, same seed) from the same weights.
    f32, b16 = _first_loss(fp32), _first_loss(bf16)
    assert b16 == pytest.approx(f32, rel=1e-2)
    assert b16 != f32  # the update really ran in bf16


@pytest.mark.slow
def test_the_compiled_act_forward_matches_eager_fp32() -> None:
    online, _ = _networks()
    batch = _fixed_batch()
    eager = _learner(copy.deepcopy(online)).q_online(batch.obs_tm1)
    compiled = _learner(online, compiled=True).q_online(batch.obs_tm1)
    assert torch.allclose(compiled, eager, rtol=1e-4, atol=1e-6)


def test_unknown_precision_is_refused() -> None:
    online, _ = _networks()
    with pytest.raises(ValueError, match="precision"):
        q_function(online, CPU, "fp8")


def _filled_replay(seed: int) -> ReplayMemory:
    """A memory of 2 games written with random frames, some episodes ending."""
    replay = ReplayMemory(capacity=2 * 300, num_games=2, seed=seed)
    rng = np.random.default_rng(seed)
    replay.start(rng.integers(0, 256, (2, 84, 84), dtype=np.uint8))
    for _ in range(200):
        ended = rng.random(2) < 0.05
        replay.add_step(
            rng.integers(6, size=2),
            rng.normal(size=2),
            ended & (rng.random(2) < 0.5),
            ended,
            rng.integers(0, 256, (2, 84, 84), dtype=np.uint8),
            rng.integers(0, 256, (2, 84, 84), dtype=np.uint8),
        )
    return replay


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_the_whole_update_compiles_as_one_graph_and_matches_eager(optimizer: str) -> None:
    """Sampling, the stack gather, the TD loss with both networks, the gradients, the optimizer
    step and the running sums compile as one graph (fullgraph=True raises on any graph break),
    and five updates with a target sync in between match eager fp32 within 1e-4."""
    results = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        online, _ = _networks()
        algo = AlgoConfig(optimizer=optimizer, max_grad_norm=10.0)
        learner = Learner(
            online,
            make_optimizer(algo, list(online.parameters())),
            algo,
            replay=_filled_replay(seed=4),
            batch_size=32,
            device=CPU,
            compile=compiled,
        )
        for i in range(5):
            learner.update()
            if i == 2:
                learner.sync_target()
        means = learner.take_means()
        assert means is not None
        results[compiled] = (
            [m.item() for m in means],
            [p.detach().clone() for p in online.parameters()],
        )
    (means_e, w_e), (means_c, w_c) = results[False], results[True]
    assert means_c == pytest.approx(means_e, rel=1e-4)
    for a, b in zip(w_c, w_e, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
