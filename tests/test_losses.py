"""The DQN family's losses against values worked out by hand from each paper's formula."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dqn_atari.losses import (
    LossOutput,
    QOutput,
    categorical_losses,
    categorical_projection,
    categorical_support,
    q_learning_losses,
    quantile_losses,
)
from dqn_atari.replay import Batch


def _f(values: Any) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _i(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


# ---------------------------------------------------------------------- DQN and Double DQN

# Q(s, .) by state, as tests/test_learner.py's TableQ: known exactly.
ONLINE = [[3.0, 1.0], [0.5, 4.0], [-0.5, 2.0]]
TARGET = [[0.0, 0.0], [2.0, 5.0], [1.0, 7.0]]


def _table(table: list[list[float]], states: list[int]) -> QOutput:
    return QOutput(q_values=_f(table)[_i(states)])


def test_q_learning_losses_match_hand_computed_bellman_targets() -> None:
    # gamma 0.99 folded into discount_t: 0.99 where the game goes on, 0 at the terminal.
    out = q_learning_losses(
        _table(ONLINE, [0, 2, 1]),
        action_tm1=_i([0, 0, 1]),
        reward_t=_f([1.0, -1.0, 0.5]),
        discount_t=_f([0.99, 0.0, 0.99]),
        q_t_target=_table(TARGET, [1, 1, 0]),
        q_t_online=None,
        huber_delta=1.0,
    )
    # Target 1 + 0.99 * max(2, 5) = 5.95; Q = 3; |error| 2.95 > 1 -> 2.95 - 0.5 = 2.45.
    # Terminal: target -1 (no bootstrap); Q = -0.5; |error| 0.5 -> 0.5 * 0.5^2 = 0.125.
    # Target 0.5 + 0.99 * max(0, 0) = 0.5; Q = 4; |error| 3.5 -> 3.5 - 0.5 = 3.0.
    assert out.per_transition.tolist() == pytest.approx([2.45, 0.125, 3.0], abs=1e-5)
    assert out.q_taken.tolist() == [3.0, -0.5, 4.0]
    assert out.priority.tolist() == pytest.approx([2.95, 0.5, 3.5], abs=1e-5)
    assert not out.q_taken.requires_grad and not out.priority.requires_grad


def test_double_dqn_lets_the_online_network_pick_the_bootstrap_action() -> None:
    # Online picks action 1 in state 1 (4.0 > 0.5), which the target values at 5.0, and
    # action 0 in state 2 (2.0 > -0.5), which the target values at 1.0 (its max is 7.0).
    online = [[3.0, 1.0], [0.5, 4.0], [2.0, -0.5]]
    loss = functools.partial(
        q_learning_losses,
        q_tm1=_table(online, [0, 0]),
        action_tm1=_i([0, 0]),
        reward_t=_f([0.0, 0.0]),
        discount_t=_f([0.5, 0.5]),
        q_t_target=_table(TARGET, [1, 2]),
        huber_delta=1.0,
    )
    single = loss(q_t_online=None)
    double = loss(q_t_online=_table(online, [1, 2]))
    # Targets: max -> 0.5 * 5 = 2.5 and 0.5 * 7 = 3.5; double -> 0.5 * 5 = 2.5, 0.5 * 1 = 0.5.
    # Q = 3 for both; errors -0.5, 0.5 (single) and -0.5, -2.5 (double); Huber 0.125 for
    # |0.5|, 2.5 - 0.5 = 2.0 for |2.5|.
    assert single.per_transition.tolist() == pytest.approx([0.125, 0.125], abs=1e-6)
    assert double.per_transition.tolist() == pytest.approx([0.125, 2.0], abs=1e-6)
    assert double.priority.tolist() == pytest.approx([0.5, 2.5], abs=1e-6)


def test_the_huber_gradient_is_the_td_error_clipped_to_delta() -> None:
    q_values = _f(ONLINE).requires_grad_()
    target = _f(TARGET).requires_grad_()
    out = q_learning_losses(
        QOutput(q_values=q_values[_i([0, 2])]),
        action_tm1=_i([0, 0]),
        reward_t=_f([1.0, -1.0]),
        discount_t=_f([0.99, 0.0]),
        q_t_target=QOutput(q_values=target[_i([1, 1])]),
        q_t_online=None,
        huber_delta=1.0,
    )
    out.per_transition.sum().backward()
    assert q_values.grad is not None
    # d/dQ = clip(Q - target, -1, 1): (3 - 5.95) -> -1; (-0.5 - -1) = 0.5.
    assert q_values.grad[0].tolist() == pytest.approx([-1.0, 0.0])
    assert q_values.grad[2].tolist() == pytest.approx([0.5, 0.0])
    assert target.grad is None  # nothing flows back through the target


class SmallQ(nn.Module):
    """8 features -> 4 Q-values spread over a few units, so both Huber branches occur."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return 3.0 * self.body(obs)


