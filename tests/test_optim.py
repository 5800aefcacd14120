"""The optimizers: DeepMind's centered RMSProp against its formula computed by hand, Adam
against torch.optim's, both on state that stays in the same tensors."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from dqn_atari.config import AlgoConfig
from dqn_atari.learner import clip_grad_norm_
from dqn_atari.optim import Adam, CenteredRMSProp, OptimizerStateError, make_optimizer


def _params() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(5, 3, generator=g), torch.randn(7, generator=g)]


def _normal_gradients(step: int, ours: list, generator: torch.Generator) -> list:
    return [torch.randn(p.shape, generator=generator) for p in ours]


def _run(
    mine,
    reference: torch.optim.Optimizer,
    ours: list,
    theirs: list,
    steps: int,
    gradients: Callable[[int, list, torch.Generator], list] = _normal_gradients,
) -> None:
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        grads = gradients(step, ours, g)
        mine.step_(ours, grads)
        for p, grad in zip(theirs, grads, strict=True):
            p.grad = grad.clone()
        reference.step()


def _deepmind_rmsprop(
    weights: list[float], gradients: list[list[float]], lr: float, decay: float, eps: float
) -> list[float]:
    """Centered RMSProp as DeepMind's DQN code writes it (Graves, 2013, eq. 38-41), weight by
    weight in float64: n = decay n + (1 - decay) g^2, m = decay m + (1 - decay) g,
    w -= lr g / sqrt(n - m^2 + eps), with eps inside the root."""
    weights = list(weights)
    n = [0.0] * len(weights)
    m = [0.0] * len(weights)
    for grads in gradients:
        for i, g in enumerate(grads):
            n[i] = decay * n[i] + (1 - decay) * g * g
            m[i] = decay * m[i] + (1 - decay) * g
            weights[i] -= lr * g / math.sqrt(n[i] - m[i] * m[i] + eps)
    return weights


def test_default_rmsprop_is_deepminds_first_step_by_hand() -> None:
    # One weight, gradient 1, the default AlgoConfig (Nature: lr 2.5e-4, decay 0.95, min squared
    # gradient 0.01 on gradients summed over 32 transitions = 0.01 / 32**2 on their mean):
    # n = 0.05, m = 0.05, n - m^2 = 0.0475, step = 2.5e-4 / sqrt(0.0475 + 9.765625e-6).
    weight = [torch.zeros(1)]
    make_optimizer(AlgoConfig(), weight).step_(weight, [torch.ones(1)])
    assert weight[0].item() == pytest.approx(-1.146961e-3, rel=1e-6)
    # torch.optim's form, eps 0.01 outside the root, would step 2.5e-4 / (0.217945 + 0.01).
    assert 2.5e-4 / (math.sqrt(0.0475) + 0.01) == pytest.approx(1.096756e-3, rel=1e-6)


def test_default_rmsprop_follows_deepminds_formula_across_gradient_scales() -> None:
    # Five batch-mean gradient sets from scale 1 down to 1e-4, then back up: eps (9.8e-6) is
    # negligible against the centered variance for the large ones and dominates for the small
    # ones, where torch.optim's form (eps 0.01 outside the root) steps up to ~3x less.
    algo = AlgoConfig()
    generator = torch.Generator().manual_seed(3)
    scales = [1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-3, 1.0, 1e-2]
    gradients = [torch.randn(6, generator=generator) * s for s in scales]
    # Weights start at 0 (the step does not depend on them), so float32 keeps every step's bits.
    ours = [torch.zeros(6)]
    optimizer = make_optimizer(algo, ours)
    for grads in gradients:
        optimizer.step_(ours, [grads])
    expected = _deepmind_rmsprop(
        [0.0] * 6,
        [g.double().tolist() for g in gradients],
        lr=algo.lr,
        decay=algo.rmsprop_alpha,
        eps=algo.rmsprop_eps,
    )
    assert torch.allclose(ours[0].double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5)
    assert algo.rmsprop_eps == 0.01 / 32**2


def test_adam_with_a_step_tensor_matches_torch_adam() -> None:
    ours = _params()
    theirs = [p.clone().requires_grad_() for p in ours]
    mine = Adam(ours, lr=1e-3, eps=1.5e-4)
    reference = torch.optim.Adam(theirs, lr=1e-3, eps=1.5e-4)
    _run(mine, reference, ours, theirs, steps=25)
    assert mine.step.item() == 25
    # The bias corrections are computed from a float32 step tensor rather than Python floats.
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a, b.detach(), rtol=1e-6, atol=1e-7)


def _dead_and_fading_gradients(step: int, ours: list, generator: torch.Generator) -> list:
    """For one tensor of 64 weights: 0 at every step for the first 32 (a dead ReLU unit), 1e-20
    at step 0 and 0 after for the next 16 (second moments in the subnormal range from the first
    step), and normal draws for the last 16."""
    grad = torch.zeros(64)
    if step == 0:
        grad[32:48] = 1e-20
    grad[48:] = torch.randn(16, generator=generator)
    return [grad]


def test_rmsprop_with_dead_and_fading_gradients_follows_the_formula() -> None:
    # Zero and subnormal second moments (dead ReLU units): eps inside the root keeps the step
    # finite and exactly DeepMind's; weights whose gradient is always 0 never move.
    start = torch.randn(64, generator=torch.Generator().manual_seed(0))
    ours = [start.clone()]
    mine = CenteredRMSProp(ours, lr=2.5e-4, alpha=0.95, eps=0.01 / 32**2)
    generator = torch.Generator().manual_seed(1)
    gradients = [_dead_and_fading_gradients(step, ours, generator)[0] for step in range(30)]
    for grad in gradients:
        mine.step_(ours, [grad])
    expected = _deepmind_rmsprop(
        start.double().tolist(),
        [g.double().tolist() for g in gradients],
        lr=2.5e-4,
        decay=0.95,
        eps=0.01 / 32**2,
    )
    assert torch.equal(ours[0][:32], start[:32])
    assert torch.allclose(ours[0].double(), torch.tensor(expected, dtype=torch.float64),
                          rtol=1e-6, atol=1e-9)  # fmt: skip
    assert torch.isfinite(ours[0]).all()


def test_adam_leaves_weights_with_zero_gradients_exactly_unchanged() -> None:
    start = torch.randn(64, generator=torch.Generator().manual_seed(0))
    ours = [start.clone()]
    theirs = [start.clone().requires_grad_()]
    mine = Adam(ours, lr=1e-3, eps=1.5e-4)
    reference = torch.optim.Adam(theirs, lr=1e-3, eps=1.5e-4)
    _run(mine, reference, ours, theirs, steps=30, gradients=_dead_and_fading_gradients)
    assert torch.equal(ours[0][:32], start[:32])
    # A gradient of 1e-20 once moves a weight by about lr (m / sqrt(v) is 1 at the first step).
    assert torch.allclose(ours[0], theirs[0].detach(), rtol=1e-6, atol=1e-7)


def _tensor_ids(state: dict) -> list[int]:
    ids = []
    for value in state.values():
        ids += [id(t) for t in (value if isinstance(value, list) else [value])]
    return ids


@pytest.mark.parametrize("name", ["rmsprop", "adam"])
def test_state_round_trip_keeps_the_same_tensors(name: str) -> None:
    params = _params()
    first = make_optimizer(AlgoConfig(optimizer=name, lr=1e-3), params)
    first.step_(params, [torch.ones_like(p) for p in params])
    second = make_optimizer(AlgoConfig(optimizer=name, lr=1e-3), _params())
    kept = _tensor_ids(second.state_dict())
    second.load_state_dict(first.state_dict())
    for key, value in first.state_dict().items():
        if isinstance(value, list):
            for a, b in zip(value, second.state_dict()[key], strict=True):
                assert torch.equal(a, b)
    # Loaded by copying: a captured CUDA graph keeps reading the same tensors.
    assert kept == _tensor_ids(second.state_dict())
    other = "adam" if name == "rmsprop" else "rmsprop"
    with pytest.raises(OptimizerStateError, match=r"algo\.optimizer"):
        make_optimizer(AlgoConfig(optimizer=other), _params()).load_state_dict(first.state_dict())
    with pytest.raises(OptimizerStateError, match="does not match"):
        make_optimizer(AlgoConfig(optimizer=name), [torch.zeros(2)]).load_state_dict(
            first.state_dict()
        )


def test_gradient_clipping_matches_torch() -> None:
    grads = [torch.full((3,), 3.0), torch.full((4,), 4.0)]  # global norm sqrt(27 + 64)
    params = [nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(4))]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    nn.utils.clip_grad_norm_(params, 2.0)
    clip_grad_norm_(grads, 2.0)
    for p, g in zip(params, grads, strict=True):
        assert torch.allclose(p.grad, g)
    small = [torch.full((2,), 0.1)]
    clip_grad_norm_(small, 2.0)
    assert torch.equal(small[0], torch.full((2,), 0.1))  # under the bound: unchanged
