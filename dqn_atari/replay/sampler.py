"""The seam between the replay's storage and how its slots are drawn.

The storage decides which slots can start a transition; at each write it reports the slots
whose validity it touched (`ValidityChange`, on the host). A sampler turns those changes into
its own device state, staged in the same single host-to-device copy as the storage's writes,
and draws slots on the device from that state inside the compiled update:

    host, per vector step:   storage.stage_*(...) -> change;  sampler.stage(change, staging)
                             staging.send();  storage.apply(...);  sampler.apply(...)
    host, per update:        sampler.prepare(batch_size)
    device, in the update:   slots = sampler.draw(batch_size);  batch = storage.gather(slots)

`UniformSampler` (uniform.py) keeps a count per block of the storage's validity flags.
`PrioritizedSampler` (prioritized.py) fits the same calls: `stage`/`apply` set a slot that
became valid to the running maximum priority and an invalid one to 0, then refresh the touched
blocks' sums; `draw_weighted` makes stratified ranks from the same host-drawn uniforms, searches
the same two-level sum tree (sum_tree.py) over float priorities and returns a `Draw` with the
importance-sampling weights; `update_priorities`, in the same update, sets the batch's
priorities from its TD errors; `sampling_state()` adds the priorities, block sums, maximum and
batch count that an update writes; `state_dict()` carries them to a saved memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
import torch

from dqn_atari.replay.staging import Staging


class ValidityChange(NamedTuple):
    """Slots whose flag "can start a transition" a write touched (each slot once, on the
    host), with the flag before and after the write. A touched slot may keep its flag."""

    slots: npt.NDArray[np.int64]
    before: npt.NDArray[np.bool_]
    after: npt.NDArray[np.bool_]


class Draw(NamedTuple):
    """A batch's slots and how much each counts in the loss."""

    slots: torch.Tensor  # int64 (B,): slots that can start a transition
    # float32 (B,): importance-sampling weights, the largest 1 (prioritized replay); None when
    # every transition counts the same (uniform sampling: the loss is the plain mean).
    weights: torch.Tensor | None


class SlotSampler(Protocol):
    """How the slots of a batch are drawn from the storage's valid slots."""

    def staging_bytes(self, max_changes: int) -> int:
        """Bytes `stage` puts at most for a change of `max_changes` slots."""
        ...

    def stage(self, change: ValidityChange, staging: Staging) -> list[int]:
        """Host side of a write: update the host's mirror, put what the device needs into
        `staging`, and return those sections for `apply`."""
        ...

    def apply(self, sections: Sequence[int], sent: Sequence[torch.Tensor]) -> None:
        """Device side of a write: the staged sections, now on the device, into the state."""
        ...

    def prepare(self, batch_size: int) -> None:
        """Host side of a draw, before each one (a CUDA graph replays only `draw`): raise a
        ReplayMemoryError if it cannot be made, and put its random numbers on the device."""
        ...

    def draw(self, batch_size: int) -> torch.Tensor:
        """Device side: `batch_size` valid slots (int64), with a fixed number of ops, static
        shapes and no host sync, so that it traces under torch.compile(fullgraph=True)."""
        ...

    def sampling_state(self) -> list[torch.Tensor]:
        """The device tensors `draw` (and whatever else the update calls) writes in place."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The sampler's own state for a saved memory (its device state that the storage's
        validity flags do not already determine)."""
        ...

    def check_state(self, state: Mapping[str, Any]) -> str | None:
        """Why `state` cannot be loaded into this sampler, or None; changes nothing."""
        ...

    def load_state_dict(self, state: Mapping[str, Any], valid: npt.NDArray[np.bool_]) -> None:
        """Restore `state_dict()`'s state, with `valid` the restored storage's flags."""
        ...
