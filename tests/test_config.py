"""Every config group composed with Hydra, checked against the Nature table, then validated; each
validation error names its key; what `auto` resolves to; command-line routing and composition."""

from __future__ import annotations

import re
from collections.abc import Iterator

import hydra
import numpy as np
import pytest
import torch
from ale_py import ALEInterface
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from dqn_atari import cli
from dqn_atari.cli import CONFIG_DIR, UsageError, register_schemas, route_game
from dqn_atari.config import (
    RESUME_MAY_CHANGE,
    SEED_MAX,
    AlgoConfig,
    ConfigError,
    EnvConfig,
    EvalConfig,
    TrainConfig,
    auto_num_envs,
    resolve_device,
    resolve_settings,
    resume_changes,
    validate_eval,
    validate_train,
)
from dqn_atari.envs import ALE_INT_MAX, AtariOptions, UnknownGameError, display_name, resolve_game
from dqn_atari.networks import NatureQNetwork, compile_error, min_frame_size
from dqn_atari.preprocessing import Crop

ENV_PRESETS = sorted(p.stem for p in (CONFIG_DIR / "env").glob("*.yaml") if p.stem != "atari")
ALGOS = sorted(p.stem for p in (CONFIG_DIR / "algo").glob("*.yaml"))


@pytest.fixture(autouse=True)
def fresh_hydra() -> Iterator[None]:
    register_schemas()
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