def _dqn_0_2_loss(
    online: nn.Module,
    target: nn.Module,
    batch: Batch,
    gamma: float,
    double: bool,
    huber_delta: float,
) -> torch.Tensor:
    """dqn-atari 0.2's TD loss as it was written (gamma applied to a 0/1 discount inside)."""
    q_taken = online(batch.obs_tm1).gather(1, batch.action_tm1[:, None]).squeeze(1)
    with torch.no_grad():
        q_t_target = target(batch.obs_t)
        if double:
            best = online(batch.obs_t).argmax(dim=1, keepdim=True)
            bootstrap = q_t_target.gather(1, best).squeeze(1)
        else:
            bootstrap = q_t_target.max(dim=1).values
        td_target = batch.reward_t + gamma * batch.discount_t * bootstrap
    return F.huber_loss(q_taken, td_target, delta=huber_delta)


@pytest.mark.parametrize("double", [False, True])
@pytest.mark.parametrize("huber_delta", [1.0, 0.5])
def test_the_mean_is_todays_td_loss_bit_for_bit_with_its_gradient(
    double: bool, huber_delta: float
) -> None:
    torch.manual_seed(0)
    online, target = SmallQ(), SmallQ()
    gamma = 0.99
    discount01 = (torch.rand(32) > 0.2).float()
    batch = Batch(
        obs_tm1=torch.randn(32, 8),
        action_tm1=torch.randint(0, 4, (32,)),
        reward_t=torch.randint(-1, 2, (32,)).float(),
        discount_t=discount01,
        obs_t=torch.randn(32, 8),
    )
    params = list(online.parameters())
    old = _dqn_0_2_loss(online, target, batch, gamma, double, huber_delta)
    old_grads = torch.autograd.grad(old, params)

    with torch.no_grad():
        q_t_target = QOutput(q_values=target(batch.obs_t))
        q_t_online = QOutput(q_values=online(batch.obs_t)) if double else None
    new = q_learning_losses(
        QOutput(q_values=online(batch.obs_tm1)),
        batch.action_tm1,
        batch.reward_t,
        discount01 * gamma,
        q_t_target,
        q_t_online,
        huber_delta,
    )
    mean = new.per_transition.mean()
    new_grads = torch.autograd.grad(mean, params)
    errors = (new.priority > huber_delta).sum().item()
    assert 0 < errors < 32  # both branches of the Huber loss are in this batch
    assert torch.equal(mean, old)
    assert all(torch.equal(a, b) for a, b in zip(new_grads, old_grads, strict=True))


# ---------------------------------------------------------------------- C51

# Five atoms on [-2, 2]: z = -2, -1, 0, 1, 2 and dz = 1, so b = Tz + 2.
SUPPORT5 = [-2.0, -1.0, 0.0, 1.0, 2.0]


def test_the_support_is_evenly_spaced_from_v_min_to_v_max() -> None:
    assert categorical_support(5, -2.0, 2.0).tolist() == SUPPORT5
    z = categorical_support(51, -10.0, 10.0)
    assert z.dtype == torch.float32 and z.shape == (51,)
    assert (z[0].item(), z[25].item(), z[50].item()) == (-10.0, 0.0, 10.0)
    assert z[1].item() == pytest.approx(-9.6)  # dz = 20 / 50 = 0.4
    with pytest.raises(ValueError, match="at least 2 atoms"):
        categorical_support(1, -1.0, 1.0)
    with pytest.raises(ValueError, match="v_min must be below v_max"):
        categorical_support(3, 1.0, 1.0)


