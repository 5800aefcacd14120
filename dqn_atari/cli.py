"""`dqn-train` and `dqn-eval`: compose the config once, own the run directory and the signals,
run, and turn every failure into one line and an exit code.

A single run is composed with Hydra's compose API, once: from the package's configs, or for
`resume=DIR` from the run's own saved config with the new overrides on top. Hydra's own command
line (`-m` sweeps and their launchers, `--cfg`, `--help`) goes through `hydra.main`, and each
sweep job then runs like a single run. What a run does is `run.py`'s.

Exit codes: 0 done; 2 input that cannot work (nothing was run, the last checkpoint untouched);
3 a run that had to stop (it diverged, or a checkpoint could not be written); 128 + N when
signal N stopped it (130 Ctrl-C, 143 SIGTERM), after writing a checkpoint.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import hydra
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from dqn_atari import sweep
from dqn_atari.checkpoint import (
    LATEST,
    CheckpointError,
    CheckpointWriteError,
    load_checkpoint,
    require_resumable,
)
from dqn_atari.config import (
    ConfigError,
    EvalConfig,
    TrainConfig,
    auto_settings,
    register_schemas,
    validate_eval,
    validate_train,
)
from dqn_atari.envs import UnknownGameError, display_name, resolve_game
from dqn_atari.hooks import DivergenceError
from dqn_atari.replay import ReplayMemoryError
from dqn_atari.run import CONFIG_FILE, TrainRequest, eval_run, resume_command, train_run
from dqn_atari.rundir import RunDirError, RunDirLock
from dqn_atari.vector import GameWorkerError


def find_config_dir() -> Path:
    """The configs shipped in the wheel (dqn_atari/configs), else those of a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise RuntimeError(f"dqn-atari configs not found next to {here}; reinstall the package")


CONFIG_DIR = find_config_dir()


class UsageError(ValueError):
    """A command line that cannot be run."""


USER_ERRORS = (
    UsageError,
    ConfigError,
    UnknownGameError,
    CheckpointError,
    ReplayMemoryError,
    RunDirError,
    sweep.LauncherError,
)


def _fail(prog: str, message: object, code: int = 2) -> NoReturn:
    text = " ".join(str(message).split())  # one line, whatever the message held
    print(f"{prog}: error: {text}", file=sys.stderr)
    sys.exit(code)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


# ---------------------------------------------------------------- the command line


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _has_env_preset(name: str) -> bool:
    return (CONFIG_DIR / "env" / f"{name}.yaml").is_file()


def route_game(args: list[str], resuming: bool = False) -> list[str]:
    """`env=NAME` names a game: a preset of configs/env/ (Breakout, Pong), or any ALE game
    through the generic preset (`env=atari env.game=NAME`). A resumed run's config already
    holds its env node, so there it names `env.game` (and a game the checkpoint was not trained
    on is refused by the run)."""
    routed = []
    for arg in args:
        match = re.fullmatch(r"env=(.+)", arg)
        if match is None:
            routed.append(arg)
            continue
        name = match.group(1)
        if "," in name:  # a sweep over games: env=Pong,Breakout
            routed += sweep.route_game_list(name, _has_env_preset)
            continue
        if _has_env_preset(name) and not resuming:  # Breakout, Pong, atari
            routed.append(arg)
            continue
        display = display_name(resolve_game(name))
        if resuming:
            routed.append(f"env.game={display}")
        elif _has_env_preset(display):
            routed.append(f"env={display}")
        else:
            routed += ["env=atari", f"env.game={display}"]
    return routed


def _check_additions(args: list[str]) -> None:
    for arg in args:
        key = _key_of(arg)
        # '+key=...' adds a key no field reads: a typo would be silently ignored. An experiment
        # preset (+experiment=atari5) is the one group added this way.
        if arg.startswith("+") and not key.startswith("hydra.") and key != "experiment":
            raise UsageError(f"unknown config key '{key}' (README lists the keys)")


def compose(config_dir: Path, config_name: str, overrides: list[str]) -> DictConfig:
    """The config, composed once by Hydra, with its `hydra` node (run directory) resolved;
    every composition error is one line."""
    _check_additions(overrides)
    GlobalHydra.instance().clear()
    try:
        with hydra.initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = hydra.compose(config_name, overrides=overrides, return_hydra_config=True)
            # Resolve the run directory (${now:...}) now, while Hydra's resolvers are live.
            OmegaConf.resolve(cfg.hydra.run)
            return cfg
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


