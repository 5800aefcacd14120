"""AtariPhiEnv on the real ALE with tiny budgets: spaces, stacking, action repeat, rewards, lives,
truncation, no-op starts, seeding, FIRE on reset and game names."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from ale_py import roms
from gymnasium.utils.env_checker import check_env

from dqn_atari.envs import (
    AtariPhiEnv,
    UnknownGameError,
    display_name,
    make_atari_env,
    resolve_game,
)
from dqn_atari.preprocessing import process_frame


def play(env: AtariPhiEnv, actions: list[int]) -> list[tuple]:
    """Step through `actions` (stopping at the episode end); returns (obs, r, term, trunc, info)."""
    out = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs.copy(), reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return out


def random_actions(env: AtariPhiEnv, n: int, seed: int) -> list[int]:
    return [int(a) for a in np.random.default_rng(seed).integers(env.num_actions, size=n)]


def test_check_env_passes_for_breakout() -> None:
    env = make_atari_env("Breakout", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker's complaints are warnings: make them fail
        check_env(env, skip_render_check=True)
    env.close()


def test_observations_are_uint8_stacks_of_84x84() -> None:
    env = make_atari_env("Breakout", seed=0)
    assert env.observation_space.shape == (4, 84, 84)
    assert env.observation_space.dtype == np.uint8
    assert env.action_space.n == 4  # Breakout's minimal set: NOOP, FIRE, RIGHT, LEFT
    assert env.action_meanings == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    obs, info = env.reset()
    assert obs.shape == (4, 84, 84)
    assert obs.dtype == np.uint8
    assert obs in env.observation_space
    assert info["lives"] == 5
    for obs, reward, terminated, truncated, info in play(env, random_actions(env, 10, 0)):
        assert obs.shape == (4, 84, 84)
        assert obs.dtype == np.uint8
        assert isinstance(reward, float)
        assert terminated is False and truncated is False
        assert info["lives"] == env.ale.lives()
    env.close()


def test_full_action_space_has_18_actions() -> None:
    env = make_atari_env("Breakout", seed=0, full_action_space=True)
    assert env.num_actions == 18
    assert env.action_space.n == 18
    env.close()


def test_reset_observation_is_the_first_frame_repeated() -> None:
    env = make_atari_env("Breakout", seed=0)
    obs, _ = env.reset()
    screen = env.ale.getScreenRGB()
    first = process_frame(screen, screen, None, 84)
    for k in range(4):
        np.testing.assert_array_equal(obs[k], first)
    env.close()


def test_stack_shifts_by_one_frame_each_step() -> None:
    env = make_atari_env("Breakout", seed=0)
    previous, _ = env.reset()
    previous = previous.copy()
    newest = []
    for obs, *_ in play(env, random_actions(env, 30, 1)):
        np.testing.assert_array_equal(obs[:3], previous[1:])
        newest.append(obs[3])
        previous = obs
    # The ball and paddle move: new frames arrive, not copies of the old one.
    assert len({frame.tobytes() for frame in newest}) > 10
    env.close()


@pytest.mark.parametrize("frame_skip", [1, 3, 4])
def test_one_agent_step_is_frame_skip_emulator_frames(frame_skip: int) -> None:
    env = make_atari_env("Breakout", seed=0, frame_skip=frame_skip, noop_max=0)
    env.reset()
    # FIRE on reset is one agent step's worth of frames.
    assert env.ale.getEpisodeFrameNumber() == frame_skip
    for step in range(1, 11):
        env.step(step % 4)
        assert env.ale.getEpisodeFrameNumber() == frame_skip * (step + 1)
    env.close()


def test_frame_skip_one_has_no_max_with_an_older_frame() -> None:
    env = make_atari_env("Pong", seed=0, noop_max=0, frame_skip=1)
    env.reset()
    for action in [2, 2, 3, 0, 1] * 6:
        obs, *_ = env.step(action)
        screen = env.ale.getScreenRGB()
        np.testing.assert_array_equal(obs[-1], process_frame(screen, screen, None, 84))
    env.close()


def test_reward_is_summed_over_the_action_repeat() -> None:
    """Replay each step by hand from a cloned state; the step's reward is the 4 frames' sum."""
    env = make_atari_env("SpaceInvaders", seed=0, noop_max=0, clip_rewards=False)
    env.reset()
    ale = env.ale
    ale_actions = list(ale.getMinimalActionSet())
    rewarded = 0
    for action in random_actions(env, 300, 0):
        state = ale.cloneState()
        by_hand = sum(ale.act(ale_actions[action]) for _ in range(4))
        ale.restoreState(state)
        _, reward, terminated, truncated, _ = env.step(action)
        assert reward == by_hand
        rewarded += reward > 0
        if terminated or truncated:
            break
    assert rewarded >= 2  # the comparison saw real rewards, not only zeros
    env.close()


def test_clipped_rewards_are_signs_and_episode_return_stays_raw() -> None:
    # Space Invaders pays 5..30 points per alien, so raw rewards above 1 come within seconds.
    # 2000 emulator frames = about 500 agent steps, then the episode is truncated.
    kwargs = {"seed": 0, "max_episode_frames": 2000}
    raw_env = make_atari_env("SpaceInvaders", clip_rewards=False, **kwargs)
    clip_env = make_atari_env("SpaceInvaders", clip_rewards=True, **kwargs)
    raw_env.reset()
    clip_env.reset()
    actions = random_actions(raw_env, 1000, 0)
    raw = play(raw_env, actions)
    clipped = play(clip_env, actions)
    assert len(raw) == len(clipped)
    raw_rewards = [r for _, r, *_ in raw]
    clipped_rewards = [r for _, r, *_ in clipped]
    assert max(raw_rewards) > 1  # the test needs rewards that clipping changes
    assert clipped_rewards == [float(np.sign(r)) for r in raw_rewards]
    assert set(clipped_rewards) <= {-1.0, 0.0, 1.0}
    *_, raw_info = raw[-1]
    *_, clip_info = clipped[-1]
    assert raw[-1][3] and clipped[-1][3]  # both truncated
    assert raw_info["episode"]["r"] == sum(raw_rewards)
    assert clip_info["episode"]["r"] == sum(raw_rewards)  # raw, not the clipped sum
    assert sum(clipped_rewards) < sum(raw_rewards)
    raw_env.close()
    clip_env.close()


@functools.cache  # one game per setting, shared by the tests below (read only)
def run_breakout_to_game_over(terminal_on_life_loss: bool) -> tuple[list[tuple], int]:
    env = make_atari_env("Breakout", seed=0, terminal_on_life_loss=terminal_on_life_loss)
    _, info = env.reset()
    steps = play(env, random_actions(env, 2000, 0))
    env.close()
    return steps, info["lives"]


@pytest.mark.parametrize("terminal_on_life_loss", [True, False])
def test_life_loss_and_game_over(terminal_on_life_loss: bool) -> None:
    steps, lives = run_breakout_to_game_over(terminal_on_life_loss)
    assert lives == 5
    lost_at = []
    for t, (_, _, terminated, truncated, info) in enumerate(steps):
        life_lost = info["lives"] < lives
        lives = info["lives"]
        assert info["life_lost"] == life_lost
        if life_lost:
            lost_at.append(t)
        assert terminated == (lives == 0)
        assert truncated is False
        expected_td = terminated or (life_lost and terminal_on_life_loss)
        assert info["td_terminal"] == expected_td
    # One game of five lives, played through without a reset; it ends on the fifth loss.
    assert len(lost_at) == 5
    assert lost_at[-1] == len(steps) - 1
    assert steps[-1][2] is True
    td_terminals = sum(info["td_terminal"] for *_, info in steps)
    assert td_terminals == (5 if terminal_on_life_loss else 1)


def test_episode_return_counts_every_life() -> None:
    steps, _ = run_breakout_to_game_over(terminal_on_life_loss=True)
    rewards = [r for _, r, *_ in steps]
    first_loss = next(t for t, (*_, info) in enumerate(steps) if info["life_lost"])
    assert sum(rewards[first_loss + 1 :]) > 0  # points were scored after a life was lost
    info = steps[-1][4]
    assert info["episode"]["r"] == sum(rewards)
    assert info["episode"]["l"] == len(steps)
    assert "episode" not in steps[first_loss][4]  # a lost life is not the end of the episode


def test_max_episode_frames_truncates() -> None:
    env = make_atari_env("Breakout", seed=0, noop_max=0, max_episode_frames=400)
    env.reset()  # FIRE: frames 1..4
    steps = play(env, [0] * 200)
    # (400 - 4) / 4 = 99 agent steps of NOOP reach frame 400.
    assert len(steps) == 99
    assert all(not term and not trunc for _, _, term, trunc, _ in steps[:-1])
    assert all("episode" not in info for *_, info in steps[:-1])
    _, _, terminated, truncated, info = steps[-1]
    assert truncated is True
    assert terminated is False
    assert info["episode"] == {"r": 0.0, "l": 99, "frames": 400}
    env.close()


def test_truncation_inside_an_action_repeat() -> None:
    # 402 frames: the 100th step plays frames 401 and 402 only, then stops.
    env = make_atari_env("Breakout", seed=0, noop_max=0, max_episode_frames=402)
    env.reset()
    play(env, [0] * 99)
    state = env.ale.cloneState()
    env.ale.act(env.ale.getMinimalActionSet()[0])
    env.ale.act(env.ale.getMinimalActionSet()[0])
    last = env.ale.getScreenRGB()
    env.ale.restoreState(state)
    obs, _, terminated, truncated, info = env.step(0)
    assert truncated is True and terminated is False
    assert info["episode"]["frames"] == 402
    assert info["episode"]["l"] == 100
    np.testing.assert_array_equal(obs[-1], process_frame(last, last, None, 84))
    env.close()


def test_noop_starts_vary_with_the_seed() -> None:
    starts = {}
    frames = set()
    for seed in range(3):
        env = make_atari_env("Seaquest", seed=seed, noop_max=30)
        obs, _ = env.reset()
        starts[seed] = obs.tobytes()
        # 1..30 no-op frames, then 4 frames of FIRE.
        frame = env.ale.getEpisodeFrameNumber()
        assert 1 + 4 <= frame <= 30 + 4
        frames.add(frame)
        env.close()
    assert len(set(starts.values())) > 1
    assert len(frames) > 1


def test_no_noops_means_identical_starts() -> None:
    firsts = []
    for seed in (0, 1):
        env = make_atari_env("Seaquest", seed=seed, noop_max=0)
        obs, _ = env.reset()
        assert env.ale.getEpisodeFrameNumber() == 4  # FIRE only
        firsts.append(obs)
        env.close()
    # The emulator itself is deterministic: without no-ops the seed does not change the start.
    np.testing.assert_array_equal(firsts[0], firsts[1])


def observation_sequence(seed: int, actions: list[int], episodes: int = 1) -> list[np.ndarray]:
    env = make_atari_env("Seaquest", seed=seed, noop_max=30, max_episode_frames=300)
    out = []
    for _ in range(episodes):
        obs, _ = env.reset()
        out.append(obs.copy())
        out += [step[0] for step in play(env, actions)]
    env.close()
    return out


def test_same_seed_same_observations() -> None:
    actions = [1, 2, 3, 4, 5, 0, 11, 17] * 10  # longer than the 300-frame episode
    a = observation_sequence(7, actions, episodes=3)
    b = observation_sequence(7, actions, episodes=3)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    c = observation_sequence(8, actions, episodes=3)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=False))


def sticky_run(seed: int) -> list[np.ndarray]:
    env = make_atari_env("Seaquest", seed=seed, noop_max=0, sticky_action_prob=0.25)
    env.reset()
    out = [step[0] for step in play(env, [1, 2, 3, 4, 5, 0, 11, 17] * 10)]
    env.close()
    return out


def test_seed_drives_the_emulator_random_stream() -> None:
    # No no-ops: only the emulator's sticky actions draw random numbers, from the seed.
    a, b, c = sticky_run(7), sticky_run(7), sticky_run(8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_reset_with_a_seed_replays_the_episode() -> None:
    env = make_atari_env("Seaquest", noop_max=30)
    first, _ = env.reset(seed=3)
    first = first.copy()
    env.step(2)
    again, _ = env.reset(seed=3)
    np.testing.assert_array_equal(again, first)
    env.close()


def test_fire_on_reset_launches_the_ball_in_breakout() -> None:
    fired = make_atari_env("Breakout", seed=0, noop_max=0, fire_reset=True)
    idle = make_atari_env("Breakout", seed=0, noop_max=0, fire_reset=False)
    fired.reset()
    idle.reset()
    assert fired.ale.getEpisodeFrameNumber() == 4
    assert idle.ale.getEpisodeFrameNumber() == 0
    # Without FIRE the ball never leaves; with it, a NOOP paddle misses the ball and a life goes.
    fired_steps = play(fired, [0] * 60)
    idle_steps = play(idle, [0] * 60)
    assert any(info["life_lost"] for *_, info in fired_steps)
    assert not any(info["life_lost"] for *_, info in idle_steps)
    assert idle.ale.lives() == 5
    fired.close()
    idle.close()


def test_fire_on_life_loss_serves_each_ball_in_breakout() -> None:
    # A NOOP paddle misses every ball. Breakout waits for FIRE after a lost life: without the
    # option the game stands still with 4 lives left; with it each ball is served in turn and
    # lost, until the game is over.
    waits = make_atari_env("Breakout", seed=0, noop_max=0)
    serves = make_atari_env("Breakout", seed=0, noop_max=0, fire_on_life_loss=True)
    waits.reset()
    serves.reset()
    waiting = play(waits, [0] * 1500)
    serving = play(serves, [0] * 1500)
    assert [info["lives"] for *_, info in waiting if info["life_lost"]] == [4]
    assert len(waiting) == 1500 and not waiting[-1][2]
    assert [info["lives"] for *_, info in serving if info["life_lost"]] == [4, 3, 2, 1, 0]
    assert serving[-1][2] and serving[-1][4]["lives"] == 0  # terminated: game over
    # Both games are the same up to the first lost life; that step differs: FIRE was pressed.
    first = next(i for i, (*_, info) in enumerate(serving) if info["life_lost"])
    for (obs_w, *_), (obs_s, *_) in zip(waiting[:first], serving[:first], strict=True):
        np.testing.assert_array_equal(obs_w, obs_s)
    assert not np.array_equal(waiting[first][0], serving[first][0])
    waits.close()
    serves.close()


def test_fire_reset_is_skipped_in_games_without_fire() -> None:
    env = make_atari_env("Freeway", seed=0, noop_max=0, fire_reset=True)
    env.reset()
    assert "FIRE" not in env.action_meanings
    assert env.ale.getEpisodeFrameNumber() == 0
    env.close()


@pytest.mark.parametrize(
    ("name", "rom_id"),
    [
        ("Seaquest", "seaquest"),
        ("SpaceInvaders", "space_invaders"),
        ("space_invaders", "space_invaders"),
        ("ALE/Pong-v5", "pong"),
        ("breakout", "breakout"),
    ],
)
def test_any_game_by_name(name: str, rom_id: str) -> None:
    env = make_atari_env(name, seed=0, noop_max=0)
    assert env.game == rom_id
    obs, _ = env.reset()
    assert obs.shape == (4, 84, 84)
    obs, *_ = env.step(0)
    assert obs.shape == (4, 84, 84)
    env.close()


def test_every_rom_resolves_from_its_id_and_display_name() -> None:
    for rom_id in roms.get_all_rom_ids():
        assert resolve_game(rom_id) == rom_id
        assert resolve_game(display_name(rom_id)) == rom_id
        assert resolve_game(f"ALE/{display_name(rom_id)}-v5") == rom_id


def test_unknown_game_names_the_close_match() -> None:
    with pytest.raises(UnknownGameError, match="did you mean Breakout"):
        make_atari_env("Breakot")
    with pytest.raises(UnknownGameError, match="SpaceInvaders"):
        resolve_game("SpaceInvader")
    with pytest.raises(UnknownGameError, match="games are available"):
        resolve_game("qqqqqqqqqq")


def test_render_returns_the_raw_screen() -> None:
    env = make_atari_env("Pong", seed=0, noop_max=0, render_mode="rgb_array")
    env.reset()
    env.step(2)
    frame = env.render()
    assert frame is not None
    assert frame.shape == (210, 160, 3)
    np.testing.assert_array_equal(frame, env.ale.getScreenRGB())
    assert make_atari_env("Pong").render() is None
    env.close()


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"frame_skip": 0}, ValueError, "frame_skip must be >= 1, got 0"),
        ({"frame_stack": 0}, ValueError, "frame_stack"),
        ({"noop_max": -1}, ValueError, "noop_max"),
        ({"sticky_action_prob": 1.5}, ValueError, "sticky_action_prob"),
        ({"crop": (1, 2, 3)}, ValueError, "4 margins"),
        ({"crop": (200, 20, 0, 0)}, ValueError, "leaves no pixels"),
        ({"frameskip": 4}, TypeError, "frameskip"),
    ],
)
def test_bad_options_are_rejected(options: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        make_atari_env("Pong", **options)
