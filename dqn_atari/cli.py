"""`dqn-train` and `dqn-eval`: compose the config, build every object once, run the loop.

This module is the composition root: it turns the Hydra config into typed settings and plain
objects (environment, network, replay, learner, metrics, checkpoints) and passes them to
`loop.train` / `loop.evaluate`. No other module reads the config.

Bad input never shows a traceback: every error a user can cause is printed as one line
`dqn-train: error: ...` on stderr with exit code 2.
"""

from __future__ import annotations

import errno
import json
import random
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import cv2
import hydra
import numpy as np
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from dqn_atari import summary, sweep
from dqn_atari.checkpoint import (
    FORMAT,
    LATEST,
    CheckpointError,
    CheckpointManager,
    CheckpointWriteError,
    check_resumable,
    load_checkpoint,
)
from dqn_atari.config import (
    ConfigError,
    EvalConfig,
    TrainConfig,
    atari_options,
    register_schemas,
    resolve_device,
    validate_composed,
    validate_eval,
    validate_train,
)
from dqn_atari.envs import (
    AtariOptions,
    AtariPhiEnv,
    UnknownGameError,
    display_name,
    resolve_game,
)
from dqn_atari.learner import Learner, LearnerSettings
from dqn_atari.loop import (
    DivergenceError,
    EvalResult,
    LoopSettings,
    TrainState,
    evaluate,
    train,
)
from dqn_atari.metrics import Metrics
from dqn_atari.networks import NatureQNetwork, q_function
from dqn_atari.optim import make_optimizer
from dqn_atari.perf import keep_freed_host_memory
from dqn_atari.preprocessing import Crop
from dqn_atari.replay import ReplayMemory, ReplayMemoryError, check_fits
from dqn_atari.schedules import LinearSchedule
from dqn_atari.vector import Games, make_games


