"""A run's summary.json and config.yaml, read and checked.

Real folders hold damaged runs: every value the report takes from a run's files passes through
`Fields`, so that a missing or mistyped one is one `Unusable` naming the file, the key and the
value (`summary.json: agent_steps must be an integer >= 0, got "1500"`), which the caller turns
into a warning and a row of the runs left out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

# dqn_atari.summary (for the summary's file name, format and statuses) is imported where it is
# used: it imports torch, which a report never needs and which would take seconds to start
# before main() can turn a Ctrl-C into one line.


class Unusable(Exception):
    """A run file, or a value in it, that the report cannot use. The message starts with the
    file's name (`summary.json: agent_steps is missing`); the run's folder is said apart."""


_REQUIRED = object()  # no default: the key must be there
_D = TypeVar("_D")


def show(value: object) -> str:
    """A value as the file spelled it, cut short: `"1500"`, `null`, `[1, 2]`."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    names.update({int: "a number", float: "a number", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no count


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Fields:
    """Typed reads of one JSON or YAML object. Every value the report takes from a run's files
    passes through here, so that a missing or mistyped one is one `Unusable` naming the file, the
    key and the value, never a KeyError or a ValueError deep in the table code."""

    def __init__(self, data: object, where: str, prefix: str = "") -> None:
        if not isinstance(data, dict):
            what = f"{prefix.rstrip('.')} is" if prefix else "holds"
            raise Unusable(f"{where}: {what} {_kind(data)}, not an object")
        self.data: dict[str, Any] = data
        self.where = where
        self.prefix = prefix  # how the file spells the keys' parent: 'evaluation.'

    def _read(self, key: str, default: Any, ok: Callable[[Any], bool], kind: str) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                raise Unusable(f"{self.where}: {self.prefix}{key} is missing")
            return default
        value = self.data[key]
        if value is None and default is None:  # null stands for "not recorded" where allowed
            return None
        if not ok(value):
            raise Unusable(f"{self.where}: {self.prefix}{key} must be {kind}, got {show(value)}")
        return value

    def _integer(self, key: str, default: Any, minimum: int | None) -> Any:
        if minimum is None:
            return self._read(key, default, _is_int, "an integer")
        return self._read(
            key, default, lambda v: _is_int(v) and v >= minimum, f"an integer >= {minimum}"
        )

    def integer(self, key: str, minimum: int | None = 0) -> int:
        """An int (not a bool) >= `minimum`."""
        return int(self._integer(key, _REQUIRED, minimum))

    def integer_or(self, key: str, default: _D, minimum: int | None = 0) -> int | _D:
        """The same, or `default` when the key is absent (or null, where `default` is None)."""
        value: int | _D = self._integer(key, default, minimum)
        return value

    def number(self, key: str) -> float:
        """An int or a float, NaN and infinity included (the caller decides what they mean)."""
        return float(self._read(key, _REQUIRED, _is_number, "a number"))

    def number_or(self, key: str, default: _D) -> float | _D:
        value = self._read(key, default, _is_number, "a number")
        return value if value is default else float(value)

    def text(self, key: str) -> str:
        return str(self._read(key, _REQUIRED, lambda v: isinstance(v, str), "a string"))

    def text_or(self, key: str, default: _D) -> str | _D:
        value: str | _D = self._read(key, default, lambda v: isinstance(v, str), "a string")
        return value


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in config.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{key}."))
        else:
            flat[key] = value
    return flat


@dataclass(frozen=True)
class Settings:
    """What the report takes from a run's config (summary.json's `config`, else config.yaml),
    checked, and the flattened config it groups runs by. Keys an older config lacks take the
    value dqn-train would have used or stay unknown (None, '?')."""

    game: str
    seed: int | None
    algo: str
    total_steps: int | None  # agent steps asked for
    frame_skip: int  # emulator frames per agent step
    sticky_action_prob: float
    noop_max: int
    eval_episodes: int | None  # games per evaluation during training
    flat: dict[str, Any]

    @classmethod
    def parse(cls, config: object, where: str, prefix: str = "") -> Settings:
        flat = flatten(Fields(config, where, prefix).data)
        f = Fields(flat, where, prefix)
        sticky = f.number_or("env.sticky_action_prob", 0.0)
        if not 0.0 <= sticky <= 1.0:
            raise Unusable(
                f"{where}: {prefix}env.sticky_action_prob must be in [0, 1], got {show(sticky)}"
            )
        return cls(
            game=f.text_or("env.game", "?"),
            seed=f.integer_or("seed", None, minimum=None),
            algo=f.text_or("algo.name", "?"),
            total_steps=f.integer_or("total_steps", None, minimum=1),
            frame_skip=f.integer_or("env.frame_skip", 4, minimum=1),
            sticky_action_prob=float(sticky),
            noop_max=f.integer_or("env.noop_max", 0),
            eval_episodes=f.integer_or("eval_episodes", None),
            flat=flat,
        )