def test_categorical_projection_matches_hand_computed_cases() -> None:
    probs = _f(
        [
            [0.1, 0.2, 0.3, 0.2, 0.2],
            [0.2, 0.2, 0.2, 0.2, 0.2],
            [0.1, 0.2, 0.3, 0.15, 0.25],
            [0.1, 0.2, 0.3, 0.15, 0.25],
            [0.1, 0.2, 0.3, 0.15, 0.25],
        ]
    )
    reward = _f([0.5, 0.0, -3.0, 0.3, 1.0])
    discount = _f([1.0, 0.5, 1.0, 0.0, 0.0])
    m = categorical_projection(probs, reward, discount, _f(SUPPORT5))
    expected = [
        # r 0.5, discount 1: Tz = -1.5, -0.5, 0.5, 1.5, 2.5 -> 2 (clamped to v_max);
        # b = 0.5, 1.5, 2.5, 3.5, 4 (integral: l == u, all 0.2 to atom 4). Half of each other
        # source to each neighbour: m0 = 0.05, m1 = 0.05 + 0.1, m2 = 0.1 + 0.15,
        # m3 = 0.15 + 0.1, m4 = 0.1 + 0.2.
        [0.05, 0.15, 0.25, 0.25, 0.3],
        # r 0, discount 0.5: Tz = -1, -0.5, 0, 0.5, 1; b = 1, 1.5, 2, 2.5, 3. Sources 0 and 1
        # land on atom 1 (0.2 + 0.1), sources 1, 2, 3 on atom 2 (0.1 + 0.2 + 0.1), sources 3
        # and 4 on atom 3 (0.1 + 0.2).
        [0.0, 0.3, 0.4, 0.3, 0.0],
        # r -3, discount 1: Tz = -5, -4, -3, -2, -1 -> -2, -2, -2, -2, -1 (clamped to v_min);
        # b = 0, 0, 0, 0, 1: m0 = 0.1 + 0.2 + 0.3 + 0.15, m1 = 0.25.
        [0.75, 0.25, 0.0, 0.0, 0.0],
        # Terminal, r 0.3: every Tz = 0.3, b = 2.3: 0.7 of the mass to atom 2 (z = 0), 0.3 to
        # atom 3 (z = 1), the two atoms nearest r.
        [0.0, 0.0, 0.7, 0.3, 0.0],
        # Terminal, r 1: b = 3 exactly for every source: all the mass on atom 3 (the classic
        # l == u bug would return all zeros here).
        [0.0, 0.0, 0.0, 1.0, 0.0],
    ]
    torch.testing.assert_close(m, _f(expected), rtol=0, atol=1e-6)


def test_categorical_projection_conserves_mass_and_the_mean_inside_the_support() -> None:
    torch.manual_seed(0)
    z = categorical_support(51, -10.0, 10.0)
    probs = torch.softmax(torch.randn(64, 51), dim=1)
    # Rewards and discounts whose shifted atoms fall outside [-10, 10] (clamped) and inside.
    reward = torch.empty(64).uniform_(-3.0, 3.0)
    discount = _f([0.0, 0.5, 0.99, 1.0] * 16)
    m = categorical_projection(probs, reward, discount, z)
    assert bool((m >= 0).all())
    torch.testing.assert_close(m.sum(dim=1), torch.ones(64), rtol=0, atol=1e-6)
    # The projection splits each source atom between its two neighbours in proportion to its
    # distance to each: sum_i z_i m_i = sum_j p_j Tz_j where no Tz_j is clamped (here: a
    # support scaled by discount 0.5 and shifted by |r| <= 3 stays inside [-10, 10]).
    half = discount == 0.5
    expected_mean = reward[half] + 0.5 * (probs[half] * z).sum(dim=1)
    torch.testing.assert_close((m[half] * z).sum(dim=1), expected_mean, rtol=0, atol=1e-5)


def _c51(probs: list[list[list[float]]], support: torch.Tensor) -> QOutput:
    """A C51 output with these probabilities (B, A, atoms): logits log p, q = sum_i z_i p_i."""
    p = _f(probs)
    return QOutput(q_values=(p * support).sum(-1), logits=p.log())


