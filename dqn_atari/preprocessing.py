"""phi(s): the Nature DQN preprocessing, as small pure functions.

The pipeline turns the last two raw RGB screens of an action repeat into one 84x84 grayscale
frame, and the last `stack` such frames into the network input:

    max_pool(prev_rgb, last_rgb) -> to_grayscale -> crop -> resize -> push_frame(stack)

Each step is a function of its inputs only, so each is tested on a known frame. The environment
wrapper in `envs.py` calls them in this order and keeps no preprocessing logic of its own.
"""

from __future__ import annotations

from typing import NamedTuple, cast

import cv2
import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.uint8]

ATARI_SCREEN_SHAPE = (210, 160)  # rows, columns of a raw ALE screen


class Crop(NamedTuple):
    """Pixel margins removed from a raw 210x160 screen before resizing."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0


def max_pool(prev_rgb: Frame, last_rgb: Frame) -> Frame:
    """Pixel-wise max of the last two raw frames of an action repeat.

    Atari games draw some sprites only on even or odd frames (flicker); the max keeps them.
    """
    return np.maximum(prev_rgb, last_rgb)


def to_grayscale(rgb: Frame) -> Frame:
    """Luminance Y = 0.299 R + 0.587 G + 0.114 B (ITU-R 601), rounded, as uint8."""
    return cast(Frame, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def crop_frame(gray: Frame, crop: Crop | None) -> Frame:
    """Remove pixel margins; `None` keeps the whole screen (the Nature default)."""
    if crop is None:
        return gray
    rows, cols = gray.shape
    return gray[crop.top : rows - crop.bottom, crop.left : cols - crop.right]


def resize(gray: Frame, size: int) -> Frame:
    """Area-average down-sampling to size x size (cv2.INTER_AREA), as in most DQN ports."""
    return cast(Frame, cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA))


def process_frame(prev_rgb: Frame, last_rgb: Frame, crop: Crop | None, size: int) -> Frame:
    """One phi frame from the last two raw frames of an action repeat."""
    return resize(crop_frame(to_grayscale(max_pool(prev_rgb, last_rgb)), crop), size)


def reset_stack(frame: Frame, stack: int) -> Frame:
    """The first observation of an episode: its first frame repeated `stack` times.

    The replay memory rebuilds stacks at episode starts the same way, so the network sees the
    same inputs when acting and when learning.
    """
    return np.repeat(frame[None], stack, axis=0)


def push_frame(stacked: Frame, frame: Frame) -> Frame:
    """Drop the oldest frame of a (stack, H, W) observation and append `frame` as the newest."""
    return np.concatenate([stacked[1:], frame[None]], axis=0)


def validate_crop(crop: Crop | None, screen_shape: tuple[int, int] = ATARI_SCREEN_SHAPE) -> None:
    """Reject margins that are negative or leave nothing of the screen."""
    if crop is None:
        return
    if min(crop) < 0:
        raise ValueError(f"crop margins must be >= 0, got {tuple(crop)}")
    rows, cols = screen_shape
    if crop.top + crop.bottom >= rows or crop.left + crop.right >= cols:
        raise ValueError(f"crop {tuple(crop)} leaves no pixels of the {rows}x{cols} screen")
