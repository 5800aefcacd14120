"""Atari environments whose observations are phi(s): uint8 arrays of shape (stack, 84, 84).

`AtariPhiEnv(game, options, seed)` is the environment dqn-train and dqn-eval play (in the
training process, or one per worker process); `make_atari_env(game, seed, **options)` builds
the same from keyword options, for scripts and tests. The environment drives the ALE emulator
directly (one `ale.act` per emulator frame) so that only the two screens phi needs are copied
out of the emulator on each agent step.

Episode statistics (`info["episode"]`) always describe the real game: raw rewards over all
lives, before reward clipping, whatever training-only options are on.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from ale_py import Action, ALEState, roms
from ale_py.env import AtariEnv

from dqn_atari.preprocessing import (
    ATARI_SCREEN_SHAPE,
    Crop,
    Frame,
    process_frame,
    push_frame,
    reset_stack,
    validate_crop,
)

# ALE takes its settings (max_num_frames_per_episode) as C ints.
ALE_INT_MAX = 2**31 - 1


class UnknownGameError(ValueError):
    """A game name that no ROM shipped with ale-py matches."""


def display_name(rom_id: str) -> str:
    """'space_invaders' -> 'SpaceInvaders', the spelling users know from 'ALE/SpaceInvaders-v5'."""
    return "".join(part.capitalize() for part in rom_id.split("_"))


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def resolve_game(name: str) -> str:
    """Map a user's game name to its ALE ROM id, case and separators ignored.

    'Breakout', 'breakout', 'SpaceInvaders', 'space_invaders' and 'ALE/Pong-v5' all work. An
    unknown name raises UnknownGameError naming the closest games.
    """
    match = re.fullmatch(r"(?:ALE/)?(.+?)(?:-v\d+)?", name.strip())
    wanted = _key(match.group(1) if match else name)
    by_key = {_key(rom_id): rom_id for rom_id in roms.get_all_rom_ids()}
    if wanted in by_key:
        return by_key[wanted]
    close_keys = difflib.get_close_matches(wanted, list(by_key), n=3, cutoff=0.6)
    close = ", ".join(display_name(by_key[k]) for k in close_keys)
    hint = f"; did you mean {close}?" if close else f"; {len(by_key)} games are available"
    raise UnknownGameError(f"unknown Atari game '{name}'{hint}")


@dataclass
class AtariOptions:
    """How one ALE game becomes phi(s) for training. The defaults are the Nature DQN recipe, and
    the only defaults of the `env` config group (config.EnvConfig adds the game's name).

    Two options shape what the learner sees, never the scores: `terminal_on_life_loss` and
    `clip_rewards`. Evaluation plays `for_evaluation()`, the same game with both off.
    """

    frame_skip: int = 4  # emulator frames per agent step (action repeat); rewards summed
    frame_stack: int = 4  # phi frames stacked into one observation (agent history length)
    screen_size: int = 84  # pixels, side of the square phi frame
    # Pixels [top, bottom, left, right] cut from the 210x160 screen before resizing; None = none.
    crop: list[int] | None = None
    noop_max: int = 30  # emulator frames: up to this many random no-ops after each reset
    fire_reset: bool = True  # press FIRE after reset in games that have it (Breakout needs it)
    # Also press FIRE after each lost life, as SB3's and CleanRL's wrappers do; Nature does not.
    fire_on_life_loss: bool = False
    terminal_on_life_loss: bool = True  # training only: a lost life ends the TD target
    clip_rewards: bool = True  # training only: the learner sees sign(reward)
    sticky_action_prob: float = 0.0  # ALE repeat_action_probability (Machado et al.: 0.25)
    max_episode_frames: int = 108_000  # emulator frames before the game is truncated (30 min)
    full_action_space: bool = False  # all 18 actions instead of the game's minimal set

    @property
    def crop_margins(self) -> Crop | None:
        """`crop` as the margins phi's crop_frame takes (after `validate`)."""
        return None if self.crop is None else Crop(*(int(v) for v in self.crop))

    def for_evaluation(self, max_episode_frames: int, noop_max: int | None = None) -> AtariOptions:
        """The game as it is scored (Nature's evaluation): raw rewards, no life-loss terminals,
        `max_episode_frames` emulator frames at most."""
        return replace(
            self,
            terminal_on_life_loss=False,
            clip_rewards=False,
            max_episode_frames=max_episode_frames,
            noop_max=self.noop_max if noop_max is None else noop_max,
        )

    def validate(self) -> None:
        positive = {
            "frame_skip": self.frame_skip,
            "frame_stack": self.frame_stack,
            "screen_size": self.screen_size,
            "max_episode_frames": self.max_episode_frames,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.max_episode_frames > ALE_INT_MAX:
            raise ValueError(
                f"max_episode_frames must be <= {ALE_INT_MAX:,} (the emulator counts frames in a "
                f"32-bit int), got {self.max_episode_frames}"
            )
        if self.noop_max < 0:
            raise ValueError(f"noop_max must be >= 0, got {self.noop_max}")
        if self.noop_max >= self.max_episode_frames:
            # The no-ops would use up the whole game: it would be truncated before it is played.
            raise ValueError(
                f"noop_max ({self.noop_max}) must be < max_episode_frames "
                f"({self.max_episode_frames}): the no-ops at reset would fill the whole game"
            )
        if not 0.0 <= self.sticky_action_prob <= 1.0:
            raise ValueError(f"sticky_action_prob must be in [0, 1], got {self.sticky_action_prob}")
        if self.crop is not None and len(self.crop) != 4:
            raise ValueError(f"crop takes 4 margins [top, bottom, left, right], got {self.crop}")
        validate_crop(self.crop_margins)


class AtariPhiEnv(gym.Env[Frame, np.int64]):
    """One ALE game with phi applied: observations are uint8 (frame_stack, size, size).

    `info` on every step carries `lives`, `life_lost` and `td_terminal`: True when the TD target
    must not bootstrap past this step (game over, or a lost life with terminal_on_life_loss).
    When the game ends (terminated) or hits `max_episode_frames` (truncated), `info["episode"]`
    holds the raw return `r`, the length `l` in agent steps and `frames` in emulator frames.
    """

    # 15 fps: the emulator's 60 Hz over an action repeat of 4.
    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}  # noqa: RUF012 (gymnasium API)

    def __init__(
        self,
        game: str,
        options: AtariOptions | None = None,
        seed: int | None = None,
        render_mode: str | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.options = options or AtariOptions()
        self.options.validate()
        self._crop = self.options.crop_margins
        self.game = resolve_game(game)
        self.render_mode = render_mode
        self._ale_env = AtariEnv(
            game=self.game,
            obs_type="rgb",
            frameskip=1,
            repeat_action_probability=self.options.sticky_action_prob,
            full_action_space=self.options.full_action_space,
            max_num_frames_per_episode=self.options.max_episode_frames,
        )
        self.ale = self._ale_env.ale
        self._action_set = list(self._ale_env._action_set)
        self._action_meanings = self._ale_env.get_action_meanings()
        # None in games without FIRE, where both FIRE options do nothing.
        self._fire_action = (
            self._action_set[self._action_meanings.index("FIRE")]
            if "FIRE" in self._action_meanings
            else None
        )
        self._noop_action = self._action_set[0]  # ALE puts NOOP first in every action set
        size, stack = self.options.screen_size, self.options.frame_stack
        self.observation_space = gym.spaces.Box(0, 255, (stack, size, size), np.uint8)
        self.action_space = gym.spaces.Discrete(len(self._action_set))
        self._pending_seed = seed
        if seed is not None:
            self.action_space.seed(seed)
        rows, cols = ATARI_SCREEN_SHAPE
        self._prev_rgb = np.zeros((rows, cols, 3), np.uint8)
        self._last_rgb = np.zeros((rows, cols, 3), np.uint8)
        self._stacked: Frame = np.zeros((stack, size, size), np.uint8)
        self._lives = 0
        self._episode_return = 0.0
        self._episode_steps = 0
        if state is not None:  # continue a saved game (see state_dict); no reset needed
            self.load_state_dict(state)

    @property
    def last_observation(self) -> Frame:
        """The observation the last reset or step returned."""
        return self._stacked

    @property
    def num_actions(self) -> int:
        return len(self._action_set)

    @property
    def display_name(self) -> str:
        return display_name(self.game)

    @property
    def action_meanings(self) -> list[str]:
        return list(self._action_meanings)

    def _phi_frame(self) -> Frame:
        return process_frame(self._prev_rgb, self._last_rgb, self._crop, self.options.screen_size)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Frame, dict[str, Any]]:
        if seed is None and self._pending_seed is not None:
            seed = self._pending_seed
        self._pending_seed = None
        super().reset(seed=seed)
        # AtariEnv.reset re-seeds the emulator only when given a seed; later resets continue
        # the emulator's random stream, so a seeded run is reproducible episode after episode.
        self._ale_env.reset(seed=None if seed is None else int(self.np_random.integers(2**31)))
        self._episode_return = 0.0
        self._episode_steps = 0
        # Nature: up to 30 no-op frames so that episodes do not all start from one state.
        if self.options.noop_max > 0:
            for _ in range(int(self.np_random.integers(1, self.options.noop_max + 1))):
                self._episode_return += self.ale.act(self._noop_action)
                if self.ale.game_over():
                    self.ale.reset_game()
                    self._episode_return = 0.0
        if self.options.fire_reset and self._fire_action is not None:
            for _ in range(self.options.frame_skip):
                self._episode_return += self.ale.act(self._fire_action)
        self.ale.getScreenRGB(self._last_rgb)
        np.copyto(self._prev_rgb, self._last_rgb)
        self._lives = self.ale.lives()
        self._stacked = reset_stack(self._phi_frame(), self.options.frame_stack)
        return self._stacked, {"lives": self._lives}

    def _repeat(self, ale_action: Action) -> float:
        """Play `ale_action` for frame_skip emulator frames (fewer when the game ends), keeping
        the last two screens for phi's max-pool; returns the summed reward."""
        frame_skip = self.options.frame_skip
        reward = 0.0
        frames = 0
        for i in range(frame_skip):
            reward += self.ale.act(ale_action)
            frames += 1
            if i == frame_skip - 2:
                self.ale.getScreenRGB(self._prev_rgb)
            if self.ale.game_over(with_truncation=True):
                break
        self.ale.getScreenRGB(self._last_rgb)
        if frame_skip < 2 or frames < frame_skip - 1:
            # No second-to-last frame of this repeat was seen: the max is over one frame.
            np.copyto(self._prev_rgb, self._last_rgb)
        return reward

    def step(self, action: Any) -> tuple[Frame, SupportsFloat, bool, bool, dict[str, Any]]:
        reward = self._repeat(self._action_set[int(action)])
        lives = self.ale.lives()
        life_lost = lives < self._lives
        self._lives = lives
        if (
            life_lost
            and self.options.fire_on_life_loss
            and self._fire_action is not None
            and not self.ale.game_over(with_truncation=True)
        ):
            # Games like Breakout wait for FIRE to serve again after a lost life. Pressed here,
            # within the same agent step, so the observation shows the game already going on.
            reward += self._repeat(self._fire_action)
        self._stacked = push_frame(self._stacked, self._phi_frame())

        terminated = bool(self.ale.game_over(with_truncation=False))
        truncated = bool(self.ale.game_truncated()) and not terminated
        self._episode_return += reward
        self._episode_steps += 1
        info: dict[str, Any] = {
            "lives": lives,
            "life_lost": life_lost,
            "td_terminal": terminated or (life_lost and self.options.terminal_on_life_loss),
        }
        if terminated or truncated:
            info["episode"] = {
                "r": self._episode_return,
                "l": self._episode_steps,
                "frames": int(self.ale.getEpisodeFrameNumber()),
            }
        out_reward = float(np.sign(reward)) if self.options.clip_rewards else reward
        return self._stacked, out_reward, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this game exactly: the emulator (with its RNG), the
        screens phi is built from, the frame stack and the episode counters. Plain data only."""
        return state_tensors(self.state_arrays())

    def state_arrays(self) -> dict[str, Any]:
        """`state_dict` with numpy arrays for its tensors: what a game worker sends, so that
        neither saving nor restoring a game imports torch in the worker (seconds and ~190 MB
        each, which a stop's checkpoint would wait for)."""
        emulator = self.ale.cloneState(include_rng=True).__getstate__()
        return {
            "game": self.game,
            "emulator": np.frombuffer(bytearray(emulator), np.uint8),
            "prev_rgb": self._prev_rgb.copy(),
            "last_rgb": self._last_rgb.copy(),
            "stacked": self._stacked.copy(),
            "lives": self._lives,
            "episode_return": self._episode_return,
            "episode_steps": self._episode_steps,
            "np_random": self.np_random.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> Frame:
        """Continue the game saved by `state_dict`; returns the current observation."""
        if state["game"] != self.game:
            raise ValueError(f"environment state of {state['game']}, not {self.game}")
        # np.asarray: the state holds tensors (from a checkpoint) or arrays (state_arrays).
        self.ale.restoreState(ALEState(np.asarray(state["emulator"]).tobytes()))
        np.copyto(self._prev_rgb, np.asarray(state["prev_rgb"]))
        np.copyto(self._last_rgb, np.asarray(state["last_rgb"]))
        self._stacked = np.array(state["stacked"], np.uint8)
        self._lives = int(state["lives"])
        self._episode_return = float(state["episode_return"])
        self._episode_steps = int(state["episode_steps"])
        self.np_random.bit_generator.state = state["np_random"]
        self._pending_seed = None
        return self._stacked

    def render(self) -> Frame | None:
        """The last raw RGB screen (210x160x3), for videos."""
        if self.render_mode == "rgb_array":
            return self._last_rgb.copy()
        return None

    def close(self) -> None:
        self._ale_env.close()


def state_tensors(state: dict[str, Any]) -> dict[str, Any]:
    """A game's state with its numpy arrays as tensors, as a checkpoint holds it."""
    import torch  # here: game workers import this module and never need torch

    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}


def state_arrays(state: dict[str, Any]) -> dict[str, Any]:
    """A game's state with its tensors as numpy arrays, to send to a game worker."""
    return {k: v.numpy() if hasattr(v, "numpy") else v for k, v in state.items()}


def make_atari_env(
    game: str,
    seed: int | None = None,
    *,
    render_mode: str | None = None,
    **options: Any,
) -> AtariPhiEnv:
    """An ALE game by name with phi(s) observations; keyword options are `AtariOptions` fields
    (the rest keep the Nature defaults). A convenience for scripts and tests."""
    unknown = set(options) - set(AtariOptions.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown Atari option(s): {', '.join(sorted(unknown))}")
    return AtariPhiEnv(game, AtariOptions(**options), seed=seed, render_mode=render_mode)
