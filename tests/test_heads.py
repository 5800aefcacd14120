"""Heads of the DQN family against values worked out by hand from each paper's formula."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from dqn_atari.heads import (
    DuelingHead,
    NoisyLinear,
    QHead,
    ValueDistribution,
    noisy_layers,
    reset_noise,
    scale_gradient,
    set_noise,
    signed_sqrt,
)
from dqn_atari.losses import QOutput
from dqn_atari.networks import NatureQNetwork


def _f(values: Any) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32)


def _set(layer: nn.Module, weight: Any, bias: Any) -> None:
    assert isinstance(layer, nn.Linear)
    with torch.no_grad():
        layer.weight.copy_(_f(weight))
        layer.bias.copy_(_f(bias))


# ---------------------------------------------------------------------- gradient scaling


def test_scale_gradient_is_the_identity_forward_and_scales_the_gradient_exactly() -> None:
    torch.manual_seed(0)
    scale = 1.0 / math.sqrt(2.0)
    # Values from 1e-30 to 1e30, where x * s + x * (1 - s) would round differently from x.
    x = (torch.randn(1000) * 10.0 ** torch.randint(-30, 30, (1000,))).requires_grad_()
    upstream = torch.randn(1000)
    y = scale_gradient(x, scale)
    assert torch.equal(y, x)
    assert not torch.equal(x * scale + x.detach() * (1 - scale), x)  # why not the usual form
    y.backward(upstream)
    assert x.grad is not None
    assert torch.equal(x.grad, upstream * scale)
    # The compiled learner differentiates with torch.func, which must see the same.
    grad = torch.func.grad(lambda v: (scale_gradient(v, scale) * upstream).sum())(x.detach())
    assert torch.equal(grad, upstream * scale)


# ---------------------------------------------------------------------- the Nature head


class _Network_0_2(nn.Module):
    """dqn-atari 0.2's Nature network as it was written: the checkpoint layout to keep."""

    def __init__(self, num_actions: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(4, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, 1), nn.ReLU(), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Linear(3136, 512), nn.ReLU(), nn.Linear(512, num_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(obs.float() / 255.0))


def test_the_plain_network_keeps_0_2s_state_dict_and_loads_its_checkpoints() -> None:
    torch.manual_seed(0)
    old = _Network_0_2(num_actions=6)
    net = NatureQNetwork(num_actions=6)
    assert isinstance(net.head, QHead)
    assert {k: v.shape for k, v in net.state_dict().items()} == {
        k: v.shape for k, v in old.state_dict().items()
    }
    net.load_state_dict(old.state_dict())  # strict: the same keys, nothing missing or unexpected
    obs = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    out = net(obs)
    assert isinstance(out, QOutput) and out.logits is None and out.quantiles is None
    assert torch.equal(out.q_values, old(obs))


def test_a_c51_head_reads_out_the_expected_value_of_its_softmax() -> None:
    # One feature, one hidden unit passing it through, so the last layer's weight column is
    # the output: action-major, unit a * atoms + k.
    head = QHead(1, 2, hidden=1, distribution=ValueDistribution("c51", 3, -1.0, 1.0))
    assert head.support is not None and head.support.tolist() == [-1.0, 0.0, 1.0]
    probs = [[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]]
    _set(head[0], [[1.0]], [0.0])
    _set(head[2], _f(probs).log().reshape(6, 1), [0.0] * 6)
    out = head(_f([[1.0]]))
    assert out.logits is not None and out.logits.shape == (1, 2, 3)
    torch.testing.assert_close(out.logits.softmax(-1), _f([probs]))
    # sum_i z_i p_i: -0.2 + 0 + 0.3 = 0.1; -0.6 + 0 + 0.1 = -0.5.
    assert out.q_values.tolist() == [pytest.approx([0.1, -0.5], abs=1e-6)]
    assert "support" not in head.state_dict()  # it follows from the distribution


def test_a_quantile_head_reads_out_the_mean_of_its_quantiles() -> None:
    head = QHead(1, 2, hidden=1, distribution=ValueDistribution("qr", 3))
    _set(head[0], [[1.0]], [0.0])
    _set(head[2], [[1.0], [2.0], [6.0], [-3.0], [0.0], [0.0]], [0.0] * 6)
    out = head(_f([[1.0]]))
    assert out.quantiles is not None and out.quantiles.tolist() == [[[1, 2, 6], [-3, 0, 0]]]
    assert out.q_values.tolist() == [[3.0, -1.0]]  # (1 + 2 + 6) / 3, (-3 + 0 + 0) / 3


def test_value_distributions_are_checked() -> None:
    with pytest.raises(ValueError, match="one of none, c51, qr"):
        ValueDistribution("iqn", 8)
    with pytest.raises(ValueError, match="at least 2 atoms"):
        ValueDistribution("c51", 1)
    with pytest.raises(ValueError, match="v_min < v_max"):
        ValueDistribution("c51", 51, 10.0, -10.0)
    with pytest.raises(ValueError, match="1 output per action"):
        ValueDistribution("none", 51)


# ---------------------------------------------------------------------- dueling


def _identity_dueling(
    num_actions: int,
    value_weight: Any,
    advantage_weight: Any,
    advantage_bias: Any = None,
    **kwargs: Any,
) -> DuelingHead:
    """A dueling head on 1 or 2 features whose first layers pass the (positive) features
    through, so each stream's last layer alone sets V and A."""
    features = len(value_weight[0])
    head = DuelingHead(features, num_actions, hidden=features, **kwargs)
    eye = torch.eye(features).tolist()
    _set(head.value[0], eye, [0.0] * features)
    _set(head.advantage[0], eye, [0.0] * features)
    _set(head.value[2], value_weight, [0.0] * len(value_weight))
    if advantage_bias is None:
        advantage_bias = [0.0] * len(advantage_weight)
    _set(head.advantage[2], advantage_weight, advantage_bias)
    return head


def test_dueling_q_is_value_plus_advantage_minus_its_mean() -> None:
    # V = x0 + x1; A = (x0, x1, x0 + x1 - 3).
    head = _identity_dueling(
        3, [[1.0, 1.0]], [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], advantage_bias=[0.0, 0.0, -3.0]
    )
    q = head(_f([[1.0, 2.0], [2.0, 0.5]])).q_values
    # x = (1, 2): V = 3, A = (1, 2, 0), mean 1: Q = 3 + (0, 1, -1) = (3, 4, 2).
    # x = (2, 0.5): V = 2.5, A = (2, 0.5, -0.5), mean 2/3: Q = 2.5 + (4/3, -1/6, -7/6).
    expected = [[3.0, 4.0, 2.0], [2.5 + 4 / 3, 2.5 - 1 / 6, 2.5 - 7 / 6]]
    torch.testing.assert_close(q, _f(expected))


def test_dueling_composes_with_c51_and_qr_per_atom() -> None:
    # One feature passed through; V per atom (0.5, -1); A per action and atom (1, 2), (3, 0).
    # Mean of A over actions per atom: (2, 1). Values: a0 = (0.5 + 1 - 2, -1 + 2 - 1) =
    # (-0.5, 0); a1 = (0.5 + 3 - 2, -1 + 0 - 1) = (1.5, -2).
    weights = ([[0.5], [-1.0]], [[1.0], [2.0], [3.0], [0.0]])
    c51 = _identity_dueling(2, *weights, distribution=ValueDistribution("c51", 2, -1.0, 1.0))
    out = c51(_f([[1.0]]))
    assert out.logits is not None
    assert out.logits.tolist() == [[[-0.5, 0.0], [1.5, -2.0]]]
    # Support (-1, 1): Q = p1 - p0 = tanh((l1 - l0) / 2): tanh(0.25), tanh(-1.75).
    torch.testing.assert_close(out.q_values, _f([[math.tanh(0.25), math.tanh(-1.75)]]))
    qr = _identity_dueling(2, *weights, distribution=ValueDistribution("qr", 2))
    out = qr(_f([[1.0]]))
    assert out.quantiles is not None and out.quantiles.tolist() == [[[-0.5, 0.0], [1.5, -2.0]]]
    assert out.q_values.tolist() == [[-0.25, -0.25]]


def test_dueling_scales_the_gradient_entering_the_torso_by_one_over_root_two() -> None:
    torch.manual_seed(0)
    head = DuelingHead(8, 4, hidden=16)
    features = torch.randn(5, 8)
    x = features.clone().requires_grad_()
    head(x).q_values.sum().backward()
    scaled_params = [p.grad.clone() for p in head.parameters() if p.grad is not None]
    head.zero_grad()
    # The same computation without the scaling, by autograd.
    x0 = features.clone().requires_grad_()
    value, advantage = head.value(x0), head.advantage(x0)
    (value + (advantage - advantage.mean(dim=1, keepdim=True))).sum().backward()
    assert x.grad is not None and x0.grad is not None
    torch.testing.assert_close(x.grad, x0.grad / math.sqrt(2.0), rtol=1e-6, atol=0)
    assert x.grad.abs().sum() > 0
    # The streams' own parameters learn as without it: only the torso's gradient is scaled.
    plain_params = [p.grad for p in head.parameters() if p.grad is not None]
    assert len(plain_params) == len(scaled_params) == 8
    assert all(torch.equal(a, b) for a, b in zip(scaled_params, plain_params, strict=True))
    # torch.func (the compiled learner's differentiation) agrees with autograd.
    params = {name: p.detach() for name, p in head.named_parameters()}

    def total_q(v: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(head, params, (v,)).q_values.sum()

    grad = torch.func.grad(total_q)(features)
    torch.testing.assert_close(grad, x.grad, rtol=0, atol=0)


# ---------------------------------------------------------------------- noisy nets


def test_signed_sqrt_is_fortunatos_f() -> None:
    # f(x) = sign(x) sqrt(|x|): f(4) = 2, f(-9) = -3, f(0.25) = 0.5, f(0) = 0, f(-2) = -sqrt 2.
    got = signed_sqrt(_f([4.0, -9.0, 0.25, 0.0, -2.0]))
    torch.testing.assert_close(got, _f([2.0, -3.0, 0.5, 0.0, -math.sqrt(2.0)]), rtol=0, atol=0)


def _known_noisy() -> NoisyLinear:
    layer = NoisyLinear(2, 3)
    with torch.no_grad():
        layer.noise_in.copy_(_f([4.0, -1.0]))
        layer.noise_out.copy_(_f([1.0, -9.0, 0.25]))
        layer.weight_mu.zero_()
        layer.weight_sigma.fill_(0.5)
        layer.bias_mu.copy_(_f([1.0, 2.0, 3.0]))
        layer.bias_sigma.copy_(_f([0.1, 0.2, 0.4]))
    return layer


def test_factorised_noise_is_the_outer_product_of_f_of_the_two_vectors() -> None:
    layer = _known_noisy()
    weight, bias = layer.weight_and_bias()
    # f(eps_in) = (2, -1), f(eps_out) = (1, -3, 0.5): eps_w[j, i] = f(eps_out[j]) f(eps_in[i])
    # = [[2, -1], [-6, 3], [1, -0.5]]; weight = 0 + 0.5 * eps_w.
    assert weight.tolist() == [[1.0, -0.5], [-3.0, 1.5], [0.5, -0.25]]
    # bias = mu_b + sigma_b * f(eps_out) = (1 + 0.1, 2 - 0.6, 3 + 0.2).
    torch.testing.assert_close(bias, _f([1.1, 1.4, 3.2]))
    # x = (1, 0): y = W[:, 0] + b = (1 + 1.1, -3 + 1.4, 0.5 + 3.2).
    torch.testing.assert_close(layer(_f([[1.0, 0.0]])), _f([[2.1, -1.6, 3.7]]))


def test_without_noise_a_noisy_layer_uses_its_mean_weights() -> None:
    layer = _known_noisy()
    shapes = {name: p.shape for name, p in layer.named_parameters()}
    set_noise(layer, False)
    weight, bias = layer.weight_and_bias()
    assert weight is layer.weight_mu and bias is layer.bias_mu
    assert layer(_f([[1.0, 0.0]])).tolist() == [[1.0, 2.0, 3.0]]  # W = 0, b = mu_b
    assert {name: p.shape for name, p in layer.named_parameters()} == shapes
    set_noise(layer, True)
    torch.testing.assert_close(layer(_f([[1.0, 0.0]])), _f([[2.1, -1.6, 3.7]]))


def test_reset_noise_redraws_in_place_and_reproducibly() -> None:
    torch.manual_seed(0)
    head = DuelingHead(8, 3, hidden=16, linear=NoisyLinear)
    layers = list(noisy_layers(head))
    assert len(layers) == 4
    pointers = [(m.noise_in.data_ptr(), m.noise_out.data_ptr()) for m in layers]
    before = [(m.noise_in.clone(), m.noise_out.clone()) for m in layers]
    x = torch.randn(2, 8)
    q_before = head(x).q_values

    reset_noise(head, torch.Generator().manual_seed(7))
    assert [(m.noise_in.data_ptr(), m.noise_out.data_ptr()) for m in layers] == pointers
    assert all(
        not torch.equal(m.noise_in, a) and not torch.equal(m.noise_out, b)
        for m, (a, b) in zip(layers, before, strict=True)
    )
    assert not torch.equal(head(x).q_values, q_before)
    # The draws are N(0, 1) from the generator, layer by layer in modules() order, eps_in
    # before eps_out: the same seed gives the same noise.
    generator = torch.Generator().manual_seed(7)
    for m in layers:
        assert torch.equal(m.noise_in, torch.randn(m.in_features, generator=generator))
        assert torch.equal(m.noise_out, torch.randn(m.out_features, generator=generator))
    # Evaluation with the mean weights: the noise no longer matters.
    set_noise(head, False)
    q_mean = head(x).q_values
    reset_noise(head)
    assert torch.equal(head(x).q_values, q_mean)


def test_noisy_layers_start_as_fortunato_et_al_initialise_them() -> None:
    torch.manual_seed(0)
    layer = NoisyLinear(16, 400)
    bound = 1.0 / math.sqrt(16)  # 1/sqrt(p) = 0.25
    for mu in (layer.weight_mu, layer.bias_mu):
        assert -bound <= mu.min().item() < -0.9 * bound  # U[-1/sqrt(p), 1/sqrt(p)], filled
        assert 0.9 * bound < mu.max().item() <= bound
    # sigma = sigma0 / sqrt(p) = 0.5 / 4 = 0.125 everywhere, weights and biases.
    assert bool((layer.weight_sigma == 0.125).all()) and bool((layer.bias_sigma == 0.125).all())
    assert bool((NoisyLinear(16, 4, sigma0=0.1).weight_sigma == 0.1 / 4).all())
    # Noise drawn at construction, so a fresh layer is already noisy.
    assert layer.noise_in.abs().sum() > 0 and layer.noise_out.abs().sum() > 0
    assert set(layer.state_dict()) == {
        "weight_mu",
        "weight_sigma",
        "bias_mu",
        "bias_sigma",
        "noise_in",
        "noise_out",
    }


def test_any_head_takes_noisy_layers() -> None:
    torch.manual_seed(0)
    c51 = ValueDistribution("c51", 5, -2.0, 2.0)
    head = QHead(8, 3, hidden=16, distribution=c51, linear=NoisyLinear)
    assert len(list(noisy_layers(head))) == 2
    assert {"0.weight_mu", "2.weight_sigma", "2.noise_out"} <= set(head.state_dict())
    out = head(torch.randn(2, 8))
    assert out.q_values.shape == (2, 3) and out.logits is not None
    assert out.logits.shape == (2, 3, 5)


# ---------------------------------------------------------------------- compiled


@pytest.mark.slow
def test_the_rainbow_head_compiles_whole_with_its_torch_func_gradient() -> None:
    """Dueling, C51 and noisy: forward and gradient traced with fullgraph=True, as the
    compiled learner runs them (torch.func over functional_call), against eager."""
    torch.manual_seed(0)
    c51 = ValueDistribution("c51", 5, -2.0, 2.0)
    head = DuelingHead(8, 3, hidden=16, distribution=c51, linear=NoisyLinear)
    features = torch.randn(4, 8)
    params = {name: p.detach() for name, p in head.named_parameters()}

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor) -> Any:
        out = torch.func.functional_call(head, p, (x,))
        return out.logits.logsumexp(-1).sum() + out.q_values.sum()

    step = torch.func.grad_and_value(loss)
    eager_grads, eager_value = step(params, features)
    grads, value = torch.compile(step, fullgraph=True)(params, features)
    torch.testing.assert_close(value, eager_value, rtol=0, atol=1e-5)
    for name in params:
        torch.testing.assert_close(grads[name], eager_grads[name], rtol=1e-5, atol=1e-6)
