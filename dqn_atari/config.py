"""The config: one dataclass per node, holding every default, and its validation.

These dataclasses are the single source of truth for defaults (the Nature DQN recipe): Hydra's
ConfigStore types the composed config with them, and the components take the typed nodes
directly (`AtariOptions` is the `env` node, `AlgoConfig` the `algo` node, `TrainConfig` the
whole run). The YAML files under `configs/` only choose the groups and name the game.

`validate_train` and `validate_eval` check ranges and relations, raising ConfigError with a
message a person can act on; each check lives once, here or in the component it belongs to.
`RESUME_MAY_CHANGE` is what a resume may change; `resume_changes` finds anything else.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from dqn_atari.envs import AtariOptions, resolve_game
from dqn_atari.heads import DISTRIBUTIONS
from dqn_atari.networks import PRECISIONS, bf16_supported, compile_error, min_frame_size
from dqn_atari.preprocessing import ATARI_SCREEN_SHAPE
from dqn_atari.replay import min_capacity

# torch.manual_seed takes seeds in [-2**63, 2**64 - 1]; numpy's and gymnasium's generators take
# any seed >= 0. Seeds in [0, SEED_MAX] work for all three.
SEED_MAX = 2**64 - 1
OPTIMIZERS = ("rmsprop", "adam")
AUTO = "auto"


class ConfigError(ValueError):
    """A config value that cannot work, with the reason."""


@dataclass(frozen=True)
class NatureEvaluation:
    """Nature's evaluation protocol (Mnih et al., 2015, Methods): the defaults of the final
    evaluation of a run and of dqn-eval, in one place."""

    episodes: int = 30  # games
    epsilon: float = 0.05  # exploration while playing
    max_episode_frames: int = 18_000  # emulator frames per game (5 minutes)
    noop_max: int = AtariOptions.noop_max  # up to 30 random no-op frames at each start


NATURE_EVALUATION = NatureEvaluation()


@dataclass
class EnvConfig(AtariOptions):
    """The `env` node: a game and how it becomes phi(s) (AtariOptions' fields and defaults)."""

    game: str = MISSING  # ALE game name: Breakout, Pong, SpaceInvaders, ...


@dataclass
class AlgoConfig:
    """The `algo` node: DQN's hyperparameters, Nature's (Mnih et al., 2015, Extended Data
    Table 1) by default."""

    name: str = "dqn"  # the algorithm, as recorded in the run's config
    gamma: float = 0.99  # discount per agent step
    # The DQN family's components; they combine freely (a preset in configs/algo/ names one).
    double: bool = False  # Double DQN bootstrap: the online network picks, the target values
    dueling: bool = False  # value and advantage streams (Wang et al., 2016)
    n_step: int = 1  # agent steps of rewards before the bootstrap (Sutton, 1988; Rainbow: 3)
    distribution: str = "none"  # none | c51 (Bellemare et al., 2017) | qr (Dabney et al., 2018)
    atoms: int = 51  # C51: atoms of the fixed support
    v_min: float = -10.0  # C51: the support's ends, in (clipped) return units
    v_max: float = 10.0
    quantiles: int = 200  # QR-DQN: quantiles per action
    # Noisy nets (Fortunato et al., 2018): factorised Gaussian NoisyLinear dense layers, noise
    # redrawn for every update and every acting step; exploration is the noise, so epsilon is
    # 0 while training (evaluation plays the mean weights at eval_epsilon).
    noisy: bool = False
    noisy_sigma0: float = 0.5  # initial noise scale (the paper's sigma_0 for factorised noise)
    # Proportional prioritized replay (Schaul et al., 2016): slot i drawn with probability
    # p_i / sum p, p_i = (|TD error| + eps)^alpha (C51: its cross-entropy, as Rainbow does), the
    # loss weighted by (N P(i))^-beta normalised by the batch's largest weight.
    prioritized: bool = False
    priority_alpha: float = 0.6  # section 4: alpha = 0.6 for the proportional variant
    # Section 4: beta_0 = 0.4, annealed linearly to 1 over the run's updates (section 3.4).
    priority_beta_start: float = 0.4
    # Added to |TD error| so a transition whose error reaches 0 is still drawn (section 3.3);
    # the paper gives no value: OpenAI Baselines' deepq (prioritized_replay_eps=1e-6).
    priority_eps: float = 1e-6
    optimizer: str = "rmsprop"  # rmsprop (DeepMind's centered RMSProp) | adam
    lr: float = 2.5e-4  # learning rate
    rmsprop_alpha: float = 0.95  # decay of the gradient and squared-gradient averages
    # Added to the centered variance *inside* the square root, for the gradients of the
    # batch-mean loss. Nature's "min squared gradient" 0.01 applies to gradients summed over the
    # 32 transitions, which are 32x the mean's: 0.01 / 32**2 here, as in DQN Zoo (Dopamine: 1e-5).
    rmsprop_eps: float = 0.01 / 32**2
    adam_eps: float = 1.5e-4  # Adam epsilon (with optimizer=adam)
    # TD error clipped to [-1, 1] = Huber loss with delta 1; QR-DQN's kappa (Dabney et al.: 1)
    huber_delta: float = 1.0
    max_grad_norm: float | None = None  # clip the global gradient norm to this; None = off
    train_every: int = 4  # agent steps between gradient updates (replay ratio 1/4)
    target_update_interval: int = 10_000  # agent steps between target network syncs
    epsilon_start: float = 1.0  # exploration at learning_starts
    epsilon_end: float = 0.1  # exploration after the decay, held
    epsilon_decay_steps: int = 1_000_000  # agent steps of linear decay, from learning_starts
    eval_epsilon: float = NATURE_EVALUATION.epsilon  # exploration while evaluating


@dataclass
class TrainConfig:
    """dqn-train's whole config. One agent step is `env.frame_skip` (4) emulator frames; every
    count of agent steps is summed over the games played at once."""

    env: EnvConfig = field(default_factory=EnvConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    seed: int = 0  # seeds torch, numpy, python's random and the emulators
    device: str = AUTO  # auto | cpu | cuda | cuda:N; auto = cuda when available, else cpu
    total_steps: int = 12_500_000  # agent steps (Nature: 50M frames)
    # Games played at once: a number, or auto (1 on the CPU; on CUDA the largest power of two
    # up to 16 that the cores and total_steps allow). 1 plays in-process: the Nature loop.
    num_envs: int | str = AUTO
    learning_starts: int = 50_000  # agent steps of uniform-random play before the first update
    buffer_size: int = 1_000_000  # transitions in the replay memory (one 84x84 frame each)
    batch_size: int = 32  # transitions per gradient update
    checkpoint_interval: int = 250_000  # agent steps between checkpoints
    keep_checkpoints: int = 5  # periodic step_*.pt files kept; 0 = all (latest.pt always)
    save_replay: bool = False  # save the replay memory with latest.pt (7.09 GB at 1M)
    # Resume only: when the replay memory latest.pt names is missing, continue with an empty one
    # refilled by acting (the exact resume is lost) instead of refusing. Applies to that resume.
    refill_replay: bool = False
    eval_interval: int = 250_000  # agent steps between evaluations during training; 0 = off
    eval_episodes: int = 10  # games per evaluation during training
    # Emulator frames per evaluation game (5 minutes).
    eval_max_episode_frames: int = NATURE_EVALUATION.max_episode_frames
    # Games of the evaluation at the end of training; 0 = none.
    final_eval_episodes: int = NATURE_EVALUATION.episodes
    log_interval: int = 1_000  # agent steps between the learner's TensorBoard scalars
    progress_interval_s: float = 2.0  # seconds between progress lines; 0 = every vector step
    resume: str | None = None  # a run directory to continue from its checkpoints/latest.pt
    precision: str = "fp32"  # fp32 | bf16: bf16 autocast for the update; acting stays fp32
    # torch.compile the whole update and the act forward: true | false | auto (on CUDA where a
    # C compiler works). Needs a C/C++ compiler.
    compile: bool | str = AUTO
    # Replay each update as one CUDA graph: true | false | auto (on CUDA). CUDA only.
    cuda_graph: bool | str = AUTO
    # num_envs, compile and cuda_graph stay as the user wrote them: what they mean on the run's
    # device is RunSettings (resolve_settings), which the builders take.


@dataclass
class EvalConfig:
    """dqn-eval's config: Nature's evaluation protocol by default."""

    checkpoint: str = MISSING  # a checkpoint file, its checkpoints/ folder, or the run folder
    episodes: int = NATURE_EVALUATION.episodes  # games to play
    epsilon: float = NATURE_EVALUATION.epsilon  # exploration while playing
    max_episode_frames: int = NATURE_EVALUATION.max_episode_frames  # emulator frames per game
    noop_max: int = NATURE_EVALUATION.noop_max  # emulator frames: up to this many no-ops at start
    device: str = AUTO  # auto | cpu | cuda | cuda:N
    seed: int = 0  # seeds the emulator and the epsilon-greedy choices
    video: bool = False  # write an MP4 of the first game next to the checkpoint
    precision: str = "fp32"  # fp32 | bf16 (autocast while playing)


# What `dqn-train resume=DIR key=value` may change: how long the run trains, how it is saved,
# evaluated and logged, and where and how its update is computed. Every other value defines the
# experiment (the game and phi, the training protocol, the seed, the algorithm, the games played
# at once, the replay memory and the batch): changed halfway, the run would be neither the old
# experiment nor a new one, and its summary would describe it wrongly.
RESUME_MAY_CHANGE = (
    "total_steps",  # train longer (or play the final evaluation of a run that reached it)
    "checkpoint_interval",
    "keep_checkpoints",
    "save_replay",
    "refill_replay",
    # Evaluations play their own games with their own random streams: training is the same
    # whatever they are, and summary.json records the values the final one used.
    "eval_interval",
    "eval_episodes",
    "eval_max_episode_frames",
    "final_eval_episodes",
    "log_interval",
    "progress_interval_s",
    # The same update on another machine: a GPU, a CPU without bf16, a box without a compiler.
    "device",
    "precision",
    "compile",
    "cuda_graph",
    "resume",
)


def _flat(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resume_changes(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The values outside RESUME_MAY_CHANGE that `new` (the resumed run's config) changes from
    `saved` (the config the checkpoint was trained with), as `key (old -> new)`."""
    old_values, new_values = _flat(saved), _flat(new)
    changes = []
    for key, value in new_values.items():
        if key in RESUME_MAY_CHANGE or key not in old_values:
            continue  # a key an earlier version did not have: nothing to compare with
        old = old_values[key]
        if key == "num_envs" and str(value).lower() == AUTO:
            continue  # resolved later; the checkpoint's own check names a different count
        if key == "env.game":  # Pong, pong and ALE/Pong-v5 are one game (an unknown one raises)
            same = str(old) == str(value) or resolve_game(str(value)) == resolve_game(str(old))
        else:
            same = old == value
        if not same:
            changes.append(f"{key} ({old} -> {value})")
    return changes


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)


# ---------------------------------------------------------------- devices and "auto"

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; cuda without CUDA is an error, not a fallback."""
    if not _DEVICE.fullmatch(name):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got '{name}'")
    if name == AUTO:
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


def usable_cores() -> int:
    """The cores this process may run on (a Slurm job's or taskset's share, not the box's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_num_envs(device: torch.device, cores: int, total_steps: int) -> int:
    """num_envs=auto: 1 on the CPU, where the learner needs the cores the workers would take.
    On CUDA the largest power of two up to 16 that the cores allow and that divides total_steps
    (the games step together). A worker emulates one agent step per vector step, well under a
    millisecond, and waits for the next most of the time, so a worker per core shares the cores
    with the training process without starving it; more games make each vector step's fixed
    cost (one forward, one replay write, the updates' launches) count for more agent steps."""
    if device.type != "cuda":
        return 1
    n = 1
    while n * 2 <= min(16, cores) and total_steps % (n * 2) == 0:
        n *= 2
    return n


def _switch(name: str, value: Any, auto: Callable[[], bool]) -> bool:
    """A true/false config value that may be `auto`, as a bool; `auto()` is asked only for
    `auto` (it may be a probe that costs seconds)."""
    text = str(value).lower()
    if text == AUTO:
        return auto()
    if text in ("true", "false"):
        return text == "true"
    raise ConfigError(f"{name} must be true, false or auto, got '{value}'")


AUTO_SETTINGS = ("num_envs", "compile", "cuda_graph")  # the keys that may be `auto`


@dataclass(frozen=True)
class RunSettings:
    """Where the run computes and what num_envs, compile and cuda_graph mean there, typed and
    resolved once from the user's config (resolve_settings), which keeps what the user wrote."""

    device: torch.device
    num_envs: int
    compile: bool
    cuda_graph: bool
    # Which of the three the user left `auto`: a setting chosen by auto falls back when it
    # fails at start-up; one asked for is an error.
    auto: frozenset[str]

    def recorded(self, cfg: TrainConfig) -> TrainConfig:
        """`cfg` as config.yaml, the checkpoints and summary.json record the run: num_envs as
        the number of games it resolved to, since the games are part of the experiment and a
        resume must play as many; device, compile and cuda_graph as the user wrote them, so a
        run left `auto` takes the fast path of whichever machine it resumes on (summary.json
        names the device it trained on and any fallback)."""
        return dataclasses.replace(cfg, num_envs=self.num_envs)


def resolve_settings(
    cfg: TrainConfig, device: torch.device, cores: int | None = None
) -> RunSettings:
    """What num_envs, compile and cuda_graph mean on `device` (`cores`: usable_cores()). Reads
    `cfg` and changes nothing in it."""
    auto = frozenset(k for k in AUTO_SETTINGS if str(getattr(cfg, k)).lower() == AUTO)
    if "num_envs" in auto:
        num_envs = auto_num_envs(device, usable_cores() if cores is None else cores,
                                 cfg.total_steps)  # fmt: skip
    else:
        try:
            num_envs = int(str(cfg.num_envs))
        except ValueError:
            raise ConfigError(
                f"num_envs must be a whole number of games or auto, got '{cfg.num_envs}'"
            ) from None
    on_cuda = device.type == "cuda"
    # compile=auto probes the compiler (a Triton compile and Inductor's worker pool on CUDA:
    # seconds) only where it would be used, and never for an explicit true or false.
    compile = _switch(
        "compile", cfg.compile, auto=lambda: on_cuda and compile_error(device) is None
    )
    cuda_graph = _switch("cuda_graph", cfg.cuda_graph, auto=lambda: on_cuda) and on_cuda
    return RunSettings(device, num_envs, compile, cuda_graph, auto)


# ---------------------------------------------------------------- checks


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


def check_env(env: AtariOptions, prefix: str = "env.") -> None:
    """The game's own rules (AtariOptions.validate), and what the network needs of the frame."""
    try:
        env.validate()
    except ValueError as err:
        raise ConfigError(f"{prefix}{err}") from None
    # The network's own layer arithmetic gives the floor; above the raw screen's larger side,
    # resizing only interpolates, and the network's first dense layer grows with the square.
    smallest, largest = min_frame_size(), max(ATARI_SCREEN_SHAPE)
    if not smallest <= env.screen_size <= largest:
        raise ConfigError(
            f"env.screen_size must be in [{smallest}, {largest}] pixels, got {env.screen_size}: "
            f"the Nature network's convolutions need at least {smallest}, and the raw screen is "
            f"{ATARI_SCREEN_SHAPE[0]}x{ATARI_SCREEN_SHAPE[1]}"
        )


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


def _seed(name: str, seed: int) -> None:
    if not 0 <= seed <= SEED_MAX:
        raise ConfigError(
            f"{name} must be in [0, {SEED_MAX}], got {seed}: numpy takes no seed below 0, torch "
            "none above 2**64 - 1"
        )


def check_algo(algo: AlgoConfig) -> None:
    _at_least(
        {
            "algo.train_every": algo.train_every,
            "algo.target_update_interval": algo.target_update_interval,
        },
        1,
    )
    _at_least({"algo.epsilon_decay_steps": algo.epsilon_decay_steps}, 0)
    _probability(
        {
            "algo.gamma": algo.gamma,
            "algo.epsilon_start": algo.epsilon_start,
            "algo.epsilon_end": algo.epsilon_end,
            "algo.eval_epsilon": algo.eval_epsilon,
        }
    )
    _at_least({"algo.n_step": algo.n_step, "algo.quantiles": algo.quantiles}, 1)
    # alpha 0 is uniform sampling (section 3.3), 1 in proportion to |TD error| + eps itself;
    # beta rises from beta_start to 1.
    _probability(
        {
            "algo.priority_alpha": algo.priority_alpha,
            "algo.priority_beta_start": algo.priority_beta_start,
        }
    )
    _finite_positive(
        {"algo.priority_eps": algo.priority_eps},
        why=" (a transition whose TD error is 0 would never be drawn again)",
    )
    _at_least({"algo.atoms": algo.atoms}, 2)
    if algo.distribution not in DISTRIBUTIONS:
        raise ConfigError(
            f"algo.distribution must be one of {', '.join(DISTRIBUTIONS)}, got "
            f"'{algo.distribution}'"
        )
    if not (math.isfinite(algo.v_min) and math.isfinite(algo.v_max) and algo.v_min < algo.v_max):
        raise ConfigError(
            f"algo.v_min and algo.v_max must be finite with v_min < v_max, got {algo.v_min} "
            f"and {algo.v_max}"
        )
    _finite_positive({"algo.noisy_sigma0": algo.noisy_sigma0})
    if algo.optimizer not in OPTIMIZERS:
        raise ConfigError(
            f"algo.optimizer must be one of {', '.join(OPTIMIZERS)}, got '{algo.optimizer}'"
        )
    _finite_positive({"algo.lr": algo.lr})
    # For a weight whose gradient is 0 (a dead ReLU unit) the second moment is 0: RMSProp adds
    # its eps inside the square root and Adam outside; with 0 either divides 0 by 0 (NaN).
    _finite_positive(
        {"algo.rmsprop_eps": algo.rmsprop_eps, "algo.adam_eps": algo.adam_eps},
        why=" (it keeps the update's denominator away from 0)",
    )
    # The decay of centered RMSProp's gradient averages. At 1 they never move from 0, so the
    # update is lr * gradient / eps. At 0 the variance estimate is g*g - g^2, which rounding
    # makes slightly negative for about half the weights: its square root is NaN. Above 1 it
    # goes negative outright.
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


# Games per usable core that num_envs may reach. Each game past the first is a worker process
# (~60 MB) that emulates on a core; past the cores more games only time-share them, and as a
# vector step waits for its slowest game, agent steps/s stop growing while memory and the time
# to start the workers (which a stop during the start waits for) grow with the games per core:
# 64 games on 2 cores took 78 s to stop; 8 per core stop within ~20 s on a loaded 2-core box.
# 8 keeps num_envs=16 (auto's largest on CUDA, the op count of scripts/benchmark.py) possible
# on 2 cores.
GAMES_PER_CORE = 8


def check_num_envs(num_envs: int, cores: int) -> None:
    most = GAMES_PER_CORE * cores
    if num_envs > most:
        raise ConfigError(
            f"num_envs={num_envs} is more than {GAMES_PER_CORE} games per usable core ({cores} "
            f"here: at most {most}); each game is a worker process, and past the cores more of "
            "them only add memory and time to start and stop"
        )


def validate_train(cfg: TrainConfig) -> RunSettings:
    """Checks every range and relation dqn-train relies on, changing nothing in `cfg`; returns
    the run's device and resolved settings. Raises ConfigError on the first failure."""
    device = resolve_device(cfg.device)
    settings = resolve_settings(cfg, device)
    num_envs = settings.num_envs
    _at_least(
        {
            "total_steps": cfg.total_steps,
            "buffer_size": cfg.buffer_size,
            "batch_size": cfg.batch_size,
            "checkpoint_interval": cfg.checkpoint_interval,
            "eval_episodes": cfg.eval_episodes,
            "log_interval": cfg.log_interval,
            "num_envs": num_envs,
        },
        1,
    )
    _at_least(
        {
            "learning_starts": cfg.learning_starts,
            "eval_interval": cfg.eval_interval,
            "final_eval_episodes": cfg.final_eval_episodes,
            "keep_checkpoints": cfg.keep_checkpoints,
            "progress_interval_s": cfg.progress_interval_s,
        },
        0,
    )
    if math.isinf(cfg.progress_interval_s):
        raise ConfigError(f"progress_interval_s must be finite, got {cfg.progress_interval_s}")
    check_num_envs(num_envs, usable_cores())
    _seed("seed", cfg.seed)
    min_buffer = min_capacity(cfg.env.frame_stack, num_envs)  # each game has its own ring
    if cfg.buffer_size < min_buffer:
        raise ConfigError(f"buffer_size must be >= {min_buffer}, got {cfg.buffer_size}")
    if cfg.total_steps % num_envs:
        raise ConfigError(
            f"total_steps ({cfg.total_steps}) must be a multiple of num_envs ({num_envs}): "
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
    check_algo(cfg.algo)
    # The loop updates at agent steps that are multiples of train_every after learning_starts.
    last_update_step = cfg.total_steps - cfg.total_steps % cfg.algo.train_every
    if last_update_step <= cfg.learning_starts:
        raise ConfigError(
            f"no update fits between learning_starts ({cfg.learning_starts}) and total_steps "
            f"({cfg.total_steps}) at one every {cfg.algo.train_every} agent steps: "
            "the run would never learn"
        )
    check_env(cfg.env)
    # Evaluation games are the training games with their own length limit.
    try:
        cfg.env.for_evaluation(cfg.eval_max_episode_frames).validate()
    except ValueError as err:
        raise ConfigError(
            f"eval_max_episode_frames={cfg.eval_max_episode_frames} does not fit the "
            f"evaluation games: {err}"
        ) from None
    check_precision(cfg.precision, device)
    check_compile(settings.compile, device)
    return settings


def validate_eval(cfg: EvalConfig) -> torch.device:
    """Checks dqn-eval's values; returns the device it plays on."""
    if not str(cfg.checkpoint).strip():
        raise ConfigError(
            "checkpoint is empty (an unset variable?): give a checkpoint file, its checkpoints/ "
            "folder or the run's folder, checkpoint=PATH"
        )
    _at_least({"episodes": cfg.episodes}, 1)
    _probability({"epsilon": cfg.epsilon})
    _seed("seed", cfg.seed)
    try:  # the games' own rules for these two (the rest comes from the checkpoint)
        AtariOptions(noop_max=cfg.noop_max, max_episode_frames=cfg.max_episode_frames).validate()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    return device