def compose(config_name: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra.compose(config_name=config_name, overrides=overrides)


def train_config(*overrides: str) -> TrainConfig:
    conf = OmegaConf.to_object(compose("config", list(overrides)))
    assert isinstance(conf, TrainConfig)
    return conf


def eval_config(*overrides: str) -> EvalConfig:
    conf = OmegaConf.to_object(compose("eval", ["checkpoint=x", *overrides]))
    assert isinstance(conf, EvalConfig)
    return conf


# ---------------------------------------------------------------- composition


def test_presets_and_algos_exist() -> None:
    assert {"Breakout", "Pong"} <= set(ENV_PRESETS)
    assert {"dqn", "double_dqn"} <= set(ALGOS)


def test_default_config_is_the_nature_recipe() -> None:
    """Values from Extended Data Table 1 of the Nature paper (Mnih et al., 2015)."""
    conf = train_config()
    assert conf.env.game == "Breakout"  # the default env
    assert conf.batch_size == 32
    assert conf.buffer_size == 1_000_000
    assert conf.learning_starts == 50_000
    assert conf.total_steps == 12_500_000  # 50M frames / frame skip 4
    algo = conf.algo
    assert algo.name == "dqn"
    assert algo.double is False
    assert algo.gamma == 0.99
    assert algo.train_every == 4
    assert algo.target_update_interval == 10_000
    assert algo.optimizer == "rmsprop"
    assert algo.lr == 2.5e-4
    assert algo.rmsprop_alpha == 0.95
    assert algo.rmsprop_eps == 0.01 / 32**2  # Nature's 0.01 on summed gradients, per mean
    assert algo.huber_delta == 1.0
    assert algo.max_grad_norm is None
    assert (algo.epsilon_start, algo.epsilon_end) == (1.0, 0.1)
    assert algo.epsilon_decay_steps == 1_000_000
    assert algo.eval_epsilon == 0.05
    env = conf.env
    assert env.frame_skip == 4
    assert env.frame_stack == 4
    assert env.screen_size == 84
    assert env.noop_max == 30
    assert env.crop is None
    # Training-only tricks of the Nature recipe; Nature used no sticky actions, minimal sets.
    assert env.terminal_on_life_loss is True
    assert env.clip_rewards is True
    assert env.fire_reset is True
    assert env.fire_on_life_loss is False  # Nature presses FIRE on reset only
    assert env.sticky_action_prob == 0.0
    assert env.full_action_space is False
    assert conf.eval_max_episode_frames == 18_000  # 5 minutes at 60 Hz
    validate_train(conf)


@pytest.mark.parametrize("preset", ENV_PRESETS)
def test_every_env_preset_composes_and_validates(preset: str) -> None:
    conf = train_config(f"env={preset}")
    # route_game finds a preset by the game's display name, so the two must agree.
    assert conf.env.game == preset
    assert display_name(resolve_game(conf.env.game)) == preset
    assert (conf.env.frame_skip, conf.env.frame_stack, conf.env.noop_max) == (4, 4, 30)
    validate_train(conf)


def test_generic_env_takes_any_game() -> None:
    conf = train_config("env=atari", "env.game=Seaquest")
    assert conf.env.game == "Seaquest"
    assert conf.env.frame_skip == 4
    validate_train(conf)


def test_generic_env_needs_a_game() -> None:
    with pytest.raises(MissingMandatoryValue, match="game"):
        OmegaConf.to_object(compose("config", ["env=atari"]))


# What each preset changes of the Nature recipe (AlgoConfig's defaults), from its paper.
PRESETS = {
    "dqn": {},
    "double_dqn": {"double": True},
    "dueling": {"double": True, "dueling": True, "lr": 6.25e-5, "max_grad_norm": 10.0},
    "c51": {
        "distribution": "c51", "atoms": 51, "v_min": -10.0, "v_max": 10.0, "optimizer": "adam",
        "lr": 2.5e-4, "adam_eps": 0.01 / 32,
    },
    "qr_dqn": {
        "distribution": "qr", "quantiles": 200, "huber_delta": 1.0, "optimizer": "adam",
        "lr": 5e-5, "adam_eps": 0.01 / 32,
    },
    "prioritized": {
        "double": True, "prioritized": True, "priority_alpha": 0.6, "priority_beta_start": 0.4,
        "lr": 6.25e-5,
    },
    "rainbow": {
        "double": True, "dueling": True, "n_step": 3, "distribution": "c51", "atoms": 51,
        "v_min": -10.0, "v_max": 10.0, "prioritized": True, "priority_alpha": 0.5,
        "priority_beta_start": 0.4, "noisy": True, "noisy_sigma0": 0.5, "optimizer": "adam",
        "lr": 6.25e-5, "adam_eps": 1.5e-4, "target_update_interval": 8000,
    },
}  # fmt: skip
# Presets that also change run settings (Rainbow learns from 80K frames = 20,000 agent steps).
PRESET_RUN_SETTINGS = {"rainbow": {"learning_starts": 20_000}}


def test_every_algo_preset_is_listed_here() -> None:
    assert sorted(ALGOS) == sorted(PRESETS)


@pytest.mark.parametrize("algo", ALGOS)
def test_every_algo_composes_and_validates(algo: str) -> None:
    conf = train_config(f"algo={algo}")
    # Each preset is the Nature recipe with only its paper's changes.
    assert conf.algo == AlgoConfig(name=algo, **PRESETS[algo])  # type: ignore[arg-type]
    run_settings = {"learning_starts": 50_000, **PRESET_RUN_SETTINGS.get(algo, {})}
    assert {key: getattr(conf, key) for key in run_settings} == run_settings
    validate_train(conf)


def test_routed_game_composes() -> None:
    conf = train_config(*route_game(["env=space_invaders", "algo=double_dqn"]))
    assert conf.env.game == "SpaceInvaders"
    assert conf.algo.double is True
    validate_train(conf)


def test_crop_override_becomes_a_crop() -> None:
    conf = train_config("env.crop=[34,16,0,0]")
    assert conf.env.crop == [34, 16, 0, 0]
    validate_train(conf)
    assert conf.env.crop_margins == Crop(34, 16, 0, 0)


def test_the_env_node_is_the_games_own_options() -> None:
    """One set of defaults: the env node is an AtariOptions (plus the game's name), so the
    composed config is what the games are built with, with no copy in between."""
    assert issubclass(EnvConfig, AtariOptions)
    assert set(EnvConfig.__dataclass_fields__) == set(AtariOptions.__dataclass_fields__) | {"game"}
    conf = train_config("env=Pong", "env.frame_skip=3", "env.noop_max=7", "env.clip_rewards=false")
    options = conf.env
    assert isinstance(options, AtariOptions)
    assert options.frame_skip == 3
    assert options.noop_max == 7
    assert options.clip_rewards is False
    assert options.terminal_on_life_loss is True
    assert options.max_episode_frames == 108_000
    assert options.crop is None


def test_eval_config_is_the_nature_protocol() -> None:
    conf = eval_config()
    assert conf.checkpoint == "x"
    assert conf.episodes == 30
    assert conf.epsilon == 0.05
    assert conf.max_episode_frames == 18_000
    assert conf.noop_max == 30
    validate_eval(conf)


def test_eval_config_needs_a_checkpoint() -> None:
    with pytest.raises(MissingMandatoryValue, match="checkpoint"):
        OmegaConf.to_object(compose("eval", []))


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["total_steps=0"], "total_steps"),
        (["buffer_size=-1"], "buffer_size"),
        (["buffer_size=5", "batch_size=1"], "buffer_size"),  # < frame_stack + 2
        (["batch_size=0"], "batch_size"),
        (["batch_size=64", "buffer_size=32"], "batch_size"),
        (["learning_starts=-1"], "learning_starts"),
        (["learning_starts=2000", "total_steps=1000"], "learning_starts"),
        (["checkpoint_interval=0"], "checkpoint_interval"),
        (["keep_checkpoints=-1"], "keep_checkpoints"),
        (["eval_interval=-5"], "eval_interval"),
        (["eval_episodes=0"], "eval_episodes"),
        (["log_interval=0"], "log_interval"),
        (["progress_interval_s=-1"], "progress_interval_s"),
        (["device=tpu"], "device"),
        (["device=cuda0"], "device"),
        (["algo.gamma=1.5"], "algo.gamma"),
        (["algo.gamma=-0.1"], "algo.gamma"),
        (["algo.epsilon_end=1.1"], "algo.epsilon_end"),
        (["algo.eval_epsilon=-0.5"], "algo.eval_epsilon"),
        (["algo.epsilon_decay_steps=-1"], "algo.epsilon_decay_steps"),
        (["algo.lr=0"], "algo.lr"),
        (["algo.optimizer=sgd"], "algo.optimizer"),
        (["algo.max_grad_norm=0"], "algo.max_grad_norm"),
        (["algo.train_every=0"], "algo.train_every"),
        (["algo.target_update_interval=0"], "algo.target_update_interval"),
        (["env.crop=[1,2,3]"], "env.crop"),
        (["env.crop=[-1,0,0,0]"], "env.crop"),
        (["env.crop=[0,0,100,60]"], "env.crop"),
        (["env.frame_skip=0"], "env.frame_skip"),
        (["env.frame_stack=0"], "env.frame_stack"),
        (["env.noop_max=-1"], "env.noop_max"),
        (["env.sticky_action_prob=1.5"], "env.sticky_action_prob"),
        (["env.max_episode_frames=0"], "env.max_episode_frames"),
    ],
)
def test_validate_train_names_the_bad_key(overrides: list[str], key: str) -> None:
    conf = train_config(*overrides)
    with pytest.raises(ConfigError, match=rf"(^|\W){re.escape(key)}\W"):
        validate_train(conf)


