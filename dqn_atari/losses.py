"""The DQN family's losses, per transition, as pure functions of what the networks return.

Every network returns a `QOutput` (acting reads `q_values`, whatever the head); every loss
returns a `LossOutput`: the per-transition loss that the learner averages (or weights, with
prioritized replay), Q(s_tm1, a_tm1) for logging, and the priority prioritized replay stores.

`discount_t` reaching a loss already holds gamma^k (0 where the target must not bootstrap) and
`reward_t` the k-step discounted sum of rewards, so every target is r_t + discount_t * bootstrap
and no loss takes gamma (as in DQN Zoo, where n-step accumulation supplies gamma^k).

Static shapes, no host sync and no branching on tensor values: each loss traces whole with
torch.compile(fullgraph=True). Nothing flows back through a target: the bootstrap side is
detached here, whether or not the caller computed it under no_grad.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class QOutput(NamedTuple):
    """What every network returns; acting reads `q_values`."""

    q_values: Tensor  # float32 (B, A): the expected return of each action
    logits: Tensor | None = None  # C51: (B, A, atoms) unnormalised log-probabilities
    quantiles: Tensor | None = None  # QR-DQN: (B, A, N) quantile values, return units


class LossOutput(NamedTuple):
    per_transition: Tensor  # (B,) differentiable w.r.t. the online network's output
    q_taken: Tensor  # (B,) detached Q(s_tm1, a_tm1) (the expected value), for logging
    priority: Tensor  # (B,) detached, >= 0: what prioritized replay stores before its alpha


def _check_transitions(
    q_values: Tensor, action_tm1: Tensor, reward_t: Tensor, discount_t: Tensor
) -> None:
    batch = q_values.shape[0]
    assert q_values.dim() == 2, q_values.shape
    assert action_tm1.shape == (batch,), action_tm1.shape
    assert reward_t.shape == (batch,), reward_t.shape
    assert discount_t.shape == (batch,), discount_t.shape


def _taken(values: Tensor, action: Tensor) -> Tensor:
    """values[b, action[b]]: (B, A) -> (B,), or (B, A, K) -> (B, K)."""
    index = action.view(-1, *([1] * (values.dim() - 1))).expand(-1, 1, *values.shape[2:])
    return values.gather(1, index).squeeze(1)


def _bootstrap_action(q_t_target: QOutput, q_t_online: QOutput | None) -> Tensor:
    """a* = argmax_a Q(s_t, a): the target network's own choice, or with `q_t_online` (Double
    DQN, van Hasselt et al. 2016, eq. 4) the online network's, which the target then values.
    Distributional agents choose on the expected value too (Bellemare et al. 2017, Algorithm 1;
    Dabney et al. 2018, Algorithm 1)."""
    chooser = q_t_target if q_t_online is None else q_t_online
    assert chooser.q_values.shape == q_t_target.q_values.shape, chooser.q_values.shape
    return chooser.q_values.argmax(dim=1)


# ---------------------------------------------------------------------- DQN and Double DQN


def q_learning_losses(
    q_tm1: QOutput,
    action_tm1: Tensor,
    reward_t: Tensor,
    discount_t: Tensor,
    q_t_target: QOutput,
    q_t_online: QOutput | None,
    huber_delta: float,
) -> LossOutput:
    """Huber loss between Q(s_tm1, a_tm1) and r_t + discount_t * Q_target(s_t, a*), per
    transition.

    a* = argmax_a Q_target(s_t, a) (Mnih et al. 2015), or argmax_a Q_online(s_t, a) when
    `q_t_online` is given (Double DQN). Huber with delta 1 is the Nature paper's clipping of the
    error term to [-1, 1], written as a loss. The mean over the batch is today's
    `learner.td_loss(...).loss` bit for bit when discount_t = discount01 * gamma.
    """
    _check_transitions(q_tm1.q_values, action_tm1, reward_t, discount_t)
    q_taken = _taken(q_tm1.q_values, action_tm1)
    bootstrap = _taken(q_t_target.q_values, _bootstrap_action(q_t_target, q_t_online))
    td_target = (reward_t + discount_t * bootstrap).detach()
    per_transition = F.huber_loss(q_taken, td_target, reduction="none", delta=huber_delta)
    # Schaul et al. 2016, section 3.3: proportional priority from |delta| (eps, alpha: replay's).
    priority = (td_target - q_taken).detach().abs()
    return LossOutput(per_transition, q_taken.detach(), priority)


# ---------------------------------------------------------------------- C51


def categorical_support(atoms: int, v_min: float, v_max: float) -> Tensor:
    """z_i = V_min + i * dz, dz = (V_max - V_min) / (atoms - 1), i < atoms: C51's fixed support
    (Bellemare et al. 2017, section 4; 51 atoms on [-10, 10] for Atari, section 5).

    Computed in float64 and rounded once, so each atom is the float32 nearest its exact value
    (z = 0 is 0 exactly on a symmetric support)."""
    if atoms < 2:
        raise ValueError(f"a categorical support needs at least 2 atoms, got {atoms}")
    if not v_min < v_max:
        raise ValueError(f"v_min must be below v_max, got v_min={v_min}, v_max={v_max}")
    delta_z = (v_max - v_min) / (atoms - 1)
    return (v_min + torch.arange(atoms, dtype=torch.float64) * delta_z).float()


def categorical_projection(
    probs_t: Tensor, reward_t: Tensor, discount_t: Tensor, support: Tensor
) -> Tensor:
    """Project the distribution r_t + discount_t * Z (atoms `support`, probabilities `probs_t`)
    back onto `support`: Bellemare, Dabney, Munos 2017, Algorithm 1. (B, atoms) -> (B, atoms).

    For each source atom j: Tz_j = clamp(r + discount * z_j, V_min, V_max),
    b_j = (Tz_j - V_min) / dz, l = floor(b_j), u = ceil(b_j); m_l += p_j (u - b_j) and
    m_u += p_j (b_j - l). Where b_j is integral Algorithm 1 as printed has l == u and both
    weights 0, losing p_j (a terminal whose reward sits on an atom loses all its mass); here
    u = l + 1 instead, which is ceil(b_j) everywhere else and gives p_j (u - b_j) = p_j to atom l
    where b_j is integral. An upper neighbour past the last atom then carries weight 0.

    The additions are one comparison of l and u with every atom index, (B, atoms, atoms), and a
    sum over the source atoms: static shapes, and a fixed summation order (scatter_add on CUDA
    adds with atomics, in no fixed order).
    """
    batch, atoms = probs_t.shape
    assert support.shape == (atoms,), (support.shape, probs_t.shape)
    assert reward_t.shape == (batch,) and discount_t.shape == (batch,), (reward_t.shape,)
    v_min = support[0]
    delta_z = (support[-1] - v_min) / (atoms - 1)
    t_z = reward_t[:, None] + discount_t[:, None] * support[None, :]  # (B, J)
    # Clamping b to [0, atoms - 1] is Algorithm 1's clamp of Tz to [V_min, V_max] (b is affine
    # in Tz), and also keeps a b that rounds just past the last atom on it.
    b = ((t_z - v_min) / delta_z).clamp(0, atoms - 1)
    lower = b.floor()
    upper = lower + 1
    atom = torch.arange(atoms, device=probs_t.device, dtype=b.dtype)  # (I,)
    weight = torch.where(lower[..., None] == atom, (upper - b)[..., None], 0.0) + torch.where(
        upper[..., None] == atom, (b - lower)[..., None], 0.0
    )  # (B, J, I): the share of source atom j that goes to target atom i
    return (probs_t[..., None] * weight).sum(dim=1)


def categorical_losses(
    q_tm1: QOutput,
    action_tm1: Tensor,
    reward_t: Tensor,
    discount_t: Tensor,
    q_t_target: QOutput,
    q_t_online: QOutput | None,
    support: Tensor,
) -> LossOutput:
    """C51's cross-entropy -sum_i m_i log p_i(s_tm1, a_tm1) (Bellemare et al. 2017, Algorithm
    1), with m the target network's distribution at a* projected onto `support`.

    a* maximises the expected value sum_i z_i p_i(s_t, a) of the target network, or of the
    online one when `q_t_online` is given (double, as in Rainbow, Hessel et al. 2018). The
    priority is the cross-entropy itself, as Rainbow's (Hessel et al. 2018, "The Integrated
    Agent": the KL loss, which differs from it by the entropy of m, a constant of the loss).
    """
    _check_transitions(q_tm1.q_values, action_tm1, reward_t, discount_t)
    assert q_tm1.logits is not None and q_t_target.logits is not None, "C51 needs logits"
    assert q_tm1.logits.shape == (*q_tm1.q_values.shape, support.shape[0]), q_tm1.logits.shape
    assert q_t_target.logits.shape[1:] == q_tm1.logits.shape[1:], q_t_target.logits.shape
    log_p_tm1 = F.log_softmax(_taken(q_tm1.logits, action_tm1), dim=-1)  # (B, atoms)
    a_star = _bootstrap_action(q_t_target, q_t_online)
    probs_t = F.softmax(_taken(q_t_target.logits, a_star), dim=-1).detach()
    target = categorical_projection(probs_t, reward_t, discount_t, support).detach()
    cross_entropy = -(target * log_p_tm1).sum(dim=-1)
    q_taken = _taken(q_tm1.q_values, action_tm1).detach()
    return LossOutput(cross_entropy, q_taken, cross_entropy.detach())


# ---------------------------------------------------------------------- QR-DQN


def quantile_losses(
    q_tm1: QOutput,
    action_tm1: Tensor,
    reward_t: Tensor,
    discount_t: Tensor,
    q_t_target: QOutput,
    q_t_online: QOutput | None,
    kappa: float,
) -> LossOutput:
    """QR-DQN's quantile Huber loss (Dabney, Rowland, Bellemare, Munos 2018, eq. 9-10 and
    Algorithm 1), per transition:

        loss = sum_i mean_j rho_i(u_ij),   u_ij = T theta_j - theta_i(s_tm1, a_tm1),
        rho_i(u) = |tau_hat_i - 1{u < 0}| * L_kappa(u) / kappa,   tau_hat_i = (2i + 1) / (2N),
        L_kappa(u) = u^2 / 2 if |u| <= kappa, else kappa (|u| - kappa / 2)   (eq. 9),
        T theta_j = r_t + discount_t * theta_j(s_t, a*)   (a*: as for C51, on the mean).

    The normalisation is Algorithm 1's "sum over i of the expectation over j": the target's N
    quantiles are samples of equal probability 1/N (a mean over j), and each of the N
    estimates theta_i has its own quantile regression loss (a sum over i, eq. 8 and Lemma 2),
    so the loss grows with N and the paper's learning rate goes with that scale. The division by
    kappa is not in eq. 10 as printed (it is in IQN's, Dabney, Ostrovski et al. 2018, eq. 3);
    it makes the loss tend to eq. 8's plain quantile regression loss as kappa -> 0 and bounds
    each gradient term by 1 whatever kappa. At the paper's kappa = 1 the two agree.

    The priority is the mean absolute TD error over the N * N pairs, mean_ij |u_ij|.
    """
    _check_transitions(q_tm1.q_values, action_tm1, reward_t, discount_t)
    assert q_tm1.quantiles is not None and q_t_target.quantiles is not None, "QR needs quantiles"
    assert q_tm1.quantiles.shape[:2] == q_tm1.q_values.shape, q_tm1.quantiles.shape
    assert q_t_target.quantiles.shape[1:] == q_tm1.quantiles.shape[1:], q_t_target.quantiles.shape
    num_quantiles = q_tm1.quantiles.shape[2]
    theta_tm1 = _taken(q_tm1.quantiles, action_tm1)  # (B, N)
    theta_t = _taken(q_t_target.quantiles, _bootstrap_action(q_t_target, q_t_online))
    target = (reward_t[:, None] + discount_t[:, None] * theta_t).detach()  # (B, N): T theta_j
    u = target[:, None, :] - theta_tm1[:, :, None]  # (B, i, j)
    abs_u = u.abs()
    huber = torch.where(abs_u <= kappa, 0.5 * u * u, kappa * (abs_u - 0.5 * kappa))
    tau_hat = (2 * torch.arange(num_quantiles, device=u.device, dtype=u.dtype) + 1) / (
        2 * num_quantiles
    )
    # The indicator is a constant of the loss: the weight carries no gradient.
    weight = (tau_hat[None, :, None] - (u < 0).to(u.dtype)).abs()
    per_transition = (weight * huber / kappa).mean(dim=2).sum(dim=1)
    q_taken = _taken(q_tm1.q_values, action_tm1).detach()
    priority = abs_u.detach().mean(dim=(1, 2))
    return LossOutput(per_transition, q_taken, priority)
