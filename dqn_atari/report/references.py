"""Reference scores from `dqn_atari/data/atari_reference.json`, which names its sources: the
random/human tables scores are normalized with, and other agents' published results."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqn_atari.report.messages import ReportError
from dqn_atari.report.stats import human_normalized

REFERENCE_FILE = Path(__file__).resolve().parent.parent / "data" / "atari_reference.json"


@dataclass(frozen=True)
class References:
    table: str  # key of the normalization table
    name: str
    source: str
    normalization: dict[str, dict[str, float]]  # rom -> {random, human}
    published: dict[str, dict[str, Any]]  # key -> {name, source, games: rom -> {mean, sd}}

    @classmethod
    def load(cls, table: str, path: Path = REFERENCE_FILE) -> References:
        data = json.loads(path.read_text())
        tables = data["normalization"]
        if table not in tables:
            raise ReportError(f"unknown --normalize table '{table}'; choose {', '.join(tables)}")
        chosen = tables[table]
        return cls(table, chosen["name"], chosen["source"], chosen["games"], data["published"])

    def normalize(self, rom: str, score: float) -> float | None:
        ref = self.normalization.get(rom)
        return None if ref is None else human_normalized(score, ref["random"], ref["human"])
