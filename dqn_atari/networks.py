"""The Nature DQN Q-network (Mnih et al., 2015)."""

from __future__ import annotations

import torch
from torch import nn


class NatureQNetwork(nn.Module):
    """conv 32x8x8/4 -> conv 64x4x4/2 -> conv 64x3x3/1 -> fc 512 -> one Q-value per action.

    Takes uint8 observations (B, frames, size, size) and scales them to [0, 1] inside `forward`,
    so the replay memory and the acting path move bytes, not floats.
    """

    def __init__(self, num_actions: int, frames: int = 4, frame_size: int = 84) -> None:
        super().__init__()
        self.num_actions = num_actions
        self.frames = frames
        self.frame_size = frame_size
        self.features = nn.Sequential(
            nn.Conv2d(frames, 32, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():  # the flattened size follows from the input size: 3136 at 84x84
            flat = self.features(torch.zeros(1, frames, frame_size, frame_size)).shape[1]
        self.head = nn.Sequential(nn.Linear(flat, 512), nn.ReLU(), nn.Linear(512, num_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        assert obs.shape[1:] == (self.frames, self.frame_size, self.frame_size), obs.shape
        return self.head(self.features(obs.float() / 255.0))