def typed(cfg: DictConfig) -> Any:
    """The composed config as its dataclass (TrainConfig or EvalConfig), without Hydra's node."""
    values = cfg.copy()
    with open_dict(values):
        values.pop("hydra", None)
    try:
        return OmegaConf.to_object(values)
    except MissingMandatoryValue as err:
        key = err.full_key or "a value"
        raise UsageError(f"{key} is required: add {key}=...") from None


# ---------------------------------------------------------------- signals


class StopFlag:
    """SIGINT/SIGTERM ask the run to stop at the end of the current step (or at once, from an
    evaluation); a second one stops at once, without a checkpoint."""

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


# ---------------------------------------------------------------- dqn-train


def _resume_dir(args: list[str]) -> Path | None:
    values = [a.split("=", 1)[1] for a in args if _key_of(a) == "resume"]
    if not values or values[-1] in ("", "null"):
        return None
    run_dir = Path(values[-1]).expanduser().resolve()
    if not run_dir.is_dir():
        raise UsageError(f"resume={values[-1]}: no such run directory")
    latest = run_dir / "checkpoints" / LATEST
    if not latest.is_file():
        raise UsageError(f"resume={values[-1]}: no checkpoint at {latest}")
    if any(_key_of(a) == "hydra.run.dir" for a in args):
        raise UsageError("resume=DIR continues in DIR; do not also set hydra.run.dir")
    # Before the saved config is composed: an earlier version's run fails here in one line.
    require_resumable(load_checkpoint(latest), latest)
    if not (run_dir / CONFIG_FILE).is_file():
        raise UsageError(f"resume={values[-1]}: the run's {CONFIG_FILE} is missing")
    return run_dir


def _train_request(args: list[str], started_s: float) -> tuple[TrainRequest, RunDirLock]:
    """Compose, validate and lock a single run (fresh or resumed); nothing is written before
    the config is known to work."""
    resume_dir = _resume_dir(args)
    overrides = [a for a in args if _key_of(a) != "resume"]
    if resume_dir is not None:
        cfg = compose(resume_dir, "config", route_game(overrides, resuming=True))
        run_dir = resume_dir
    else:
        cfg = compose(CONFIG_DIR, "config", route_game(overrides))
        run_dir = Path(str(cfg.hydra.run.dir)).expanduser().resolve()
    config: TrainConfig = typed(cfg)
    auto = auto_settings(config)
    device = validate_train(config)
    lock = RunDirLock(run_dir)
    lock.acquire()  # first: a live run's directory is refused naming its owner
    if resume_dir is None and (run_dir / "checkpoints" / LATEST).exists():
        lock.release()
        raise UsageError(
            f"{run_dir} already holds a run; continue it with {resume_command(run_dir)} or pick "
            "a new hydra.run.dir"
        )
    request = TrainRequest(
        config=config,
        device=device,
        run_dir=run_dir,
        overrides=overrides,
        resume=resume_dir is not None,
        started_s=started_s,
        auto=auto,
    )
    return request, lock


def _run_train(request: TrainRequest, lock: RunDirLock) -> int:
    """Run with the stop signals taken over; every way it can end is an exit code and, for a
    failure, one true line (what was saved, and how to continue)."""
    stop = StopFlag()
    stop.install()
    preemption = sweep.Preemption(stop, lambda: stop.signal_name is not None)
    preemption.install()
    request.stop_requested = lambda: stop.signal_name

    def on_stopped() -> None:
        if preemption.requeue:
            print("submitit requeues this job; it continues from this checkpoint", file=sys.stderr)
        preemption.hand_over()  # submitit's own handler: requeue, then exit

    request.on_stopped = on_stopped
    latest = request.run_dir / "checkpoints" / LATEST
    try:
        return train_run(request)
    except KeyboardInterrupt:  # a second signal: stop now, without a final checkpoint
        _fail("dqn-train", f"interrupted twice; stopped at once. {_what_is_saved(latest)}", 130)
    except DivergenceError as err:
        _fail("dqn-train", f"{err}; {_what_is_saved(latest)}", 3)
    except CheckpointWriteError as err:
        _fail("dqn-train", err, 3)
    except USER_ERRORS as err:
        _fail("dqn-train", err)
    except GameWorkerError as err:  # a dead game worker: not the disk, whatever its pipe said
        _fail("dqn-train", f"{err}; {_what_is_saved(latest)}", 3)
    except OSError as err:  # the run directory stopped taking writes (full disk, removed)
        _fail("dqn-train", f"cannot write in {request.run_dir}: {err.strerror or err}", 3)
    finally:
        preemption.restore()
        stop.restore()
        lock.release()


