"""The optimizers do torch.optim's arithmetic, on state that stays in the same tensors."""

from __future__ import annotations

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


def test_centered_rmsprop_is_torch_rmsprop_bit_for_bit() -> None:
    ours = _params()
    theirs = [p.clone().requires_grad_() for p in ours]
    mine = CenteredRMSProp(ours, lr=2.5e-4, alpha=0.95, eps=0.01)
    reference = torch.optim.RMSprop(
        theirs, lr=2.5e-4, alpha=0.95, eps=0.01, centered=True, foreach=True
    )
    _run(mine, reference, ours, theirs, steps=25)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b.detach())


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


def test_zero_and_subnormal_second_moments_leave_the_step_bit_for_bit() -> None:
    # The optimizers raise what they take the square root of to the smallest normal float
    # (torch's CPU root of 0 or of a subnormal number is slow); eps must swallow the difference.
    ours = [torch.randn(64, generator=torch.Generator().manual_seed(0))]
    ours[0][32:48] = 0.0  # so that steps of about 1e-20 show in these weights' bits
    theirs = [ours[0].clone().requires_grad_()]
    mine = CenteredRMSProp(ours, lr=2.5e-4, alpha=0.95, eps=0.01)
    reference = torch.optim.RMSprop(
        theirs, lr=2.5e-4, alpha=0.95, eps=0.01, centered=True, foreach=True
    )
    _run(mine, reference, ours, theirs, steps=30, gradients=_dead_and_fading_gradients)
    assert torch.equal(ours[0], theirs[0].detach())
    variance = mine.square_avg[0] - mine.grad_avg[0] ** 2
    tiny = torch.finfo(torch.float32).tiny
    assert (variance[:32] == 0).all()
    assert ((variance[32:48] > 0) & (variance[32:48] < tiny)).all()


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
