"""Summarise TensorBoard scalars of a run directory as JSON.

    python scripts/read_scalars.py runs/Breakout/2026-11-22_10-00-00 perf/sps --after 50000

Prints, for each tag, the number of points, the first and last (step, value), and the mean of
the values logged after the given agent step. `--per 100000` adds the count and mean of the
values in each window of that many agent steps (the learning checks' tables of
`train/episode_return`: a game counts in the window of the agent step at which it ended).
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
    parser.add_argument("--per", type=int, default=0, help="agent steps per window of means")
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
        if args.per > 0:
            windows: dict[int, list[float]] = {}
            for p in points:  # a value logged at step k*per ends window k-1, as "0-100k" reads
                windows.setdefault(max(p.step - 1, 0) // args.per, []).append(p.value)
            out[tag]["windows"] = {
                f"{k * args.per}-{(k + 1) * args.per}": [len(v), round(sum(v) / len(v), 2)]
                for k, v in sorted(windows.items())
            }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
