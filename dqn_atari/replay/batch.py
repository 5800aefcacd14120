"""What the replay memory hands the learner: a batch of transitions."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Batch(NamedTuple):
    """Transitions (s_tm1, a_tm1, r_t, discount_t, s_t), time-indexed as in DQN Zoo.

    With n-step returns, a transition stands for the k <= n steps from `obs_tm1`: `reward_t` is
    sum_{j<k} gamma^j r_{t+j} and `obs_t` the state after the last of them, so the TD target is
    `reward_t + discount_t * max_a Q'(obs_t, a)` whatever k is.
    """

    obs_tm1: torch.Tensor  # uint8 (B, stack, H, W)
    action_tm1: torch.Tensor  # int64 (B,)
    reward_t: torch.Tensor  # float32 (B,): the discounted sum of the k rewards
    discount_t: torch.Tensor  # float32 (B,): gamma^k, 0 where the target must not bootstrap
    obs_t: torch.Tensor  # uint8 (B, stack, H, W)
