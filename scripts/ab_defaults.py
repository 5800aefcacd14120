"""A/B of the CPU defaults: end-to-end dqn-train of two checkouts of dqn-atari, and SB3, in one run.

    git worktree add /tmp/old 308d3ff
    python scripts/ab_defaults.py /tmp/old . --rounds 3 --json-out ab.json

Each round runs the old checkout, the new one and Stable-Baselines3's DQN in turn, so a slow
spell of a shared machine falls on all three alike; the figures are medians over the rounds.
The run is benchmark.py's end-to-end run (Breakout, fp32 eager, num_envs=1, the Nature replay
ratio, epsilon 0.1 after learning_starts), each checkout's own code found through PYTHONPATH.
Ratios to SB3 measured in one run compare; figures of separate runs on this VM do not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark  # a script, not a package: imported from scripts/

CPU = torch.device("cpu")


def checkout_sps(code: Path, learning_starts: int, steps: int) -> float:
    """Agent steps/s after learning_starts of `code`'s dqn-train, fp32 eager, one game."""
    total_steps = learning_starts + steps
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        overrides = benchmark.e2e_overrides("Breakout", CPU, learning_starts, total_steps, run_dir)
        # The final evaluation (0.2 on) would add its games to the run's wall time, not its sps;
        # an earlier checkout has no such key.
        if "final_eval_episodes" in (code / "dqn_atari" / "config.py").read_text():
            overrides.append("final_eval_episodes=0")
        command = [
            sys.executable, "-c", "from dqn_atari.cli import train_entry; train_entry()",
            *overrides, "precision=fp32", "compile=false", "num_envs=1",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(code)}
        done = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0:
            tail = done.stderr[-2000:]
            raise RuntimeError(f"dqn-train of {code} exited {done.returncode}: {tail}")
        return float(np.mean(benchmark.sps_after(run_dir, learning_starts)))


def commit_of(code: Path) -> str:
    """The checkout's commit (with "+changes" when its tracked files differ from it)."""
    git = ["git", "-C", str(code)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "an unknown commit (not a git checkout)"
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD"]).returncode != 0
    return head.stdout.strip() + ("+changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="checkout of the earlier version")
    parser.add_argument("new", type=Path, help="checkout of this version")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--learning-starts", type=int, default=2000, help="agent steps")
    parser.add_argument("--steps", type=int, default=6000, help="agent steps after learning")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    rounds: dict[str, list[float]] = {"old": [], "new": [], "sb3": []}
    for _ in range(args.rounds):
        for name, code in trees.items():
            rounds[name].append(checkout_sps(code, args.learning_starts, args.steps))
            print(f"{name} ({code}): {rounds[name][-1]:.1f} agent steps/s", flush=True)
        sb3 = benchmark.in_fresh_process(
            benchmark.sb3_dqn_sps, "Breakout", CPU, args.learning_starts, args.steps
        )
        if isinstance(sb3, str):
            raise SystemExit(f"ab_defaults: SB3 {sb3}")
        rounds["sb3"].append(sb3["agent_steps_per_s_learning"])
        print(f"sb3: {rounds['sb3'][-1]:.1f} agent steps/s", flush=True)
    median = {name: float(np.median(values)) for name, values in rounds.items()}
    report = {
        "checkouts": {name: f"{code} at {commit_of(code)}" for name, code in trees.items()},
        "agent_steps_per_s_rounds": rounds,
        "agent_steps_per_s_median": median,
        "new_over_old": median["new"] / median["old"],
        "speedup_vs_sb3": {name: median[name] / median["sb3"] for name in trees},
    }
    print(json.dumps(report, indent=1))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