def test_categorical_losses_match_a_hand_computed_cross_entropy() -> None:
    z = _f([-1.0, 0.0, 1.0])  # dz = 1, b = Tz + 1
    # s_tm1: the taken action's probabilities are 0.2, 0.5, 0.3 (the other action's unused).
    logits_tm1 = _f([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]]).log()[None].repeat(3, 1, 1)
    logits_tm1.requires_grad_()
    q_tm1 = QOutput(q_values=torch.zeros(3, 2), logits=logits_tm1)
    # s_t: action 0 has p = 0.6, 0.3, 0.1 (mean -0.5), action 1 has p = 0.1, 0.3, 0.6 (mean
    # 0.5), so the target network's a* = 1; the online network below prefers action 0.
    target_logits = _f([[[0.6, 0.3, 0.1], [0.1, 0.3, 0.6]]] * 3).log().requires_grad_()
    q_t_target = QOutput(q_values=_f([[-0.5, 0.5]] * 3), logits=target_logits)
    q_t_online = QOutput(q_values=_f([[1.0, 0.0]] * 3))
    loss = functools.partial(
        categorical_losses,
        q_tm1,
        action_tm1=_i([0, 0, 0]),
        reward_t=_f([0.5, 0.5, -0.4]),
        discount_t=_f([1.0, 1.0, 0.0]),
        q_t_target=q_t_target,
        support=z,
    )
    out = loss(q_t_online=None)
    # r 0.5, discount 1, a* = 1: Tz = -0.5, 0.5, 1.5 -> 1; b = 0.5, 1.5, 2:
    #   m = (0.05, 0.05 + 0.15, 0.15 + 0.6) = (0.05, 0.2, 0.75);
    #   CE = -(0.05 ln 0.2 + 0.2 ln 0.5 + 0.75 ln 0.3) = 0.0804719 + 0.1386294 + 0.9029796.
    ce_target_a1 = -(0.05 * math.log(0.2) + 0.2 * math.log(0.5) + 0.75 * math.log(0.3))
    assert ce_target_a1 == pytest.approx(1.1220809, abs=1e-7)
    # Terminal, r -0.4: b = 0.6 for all: m = (0.4, 0.6, 0); CE = -(0.4 ln 0.2 + 0.6 ln 0.5).
    ce_terminal = -(0.4 * math.log(0.2) + 0.6 * math.log(0.5))
    assert ce_terminal == pytest.approx(1.0596635, abs=1e-7)
    expected = [ce_target_a1, ce_target_a1, ce_terminal]
    assert out.per_transition.tolist() == pytest.approx(expected, abs=1e-6)
    assert out.priority.tolist() == pytest.approx(expected, abs=1e-6)

    # d CE / d logits of the taken action = softmax - m: (0.2 - 0.05, 0.5 - 0.2, 0.3 - 0.75);
    # nothing for the action not taken, nor for the target network.
    out.per_transition[0].backward()
    assert logits_tm1.grad is not None
    assert logits_tm1.grad[0, 0].tolist() == pytest.approx([0.15, 0.3, -0.45], abs=1e-6)
    assert logits_tm1.grad[0, 1].abs().sum().item() == 0.0
    assert target_logits.grad is None

    # Double: the online network's a* = 0, p = 0.6, 0.3, 0.1; the same b:
    #   m = (0.3, 0.3 + 0.15, 0.15 + 0.1) = (0.3, 0.45, 0.25).
    double = loss(q_t_online=q_t_online)
    ce_online_a0 = -(0.3 * math.log(0.2) + 0.45 * math.log(0.5) + 0.25 * math.log(0.3))
    assert ce_online_a0 == pytest.approx(1.0957408, abs=1e-7)
    assert double.per_transition.tolist() == pytest.approx(
        [ce_online_a0, ce_online_a0, ce_terminal], abs=1e-6
    )


def test_categorical_q_taken_is_the_expected_value_of_the_taken_action() -> None:
    z = _f([-1.0, 0.0, 1.0])
    q_tm1 = _c51([[[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]]], z)  # means 0.1 and -0.5
    out = categorical_losses(q_tm1, _i([1]), _f([0.0]), _f([0.0]), q_tm1, None, z)
    assert out.q_taken.tolist() == pytest.approx([-0.5])


# ---------------------------------------------------------------------- QR-DQN


