"""Config schemas (registered in Hydra's ConfigStore) and validation of values at start.

The YAML files under `configs/` hold the values, each with its unit; these dataclasses hold the
types, so Hydra rejects `batch_size=abc` while composing. `validate_train` and `validate_eval`
check ranges and relations, raising ConfigError with a message a person can act on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

from dqn_atari.envs import AtariOptions
from dqn_atari.networks import PRECISIONS, bf16_supported, compile_error, min_frame_size
from dqn_atari.preprocessing import ATARI_SCREEN_SHAPE, Crop

# torch.manual_seed takes seeds in [-2**63, 2**64 - 1]; numpy's and gymnasium's generators take
# any seed >= 0. Seeds in [0, SEED_MAX] work for all three.
SEED_MAX = 2**64 - 1


class ConfigError(ValueError):
    """A config value that cannot work, with the reason."""


@dataclass
class EnvConfig:
    game: str = MISSING  # ALE game name: Breakout, Pong, SpaceInvaders, ...
    frame_skip: int = MISSING  # emulator frames per agent step
    frame_stack: int = MISSING  # phi frames per observation
    screen_size: int = MISSING  # pixels, side of a phi frame
    crop: list[int] | None = None  # pixels [top, bottom, left, right] of the raw screen
    noop_max: int = MISSING  # emulator frames, random no-ops after reset
    fire_reset: bool = MISSING
    fire_on_life_loss: bool = MISSING
    terminal_on_life_loss: bool = MISSING
    clip_rewards: bool = MISSING
    sticky_action_prob: float = MISSING
    max_episode_frames: int = MISSING  # emulator frames
    full_action_space: bool = MISSING


@dataclass
class AlgoConfig:
    name: str = MISSING
    gamma: float = MISSING
    double: bool = MISSING
    optimizer: str = MISSING  # rmsprop | adam
    lr: float = MISSING
    rmsprop_alpha: float = MISSING
    rmsprop_eps: float = MISSING
    adam_eps: float = MISSING
    huber_delta: float = MISSING
    max_grad_norm: float | None = None
    train_every: int = MISSING  # agent steps per gradient update
    target_update_interval: int = MISSING  # agent steps
    epsilon_start: float = MISSING
    epsilon_end: float = MISSING
    epsilon_decay_steps: int = MISSING  # agent steps
    eval_epsilon: float = MISSING


@dataclass
class TrainConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    seed: int = MISSING
    device: str = MISSING
    total_steps: int = MISSING  # agent steps
    num_envs: int = MISSING  # games played at once
    learning_starts: int = MISSING  # agent steps
    buffer_size: int = MISSING  # transitions (frames)
    batch_size: int = MISSING  # transitions
    checkpoint_interval: int = MISSING  # agent steps
    keep_checkpoints: int = MISSING  # periodic checkpoint files kept; 0 = all
    save_replay: bool = MISSING  # save the replay memory with latest.pt
    eval_interval: int = MISSING  # agent steps; 0 = off
    eval_episodes: int = MISSING  # games
    eval_max_episode_frames: int = MISSING  # emulator frames
    final_eval_episodes: int = MISSING  # games of the final evaluation; 0 = none
    log_interval: int = MISSING  # agent steps
    progress_interval_s: float = MISSING  # seconds
    resume: str | None = None  # run directory to continue
    precision: str = MISSING  # fp32 | bf16
    compile: bool = MISSING


@dataclass
class EvalConfig:
    checkpoint: str = MISSING  # path of a .pt written by dqn-train
    episodes: int = MISSING  # games
    epsilon: float = MISSING
    max_episode_frames: int = MISSING  # emulator frames
    noop_max: int = MISSING  # emulator frames
    device: str = MISSING
    seed: int = MISSING
    video: bool = MISSING
    precision: str = MISSING  # fp32 | bf16


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if precision == "bf16" and not bf16_supported(device):
        raise ConfigError(
            f"precision=bf16 needs CUDA with bf16 or a CPU with AVX512-BF16/AMX; {device} has "
            "neither: use precision=fp32"
        )


def check_compile(compile: bool, device: torch.device) -> None:
    if compile and (reason := compile_error(device)) is not None:
        raise ConfigError(
            f"compile=true, but torch.compile does not work on {device} here: "
            f"{reason}; install a C/C++ compiler or use compile=false"
        )


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; cuda without CUDA is an error, not a fallback."""
    if not _DEVICE.fullmatch(name):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got '{name}'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name} but CUDA is not available here; use device=cpu")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device={name} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    return device


