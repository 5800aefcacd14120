"""Whether two runs trained identically: their TensorBoard scalars, step for step.

    python scripts/same_training.py RUN_A RUN_B

For a change that must not change what DQN computes (a restructuring, a speed-up): run the
same command with the same seed on the CPU from both checkouts, side by side, then compare.
Compares every learning scalar both runs logged (episode returns and lengths, loss, mean Q,
epsilon, evaluation returns) exactly, and the final evaluation of each summary.json; speed
scalars (perf/*) are left out. Prints one line per tag and exits 1 at the first difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

IGNORED_PREFIXES = ("perf/",)  # wall-clock figures, never equal


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if not tag.startswith(IGNORED_PREFIXES)
    }


def final_returns(run_dir: Path) -> list[float] | None:
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    evaluation = json.loads(path.read_text()).get("evaluation") or {}
    returns = evaluation.get("returns")
    return list(returns) if isinstance(returns, list) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    args = parser.parse_args()
    a, b = scalars(args.run_a), scalars(args.run_b)
    same = True
    for tag in sorted(set(a) | set(b)):
        if tag not in a or tag not in b:
            print(f"{tag}: only in {args.run_a if tag in a else args.run_b}")
            same = False
            continue
        if a[tag] == b[tag]:
            print(f"{tag}: identical, {len(a[tag])} points")
            continue
        same = False
        first = next(
            (i for i, (x, y) in enumerate(zip(a[tag], b[tag], strict=False)) if x != y),
            min(len(a[tag]), len(b[tag])),
        )
        print(
            f"{tag}: differs at point {first} of {len(a[tag])} / {len(b[tag])}: "
            f"{a[tag][first] if first < len(a[tag]) else None} vs "
            f"{b[tag][first] if first < len(b[tag]) else None}"
        )
    finals = final_returns(args.run_a), final_returns(args.run_b)
    print(f"final evaluation returns: {finals[0]} vs {finals[1]}")
    same = same and finals[0] == finals[1]
    print("identical" if same else "DIFFERENT")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