# Values that today's validation let through and the run then crashed on (a traceback, exit 1)
# or trained to NaN with: each is refused naming its key and the value.
@pytest.mark.parametrize(
    ("overrides", "key", "value"),
    [
        # numpy's generators take no negative seed; torch none from 2**64.
        (["seed=-1"], "seed", "-1"),
        ([f"seed={2**64}"], "seed", str(2**64)),
        (["progress_interval_s=nan"], "progress_interval_s", "nan"),
        (["progress_interval_s=inf"], "progress_interval_s", "inf"),
        # The Nature network's three convolutions need 36 pixels (see min_frame_size).
        (["env.screen_size=1"], "env.screen_size", "1"),
        (["env.screen_size=35"], "env.screen_size", "35"),
        # Larger than the 210x160 raw screen: the network's first dense layer grows with it.
        (["env.screen_size=211"], "env.screen_size", "211"),
        # ALE counts frames in a C int; the no-ops must leave some of the game to play.
        ([f"env.max_episode_frames={2**31}"], "env.max_episode_frames", str(2**31)),
        (["env.max_episode_frames=30"], "env.noop_max", "30"),
        ([f"eval_max_episode_frames={2**31}"], "eval_max_episode_frames", str(2**31)),
        (["eval_max_episode_frames=30"], "eval_max_episode_frames", "30"),  # = env.noop_max
        (["eval_max_episode_frames=0"], "eval_max_episode_frames", "0"),
        (["algo.lr=nan"], "algo.lr", "nan"),
        (["algo.lr=inf"], "algo.lr", "inf"),
        # Centered RMSProp's decay: 1 never updates the gradient averages; at 0 rounding makes
        # the variance estimate negative for about half the weights, above 1 it is negative:
        # the update is NaN.
        (["algo.rmsprop_alpha=nan"], "algo.rmsprop_alpha", "nan"),
        (["algo.rmsprop_alpha=0"], "algo.rmsprop_alpha", "0.0"),
        (["algo.rmsprop_alpha=-0.5"], "algo.rmsprop_alpha", "-0.5"),
        (["algo.rmsprop_alpha=1.0"], "algo.rmsprop_alpha", "1.0"),
        (["algo.rmsprop_alpha=1.5"], "algo.rmsprop_alpha", "1.5"),
        # An epsilon of 0 divides 0 by 0 for a weight whose gradient is 0.
        (["algo.rmsprop_eps=0"], "algo.rmsprop_eps", "0.0"),
        (["algo.rmsprop_eps=-1"], "algo.rmsprop_eps", "-1.0"),
        (["algo.rmsprop_eps=inf"], "algo.rmsprop_eps", "inf"),
        (["algo.optimizer=adam", "algo.adam_eps=0"], "algo.adam_eps", "0.0"),
        (["algo.optimizer=adam", "algo.adam_eps=nan"], "algo.adam_eps", "nan"),
        (["algo.huber_delta=0"], "algo.huber_delta", "0.0"),
        (["algo.huber_delta=-1"], "algo.huber_delta", "-1.0"),
        (["algo.huber_delta=nan"], "algo.huber_delta", "nan"),
        (["algo.max_grad_norm=nan"], "algo.max_grad_norm", "nan"),
        (["algo.max_grad_norm=inf"], "algo.max_grad_norm", "inf"),
    ],
)
def test_validate_train_refuses_values_the_run_cannot_use(
    overrides: list[str], key: str, value: str
) -> None:
    conf = train_config(*overrides)
    with pytest.raises(ConfigError, match=rf"(^|\W){re.escape(key)}\W") as err:
        validate_train(conf)
    assert re.search(rf"(^|\W){re.escape(value)}(\W|$)", str(err.value)), str(err.value)