def atari_options(env: EnvConfig) -> AtariOptions:
    crop = None
    if env.crop is not None:
        if len(env.crop) != 4:
            raise ConfigError(
                f"env.crop takes 4 margins [top, bottom, left, right], got {env.crop}"
            )
        crop = Crop(*env.crop)
    # EnvConfig and AtariOptions carry the same fields: the schema types the YAML, the
    # dataclass is what the library takes.
    fields = {name: getattr(env, name) for name in AtariOptions.__dataclass_fields__}
    options = AtariOptions(**{**fields, "crop": crop})
    try:
        options.validate()
    except ValueError as err:
        raise ConfigError(f"env.{err}") from None
    return options


def _at_least(values: dict[str, int | float], minimum: int) -> None:
    for name, value in values.items():
        if not value >= minimum:  # written so that NaN fails too
            raise ConfigError(f"{name} must be >= {minimum}, got {value}")


def _finite_positive(values: dict[str, float], why: str = "") -> None:
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a finite number > 0, got {value}{why}")


def _probability(values: dict[str, float]) -> None:
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {value}")


def _seed(name: str, seed: int, largest_offset: int = 0) -> None:
    """`seed` and the torch seeds derived from it, up to seed + largest_offset, must be usable."""
    highest = SEED_MAX - largest_offset
    if not 0 <= seed <= highest:
        derived = f", and the run also seeds torch with up to {name} + {largest_offset}" * bool(
            largest_offset
        )
        raise ConfigError(
            f"{name} must be in [0, {highest}], got {seed}: numpy takes no seed below 0, torch "
            f"none above 2**64 - 1{derived}"
        )


def _screen_size(size: int) -> None:
    # The network's own layer arithmetic gives the floor; above the raw screen's larger side,
    # resizing only interpolates, and the network's first dense layer grows with the square.
    smallest, largest = min_frame_size(), max(ATARI_SCREEN_SHAPE)
    if not smallest <= size <= largest:
        raise ConfigError(
            f"env.screen_size must be in [{smallest}, {largest}] pixels, got {size}: the Nature "
            f"network's convolutions need at least {smallest}, and the raw screen is "
            f"{ATARI_SCREEN_SHAPE[0]}x{ATARI_SCREEN_SHAPE[1]}"
        )


def _algo(algo: AlgoConfig) -> None:
    _probability(
        {
            "algo.gamma": algo.gamma,
            "algo.epsilon_start": algo.epsilon_start,
            "algo.epsilon_end": algo.epsilon_end,
            "algo.eval_epsilon": algo.eval_epsilon,
        }
    )
    if algo.optimizer not in ("rmsprop", "adam"):
        raise ConfigError(f"algo.optimizer must be rmsprop or adam, got '{algo.optimizer}'")
    _finite_positive({"algo.lr": algo.lr})
    # Both epsilons are added to a square root that is 0 for a weight whose gradient is 0 (a
    # dead ReLU unit): with 0 the update divides 0 by 0 and the weights become NaN.
    _finite_positive(
        {"algo.rmsprop_eps": algo.rmsprop_eps, "algo.adam_eps": algo.adam_eps},
        why=" (it keeps the update's denominator away from 0)",
    )
    # The decay of centered RMSProp's gradient averages. At 1 they never move from 0, so the
    # update is lr * gradient / eps. At 0 the variance estimate is g*g - g^2, which rounding
    # makes slightly negative for about half the weights: its square root is NaN (97% of the
    # weights after 5 steps in torch 2.13). Above 1 it goes negative outright.
    if not 0.0 < algo.rmsprop_alpha < 1.0:
        raise ConfigError(
            f"algo.rmsprop_alpha must be in (0, 1), got {algo.rmsprop_alpha}: it is the decay of "
            "the gradient averages (1 never updates them; 0 and above 1 make the update NaN)"
        )
    try:  # torch's own rule for delta; inf is allowed, and is the squared loss
        F.huber_loss(torch.zeros(1), torch.zeros(1), delta=algo.huber_delta)
    except RuntimeError as err:
        raise ConfigError(f"algo.huber_delta={algo.huber_delta}: {err}") from None
    if algo.max_grad_norm is not None and not (
        math.isfinite(algo.max_grad_norm) and algo.max_grad_norm > 0
    ):
        raise ConfigError(
            f"algo.max_grad_norm must be a finite number > 0, or null for no clipping; "
            f"got {algo.max_grad_norm}"
        )


