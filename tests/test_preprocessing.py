"""phi, one pure function at a time on small known frames, then a golden run of the real ALE.

Expected values are worked out by hand in the comments; the golden hashes are additionally backed
by an independent replay of the emulator frames (see `test_phi_env_matches_hand_replay`).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from dqn_atari.envs import make_atari_env
from dqn_atari.preprocessing import (
    ATARI_SCREEN_SHAPE,
    Crop,
    crop_frame,
    max_pool,
    process_frame,
    push_frame,
    reset_stack,
    resize,
    to_grayscale,
    validate_crop,
)


def rgb(color: tuple[int, int, int], shape: tuple[int, int] = (3, 2)) -> np.ndarray:
    frame = np.empty((*shape, 3), np.uint8)
    frame[:] = color
    return frame


# ---------------------------------------------------------------- max_pool


def test_max_pool_is_elementwise_max() -> None:
    prev = np.array([[[0, 9, 3], [255, 0, 7]]], np.uint8)
    last = np.array([[[5, 2, 3], [254, 1, 0]]], np.uint8)
    prev_copy, last_copy = prev.copy(), last.copy()
    pooled = max_pool(prev, last)
    np.testing.assert_array_equal(pooled, np.array([[[5, 9, 3], [255, 1, 7]]], np.uint8))
    assert pooled.dtype == np.uint8
    # Pure: the inputs are left as they were.
    np.testing.assert_array_equal(prev, prev_copy)
    np.testing.assert_array_equal(last, last_copy)


def test_max_pool_keeps_a_sprite_drawn_on_only_one_frame() -> None:
    background = rgb((0, 0, 0), (4, 4))
    sprite = background.copy()
    sprite[1, 2] = (200, 100, 50)
    np.testing.assert_array_equal(max_pool(background, sprite), sprite)
    np.testing.assert_array_equal(max_pool(sprite, background), sprite)


# ---------------------------------------------------------------- to_grayscale

# Y = 0.299 R + 0.587 G + 0.114 B, worked out by hand and rounded to the nearest integer:
#   red   255 * 0.299 = 76.245 -> 76      green 255 * 0.587 = 149.685 -> 150
#   blue  255 * 0.114 = 29.07  -> 29      white 255 * 1.000 = 255
#   (100, 150, 200): 29.9 + 88.05 + 22.8 = 140.75 -> 141
#   (10, 20, 30):    2.99 + 11.74 + 3.42 = 18.15  -> 18
# cv2 computes this in fixed point; none of these values sits near a .5 boundary, so the
# comparison is exact (no +-1 tolerance).
GRAY_CASES = [
    ((255, 0, 0), 76),
    ((0, 255, 0), 150),
    ((0, 0, 255), 29),
    ((255, 255, 255), 255),
    ((0, 0, 0), 0),
    ((100, 150, 200), 141),
    ((10, 20, 30), 18),
]


@pytest.mark.parametrize(("color", "expected"), GRAY_CASES)
def test_to_grayscale_uses_itu601_luminance(color: tuple[int, int, int], expected: int) -> None:
    gray = to_grayscale(rgb(color))
    assert gray.shape == (3, 2)
    assert gray.dtype == np.uint8
    np.testing.assert_array_equal(gray, np.full((3, 2), expected, np.uint8))


def test_to_grayscale_reads_channels_as_rgb_not_bgr() -> None:
    # ALE screens are RGB; reading them as BGR would swap red (76) and blue (29).
    frame = np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)  # one row: red, blue
    np.testing.assert_array_equal(to_grayscale(frame), np.array([[76, 29]], np.uint8))


# ---------------------------------------------------------------- crop_frame


def test_crop_frame_removes_each_margin() -> None:
    gray = np.arange(6 * 5, dtype=np.uint8).reshape(6, 5)
    # rows 0..5, cols 0..4; top 1, bottom 2 keep rows 1..3; left 1, right 0 keep cols 1..4.
    cropped = crop_frame(gray, Crop(top=1, bottom=2, left=1, right=0))
    expected = np.array([[6, 7, 8, 9], [11, 12, 13, 14], [16, 17, 18, 19]], np.uint8)
    np.testing.assert_array_equal(cropped, expected)


def test_crop_frame_right_margin() -> None:
    gray = np.arange(3 * 4, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(
        crop_frame(gray, Crop(0, 0, 0, 3)), np.array([[0], [4], [8]], np.uint8)
    )


def test_crop_frame_atari_shape() -> None:
    gray = np.zeros(ATARI_SCREEN_SHAPE, np.uint8)
    assert crop_frame(gray, Crop(34, 16, 0, 0)).shape == (210 - 34 - 16, 160)
    assert crop_frame(gray, Crop(1, 2, 3, 4)).shape == (207, 153)


@pytest.mark.parametrize("crop", [None, Crop(), Crop(0, 0, 0, 0)])
def test_crop_frame_without_margins_is_identity(crop: Crop | None) -> None:
    gray = np.arange(6 * 5, dtype=np.uint8).reshape(6, 5)
    np.testing.assert_array_equal(crop_frame(gray, crop), gray)


# ---------------------------------------------------------------- resize


def test_resize_of_a_constant_screen_stays_constant() -> None:
    gray = np.full(ATARI_SCREEN_SHAPE, 77, np.uint8)
    out = resize(gray, 84)
    assert out.shape == (84, 84)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.full((84, 84), 77, np.uint8))


def test_resize_halving_averages_each_2x2_block() -> None:
    gray = np.array(
        [
            [0, 4, 10, 20],
            [8, 12, 30, 40],
            [100, 100, 1, 3],
            [100, 100, 5, 7],
        ],
        np.uint8,
    )
    # Block means by hand: (0+4+8+12)/4 = 6, (10+20+30+40)/4 = 25, 100, (1+3+5+7)/4 = 4.
    np.testing.assert_array_equal(resize(gray, 2), np.array([[6, 25], [100, 4]], np.uint8))


def test_resize_by_three_averages_each_3x3_block() -> None:
    gray = np.zeros((6, 6), np.uint8)
    gray[2, 2] = 90  # top-left block: 90 / 9 = 10 (its centre pixel is 0)
    gray[3, 0] = 45  # bottom-left block: 45 / 9 = 5
    gray[5, 5] = 180  # bottom-right block: 180 / 9 = 20
    np.testing.assert_array_equal(resize(gray, 2), np.array([[10, 0], [5, 20]], np.uint8))


def test_resize_by_a_fractional_factor_weights_partial_pixels() -> None:
    # 5 -> 2 rows: output row 0 covers rows 0, 1 and half of row 2; row 1 the other half and 3, 4.
    # (10 + 20 + 0.5 * 30) / 2.5 = 18 and (0.5 * 30 + 40 + 50) / 2.5 = 42.
    gray = np.repeat(np.array([10, 20, 30, 40, 50], np.uint8)[:, None], 5, axis=1)
    np.testing.assert_array_equal(resize(gray, 2), np.array([[18, 18], [42, 42]], np.uint8))


def test_resize_keeps_a_half_split_screen_split() -> None:
    gray = np.zeros((168, 168), np.uint8)
    gray[:, 84:] = 200
    out = resize(gray, 84)
    np.testing.assert_array_equal(out[:, :42], 0)
    np.testing.assert_array_equal(out[:, 42:], 200)


# ---------------------------------------------------------------- process_frame


def test_process_frame_chains_max_gray_resize() -> None:
    # max(red, green) = (255, 255, 0): Y = 76.245 + 149.685 = 225.93 -> 226 everywhere.
    red = rgb((255, 0, 0), ATARI_SCREEN_SHAPE)
    green = rgb((0, 255, 0), ATARI_SCREEN_SHAPE)
    out = process_frame(red, green, None, 84)
    np.testing.assert_array_equal(out, np.full((84, 84), 226, np.uint8))


def test_process_frame_crops_before_resizing() -> None:
    # A white score bar in the top 34 rows and a white floor in the bottom 16, black between.
    screen = rgb((0, 0, 0), ATARI_SCREEN_SHAPE)
    screen[:34] = 255
    screen[-16:] = 255
    cropped = process_frame(screen, screen, Crop(34, 16, 0, 0), 84)
    np.testing.assert_array_equal(cropped, np.zeros((84, 84), np.uint8))
    whole = process_frame(screen, screen, None, 84)
    # 34/210 of 84 rows = 13.6 rows of white at the top, 16/210 * 84 = 6.4 at the bottom.
    np.testing.assert_array_equal(whole[:13], 255)
    np.testing.assert_array_equal(whole[14:77], 0)
    np.testing.assert_array_equal(whole[-6:], 255)


# ---------------------------------------------------------------- frame stack


def test_reset_stack_repeats_the_first_frame() -> None:
    frame = np.arange(6, dtype=np.uint8).reshape(2, 3)
    stacked = reset_stack(frame, 4)
    assert stacked.shape == (4, 2, 3)
    assert stacked.dtype == np.uint8
    for k in range(4):
        np.testing.assert_array_equal(stacked[k], frame)


def test_push_frame_drops_oldest_and_appends_newest() -> None:
    stacked = np.stack([np.full((2, 2), v, np.uint8) for v in (0, 1, 2, 3)])
    before = stacked.copy()
    pushed = push_frame(stacked, np.full((2, 2), 9, np.uint8))
    assert pushed.shape == (4, 2, 2)
    np.testing.assert_array_equal(pushed[:, 0, 0], [1, 2, 3, 9])
    np.testing.assert_array_equal(pushed[-1], 9)
    # Pure: the observation already handed out is not changed under the caller's feet.
    np.testing.assert_array_equal(stacked, before)


# ---------------------------------------------------------------- validate_crop


@pytest.mark.parametrize(
    "crop",
    [None, Crop(), Crop(34, 16, 0, 0), Crop(104, 105, 0, 0), Crop(0, 0, 79, 80)],
)
def test_validate_crop_accepts_margins_that_leave_pixels(crop: Crop | None) -> None:
    validate_crop(crop)  # raises on failure; 104 + 105 = 209 < 210 rows leaves one row


@pytest.mark.parametrize(
    ("crop", "message"),
    [
        (Crop(-1, 0, 0, 0), ">= 0"),
        (Crop(0, 0, 0, -5), ">= 0"),
        (Crop(105, 105, 0, 0), "leaves no pixels"),  # 210 rows: nothing left
        (Crop(0, 0, 80, 80), "leaves no pixels"),  # 160 columns: nothing left
        (Crop(300, 0, 0, 0), "leaves no pixels"),
    ],
)
def test_validate_crop_rejects_bad_margins(crop: Crop, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_crop(crop)


def test_validate_crop_uses_the_given_screen_shape() -> None:
    validate_crop(Crop(2, 2, 0, 0), screen_shape=(5, 5))
    with pytest.raises(ValueError, match="5x5"):
        validate_crop(Crop(3, 2, 0, 0), screen_shape=(5, 5))


# ---------------------------------------------------------------- golden run of the real ALE

# Pong, seed 0, no random no-ops (deterministic), FIRE on reset, then GOLDEN_ACTIONS.
GOLDEN_ACTIONS = [0, 2, 2, 2, 3, 3, 1, 0, 4, 5] * 4
# sha256 of the reset observation followed by every step's observation, as uint8 bytes.
# Generated once with ale-py 0.12.1 and opencv-python-headless 5.0.0;
# `test_phi_env_matches_hand_replay` checks the same frames independently against the emulator,
# so a change here is a real change of phi.
GOLDEN_SHA256 = "1e7c564da1681a3465c8006859ef3ab7e7bb211961f2f18c4ab11d2300f59f34"
GOLDEN_LAST_SHA256 = "1baecf41f9091db09c959f0e589271b279c02a87af99afba1254b26891bbb806"


def run_golden() -> list[np.ndarray]:
    env = make_atari_env("Pong", seed=0, noop_max=0)
    obs, _ = env.reset()
    observations = [obs.copy()]
    for action in GOLDEN_ACTIONS:
        obs, _, terminated, truncated, _ = env.step(action)
        assert not (terminated or truncated)
        observations.append(obs.copy())
    env.close()
    return observations


def test_phi_golden_hashes() -> None:
    observations = run_golden()
    assert all(o.shape == (4, 84, 84) and o.dtype == np.uint8 for o in observations)
    digest = hashlib.sha256(b"".join(o.tobytes() for o in observations)).hexdigest()
    assert digest == GOLDEN_SHA256
    assert hashlib.sha256(observations[-1].tobytes()).hexdigest() == GOLDEN_LAST_SHA256


def test_phi_env_matches_hand_replay() -> None:
    """Each step's newest frame is phi of emulator frames 3 and 4, replayed by hand.

    Before every step the emulator state is cloned, the action is played for 4 frames with
    `ale.act` (the ALE's own minimal action set, not the wrapper's table), the screens after
    frames 3 and 4 are kept, and the state is restored; the wrapper then plays the same step.
    """
    env = make_atari_env("Pong", seed=0, noop_max=0)
    obs, _ = env.reset()
    ale = env.ale
    actions = list(ale.getMinimalActionSet())
    # The reset observation: the current screen, repeated (no repeat has happened yet).
    screen = ale.getScreenRGB()
    np.testing.assert_array_equal(obs, reset_stack(process_frame(screen, screen, None, 84), 4))
    observations = [obs.copy()]
    max_pool_mattered = 0
    for action in GOLDEN_ACTIONS:
        state = ale.cloneState()
        frame_before = ale.getEpisodeFrameNumber()
        reward = 0.0
        screens = []
        for _ in range(4):
            reward += ale.act(actions[action])
            screens.append(ale.getScreenRGB())
        ale.restoreState(state)
        assert ale.getEpisodeFrameNumber() == frame_before

        expected = process_frame(screens[2], screens[3], None, 84)
        obs, env_reward, _, _, _ = env.step(action)
        np.testing.assert_array_equal(obs[-1], expected)
        np.testing.assert_array_equal(obs[:-1], observations[-1][1:])
        assert env_reward == reward
        assert ale.getEpisodeFrameNumber() == frame_before + 4
        np.testing.assert_array_equal(ale.getScreenRGB(), screens[3])
        max_pool_mattered += not np.array_equal(
            expected, process_frame(screens[3], screens[3], None, 84)
        )
        observations.append(obs.copy())
    env.close()
    # The check above only tells frame 3 from frame 4 if the two differ; they must, sometimes.
    assert max_pool_mattered > 0
    # And the hand-checked run is the golden run: same frames, same bytes.
    for hand, golden in zip(observations, run_golden(), strict=True):
        np.testing.assert_array_equal(hand, golden)


def test_crop_option_changes_phi_as_computed_by_hand() -> None:
    cropped_env = make_atari_env("Pong", seed=0, noop_max=0, crop=(34, 16, 0, 0))
    plain_env = make_atari_env("Pong", seed=0, noop_max=0)
    cropped, _ = cropped_env.reset()
    plain, _ = plain_env.reset()
    assert cropped.shape == (4, 84, 84)
    assert cropped.dtype == np.uint8
    assert not np.array_equal(cropped, plain)
    # Same emulator state in both: the cropped frame is phi of rows 34..193 of the same screen.
    screen = cropped_env.ale.getScreenRGB()
    np.testing.assert_array_equal(screen, plain_env.ale.getScreenRGB())
    gray = to_grayscale(screen)[34:194]
    np.testing.assert_array_equal(cropped[-1], resize(gray, 84))
    cropped_env.close()
    plain_env.close()