def test_the_smallest_screen_size_is_the_networks_own() -> None:
    # Backwards through the convolutions from one output pixel, side_in = (side_out - 1) *
    # stride + kernel: 3x3/1 -> 3, 4x4/2 -> (3 - 1) * 2 + 4 = 8, 8x8/4 -> (8 - 1) * 4 + 8 = 36.
    assert min_frame_size() == 36
    net = NatureQNetwork(num_actions=4, frames=4, frame_size=36)
    assert net(torch.zeros(2, 4, 36, 36, dtype=torch.uint8)).q_values.shape == (2, 4)
    with pytest.raises(ValueError, match="36"):
        NatureQNetwork(num_actions=4, frames=4, frame_size=35)
    validate_train(train_config("env.screen_size=36"))


def test_seed_limits_are_the_libraries_own() -> None:
    torch.Generator().manual_seed(SEED_MAX)
    with pytest.raises((RuntimeError, ValueError)):
        torch.Generator().manual_seed(SEED_MAX + 1)
    with pytest.raises(ValueError):
        np.random.default_rng(-1)


def test_ale_frame_limit_is_the_emulators_own() -> None:
    ale = ALEInterface()
    ale.setInt("max_num_frames_per_episode", ALE_INT_MAX)
    with pytest.raises(TypeError):
        ale.setInt("max_num_frames_per_episode", ALE_INT_MAX + 1)


