"""The learning-curve PNGs, one per game: drawn after the tables are printed, with matplotlib,
which is optional (the `sweep` extra) and imported only to draw."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dqn_atari.report.outputs import make_folder
from dqn_atari.tags import EVAL_RETURN_MEAN, TRAIN_EPISODE_RETURN


def matplotlib_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


@dataclass
class Figure:
    """One game's learning curves, to be drawn into `path`."""

    path: Path
    title: str
    curves: dict[str, dict[str, Any] | None]
    frame_skip: int
    final: tuple[float, float] | None
    row: dict[str, Any]  # the game's JSON record, which names the PNG once it is written


def draw(figures: list[Figure]) -> list[Path]:
    """Write the PNGs, in order; the first that cannot be written stops it (OSError, whose
    filename says where)."""
    written = []
    for figure in figures:
        plot_game(figure.path, figure.title, figure.curves, figure.frame_skip, figure.final)
        figure.row["plot"] = str(figure.path)
        written.append(figure.path)
    return written


def plot_game(
    path: Path,
    title: str,
    curves: dict[str, dict[str, Any] | None],
    frame_skip: int,
    final: tuple[float, float] | None = None,
) -> None:
    """Both curves of one game; `final` (agent step, mean return) marks the final evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    names = {
        EVAL_RETURN_MEAN: f"evaluation return ({EVAL_RETURN_MEAN})",
        TRAIN_EPISODE_RETURN: "training return",
    }
    for ax, tag in zip(axes, (EVAL_RETURN_MEAN, TRAIN_EPISODE_RETURN), strict=True):
        series = curves.get(tag)
        ax.set_ylabel(names[tag])
        ax.grid(alpha=0.3)
        if series:
            x = np.array(series["agent_steps"])
            ax.plot(x, series["mean"], marker="o" if tag == EVAL_RETURN_MEAN else None, ms=3,
                    label=f"mean over {series['seeds']} seed(s)")  # fmt: skip
            if series["seeds"] > 1:
                ax.fill_between(x, series["ci_low"], series["ci_high"], alpha=0.25,
                                label="95% bootstrap CI over seeds")  # fmt: skip
        if tag == EVAL_RETURN_MEAN and final is not None:
            step, value = final
            ax.plot([step], [value], marker="*", ms=12, ls="", color="C3",
                    label="final evaluation (mean over seeds)")  # fmt: skip
        if ax.lines:
            ax.legend(loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
    axes[1].set_xlabel("agent steps")
    top = axes[0].secondary_xaxis(
        "top", functions=(lambda s: s * frame_skip, lambda f: f / frame_skip)
    )
    top.set_xlabel("emulator frames")
    fig.suptitle(title)
    fig.tight_layout()
    make_folder(path.parent)
    fig.savefig(path, dpi=100)
    plt.close(fig)