def find_config_dir() -> Path:
    """The configs shipped in the wheel (dqn_atari/configs), else those of a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise RuntimeError(f"dqn-atari configs not found next to {here}; reinstall the package")


CONFIG_DIR = find_config_dir()
# Exit codes: 2 for input that cannot work (nothing was run), 3 for a run that had to stop
# (diverged, or its checkpoint could not be written); the last good checkpoint is kept in both.
USER_ERRORS = (ConfigError, UnknownGameError, CheckpointError, ReplayMemoryError)
RUN_ERRORS = (DivergenceError, CheckpointWriteError)


class UsageError(ValueError):
    """A command line that cannot be run."""


def _fail(prog: str, message: object, code: int = 2) -> NoReturn:
    text = " ".join(str(message).split())  # one line, whatever the message held
    print(f"{prog}: error: {text}", file=sys.stderr)
    sys.exit(code)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


# ---------------------------------------------------------------- command-line routing


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def route_game(args: list[str]) -> list[str]:
    """`env=NAME` for a game without a preset becomes the generic preset with env.game=NAME."""
    routed = []
    for arg in args:
        match = re.fullmatch(r"env=(.+)", arg)
        if match is None or (CONFIG_DIR / "env" / f"{match.group(1)}.yaml").is_file():
            routed.append(arg)
            continue
        if "," in match.group(1):  # a sweep over games: env=Pong,Breakout
            routed += sweep.route_game_list(match.group(1), _has_env_preset)
            continue
        rom_id = resolve_game(match.group(1))
        display = display_name(rom_id)
        if (CONFIG_DIR / "env" / f"{display}.yaml").is_file():
            routed.append(f"env={display}")
        else:
            routed += ["env=atari", f"env.game={display}"]
    return routed


def _has_env_preset(name: str) -> bool:
    return (CONFIG_DIR / "env" / f"{name}.yaml").is_file()


def route_resume(args: list[str]) -> list[str]:
    """`resume=DIR` replays the overrides saved in DIR's latest checkpoint, then the new ones,
    into hydra.run.dir=DIR. (Not Hydra's .hydra/overrides.yaml: Hydra rewrites it on every
    launch, so a resume that failed its checks would change what the next one replays.)"""
    values = [a.split("=", 1)[1] for a in args if a.startswith("resume=")]
    if not values or values[-1] in ("", "null"):
        return args
    run_dir = Path(values[-1]).expanduser().resolve()
    if not run_dir.is_dir():
        raise UsageError(f"resume={values[-1]}: no such run directory")
    if not (run_dir / "checkpoints" / LATEST).is_file():
        raise UsageError(f"resume={values[-1]}: no checkpoint at {run_dir}/checkpoints/{LATEST}")
    if any(_key_of(a) == "hydra.run.dir" for a in args):
        raise UsageError("resume=DIR continues in DIR; do not also set hydra.run.dir")
    saved = [str(o) for o in load_checkpoint(run_dir / "checkpoints" / LATEST).get("overrides", [])]
    merged: dict[str, str] = {}
    for override in [*saved, *args]:
        if _key_of(override) != "resume":
            merged[_key_of(override)] = override
    # A game given again by name is routed again; drop the saved routing it replaces.
    if "env" in {_key_of(a) for a in args} and "env.game" not in {_key_of(a) for a in args}:
        merged.pop("env.game", None)
    return [*merged.values(), f"resume={run_dir}", f"hydra.run.dir={run_dir}"]


def check_writable(run_dir: Path) -> None:
    """The run directory (or the nearest folder that exists above it) must take new files."""
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UsageError(
            f"cannot write the run directory {run_dir} ({existing}: {err.strerror or err}); "
            "choose another with hydra.run.dir=DIR"
        ) from None


def precheck(config_name: str, args: list[str]) -> Path | None:
    """Compose once before Hydra runs, so that a bad override is one line, not a report.

    Returns the run directory the composed config names.
    """
    if any(a.startswith("-") for a in args):  # --help, --cfg, -m: Hydra's own business
        return None
    for arg in args:
        key = _key_of(arg)
        # '+key=...' adds a key no schema field reads: a typo would be silently ignored.
        if arg.startswith("+") and not key.startswith("hydra.") and key != "experiment":
            raise UsageError(f"unknown config key '{key}' (README lists the keys)")
    GlobalHydra.instance().clear()
    try:
        with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = hydra.compose(config_name=config_name, overrides=args, return_hydra_config=True)
            validate_composed(cfg)  # before Hydra makes the run directory
            return Path(str(OmegaConf.select(cfg, "hydra.run.dir")))
    except MissingConfigException as err:
        options = ", ".join(o for o in (err.options or []) if o != "atari")
        raise UsageError(f"{_first_line(err)}; options: {options}") from None
    except (HydraException, OmegaConfBaseException) as err:
        cause = err.__cause__
        unknown_key = isinstance(cause, (ConfigKeyError, ConfigAttributeError))
        if unknown_key and _first_line(err).startswith("Could not override"):
            key = _first_line(err).split("'")[1]
            raise UsageError(f"unknown config key '{key}' (README lists the keys)") from None
        message = _first_line(err)
        if cause is not None:
            message += f": {_first_line(cause)}"
        raise UsageError(message) from None
    finally:
        GlobalHydra.instance().clear()


def _entry(prog: str, config_name: str, task: Callable[[DictConfig], None], route: bool) -> None:
    register_schemas()
    args = sys.argv[1:]
    try:
        if route:
            sweep.check_launcher(args)
            args = route_resume(route_game(args))
        run_dir = precheck(config_name, args)
        if route and run_dir is not None:  # dqn-eval writes no run directory
            check_writable(run_dir)
    except (UsageError, ConfigError, UnknownGameError, CheckpointError, sweep.LauncherError) as err:
        _fail(prog, err)
    sys.argv = [sys.argv[0], *args]
    main = hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")
    main(task)()


def train_entry() -> None:
    """Console script `dqn-train`."""
    _entry("dqn-train", "config", _train_task, route=True)


def eval_entry() -> None:
    """Console script `dqn-eval`."""
    _entry("dqn-eval", "eval", _eval_task, route=False)


def _missing(err: MissingMandatoryValue) -> str:
    key = err.full_key or "a value"
    return f"{key} is required: add {key}=..."


def _train_task(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        code = run_train(cfg, run_dir)
    except MissingMandatoryValue as err:
        _fail("dqn-train", _missing(err))
    except RUN_ERRORS as err:
        _fail("dqn-train", err, code=3)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, without a final checkpoint
        _fail(
            "dqn-train",
            f"interrupted twice; stopped without a final checkpoint. The last one is in "
            f"{run_dir / 'checkpoints'}; continue with: dqn-train resume={run_dir}",
            code=130,
        )
    except USER_ERRORS as err:
        _fail("dqn-train", err)
    if code:
        sys.exit(code)


def _eval_task(cfg: DictConfig) -> None:
    try:
        summary = run_eval(cfg)
    except MissingMandatoryValue as err:
        _fail("dqn-eval", _missing(err))
    except CheckpointWriteError as err:
        _fail("dqn-eval", err, code=3)
    except USER_ERRORS as err:
        _fail("dqn-eval", err)
    print(json.dumps(summary))


# ---------------------------------------------------------------- dqn-train


class StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current step; a second one stops at once."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _seed_everything(seed: int) -> np.random.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The host RNGs; the replay sampler's and the emulator's travel with their own state."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": rng.bit_generator.state,
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any], rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"].cpu())
    rng.bit_generator.state = state["numpy"]
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _options_dict(options: AtariOptions) -> dict[str, Any]:
    out = {name: getattr(options, name) for name in AtariOptions.__dataclass_fields__}
    out["crop"] = list(options.crop) if options.crop is not None else None
    return out


def _options_from_dict(saved: dict[str, Any]) -> AtariOptions:
    saved = dict(saved)
    saved["crop"] = Crop(*saved["crop"]) if saved.get("crop") is not None else None
    return AtariOptions(**saved)


def check_compatible(ckpt: dict[str, Any], game: str, num_actions: int, source: str) -> None:
    """A checkpoint must come from the same game and action set it is used with."""
    if ckpt["game"] != game:
        raise CheckpointError(
            f"{source} was trained on {ckpt['game']}, not {game}; use a checkpoint of this game"
        )
    if ckpt["num_actions"] != num_actions:
        raise CheckpointError(
            f"{source} has {ckpt['num_actions']} actions but {game} here has {num_actions} "
            "(full_action_space differs?)"
        )


def run_train(cfg: DictConfig, run_dir: Path) -> int:
    """One dqn-train run in `run_dir`; returns the process exit code."""
    started_s = time.monotonic()
    keep_freed_host_memory()
    conf: TrainConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    validate_train(conf)
    # In a sweep's job (dqn-train -m), device=auto takes the job's share of the GPUs.
    hydra_conf = HydraConfig.get()
    job_num = hydra_conf.job.num if hydra_conf.mode == RunMode.MULTIRUN else None
    device = resolve_device(sweep.sweep_device(conf.device, torch.cuda.device_count(), job_num))
    options = atari_options(conf.env)
    checkpoints = CheckpointManager(run_dir / "checkpoints", keep=conf.keep_checkpoints)
    resumed: dict[str, Any] | None = None
    if conf.resume is not None:
        resumed = load_checkpoint(checkpoints.latest)
        check_resumable(resumed, checkpoints.latest)
    elif checkpoints.latest.exists():
        # A sweep's job that finds its own checkpoint (requeued, or the sweep run again into
        # the same folder) continues it, as resume= would.
        if job_num is not None:
            resumed = load_checkpoint(checkpoints.latest)
            check_resumable(resumed, checkpoints.latest)
        if resumed is None or not sweep.same_job(
            resumed.get("overrides", []), hydra_conf.overrides.task
        ):
            raise ConfigError(
                f"{run_dir} already holds a run; continue it with resume={run_dir} "
                "or pick a new hydra.run.dir"
            )

    rng = _seed_everything(conf.seed)
    state = TrainState(learn_from_step=conf.learning_starts)
    if resumed is not None:
        try:
            state = TrainState(**resumed["state"])
        except (KeyError, TypeError) as err:
            raise CheckpointError(
                f"checkpoint {checkpoints.latest} has no valid counters: {err}"
            ) from None
        done = summary.is_done(
            summary.read_summary(run_dir), conf.total_steps, conf.final_eval_episodes
        )
        # Reached total_steps without its final evaluation or summary: the loop does nothing
        # and the run finishes below.
        if state.step >= conf.total_steps and done:
            print(
                f"{run_dir} already reached total_steps={conf.total_steps:,}; nothing to do "
                "(pass a larger total_steps with resume= to train longer)",
                file=sys.stderr,
            )
            return 0
    game = resolve_game(conf.env.game)
    if resumed is not None and resumed.get("game") != game:
        raise CheckpointError(
            f"checkpoint {checkpoints.latest} was trained on {resumed.get('game')}, not {game}; "
            "use a checkpoint of this game"
        )
    saved_replay = checkpoints.replay_of(resumed) if resumed is not None else None
    game_states: list[dict[str, Any]] | None = None
    if resumed is not None and saved_replay is not None:
        # The replay and the games it was filled from continue exactly where they stopped.
        saved_env = resumed["env"]
        game_states = saved_env if isinstance(saved_env, list) else [saved_env]
    # A resumed run without its replay memory opens fresh games, seeded by the step reached.
    games = make_games(conf.env.game, options, conf.seed + state.step, conf.num_envs, game_states)
    try:
        return _run_with_games(
            conf,
            cfg,
            run_dir,
            device,
            options,
            checkpoints,
            resumed,
            saved_replay,
            state,
            rng,
            games,
            started_s,
        )
    finally:
        games.close()


def _run_with_games(
    conf: TrainConfig,
    cfg: DictConfig,
    run_dir: Path,
    device: torch.device,
    options: AtariOptions,
    checkpoints: CheckpointManager,
    resumed: dict[str, Any] | None,
    saved_replay: Path | None,
    state: TrainState,
    rng: np.random.Generator,
    games: Games,
    started_s: float,
) -> int:
    vector = conf.num_envs > 1
    num_actions = games.num_actions
    network = NatureQNetwork(num_actions, options.frame_stack, options.screen_size).to(device)
    algo = conf.algo
    frame_shape = (options.screen_size, options.screen_size)
    check_fits(conf.buffer_size, frame_shape, device)
    replay = ReplayMemory(
        conf.buffer_size,
        frame_shape,
        options.frame_stack,
        device,
        seed=conf.seed,
        num_games=conf.num_envs,
        max_batch_size=conf.batch_size,
    )
    optimizer = make_optimizer(
        algo.optimizer,
        list(network.parameters()),
        lr=algo.lr,
        rmsprop_alpha=algo.rmsprop_alpha,
        rmsprop_eps=algo.rmsprop_eps,
        adam_eps=algo.adam_eps,
    )
    learner = Learner(
        network,
        optimizer,
        LearnerSettings(
            gamma=algo.gamma,
            double=algo.double,
            huber_delta=algo.huber_delta,
            max_grad_norm=algo.max_grad_norm,
        ),
        replay=replay,
        batch_size=conf.batch_size,
        device=device,
        precision=conf.precision,
        compile=conf.compile,
        cuda_graph=conf.compile,
    )
    start_obs: np.ndarray | None = None
    resume_note = ""
    if resumed is not None:
        check_compatible(resumed, games.game, num_actions, f"checkpoint {checkpoints.latest}")
        if resumed.get("num_envs", 1) != conf.num_envs:
            raise CheckpointError(
                f"checkpoint {checkpoints.latest} was written with num_envs="
                f"{resumed.get('num_envs', 1)}; resume with that num_envs"
            )
        try:
            learner.load_state_dict(resumed["learner"])
            _restore_rng(resumed["rng"], rng)
            if saved_replay is not None:
                replay.load(saved_replay)
                start_obs = games.observations()
        except (CheckpointError, ReplayMemoryError):
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(
                f"checkpoint {checkpoints.latest} does not fit this run: {_first_line(err)}"
            ) from None
        if start_obs is not None:
            resume_note = (
                f"resumed {run_dir} at agent step {state.step:,} with its replay memory "
                f"({len(replay):,} transitions)"
            )
        else:
            state.learn_from_step = max(state.learn_from_step, state.step + conf.learning_starts)
            resume_note = (
                f"resumed {run_dir} at agent step {state.step:,}; no replay memory was saved "
                f"(save_replay=false), so it starts empty and learning resumes after "
                f"{conf.learning_starts:,} agent steps of refilling"
            )
    # Opened only once the run is sure to start: on resume it hides what a crashed run logged
    # after its last checkpoint.
    metrics = Metrics(
        run_dir,
        conf.total_steps,
        start_step=state.step,
        progress_interval_s=conf.progress_interval_s,
        label=f"[{games.display_name}] ",
    )
    if resume_note:
        metrics.message(resume_note)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    # The command line's overrides, replayed by `resume=`; the resume path itself is not one.
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]

    def save(current: TrainState, periodic: bool) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in network.parameters()):
            raise DivergenceError(
                f"non-finite weights at agent step {current.step:,}; "
                f"the last checkpoint ({checkpoints.latest}) is kept unchanged"
            )
        checkpoints.save(
            {
                "format": FORMAT,
                "game": games.game,
                "num_actions": num_actions,
                "action_meanings": games.action_meanings,
                "env_options": _options_dict(options),
                "config": OmegaConf.to_container(cfg, resolve=True),
                "overrides": overrides,
                "state": current.as_dict(),
                "learner": learner.state_dict(),
                "rng": _rng_state(rng),
                "num_envs": conf.num_envs,
                "env": games.state_dicts() if vector else games.state_dicts()[0],
            },
            current.step,
            periodic,
            replay=replay if conf.save_replay else None,
        )

    eval_options = replace(
        options,
        terminal_on_life_loss=False,
        clip_rewards=False,
        max_episode_frames=conf.eval_max_episode_frames,
    )

    def evaluate_at(step: int) -> EvalResult:
        # Own game and RNG per evaluation, both seeded by the step: evaluating never shifts the
        # training streams, so a resumed run evaluates and trains as the uninterrupted one.
        eval_env = AtariPhiEnv(conf.env.game, eval_options, seed=conf.seed + 1 + step)
        try:
            return evaluate(
                learner.q_online,
                eval_env,
                conf.eval_episodes,
                algo.eval_epsilon,
                np.random.default_rng([conf.seed, step]),
                device,
            )
        finally:
            eval_env.close()

    record = summary.RunRecord(
        run_dir,
        summary.RunFacts(
            game=games.display_name,
            rom=games.game,
            seed=conf.seed,
            protocol=summary.protocol_name(options.sticky_action_prob, options.noop_max),
            algo=algo.name,
            device=str(device),
            total_steps=conf.total_steps,
            frame_skip=options.frame_skip,
            final_eval_episodes=conf.final_eval_episodes,
            eval_epsilon=algo.eval_epsilon,
            overrides=overrides,
            config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
        ),
        start_step=state.step,
        started_s=started_s,
        resumed=resumed is not None,
    )
    stop = StopFlag()
    stop.install()
    preemption = sweep.Preemption(stop, lambda: stop.signal_name is not None)
    preemption.install()
    try:
        state = train(
            games=games,
            learner=learner,
            replay=replay,
            epsilon=LinearSchedule(
                algo.epsilon_start,
                algo.epsilon_end,
                algo.epsilon_decay_steps,
                begin_step=conf.learning_starts,
            ),
            settings=LoopSettings(
                total_steps=conf.total_steps,
                batch_size=conf.batch_size,
                train_every=algo.train_every,
                target_update_interval=algo.target_update_interval,
                checkpoint_interval=conf.checkpoint_interval,
                eval_interval=conf.eval_interval,
                eval_episodes=conf.eval_episodes,
                eval_epsilon=algo.eval_epsilon,
                log_interval=conf.log_interval,
            ),
            metrics=metrics,
            state=state,
            rng=rng,
            device=device,
            save_checkpoint=save,
            evaluate_at=record.remember(evaluate_at, algo.eval_epsilon),
            stop_requested=lambda: stop.signal_name,
            start_obs=start_obs,
        )
    except DivergenceError as err:
        record.write("diverged", state.step, error=str(err))
        raise
    finally:
        record.loop_done()
        preemption.restore()
        stop.restore()
        metrics.close()
    if state.stopped_by is not None:
        record.write("stopped", state.step, stopped_by=state.stopped_by)
        metrics.message(
            f"stopped by {state.stopped_by} at agent step {state.step:,}; checkpoint saved. "
            f"Continue with: dqn-train resume={run_dir}"
        )
        if preemption.requeue:
            metrics.message("submitit requeues this job; it continues from this checkpoint")
        preemption.hand_over()
        return 128 + int(signal.Signals[state.stopped_by])
    metrics.message(f"done: {state.step:,} agent steps; checkpoint {checkpoints.latest}")
    final = None
    if conf.final_eval_episodes:
        try:
            with summary.interrupt_on_signals():
                final = summary.final_evaluation(
                    learner.q_online, conf.env.game, eval_options, conf.final_eval_episodes,
                    algo.eval_epsilon, conf.seed, state.step, device,
                )  # fmt: skip
        except summary.RunInterrupted as stopped:
            record.write("stopped", state.step, stopped_by=stopped.signal_name)
            metrics.message(
                f"stopped by {stopped.signal_name} during the final evaluation; continue with: "
                f"dqn-train resume={run_dir}"
            )
            return 128 + int(signal.Signals[stopped.signal_name])
        metrics.message(
            f"final evaluation ({conf.final_eval_episodes} games, epsilon {algo.eval_epsilon}): "
            f"return {final.return_mean:.1f} +- {final.return_std:.1f}"
        )
    record.write("finished", state.step, final=final)
    return 0


# ---------------------------------------------------------------- dqn-eval


def run_eval(cfg: DictConfig) -> dict[str, Any]:
    """Score a checkpoint with the Nature protocol; returns the JSON summary."""
    conf: EvalConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    validate_eval(conf)
    device = resolve_device(conf.device)
    ckpt = load_checkpoint(conf.checkpoint)
    try:
        options = replace(
            _options_from_dict(ckpt["env_options"]),
            terminal_on_life_loss=False,
            clip_rewards=False,
            max_episode_frames=conf.max_episode_frames,
            noop_max=conf.noop_max,
        )
        env = AtariPhiEnv(
            ckpt["game"], options, seed=conf.seed, render_mode="rgb_array" if conf.video else None
        )
        num_actions = env.num_actions
        check_compatible(ckpt, env.game, num_actions, f"checkpoint {conf.checkpoint}")
        network = NatureQNetwork(num_actions, options.frame_stack, options.screen_size)
        network.load_state_dict(ckpt["learner"]["online"])
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"checkpoint {conf.checkpoint} does not hold a usable network: {_first_line(err)}"
        ) from None
    network.to(device)

    video_path = Path(conf.checkpoint).with_name(f"{Path(conf.checkpoint).stem}_eval.mp4")
    writer: cv2.VideoWriter | None = None

    def on_frame(episode: int, rgb: np.ndarray) -> None:
        nonlocal writer
        if episode != 0:
            return
        if writer is None:
            height, width = rgb.shape[:2]
            fourcc = cv2.VideoWriter.fourcc(*"mp4v")
            writer = cv2.VideoWriter(str(video_path), fourcc, 15.0, (width, height))
            if not writer.isOpened():
                raise CheckpointWriteError(f"cannot write the video {video_path}")
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    rng = np.random.default_rng(conf.seed)
    torch.manual_seed(conf.seed)
    try:
        result = evaluate(
            q_function(network, device, conf.precision),
            env,
            conf.episodes,
            conf.epsilon,
            rng,
            device,
            on_frame=on_frame if conf.video else None,
        )
    finally:
        env.close()
        if writer is not None:
            writer.release()
    summary = {"game": env.game, **result.summary(), "checkpoint_step": ckpt["state"]["step"]}
    if conf.video:
        summary["video"] = str(video_path)
    return summary