@pytest.mark.parametrize(
    "overrides",
    [
        ["batch_size=32", "buffer_size=32"],  # equal is fine
        ["learning_starts=999", "total_steps=1000"],  # one update, at agent step 1000
        ["learning_starts=0"],
        ["algo.gamma=1.0"],
        ["algo.gamma=0.0"],
        ["buffer_size=6", "batch_size=6"],  # frame_stack + 2
        ["keep_checkpoints=0", "eval_interval=0", "progress_interval_s=0"],
        ["algo.optimizer=adam", "algo.max_grad_norm=10"],
        ["device=cpu"],
        ["env.crop=[104,105,79,80]"],  # leaves one pixel
        ["seed=0"],
        [f"seed={2**64 - 1}"],  # one game: torch's largest seed
        ["env.screen_size=36", "env.frame_stack=1"],
        ["env.screen_size=210"],
        [f"env.max_episode_frames={2**31 - 1}"],
        ["env.noop_max=29", "env.max_episode_frames=30", "eval_max_episode_frames=30"],
        ["algo.rmsprop_alpha=0.5"],
        ["algo.huber_delta=inf"],  # no clipping: the squared loss
        ["algo.rmsprop_eps=1e-8", "algo.adam_eps=1e-8"],
    ],
)
def test_validate_train_accepts_boundary_values(overrides: list[str]) -> None:
    validate_train(train_config(*overrides))


# The loop updates only when step > learning_starts and step % train_every == 0, for step in
# 1..total_steps: these runs would never make one update.
@pytest.mark.parametrize(
    "overrides",
    [
        ["learning_starts=1000", "total_steps=1000"],
        ["learning_starts=1000", "total_steps=1003"],  # no multiple of train_every=4 after 1000
    ],
)
def test_validate_train_rejects_a_run_that_never_learns(overrides: list[str]) -> None:
    with pytest.raises(ConfigError, match="learning_starts"):
        validate_train(train_config(*overrides))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_an_error(device: str) -> None:
    with pytest.raises(ConfigError, match=rf"device={device}\b.*CUDA is not available"):
        validate_train(train_config(f"device={device}"))
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto means cuda when CUDA exists")
def test_auto_device_is_cpu_without_cuda() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_device_is_cuda_with_cuda() -> None:
    assert resolve_device("auto").type == "cuda"
    count = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=f"only {count} CUDA"):
        resolve_device(f"cuda:{count}")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["episodes=0"], "episodes"),
        (["max_episode_frames=0"], "max_episode_frames"),
        (["noop_max=-1"], "noop_max"),
        (["epsilon=1.5"], "epsilon"),
        (["epsilon=-0.1"], "epsilon"),
        (["epsilon=nan"], "epsilon"),
        (["device=tpu"], "device"),
        (["seed=-1"], "seed"),
        ([f"seed={2**64}"], "seed"),
        (["noop_max=18000"], "noop_max"),  # = max_episode_frames: no game left to play
        ([f"max_episode_frames={2**31}"], "max_episode_frames"),
    ],
)
def test_validate_eval_names_the_bad_key(overrides: list[str], key: str) -> None:
    conf = eval_config(*overrides)
    with pytest.raises(ConfigError, match=rf"(^|\W){re.escape(key)}\W"):
        validate_eval(conf)


@pytest.mark.parametrize(
    "overrides", [[f"seed={2**64 - 1}"], ["noop_max=0"], ["noop_max=17999"], ["epsilon=0"]]
)
def test_validate_eval_accepts_boundary_values(overrides: list[str]) -> None:
    validate_eval(eval_config(*overrides))


# ---------------------------------------------------------------- auto