def _what_is_saved(latest: Path) -> str:
    """The truth about the run's last checkpoint, for a run that stops without writing one."""
    if not latest.is_file():
        return "no checkpoint had been written yet: nothing to resume, start the run again"
    try:
        step = int(load_checkpoint(latest)["counters"]["step"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return f"the last checkpoint is {latest}"
    run_dir = latest.parent.parent
    return (
        f"the last checkpoint, at agent step {step:,}, is kept: continue with "
        f"{resume_command(run_dir)}"
    )


def _train_job(cfg: DictConfig) -> None:
    """One job of `dqn-train -m ...` (Hydra composed its config and made its directory)."""
    started_s = time.monotonic()
    hydra_conf = HydraConfig.get()
    run_dir = Path(hydra_conf.runtime.output_dir)
    job_num = hydra_conf.job.num if hydra_conf.mode == RunMode.MULTIRUN else None
    overrides = list(hydra_conf.overrides.task)
    try:
        config: TrainConfig = typed(cfg)
        # In a sweep's job, device=auto takes the job's share of the GPUs.
        config.device = sweep.sweep_device(config.device, torch.cuda.device_count(), job_num)
        auto = auto_settings(config)
        device = validate_train(config)
        latest = run_dir / "checkpoints" / LATEST
        # A job that finds its own checkpoint (requeued after a pre-emption, or the sweep run
        # again into the same folder) continues it, as resume= would.
        resume = latest.exists()
        if resume and not sweep.same_job(load_checkpoint(latest).get("overrides", []), overrides):
            raise UsageError(
                f"{run_dir} already holds another run; continue it with "
                f"{resume_command(run_dir)} or pick a new hydra.sweep.dir"
            )
        lock = RunDirLock(run_dir)
        lock.acquire()
    except USER_ERRORS as err:
        _fail("dqn-train", err)
    request = TrainRequest(
        config=config,
        device=device,
        run_dir=run_dir,
        overrides=overrides,
        resume=resume,
        started_s=started_s,
        auto=auto,
    )
    code = _run_train(request, lock)
    if code:
        sys.exit(code)


def _hydra_main(prog: str, config_name: str, task: Callable[[DictConfig], None]) -> None:
    """Hydra's own command line: sweeps (-m) and their launchers, --cfg, --help."""
    args = sys.argv[1:]
    try:
        sweep.check_launcher(args)
        args = route_game(args)
    except USER_ERRORS as err:
        _fail(prog, err)
    sys.argv = [sys.argv[0], *args]
    hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")(task)()


def train_entry() -> None:
    """Console script `dqn-train`."""
    started_s = time.monotonic()
    register_schemas()
    args = sys.argv[1:]
    if any(a.startswith("-") for a in args):
        _hydra_main("dqn-train", "config", _train_job)
        return
    try:
        request, lock = _train_request(args, started_s)
    except KeyboardInterrupt:
        _fail("dqn-train", "interrupted before the run started; nothing was written", 130)
    except USER_ERRORS as err:
        _fail("dqn-train", err)
    code = _run_train(request, lock)
    if code:
        sys.exit(code)


# ---------------------------------------------------------------- dqn-eval


def _eval_job(cfg: DictConfig) -> None:
    _evaluate(typed(cfg))


def _evaluate(config: EvalConfig) -> None:
    try:
        device = validate_eval(config)
        summary = eval_run(config, device)
    except KeyboardInterrupt:
        _fail("dqn-eval", "interrupted; nothing was written", 130)
    except CheckpointWriteError as err:
        _fail("dqn-eval", err, 3)
    except USER_ERRORS as err:
        _fail("dqn-eval", err)
    print(json.dumps(summary))


def eval_entry() -> None:
    """Console script `dqn-eval`."""
    register_schemas()
    args = sys.argv[1:]
    if any(a.startswith("-") for a in args):
        _hydra_main("dqn-eval", "eval", _eval_job)
        return
    try:
        config: EvalConfig = typed(compose(CONFIG_DIR, "eval", args))
    except KeyboardInterrupt:
        _fail("dqn-eval", "interrupted; nothing was written", 130)
    except USER_ERRORS as err:
        _fail("dqn-eval", err)
    _evaluate(config)