def _qr(quantiles: list[list[list[float]]]) -> QOutput:
    theta = _f(quantiles)
    return QOutput(q_values=theta.mean(-1), quantiles=theta)


# Two quantiles, tau_hat = (2i + 1) / (2N) = 0.25, 0.75. At s_t: action 0 has quantiles 5, -3
# (mean 1), action 1 has -1, 4 (mean 1.5): the target network's a* = 1.
Q_T = [[[5.0, -3.0], [-1.0, 4.0]]]


def _quantile_case(kappa: float, double: bool = False) -> LossOutput:
    theta_tm1 = _f([[[0.0, 1.0], [9.0, 9.0]]] * 2).requires_grad_()
    return quantile_losses(
        QOutput(q_values=theta_tm1.mean(-1), quantiles=theta_tm1),
        action_tm1=_i([0, 0]),
        reward_t=_f([1.0, 0.5]),
        discount_t=_f([0.5, 0.0]),
        q_t_target=_qr(Q_T * 2),
        q_t_online=_qr([[[1.0, 1.0], [0.0, 0.0]]] * 2) if double else None,
        kappa=kappa,
    )


def test_quantile_losses_match_hand_computed_values_with_kappa_1() -> None:
    out = _quantile_case(kappa=1.0)
    # Transition 0: theta(s_tm1, a_tm1) = 0, 1; T theta_j = 1 + 0.5 * (-1, 4) = 0.5, 3.
    #   u_ij = T theta_j - theta_i: i = 0: 0.5, 3;  i = 1: -0.5, 2.
    #   L_1(u): 0.125 (|u| <= 1), 3 - 0.5 = 2.5 (|u| > 1); 0.125, 2 - 0.5 = 1.5.
    #   |tau - 1{u < 0}|: i = 0 (tau 0.25): 0.25, 0.25; i = 1 (tau 0.75): |0.75 - 1| = 0.25,
    #   0.75.
    #   sum_i mean_j: (0.25 * 0.125 + 0.25 * 2.5) / 2 + (0.25 * 0.125 + 0.75 * 1.5) / 2
    #               = 0.328125 + 0.578125 = 0.90625.
    # Transition 1, terminal (r 0.5): T theta_j = 0.5, 0.5; u = 0.5, 0.5 for i = 0 and
    #   -0.5, -0.5 for i = 1; L_1 = 0.125 each, weights 0.25 each: 2 * 0.25 * 0.125 = 0.0625.
    assert out.per_transition.tolist() == [0.90625, 0.0625]
    # mean_ij |u_ij| = (0.5 + 3 + 0.5 + 2) / 4 = 1.5; terminal: 0.5.
    assert out.priority.tolist() == [1.5, 0.5]
    assert out.q_taken.tolist() == [0.5, 0.5]


def test_the_quantile_gradient_is_the_weighted_clipped_error() -> None:
    theta_tm1 = _f([[[0.0, 1.0], [9.0, 9.0]]]).requires_grad_()
    out = quantile_losses(
        QOutput(q_values=theta_tm1.mean(-1), quantiles=theta_tm1),
        _i([0]),
        _f([1.0]),
        _f([0.5]),
        _qr(Q_T),
        None,
        kappa=1.0,
    )
    out.per_transition.sum().backward()
    assert theta_tm1.grad is not None
    # d/d theta_i = -(1/N) sum_j |tau_i - 1{u_ij < 0}| clip(u_ij, -kappa, kappa) / kappa:
    #   i = 0: -(0.25 * 0.5 + 0.25 * 1) / 2 = -0.1875;
    #   i = 1: -(0.25 * -0.5 + 0.75 * 1) / 2 = -0.3125; the other action: 0.
    assert theta_tm1.grad.tolist() == [[[-0.1875, -0.3125], [0.0, 0.0]]]


def test_kappa_moves_the_quadratic_region_and_divides_the_loss() -> None:
    out = _quantile_case(kappa=2.0)
    # Transition 0, u as with kappa 1: i = 0: 0.5, 3; i = 1: -0.5, 2.
    #   L_2(u) / 2: 0.125 / 2 = 0.0625; 2 * (3 - 1) / 2 = 2 (|u| > 2); 0.0625;
    #   0.5 * 2^2 / 2 = 1 (|u| = 2 <= 2: quadratic).
    #   sum_i mean_j: (0.25 * 0.0625 + 0.25 * 2) / 2 + (0.25 * 0.0625 + 0.75 * 1) / 2
    #               = 0.2578125 + 0.3828125 = 0.640625.
    # Transition 1: L_2(0.5) / 2 = 0.0625 each: 2 * 0.25 * 0.0625 = 0.03125.
    assert out.per_transition.tolist() == [0.640625, 0.03125]
    assert out.priority.tolist() == [1.5, 0.5]  # kappa does not enter the priority


