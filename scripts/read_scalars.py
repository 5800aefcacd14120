"""Summarise TensorBoard scalars of a run directory as JSON.

    python scripts/read_scalars.py runs/Breakout/2026-11-22_10-00-00 perf/sps --after 50000

Prints, for each tag, the number of points, the first and last (step, value), and the mean of
the values logged after the given agent step.
"""

from __future__ import annotations

import argparse
import json

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("tags", nargs="*", help="tags to show; default all")
    parser.add_argument("--after", type=int, default=0, help="agent step: mean of later values")
    args = parser.parse_args()
    events = EventAccumulator(args.run_dir, size_guidance={"scalars": 0})
    events.Reload()
    out = {}
    for tag in args.tags or events.Tags()["scalars"]:
        points = events.Scalars(tag)
        later = [p.value for p in points if p.step > args.after]
        out[tag] = {
            "points": len(points),
            "first": [points[0].step, points[0].value] if points else None,
            "last": [points[-1].step, points[-1].value] if points else None,
            f"mean_after_{args.after}": sum(later) / len(later) if later else None,
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