def test_auto_is_the_nature_loop_on_the_cpu() -> None:
    conf = train_config()
    settings = resolve_settings(conf, torch.device("cpu"), cores=16)
    assert (settings.num_envs, settings.compile, settings.cuda_graph) == (1, False, False)


@pytest.mark.parametrize(
    ("cores", "total_steps", "games"),
    [
        (16, 12_500_000, 16),
        (64, 12_500_000, 16),  # capped
        (12, 12_500_000, 8),  # a power of two the cores allow
        (4, 12_500_000, 4),  # a Slurm job's share
        (1, 12_500_000, 1),
        (16, 1_000_004, 4),  # total_steps must divide among the games
        (16, 999, 1),
    ],
)
def test_auto_num_envs_on_cuda(cores: int, total_steps: int, games: int) -> None:
    assert auto_num_envs(torch.device("cuda"), cores, total_steps) == games
    assert auto_num_envs(torch.device("cpu"), cores, total_steps) == 1


def test_explicit_values_stay_and_bad_ones_are_named() -> None:
    conf = train_config("num_envs=4", "compile=true", "cuda_graph=true")
    settings = resolve_settings(conf, torch.device("cpu"), cores=16)
    # A CUDA graph needs CUDA: on the CPU it is off whatever was asked.
    assert (settings.num_envs, settings.compile, settings.cuda_graph) == (4, True, False)
    assert settings.auto == frozenset()
    with pytest.raises(ConfigError, match=r"num_envs must be .* got 'many'"):
        resolve_settings(train_config("num_envs=many"), torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"compile must be true, false or auto, got 'maybe'"):
        resolve_settings(train_config("compile=maybe"), torch.device("cpu"))


@pytest.mark.parametrize(("compile", "probed"), [("false", 0), ("true", 0), ("auto", 1)])
def test_the_compiler_is_probed_only_for_compile_auto(compile: str, probed: int) -> None:
    """The probe is a Triton compile and Inductor's worker pool on CUDA: never for an explicit
    value. (On this CPU-only machine the probe of a CUDA device fails, and says why.)"""
    compile_error.cache_clear()
    settings = resolve_settings(train_config(f"compile={compile}"), torch.device("cuda"), cores=4)
    assert compile_error.cache_info().misses == probed
    if compile != "auto":
        assert settings.compile == (compile == "true")


def test_settings_name_what_the_user_left_auto() -> None:
    cpu = torch.device("cpu")
    assert resolve_settings(train_config(), cpu).auto == {"num_envs", "compile", "cuda_graph"}
    settings = resolve_settings(train_config("compile=false", "num_envs=2"), cpu)
    assert settings.auto == {"cuda_graph"}


def test_validation_leaves_the_users_config_as_written_and_records_the_games() -> None:
    """validate_train resolves `auto` into RunSettings without writing into the config; the
    config the run records (config.yaml, checkpoints, summary.json) holds the number of games
    it resolved to (a resume must play as many) and the speed settings as written (a resume
    resolves them again for its own machine)."""
    conf = train_config("env=Pong", "device=cpu", "cuda_graph=true")
    settings = validate_train(conf)
    assert (conf.num_envs, conf.compile, conf.cuda_graph) == ("auto", "auto", True)
    assert (settings.device, settings.num_envs, settings.compile, settings.cuda_graph) == (
        torch.device("cpu"),
        1,
        False,
        False,
    )
    assert settings.auto == {"num_envs", "compile"}
    recorded = settings.recorded(conf)
    assert (recorded.num_envs, recorded.compile, recorded.cuda_graph) == (1, "auto", True)
    assert recorded.env == conf.env and recorded.algo == conf.algo
    assert conf.num_envs == "auto"  # recording made a copy


# ---------------------------------------------------------------- command line