def test_double_qr_bootstraps_from_the_online_networks_choice() -> None:
    out = _quantile_case(kappa=1.0, double=True)
    # The online network prefers action 0: T theta_j = 1 + 0.5 * (5, -3) = 3.5, -0.5.
    #   i = 0 (theta 0): u = 3.5, -0.5; L_1 = 3.0, 0.125; weights 0.25, |0.25 - 1| = 0.75.
    #   i = 1 (theta 1): u = 2.5, -1.5; L_1 = 2.0, 1.0; weights 0.75, 0.25.
    #   (0.25 * 3 + 0.75 * 0.125) / 2 + (0.75 * 2 + 0.25 * 1) / 2 = 0.421875 + 0.875 = 1.296875.
    assert out.per_transition.tolist() == [1.296875, 0.0625]


# ---------------------------------------------------------------------- compiled


def _random_cases() -> dict[str, tuple[object, ...]]:
    torch.manual_seed(0)
    batch, actions, atoms = 4, 3, 5
    z = categorical_support(atoms, -2.0, 2.0)
    common = (
        torch.randint(0, actions, (batch,)),
        torch.randn(batch),
        _f([0.99, 0.0, 0.5, 0.99]),
    )

    def c51() -> QOutput:
        logits = torch.randn(batch, actions, atoms)
        return QOutput(q_values=(torch.softmax(logits, -1) * z).sum(-1), logits=logits)

    def qr() -> QOutput:
        theta = 2 * torch.randn(batch, actions, atoms)
        return QOutput(q_values=theta.mean(-1), quantiles=theta)

    def dqn() -> QOutput:
        return QOutput(q_values=2 * torch.randn(batch, actions))

    return {
        "dqn": (dqn(), *common, dqn(), None, 1.0),
        "double": (dqn(), *common, dqn(), dqn(), 1.0),
        "c51": (c51(), *common, c51(), None, z),
        "double_c51": (c51(), *common, c51(), c51(), z),
        "qr": (qr(), *common, qr(), None, 1.0),
        "double_qr": (qr(), *common, qr(), qr(), 1.0),
    }


LOSSES: dict[str, Callable[..., LossOutput]] = {
    "dqn": q_learning_losses,
    "double": q_learning_losses,
    "c51": categorical_losses,
    "double_c51": categorical_losses,
    "qr": quantile_losses,
    "double_qr": quantile_losses,
}


def _output_grad(loss: Callable[..., LossOutput], args: tuple[object, ...]) -> torch.Tensor:
    """d sum(per_transition) / d (the online network's output at s_tm1: q_values, logits or
    quantiles), by torch.func as the compiled learner differentiates."""
    q_tm1 = args[0]
    assert isinstance(q_tm1, QOutput)
    field = "q_values"
    if q_tm1.logits is not None:
        field = "logits"
    if q_tm1.quantiles is not None:
        field = "quantiles"

    def total(x: torch.Tensor) -> torch.Tensor:
        return loss(q_tm1._replace(**{field: x}), *args[1:]).per_transition.sum()

    return torch.func.grad(total)(getattr(q_tm1, field))


@pytest.mark.slow
def test_every_loss_compiles_whole_and_matches_eager() -> None:
    for name, args in _random_cases().items():
        loss = LOSSES[name]
        eager = loss(*args)
        compiled = torch.compile(loss, fullgraph=True)(*args)
        for field, a, b in zip(LossOutput._fields, eager, compiled, strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=f"{name}.{field}")
        grad = _output_grad(loss, args)
        assert grad.abs().sum() > 0, name
        compiled_grad = torch.compile(_output_grad, fullgraph=True)(loss, args)
        torch.testing.assert_close(compiled_grad, grad, rtol=0, atol=1e-6, msg=f"{name} grad")