@dataclass(frozen=True)
class Evaluation:
    kind: str  # final | periodic
    episodes: int  # games played
    return_mean: float  # may be NaN or infinite: such a run is flagged, never scored


@dataclass(frozen=True)
class Summary:
    """The fields of a summary.json the report uses, checked (dqn_atari/summary.py writes it)."""

    status: str  # finished | stopped | diverged; anything else makes the run incomplete
    stopped_by: str | None
    game: str  # display name
    rom: str
    protocol: str
    agent_steps: int
    total_steps: int
    evaluation: Evaluation | None
    wall_time_s: float | None
    agent_steps_per_s: float | None
    settings: Settings | None  # None: an older summary without its config

    @classmethod
    def parse(cls, data: object) -> Summary:
        from dqn_atari.summary import FORMAT, SUMMARY

        if not isinstance(data, dict):
            raise Unusable(f"{SUMMARY}: not a dqn-train summary ({_kind(data)}, not an object)")
        if data.get("format") != FORMAT:
            raise Unusable(
                f"{SUMMARY}: not a dqn-train summary (format {show(data.get('format'))}, "
                f"expected {FORMAT})"
            )
        f = Fields(data, SUMMARY)
        evaluation = None
        if data.get("evaluation") is not None:
            # Its mean return is what the report scores; the per-game returns are not read.
            e = Fields(data["evaluation"], SUMMARY, "evaluation.")
            evaluation = Evaluation(
                kind=e.text("kind"),
                episodes=e.integer("episodes", minimum=1),
                return_mean=float(e.number("return_mean")),
            )
        config = data.get("config")
        wall, speed = f.number_or("wall_time_s", None), f.number_or("agent_steps_per_s", None)
        return cls(
            status=f.text("status"),
            stopped_by=f.text_or("stopped_by", None),
            game=f.text("game"),
            rom=f.text("rom"),
            protocol=f.text("protocol"),
            agent_steps=f.integer("agent_steps"),
            total_steps=f.integer("total_steps", minimum=1),
            evaluation=evaluation,
            # Speed figures are only shown: a NaN one is dropped, not a reason to skip the run.
            wall_time_s=wall if wall is not None and math.isfinite(wall) else None,
            agent_steps_per_s=speed if speed is not None and math.isfinite(speed) else None,
            settings=None if config is None else Settings.parse(config, SUMMARY, "config."),
        )


def read_summary_file(path: Path) -> Summary | None:
    """The run's summary.json, checked; None when there is none. One that cannot be read, is
    truncated, or lacks what the report needs raises Unusable with the reason."""
    from dqn_atari.summary import SUMMARY

    try:
        text = (path / SUMMARY).read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise Unusable(f"{SUMMARY}: unreadable ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise Unusable(f"{SUMMARY}: unreadable (not UTF-8 text)") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        # A copy cut short, or a file written by hand: not "no summary".
        raise Unusable(f"{SUMMARY}: unreadable, truncated or not JSON ({err})") from None
    return Summary.parse(data)


def read_config_yaml(path: Path) -> Settings:
    """The run's config.yaml (as dqn-train saves it), checked; Unusable when it cannot be used."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    name = "config.yaml"
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path / name))
    except FileNotFoundError:
        raise Unusable(f"{name}: missing") from None
    except OSError as err:
        raise Unusable(f"{name}: unreadable ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise Unusable(f"{name}: unreadable (not UTF-8 text)") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise Unusable(f"{name}: not valid YAML ({err.problem or err.context}{where})") from None
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        raise Unusable(f"{name}: not valid YAML ({str(err).splitlines()[0]})") from None
    return Settings.parse(loaded, name)
