"""dqn-eval: score a checkpoint with Nature's evaluation protocol, and record its video.

The network is rebuilt from the checkpoint alone: its recorded spec (`networks.NetworkSpec`)
says which head it has, so scoring needs no `algo`; a checkpoint that records none (dqn-atari
0.1, and 0.2 before the DQN family) holds the plain Nature network.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from dqn_atari.checkpoint import (
    LATEST,
    CheckpointError,
    CheckpointWriteError,
    ScoredNetwork,
    load_checkpoint,
    load_error_reason,
)
from dqn_atari.config import EvalConfig
from dqn_atari.envs import AtariOptions, AtariPhiEnv
from dqn_atari.evaluation import EvalResult, evaluate
from dqn_atari.heads import set_noise
from dqn_atari.networks import NatureQNetwork, NetworkSpec, build_network, q_function


def checkpoint_file(given: str) -> Path:
    """A checkpoint file, its checkpoints/ folder, or the run folder above it (as given when
    none of them exists, for load_checkpoint to say so)."""
    path = Path(given).expanduser()
    for candidate in (path, path / LATEST, path / "checkpoints" / LATEST):
        if candidate.is_file():
            return candidate
    return path


class EvalInterrupted(KeyboardInterrupt):
    """dqn-eval stopped by a signal before its games ended; `video` says what became of the
    video (an earlier one is left as it was)."""

    def __init__(self, video: str) -> None:
        super().__init__(video)
        self.video = video


def scored_spec(scored: ScoredNetwork, options: AtariOptions, path: Path) -> NetworkSpec:
    """The network the checkpoint holds: its recorded spec, or the plain Nature network."""
    if scored.network is None:
        return NetworkSpec(scored.num_actions, options.frame_stack, options.screen_size)
    try:
        spec = NetworkSpec.from_dict(scored.network)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {path} does not hold a usable network: {err}") from None
    if (spec.frames, spec.frame_size) != (options.frame_stack, options.screen_size):
        raise CheckpointError(
            f"checkpoint {path} is damaged: its network takes {spec.frames} frames of "
            f"{spec.frame_size} pixels, its game settings {options.frame_stack} of "
            f"{options.screen_size}"
        )
    return spec


def eval_run(config: EvalConfig, device: torch.device) -> dict[str, Any]:
    """Score a checkpoint with Nature's protocol; returns the JSON summary."""
    path = checkpoint_file(config.checkpoint)
    scored = ScoredNetwork.from_dict(load_checkpoint(path), path)
    try:
        options = AtariOptions(**scored.env_options).for_evaluation(
            config.max_episode_frames, noop_max=config.noop_max
        )
        env = AtariPhiEnv(
            scored.game,
            options,
            seed=config.seed,
            render_mode="rgb_array" if config.video else None,
        )
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} holds unusable game settings: {err}") from None
    try:
        if scored.num_actions != env.num_actions:
            raise CheckpointError(
                f"checkpoint {path} has {scored.num_actions} actions but {env.game} here has "
                f"{env.num_actions} (full_action_space differs?)"
            )
        network = build_network(scored_spec(scored, options, path))
        # Noisy nets are scored on their mean weights, as the training run evaluates them.
        set_noise(network, False)
        try:
            network.load_state_dict(scored.online)
        except (RuntimeError, ValueError) as err:
            raise CheckpointError(
                f"checkpoint {path} does not hold a usable network: {load_error_reason(err)}"
            ) from None
        network.to(device)
        video_path = path.with_name(f"{path.stem}_eval.mp4")
        result = _play(config, device, env, network, video_path if config.video else None)
    finally:
        env.close()
    out = {"game": env.game, **result.summary(), "checkpoint_step": scored.step}
    if config.video:
        out["video"] = str(video_path)
    return out


def _play(
    config: EvalConfig,
    device: torch.device,
    env: AtariPhiEnv,
    network: NatureQNetwork,
    video_path: Path | None,
) -> EvalResult:
    """Nature's evaluation games, the first one recorded to `video_path`. The recording goes to
    a temporary file beside it, renamed over `video_path` once every game is played: an
    interrupted evaluation leaves no half-written video and an earlier video as it was."""
    writer: cv2.VideoWriter | None = None
    tmp: Path | None = None

    def on_frame(episode: int, rgb: np.ndarray) -> None:
        nonlocal writer, tmp
        if episode != 0 or video_path is None:
            return
        if writer is None:
            try:
                # cv2 picks the container from the suffix: the temporary name keeps .mp4.
                fd, name = tempfile.mkstemp(
                    prefix=f".{video_path.stem}.", suffix=".tmp.mp4", dir=video_path.parent
                )
            except OSError as err:
                raise CheckpointWriteError(
                    f"cannot write the video in {video_path.parent}: {err.strerror or err}"
                ) from None
            os.close(fd)
            tmp = Path(name)
            height, width = rgb.shape[:2]
            fourcc = cv2.VideoWriter.fourcc(*"mp4v")
            writer = cv2.VideoWriter(str(tmp), fourcc, 15.0, (width, height))
            if not writer.isOpened():
                raise CheckpointWriteError(f"cannot write the video {video_path}")
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    completed = False
    try:
        result = evaluate(
            q_function(network, device, config.precision),
            env,
            config.episodes,
            config.epsilon,
            rng,
            device,
            on_frame=on_frame if video_path is not None else None,
        )
        if writer is not None:
            writer.release()
            writer = None
        if tmp is not None and video_path is not None:
            try:
                tmp.chmod(0o644)  # mkstemp's file is private; a video is not
                tmp.replace(video_path)
            except OSError as err:
                raise CheckpointWriteError(
                    f"cannot write the video {video_path}: {err.strerror or err}"
                ) from None
        completed = True
    except KeyboardInterrupt:
        kept = video_path is not None and video_path.exists()
        raise EvalInterrupted(
            f"The earlier video {video_path} is left as it was" if kept else "No video was written"
        ) from None
    finally:
        if writer is not None:
            writer.release()
        if not completed and tmp is not None:
            tmp.unlink(missing_ok=True)
    assert result is not None  # nothing asks this evaluation to stop
    return result