def validate_train(cfg: TrainConfig) -> None:
    """Every range and relation dqn-train relies on; raises ConfigError on the first failure."""
    _at_least(
        {
            "total_steps": cfg.total_steps,
            "buffer_size": cfg.buffer_size,
            "batch_size": cfg.batch_size,
            "checkpoint_interval": cfg.checkpoint_interval,
            "eval_episodes": cfg.eval_episodes,
            "log_interval": cfg.log_interval,
            "num_envs": cfg.num_envs,
            "algo.train_every": cfg.algo.train_every,
            "algo.target_update_interval": cfg.algo.target_update_interval,
        },
        1,
    )
    _at_least(
        {
            "learning_starts": cfg.learning_starts,
            "eval_interval": cfg.eval_interval,
            "final_eval_episodes": cfg.final_eval_episodes,
            "keep_checkpoints": cfg.keep_checkpoints,
            "algo.epsilon_decay_steps": cfg.algo.epsilon_decay_steps,
            "progress_interval_s": cfg.progress_interval_s,
        },
        0,
    )
    if math.isinf(cfg.progress_interval_s):
        raise ConfigError(f"progress_interval_s must be finite, got {cfg.progress_interval_s}")
    # Game i's replay ring seeds a torch generator with seed + i. (The games and evaluations are
    # seeded seed + agent step, but through numpy, which has no upper limit.)
    _seed("seed", cfg.seed, largest_offset=cfg.num_envs - 1)
    min_buffer = (cfg.env.frame_stack + 2) * cfg.num_envs  # each game has its own ring
    if cfg.buffer_size < min_buffer:
        raise ConfigError(f"buffer_size must be >= {min_buffer}, got {cfg.buffer_size}")
    if cfg.total_steps % cfg.num_envs:
        raise ConfigError(
            f"total_steps ({cfg.total_steps}) must be a multiple of num_envs ({cfg.num_envs}): "
            "the games step together"
        )
    if cfg.batch_size > cfg.buffer_size:
        raise ConfigError(
            f"batch_size ({cfg.batch_size}) must not exceed buffer_size ({cfg.buffer_size})"
        )
    if cfg.learning_starts > cfg.total_steps:
        raise ConfigError(
            f"learning_starts ({cfg.learning_starts}) must not exceed total_steps "
            f"({cfg.total_steps}): the run would never learn"
        )
    # The loop updates at agent steps that are multiples of train_every after learning_starts.
    last_update_step = cfg.total_steps - cfg.total_steps % cfg.algo.train_every
    if last_update_step <= cfg.learning_starts:
        raise ConfigError(
            f"no update fits between learning_starts ({cfg.learning_starts}) and total_steps "
            f"({cfg.total_steps}) at one every {cfg.algo.train_every} agent steps: "
            "the run would never learn"
        )
    _algo(cfg.algo)
    options = atari_options(cfg.env)
    _screen_size(options.screen_size)
    # Evaluation games are the training games with their own length limit.
    try:
        replace(options, max_episode_frames=cfg.eval_max_episode_frames).validate()
    except ValueError as err:
        raise ConfigError(
            f"eval_max_episode_frames={cfg.eval_max_episode_frames} does not fit the "
            f"evaluation games: {err}"
        ) from None
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    check_compile(cfg.compile, device)


def validate_eval(cfg: EvalConfig) -> None:
    _at_least({"episodes": cfg.episodes}, 1)
    _probability({"epsilon": cfg.epsilon})
    # dqn-eval plays its own seed, unshifted.
    _seed("seed", cfg.seed)
    try:  # the games' own rules for these two (the rest comes from the checkpoint)
        AtariOptions(noop_max=cfg.noop_max, max_episode_frames=cfg.max_episode_frames).validate()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    check_precision(cfg.precision, resolve_device(cfg.device))


def validate_composed(cfg: DictConfig) -> None:
    """`validate_train` or `validate_eval` on a config just composed with Hydra's own keys, so
    that a command line that cannot work is refused before Hydra creates the run directory.

    A config with a mandatory value missing (???) is left to the command, which names the key.
    """
    values = cfg.copy()
    with open_dict(values):
        values.pop("hydra", None)
    if OmegaConf.missing_keys(values):
        return
    conf = OmegaConf.to_object(values)
    if isinstance(conf, TrainConfig):
        validate_train(conf)
    elif isinstance(conf, EvalConfig):
        validate_eval(conf)
