"""Draw TensorBoard scalars of a run as a PNG (with OpenCV, already a dependency).

    python scripts/plot_scalars.py runs/Breakout/... train/episode_return docs/breakout.png \
        --smooth 50 --hline 1.7 "random play"

Plots each logged point faintly, a moving average over `--smooth` points boldly, and optional
horizontal reference lines.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

WIDTH, HEIGHT = 900, 500
LEFT, RIGHT, TOP, BOTTOM = 80, 30, 50, 60
FONT = cv2.FONT_HERSHEY_SIMPLEX


def nice_ticks(low: float, high: float, count: int = 6) -> np.ndarray:
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** np.floor(np.log10(raw)) if raw > 0 else 1.0
    step = min((m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw), default=raw)
    ticks = np.arange(np.ceil(low / step) * step, high + step / 2, step)
    return ticks[ticks <= high + 1e-9 * abs(step)]  # none outside the plotted range


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("tag")
    parser.add_argument("out", type=Path)
    parser.add_argument("--smooth", type=int, default=20, help="points in the moving average")
    parser.add_argument("--title", default=None)
    parser.add_argument("--hline", nargs=2, action="append", default=[], metavar=("Y", "LABEL"))
    args = parser.parse_args()

    events = EventAccumulator(args.run_dir, size_guidance={"scalars": 0})
    events.Reload()
    points = events.Scalars(args.tag)
    steps = np.array([p.step for p in points], dtype=float)
    values = np.array([p.value for p in points], dtype=float)
    window = max(1, min(args.smooth, len(values)))
    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
    smooth_steps = steps[window - 1 :]

    refs = [(float(y), label) for y, label in args.hline]
    y_low = min(values.min(), *(y for y, _ in refs)) if refs else values.min()
    y_high = max(values.max(), *(y for y, _ in refs)) if refs else values.max()
    y_pad = 0.05 * (y_high - y_low or 1.0)
    y_low, y_high = y_low - y_pad, y_high + y_pad
    x_low, x_high = 0.0, steps.max()

    def xy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        px = LEFT + (x - x_low) / (x_high - x_low) * (WIDTH - LEFT - RIGHT)
        py = HEIGHT - BOTTOM - (y - y_low) / (y_high - y_low) * (HEIGHT - TOP - BOTTOM)
        return np.stack([px, py], axis=1).round().astype(np.int32)

    img = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    for tick in nice_ticks(y_low, y_high):
        (_, py), (_, _) = xy(np.array([x_low, x_high]), np.array([tick, tick]))
        cv2.line(img, (LEFT, py), (WIDTH - RIGHT, py), (230, 230, 230), 1)
        label = f"{0.0 if abs(tick) < 1e-9 else tick:g}"  # no "-0"
        cv2.putText(img, label, (8, py + 5), FONT, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    for tick in nice_ticks(x_low, x_high):
        (px, _), _ = xy(np.array([tick, tick]), np.array([y_low, y_low]))
        cv2.line(img, (px, TOP), (px, HEIGHT - BOTTOM), (230, 230, 230), 1)
        label = f"{tick / 1000:g}k"
        (width, _), _ = cv2.getTextSize(label, FONT, 0.45, 1)
        x_text = min(px - width // 2, WIDTH - width - 2)  # the last label stays on the image
        cv2.putText(img, label, (x_text, HEIGHT - BOTTOM + 20), FONT, 0.45, (60, 60, 60), 1)
    cv2.rectangle(img, (LEFT, TOP), (WIDTH - RIGHT, HEIGHT - BOTTOM), (120, 120, 120), 1)
    for x, y in xy(steps, values):
        cv2.circle(img, (int(x), int(y)), 1, (235, 190, 150), -1)
    cv2.polylines(img, [xy(smooth_steps, smooth)], False, (180, 90, 20), 2, cv2.LINE_AA)
    for y, label in refs:
        line = xy(np.array([x_low, x_high]), np.array([y, y]))
        cv2.line(img, tuple(line[0]), tuple(line[1]), (60, 60, 200), 1, cv2.LINE_AA)
        cv2.putText(img, label, (line[0][0] + 8, line[0][1] - 6), FONT, 0.45, (60, 60, 200), 1)
    title = args.title or f"{args.tag} ({window}-point moving average)"
    cv2.putText(img, title, (LEFT, 30), FONT, 0.6, (20, 20, 20), 1, cv2.LINE_AA)
    cv2.putText(
        img, "agent steps", (WIDTH // 2 - 40, HEIGHT - 15), FONT, 0.5, (60, 60, 60), 1, cv2.LINE_AA
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), img)
    print(f"{args.out}: {len(values)} points, last moving average {smooth[-1]:.2f}")


if __name__ == "__main__":
    main()