@pytest.mark.parametrize(
    ("args", "routed"),
    [
        (["env=Seaquest"], ["env=atari", "env.game=Seaquest"]),
        (["env=space_invaders"], ["env=atari", "env.game=SpaceInvaders"]),
        (["env=breakout"], ["env=Breakout"]),
        (["env=ALE/Pong-v5", "seed=3"], ["env=Pong", "seed=3"]),
        (["env=Pong", "batch_size=64"], ["env=Pong", "batch_size=64"]),
        (["env=atari", "env.game=Seaquest"], ["env=atari", "env.game=Seaquest"]),
        (["seed=1"], ["seed=1"]),
    ],
)
def test_route_game(args: list[str], routed: list[str]) -> None:
    assert route_game(args) == routed


def test_route_game_unknown_names_the_close_match() -> None:
    with pytest.raises(UnknownGameError, match="Breakout"):
        route_game(["env=Breakot"])


def test_compose_accepts_a_good_command_line() -> None:
    cfg = cli.compose(CONFIG_DIR, "config", ["env=Pong", "batch_size=64", "algo=double_dqn"])
    assert str(cfg.hydra.run.dir).startswith("runs/Pong/")  # resolved once, here
    conf = cli.typed(cfg)
    assert isinstance(conf, TrainConfig) and conf.batch_size == 64 and conf.algo.double
    assert cli.typed(cli.compose(CONFIG_DIR, "eval", ["checkpoint=x", "episodes=3"])).episodes == 3


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["foo=1"], "'foo'"),
        (["algo.foo=1"], "'algo.foo'"),
        (["batch_size=abc"], "batch_size"),
        (["env=Nope"], "env/Nope"),
    ],
)
def test_compose_rejects_a_bad_command_line(args: list[str], mentions: str) -> None:
    with pytest.raises(UsageError, match=re.escape(mentions)):
        cli.compose(CONFIG_DIR, "config", args)


# Hydra's '+' adds a key that no schema field reads: a mistyped '+batchsize=64' must not be
# silently ignored.
def test_compose_rejects_an_added_unknown_key() -> None:
    with pytest.raises(UsageError, match="foo"):
        cli.compose(CONFIG_DIR, "config", ["+foo=1"])


def test_a_missing_mandatory_value_is_named() -> None:
    with pytest.raises(UsageError, match="checkpoint is required: add checkpoint="):
        cli.typed(cli.compose(CONFIG_DIR, "eval", []))


def test_compose_lists_presets_for_a_missing_env_file() -> None:
    with pytest.raises(UsageError) as err:
        cli.compose(CONFIG_DIR, "config", ["env=Nope"])
    message = str(err.value)
    for preset in ENV_PRESETS:
        assert preset in message
    assert "atari" not in message.split("options:")[1]


def _as_dict(conf: TrainConfig) -> dict:
    values = OmegaConf.to_container(OmegaConf.structured(conf))
    assert isinstance(values, dict)
    return values


def test_a_resume_may_change_only_how_the_run_is_trained_for_saved_and_watched() -> None:
    saved = train_config("env=Pong", "num_envs=1")
    allowed = train_config(
        "env=atari", "env.game=pong", "num_envs=1", "total_steps=20000000", "eval_episodes=3",
        "device=cpu", "precision=bf16", "save_replay=true", "keep_checkpoints=0", "compile=false",
    )  # fmt: skip
    assert resume_changes(_as_dict(saved), _as_dict(allowed)) == []  # pong is Pong
    changed = train_config(
        "env=Pong", "num_envs=2", "seed=3", "algo.gamma=0.9", "env.crop=[1,2,3,4]"
    )
    assert resume_changes(_as_dict(saved), _as_dict(changed)) == [
        "env.crop (None -> [1, 2, 3, 4])",
        "algo.gamma (0.99 -> 0.9)",
        "seed (0 -> 3)",
        "num_envs (1 -> 2)",
    ]
    # num_envs=auto is resolved later, against the checkpoint's own count.
    assert resume_changes(_as_dict(saved), _as_dict(train_config("env=Pong"))) == []
    assert "seed" not in RESUME_MAY_CHANGE and "total_steps" in RESUME_MAY_CHANGE
    assert all(key in TrainConfig.__dataclass_fields__ for key in RESUME_MAY_CHANGE)
