"""Which runs are comparable: runs of one experiment (the same config but for the seed, the game
and the settings below) form a group, and each group's label names what sets it apart."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from dqn_atari.report.runs import Run
from dqn_atari.settings import SPEED_ONLY

# Runs that differ only in these are one experiment. The seed and the game are what a group
# spans; the rest are how a run was carried out, not what was asked of it: the speed-only
# settings; where it was continued from, and whether its replay memory was saved or refilled on
# the way (a resume that refills changes the run's course, as an interruption does, not its
# experiment); and what it logs, checkpoints and evaluates during training (that evaluation
# plays its own game with its own RNG, so it never changes training).
NOT_THE_EXPERIMENT = frozenset(
    {
        "seed",
        "env.game",
        *SPEED_ONLY,
        "resume",
        "save_replay",
        "refill_replay",
        "progress_interval_s",
        "log_interval",
        "checkpoint_interval",
        "keep_checkpoints",
        "eval_interval",
        "eval_episodes",
    }
)
# Budget, algorithm and protocol are in every label already.
IN_EVERY_LABEL = frozenset({"total_steps", "algo.name", "env.sticky_action_prob", "env.noop_max"})


def experiment(run: Run) -> dict[str, Any]:
    """The run's flattened config without the settings that are not the experiment."""
    return {k: v for k, v in run.config.items() if k not in NOT_THE_EXPERIMENT}


@dataclass
class Group:
    runs: list[Run]
    number: int = 0
    differs: dict[str, Any] = field(default_factory=dict)  # settings that set it apart

    @property
    def first(self) -> Run:
        return self.runs[0]

    def label(self) -> str:
        r = self.first
        steps = f"{r.total_steps:,} agent steps" if r.total_steps else "? agent steps"
        frames = f" ({r.total_steps * r.frame_skip:,} frames)" if r.total_steps else ""
        extra = "".join(f", {k}={v}" for k, v in sorted(self.differs.items()))
        return f"{r.protocol} protocol, {r.algo}, {steps}{frames}{extra}"

    def games(self) -> dict[str, list[Run]]:
        by_game: dict[str, list[Run]] = {}
        for run in sorted(self.runs, key=lambda r: (r.game, r.seed if r.seed is not None else -1)):
            by_game.setdefault(run.game, []).append(run)
        return by_game


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs of one experiment form a group, numbered in the order of their first run's folder;
    where there are several, the labels name the settings in which they differ."""
    by_key: dict[str, list[Run]] = {}
    for run in runs:
        key = json.dumps(experiment(run), sort_keys=True, default=str)
        by_key.setdefault(key, []).append(run)
    groups = [Group(v) for _, v in sorted(by_key.items(), key=lambda kv: str(kv[1][0].path))]
    if len(groups) > 1:
        settings = [experiment(g.first) for g in groups]
        keys = set().union(*settings)
        varying = {k for k in keys if len({json.dumps(s.get(k)) for s in settings}) > 1}
        for group, chosen in zip(groups, settings, strict=True):
            group.differs = {k: chosen.get(k) for k in varying - IN_EVERY_LABEL}
    for number, group in enumerate(groups, start=1):
        group.number = number
    return groups
