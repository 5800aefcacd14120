"""The run's own random streams, seeded once, saved and restored as one component.

Acting draws from a numpy Generator; network initialisation and anything else in torch from
torch's default generators (CPU, and each CUDA device); python's `random` is seeded for any
library that uses it. The replay memory's sampler and each game's emulator carry their own
streams, saved with them.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


class RandomStreams:
    """python's `random`, torch's CPU and CUDA generators, and the acting Generator."""

    def __init__(self, seed: int) -> None:
        random.seed(seed)
        torch.manual_seed(seed)  # CPU and every CUDA device
        self.numpy = np.random.default_rng(seed)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": self.numpy.bit_generator.state,
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"].cpu())
        self.numpy.bit_generator.state = state["numpy"]
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        # A run resumed on another number of GPUs keeps the states it cannot place as seeded.
        if "cuda" in state and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
