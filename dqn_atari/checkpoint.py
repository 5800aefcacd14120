"""Checkpoints as explicit state dicts: one versioned layout, written atomically, read without
running code.

`TrainCheckpoint` is the layout: what identifies the run (game, action set, phi settings,
config) and each component's own `state_dict()` (learner, counters, random streams, games), plus
the name of the saved replay memory beside it. It is a plain dict of tensors, numbers, strings,
lists and dicts, saved with `torch.save` and loaded with `torch.load(weights_only=True)`, which
refuses any pickle that would construct arbitrary objects. It is written to a temporary file in
the same directory, flushed to disk and renamed over `latest.pt`, so a crash at any moment
leaves the previous checkpoint whole.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import warnings
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import torch

from dqn_atari.files import write_atomic

# 2 (0.2): one replay memory for N games, the optimizers' own state, components' state_dicts.
# 1 (0.1): one replay ring per game; dqn-eval still reads it, resume refuses it.
FORMAT = "dqn-atari/2"
FORMATS_READ = ("dqn-atari/1", FORMAT)
LATEST = "latest.pt"
_PERIODIC = re.compile(r"step_(\d+)\.pt")


class SavesReplay(Protocol):
    """A replay memory that writes itself to a directory (replay.ReplayMemory)."""

    def save(self, directory: Path) -> None: ...


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found or read."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint that cannot be written (unwritable directory, full disk)."""


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` through a temporary file and a rename (files.write_atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Serialized in memory first: torch's zip writer turns a failed write (a full disk) into a
    # RuntimeError that has lost the OS's reason; written by Python, it is the OSError itself.
    data = io.BytesIO()
    torch.save(state, data)
    write_atomic(path, data.getbuffer())


# Lines of torch.load's errors that tell the reader what to try rather than what is wrong. The one
# to never repeat is "Re-running torch.load with weights_only set to False will likely succeed":
# for a file of unknown origin that is the advice to run whatever code it holds.
_ADVICE = re.compile(
    r"weights_only|re-running|file an issue|check the documentation|if you are seeing this|"
    r"this can happen|this is an internal|https?://",
    re.IGNORECASE,
)


def load_error_reason(err: BaseException) -> str:
    """What went wrong in one line, from an error of torch.load or load_state_dict: the detail
    rather than a heading ("Error(s) in loading state_dict for NatureQNetwork:"), and never
    torch's advice (retrying with weights_only=False)."""
    text = str(err)
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    if detail is not None:  # the weights-only unpickler met bytes no torch.save writes
        return f"not a file torch.save wrote ({detail.group(1).strip()})"
    for line in (line.strip() for line in text.splitlines()):
        if not line or line.endswith(":"):
            continue
        sentences = re.split(r"(?<=\.)\s+", line)
        kept = []
        for sentence in sentences:
            if _ADVICE.search(sentence):
                break
            kept.append(sentence)
        if kept:
            reason = " ".join(kept)
            return reason if len(reason) <= 300 else reason[:297] + "..."
    return type(err).__name__


def load_untrusted(path: Path) -> Any:
    """torch.load of a file from disk: tensors and plain data only, onto the CPU. Its warnings
    about a file it cannot read (an unusual pickle protocol) are left out: the error that
    follows says it in one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a dqn-atari checkpoint into host memory; every failure is a CheckpointError with a
    one-line reason.

    Always onto the CPU, whatever device wrote it: host-side state (the game's frames, RNG
    states) must stay numpy-convertible, and each component moves what lives on the training
    device there itself (`load_state_dict` of modules and optimizers copies onto their device).
    """
    path = Path(path)
    if path.is_dir():
        path = path / LATEST
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a PyTorch checkpoint archive "
            "(truncated or corrupt?)"
        )
    try:
        state = load_untrusted(path)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"refused checkpoint {path}: it would build Python objects when loaded; only tensors "
            "and plain data are accepted (torch.load weights_only=True)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"cannot read checkpoint {path} (truncated or corrupt?): {load_error_reason(err)}"
        ) from None
    if not isinstance(state, dict) or state.get("format") not in FORMATS_READ:
        raise CheckpointError(f"{path} is not a dqn-atari checkpoint (format {FORMAT})")
    return state


def require_resumable(state: dict[str, Any], path: Path) -> None:
    """Refuse, in one line, a checkpoint whose layout this version cannot continue from."""
    if state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {state.get('format')} (an earlier dqn-atari); this "
            f"version resumes format {FORMAT} only: score it with dqn-eval, or start a new run"
        )


@dataclass
class TrainCheckpoint:
    """What a dqn-train checkpoint holds (layout FORMAT)."""

    game: str  # ALE ROM id
    num_actions: int
    action_meanings: list[str]
    env_options: dict[str, Any]  # the AtariOptions phi was built with
    num_envs: int  # games played at once: the replay memory and the games' states follow it
    config: dict[str, Any]  # the run's resolved config
    overrides: list[str]  # the command line's overrides when the run started
    counters: dict[str, Any]  # TrainState.state_dict()
    learner: dict[str, Any]  # Learner.state_dict(): networks and optimizer
    random: dict[str, Any]  # RandomStreams.state_dict()
    games: list[dict[str, Any]]  # Games.state_dicts(): each emulator and its phi buffers
    replay: str | None = None  # the replay_<step>/ directory beside latest.pt, if saved
    # networks.NetworkSpec.to_dict() of the online and target networks: dqn-eval rebuilds the
    # network from it. None in checkpoints written before the DQN family (the plain network).
    network: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_dict(cls, state: dict[str, Any], path: Path) -> TrainCheckpoint:
        """The layout read back, checked; anything missing or of the wrong kind is one line."""
        require_resumable(state, path)
        kinds: dict[str, type | tuple[type, ...]] = {
            "game": str,
            "num_actions": int,
            "action_meanings": list,
            "env_options": dict,
            "num_envs": int,
            "config": dict,
            "overrides": list,
            "counters": dict,
            "learner": dict,
            "random": dict,
            "games": list,
            "replay": (str, type(None)),
            "network": (dict, type(None)),
        }
        for name, kind in kinds.items():
            if not isinstance(state.get(name), kind):
                raise CheckpointError(f"checkpoint {path} is damaged: no valid '{name}'")
        values: dict[str, Any] = {name: state.get(name) for name in kinds}
        return cls(**values)


@dataclass(frozen=True)
class ScoredNetwork:
    """What dqn-eval needs of any checkpoint it reads (formats 1 and 2)."""

    game: str
    num_actions: int
    env_options: dict[str, Any]
    online: dict[str, Any]  # the online network's state_dict
    step: int  # agent steps it was trained for
    network: dict[str, Any] | None  # its NetworkSpec as a dict; None = the plain Nature network

    @classmethod
    def from_dict(cls, state: dict[str, Any], path: Path) -> ScoredNetwork:
        try:
            counters = state["state"] if state["format"] == "dqn-atari/1" else state["counters"]
            scored = cls(
                game=state["game"],
                num_actions=state["num_actions"],
                env_options=state["env_options"],
                online=state["learner"]["online"],
                step=int(counters["step"]),
                network=state.get("network"),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(
                f"checkpoint {path} does not hold a usable network (no {err})"
            ) from None
        return scored


def write_failure(err: BaseException) -> str | None:
    """Why a write failed, when `err` is a failed write: an OSError (no space, no permission, a
    file size limit), or the RuntimeError torch's zip writer raises when the file it writes
    through stops taking bytes (`torch.save` into a file object, as the replay memory's
    metadata is saved). None for any other error, which is not the disk's."""
    if isinstance(err, OSError):
        return err.strerror or str(err) or type(err).__name__
    text = str(err)
    if isinstance(err, RuntimeError) and ("StreamWriter" in text or "inline_container" in text):
        return f"the write failed (a full disk?): {load_error_reason(err)}"
    return None


class CheckpointManager:
    """`latest.pt` plus periodic `step_NNNNNNNNN.pt` files in one directory, keeping the last K."""

    def __init__(self, directory: Path, keep: int = 0) -> None:
        self.directory = directory
        self.keep = keep  # periodic files kept; 0 = all

    @property
    def latest(self) -> Path:
        return self.directory / LATEST

    def save(
        self,
        state: dict[str, Any],
        step: int,
        periodic: bool,
        replay: SavesReplay | None = None,
    ) -> Path:
        """Replace latest.pt; with `periodic`, also keep this state as step_<step>.pt.

        With `replay`, the memory is first written whole to `replay_<step>/` (through a
        temporary directory and a rename) and latest.pt names it; the replay of the previous
        latest.pt is removed only once the new latest.pt is in place.
        """
        written: str | None = None
        committed = False
        try:
            if replay is not None:
                written = self._save_replay(replay, step)
                state = {**state, "replay": written}
            save_atomic(state, self.latest)
            committed = True
            if periodic:
                self._keep_copy(step)
            self._remove_stale(keep_replay=state.get("replay"))
        except (OSError, RuntimeError) as err:
            reason = write_failure(err)
            if reason is None:
                raise
            # Past the rename, latest.pt is the new checkpoint (its periodic copy failed).
            kept = f"holds agent step {step:,}" if committed else "is unchanged"
            raise CheckpointWriteError(
                f"cannot write checkpoint in {self.directory}: {reason}; {self.latest} {kept}"
            ) from None
        finally:
            # Interrupted (a second Ctrl-C, a full disk) between the replay and latest.pt: the new
            # replay directory is named by no checkpoint, and goes.
            if written is not None and not committed and written != self._named_replay():
                shutil.rmtree(self.directory / written, ignore_errors=True)
        return self.latest

    def _named_replay(self) -> str | None:
        """The replay directory the current latest.pt names (None without one)."""
        if not self.latest.is_file():
            return None
        try:
            name = torch.load(self.latest, map_location="cpu", weights_only=True).get("replay")
        except Exception:  # a damaged latest.pt names nothing
            return None
        return name if isinstance(name, str) else None

    def remove_orphans(self) -> None:
        """At the start of a run: replay directories latest.pt does not name, and temporary
        files, left by a process that was killed while checkpointing."""
        if self.directory.is_dir():
            self._remove_stale(keep_replay=self._named_replay())

    def _save_replay(self, replay: SavesReplay, step: int) -> str:
        name = f"replay_{step:09d}"
        tmp = self.directory / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            replay.save(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = self.directory / name
        if final.exists():  # the same step saved again (a stop right after a checkpoint)
            old = self.directory / f".{name}.old.tmp"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        return name

    def _remove_stale(self, keep_replay: str | None) -> None:
        """Replays no checkpoint names any more, and temporary files a crash left behind."""
        for path in self.directory.glob("replay_*"):
            if path.name != keep_replay:
                shutil.rmtree(path, ignore_errors=True)
        for path in self.directory.glob(".*.tmp"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def _keep_copy(self, step: int) -> None:
        copy = self.directory / f"step_{step:09d}.pt"
        copy.unlink(missing_ok=True)
        try:
            # latest.pt is replaced by rename, never rewritten, so a hard link is a safe copy.
            os.link(self.latest, copy)
        except OSError:
            # Onto the CPU: a CUDA run's tensors would otherwise be loaded back onto its GPU.
            save_atomic(torch.load(self.latest, map_location="cpu", weights_only=True), copy)
        if self.keep > 0:
            for old in self.periodic()[: -self.keep]:
                old.unlink(missing_ok=True)

    def periodic(self) -> list[Path]:
        """Periodic checkpoint files, oldest first."""
        found = [p for p in self.directory.glob("step_*.pt") if _PERIODIC.fullmatch(p.name)]
        return sorted(found, key=lambda p: int(_PERIODIC.fullmatch(p.name).group(1)))  # type: ignore[union-attr]
