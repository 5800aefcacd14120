"""`dqn-train` and `dqn-eval`: compose the config once, own the run directory and the signals,
run, and turn every failure into one line and an exit code.

A single run is composed with Hydra's compose API, once: from the package's configs, or for
`resume=DIR` from the run's own saved config with the new overrides on top (overrides that would
change the experiment are refused). `--cfg` prints that same composition. A sweep (`-m`) is run
by Hydra's sweeper and launcher (basic, joblib, submitit), driven from here so that its
composition errors are one line and every job's outcome comes back: a job returns its exit code
and error instead of exiting, so no job ends another, and the failed ones are listed at the end.
The rest of Hydra's command line (`--help`, `--info`, ...) goes through `hydra.main`. What a run
does is `run.py`'s.

Exit codes: 0 done; 2 input that cannot work (nothing was run, the last checkpoint untouched);
3 a run that had to stop (it diverged, or a checkpoint could not be written); 128 + N when
signal N stopped it (130 Ctrl-C, 143 SIGTERM), after writing a checkpoint. A sweep exits with
the highest code of its failed jobs.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import hydra
import torch
import yaml
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from dqn_atari import __version__, sweep
from dqn_atari.checkpoint import (
    LATEST,
    CheckpointError,
    CheckpointManager,
    CheckpointWriteError,
    load_checkpoint,
    require_resumable,
)
from dqn_atari.config import (
    RESUME_MAY_CHANGE,
    ConfigError,
    EvalConfig,
    TrainConfig,
    register_schemas,
    resume_changes,
    validate_eval,
    validate_train,
)
from dqn_atari.envs import UnknownGameError, display_name, resolve_game
from dqn_atari.hooks import DivergenceError
from dqn_atari.replay import ReplayMemoryError
from dqn_atari.run import CONFIG_FILE, TrainRequest, resume_command, train_run
from dqn_atari.rundir import LOCK_FILE, RunDirError, RunDirLock
from dqn_atari.scoring import EvalInterrupted, eval_run
from dqn_atari.vector import GameWorkerError


def find_config_dir() -> Path:
    """The configs shipped in the wheel (dqn_atari/configs), else those of a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise RuntimeError(f"dqn-atari configs not found next to {here}; reinstall the package")


CONFIG_DIR = find_config_dir()
# Config groups of dqn-train's configs/ that a command line chooses from (group=option).
GROUPS = ("env", "algo", "experiment")
# Those whose option is a file name only (env= also names any ALE game, ALE/Pong-v5 included).
FILE_GROUPS = ("algo", "experiment")


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


class CommandFailed(SystemExit):
    """A command that failed: its one line is printed, the process exits with `code`. A sweep's
    job catches it and returns the line and the code instead (see sweep.JobOutcome)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(code)
        self.message = message


# "job N" inside a sweep's job: its line then says which job it is (joblib's jobs share the
# terminal), and the sweep's own report at the end is the only "dqn-train: error:" of each.
_job_label: list[str] = []


def _fail(prog: str, message: object, code: int = 2) -> NoReturn:
    text = " ".join(str(message).split())  # one line, whatever the message held
    who = f"{prog} ({_job_label[-1]})" if _job_label else prog
    print(f"{who}: error: {text}", file=sys.stderr)
    raise CommandFailed(text, code)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


# ---------------------------------------------------------------- the command line


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _value_of(override: str) -> str:
    return override.split("=", 1)[1] if "=" in override else ""


def _has_env_preset(name: str) -> bool:
    # A plain file name only: `env=../config` must not reach the package's own config.yaml.
    return bool(re.fullmatch(r"\w[\w-]*", name)) and (CONFIG_DIR / "env" / f"{name}.yaml").is_file()


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
        # '~key' deletes a key, which the run then reads as its default: say so instead.
        if arg.startswith("~") and not key.startswith("hydra."):
            raise UsageError(
                f"{arg} would delete '{key}', and the run would take its default instead: set it "
                f"with {key}=VALUE (README lists the defaults)"
            )


def _check_groups(args: list[str]) -> None:
    """A group option is a file of that group: Hydra would follow `algo=../config` out of the
    group's folder and fail on what it finds there."""
    for arg in args:
        group, value = _key_of(arg), _value_of(arg)
        if group not in FILE_GROUPS or "=" not in arg:
            continue
        for option in value.split(","):
            if "/" in option or "\\" in option or option.startswith("."):
                options = ", ".join(
                    sorted(f.stem for f in (CONFIG_DIR / group).glob("*.yaml") if f.stem != "atari")
                )
                raise UsageError(f"Could not find '{group}/{option}'; options: {options}")


def _check_command_line(args: list[str]) -> None:
    """What Hydra would take but dqn-train cannot use, refused before anything is composed."""
    sweep.check_launcher(args)
    _check_additions(args)
    _check_groups(args)
    for arg in args:
        key = _key_of(arg)
        if key in ("hydra.run.dir", "hydra.sweep.dir") and not _value_of(arg).strip(" '\""):
            raise UsageError(
                f"{key} is empty (an unset variable?): give the run's folder, {key}=DIR; "
                "the current directory is never taken by default"
            )


def _quoted(override: str) -> str:
    """The override written so that Hydra's parser takes its value as it is, for a shell."""
    key, value = override.split("=", 1) if "=" in override else (override, "")
    value = value.strip("'\"")
    return shlex.quote(f'{key}="{value}"')


def _composition_error(err: BaseException, source: Path | None = None) -> UsageError:
    """Hydra's and OmegaConf's composition errors as one line that names the key, the value and,
    for an error in a run's saved config (`source`), the file."""
    if isinstance(err, MissingConfigException):
        options = ", ".join(o for o in (err.options or []) if o != "atari")
        return UsageError(f"{_first_line(err)}; options: {options}")
    if isinstance(err, OverrideParseException):
        # Hydra's override grammar takes letters, digits and a few signs unquoted; ~ (its
        # delete prefix), a non-ASCII letter or a bracket needs the value quoted.
        return UsageError(
            f"cannot read the override {err.override!r}: quote its value for Hydra, "
            f"as in {_quoted(err.override)} (needed for ~, non-ASCII letters, brackets, ...)"
        )
    cause = err.__cause__
    first = _first_line(err)
    unknown_key = isinstance(cause, (ConfigKeyError, ConfigAttributeError))
    if unknown_key and first.startswith("Could not override"):
        name = first.split("'")[1]
        return UsageError(f"unknown config key '{name}' (README lists the keys)")
    if first.startswith("Ambiguous value for argument"):  # a sweep's values in a single run
        return UsageError(
            f"{first}: to run once per value add -m (a sweep); for a list write key=[a,b], for "
            "a string with commas quote it"
        )
    from_override = first.startswith(("Could not", "Error merging override"))
    if source is not None and not from_override:
        # An error of the file itself: Hydra's message is a heading ("In 'config':
        # ValidationError raised while composing config:"), OmegaConf's reason, its full_key.
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")), "")
        details = [
            ln for ln in lines[1:] if not re.match(r"(full_key|object_type|reference_type)", ln)
        ]
        reason = details[0] if details else first
        if "ConfigKeyError" in first or reason.startswith("Key '"):
            return UsageError(f"the run's config {source} has an unknown key '{key or reason}'")
        where = f" at {key}" if key else ""
        return UsageError(f"the run's config {source} cannot be used{where}: {reason}")
    message = first
    if cause is not None:
        message += f": {_first_line(cause)}"
    return UsageError(message)


def compose(
    config_dir: Path, config_name: str, overrides: list[str], source: Path | None = None
) -> DictConfig:
    """The config, composed once by Hydra, with its `hydra` node (run directory) resolved;
    every composition error is one line (naming `source`, the file composed from, for an error
    that is the file's own)."""
    _check_additions(overrides)
    GlobalHydra.instance().clear()
    try:
        with hydra.initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = hydra.compose(config_name, overrides=overrides, return_hydra_config=True)
            # Resolve the run directory (${now:...}) now, while Hydra's resolvers are live.
            OmegaConf.resolve(cfg.hydra.run)
            return cfg
    except (HydraException, OmegaConfBaseException) as err:
        raise _composition_error(err, source) from None
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
    except OmegaConfBaseException as err:  # an interpolation: ${oc.env:UNSET}, ${nope}
        key = getattr(err, "full_key", None) or "a value"
        raise UsageError(f"{key}: {_first_line(err)}") from None


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


# ---------------------------------------------------------------- the run directory

# In a folder for a new run: Hydra's own files of a sweep's job (its config record and the job's
# log, both made before the job starts) and the lock file of an earlier dqn-train.
NOT_A_RUN = (".hydra", "dqn-train.log", LOCK_FILE)


def _continue_from(run_dir: Path, step_file: Path) -> str:
    """How to continue a run whose latest.pt is gone from its newest periodic checkpoint."""
    latest = run_dir / "checkpoints" / LATEST
    return (
        f"its newest checkpoint is {step_file.name}: to continue from it, "
        f"cp {shlex.quote(str(step_file))} {shlex.quote(str(latest))} && "
        f"{resume_command(run_dir)}"
    )


def _newest_step_file(run_dir: Path) -> Path | None:
    checkpoints = run_dir / "checkpoints"
    periodic = CheckpointManager(checkpoints).periodic() if checkpoints.is_dir() else []
    return periodic[-1] if periodic else None


def require_new_run_dir(run_dir: Path, choose: str) -> None:
    """A new run starts only in a folder that is new or empty (NOT_A_RUN aside): it would
    overwrite a run's config.yaml and summary.json, replace and prune its checkpoints and mix
    its TensorBoard files. `choose` names the setting that picks another folder."""
    if not run_dir.is_dir():
        return
    if (run_dir / "checkpoints" / LATEST).exists():
        raise UsageError(
            f"{run_dir} already holds a run; continue it with {resume_command(run_dir)} or pick "
            f"a new {choose}"
        )
    newest = _newest_step_file(run_dir)
    if newest is not None:
        raise UsageError(
            f"{run_dir} holds a run whose checkpoints/{LATEST} is gone; "
            f"{_continue_from(run_dir, newest)}; or pick a new {choose}"
        )
    found = sorted(p.name for p in run_dir.iterdir() if p.name not in NOT_A_RUN)
    if found:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise UsageError(
            f"{run_dir} is not empty ({shown}): a new run starts only in a new or empty folder; "
            f"pick a new {choose}"
        )


# ---------------------------------------------------------------- dqn-train


def _resume_dir(args: list[str]) -> tuple[Path, dict[str, Any]] | None:
    """The run directory `resume=` names and its checkpoint, checked; None for a new run."""
    values = [_value_of(a) for a in args if _key_of(a) == "resume"]
    if not values or values[-1] == "null":
        return None
    given = values[-1].strip("'\"")
    if not given.strip():
        raise UsageError(
            "resume= is empty (an unset variable?): give the run directory to continue, resume=DIR"
        )
    run_dir = Path(given).expanduser().resolve()
    inside = run_dir if run_dir.is_dir() else run_dir.parent
    if inside.name == "checkpoints" and (inside.parent / CONFIG_FILE).is_file():
        raise UsageError(
            f"resume= takes the run's folder, the one that holds {CONFIG_FILE} and "
            f"checkpoints/: {resume_command(inside.parent)}"
        )
    if not run_dir.is_dir():
        raise UsageError(f"resume={given}: no such run directory")
    latest = run_dir / "checkpoints" / LATEST
    if not latest.is_file():
        newest = _newest_step_file(run_dir)
        hint = f"; {_continue_from(run_dir, newest)}" if newest is not None else ""
        raise UsageError(f"resume={given}: no checkpoint at {latest}{hint}")
    if any(_key_of(a) == "hydra.run.dir" for a in args):
        raise UsageError("resume=DIR continues in DIR; do not also set hydra.run.dir")
    # Before the saved config is composed: an earlier version's run fails here in one line.
    state = load_checkpoint(latest)
    require_resumable(state, latest)
    if not (run_dir / CONFIG_FILE).is_file():
        raise UsageError(f"resume={given}: the run's {CONFIG_FILE} is missing")
    return run_dir, state


def check_run_config(path: Path) -> None:
    """The run's saved config.yaml, read as YAML before Hydra composes it: a hand edit that
    broke it is one line naming the file and the place."""
    try:
        # OmegaConf's own YAML loader, the one Hydra composes with (it refuses duplicate keys).
        data = OmegaConf.to_container(OmegaConf.load(path)) or None
    except OSError as err:
        raise UsageError(f"cannot read the run's config {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or _first_line(err)
        raise UsageError(f"the run's config {path} is not valid YAML{where}: {problem}") from None
    defaults = data.get("defaults") if isinstance(data, dict) else None
    if not isinstance(defaults, list) or "train_schema" not in defaults:
        what = "is empty" if data is None else "lost its 'defaults: [train_schema, _self_]' list"
        raise UsageError(
            f"the run's config {path} {what}; it must hold the run's config as dqn-train wrote it "
            "(the same values are in the 'config' of the run's summary.json)"
        )


def _refuse_changes(run_dir: Path, changes: list[str]) -> None:
    if changes:
        may = ", ".join(key for key in RESUME_MAY_CHANGE if key != "resume")
        raise UsageError(
            f"{resume_command(run_dir)} cannot change {', '.join(changes)}: that defines the "
            f"experiment; a resume may change only {may} (start a new run for another experiment)"
        )


def _compose_train(args: list[str]) -> tuple[DictConfig, Path | None, int | None]:
    """dqn-train's composed config, for a new run or a resume (then with the run directory and
    the agent step of its checkpoint); a resume that would change the experiment is refused."""
    _check_command_line(args)
    resume = _resume_dir(args)
    overrides = [a for a in args if _key_of(a) != "resume"]
    if resume is None:
        return compose(CONFIG_DIR, "config", route_game(overrides)), None, None
    run_dir, state = resume
    saved = state.get("config") if isinstance(state.get("config"), dict) else None
    groups = [a for a in overrides if _key_of(a) in GROUPS and _key_of(a) != "env"]
    if groups:  # the saved config holds the groups' values, no group to choose from
        old = {"algo": (saved or {}).get("algo", {}).get("name", "?")}
        _refuse_changes(
            run_dir,
            [f"{_key_of(a)} ({old.get(_key_of(a), 'none')} -> {_value_of(a)})" for a in groups],
        )
    config_file = run_dir / CONFIG_FILE
    check_run_config(config_file)
    cfg = compose(run_dir, "config", route_game(overrides, resuming=True), source=config_file)
    if saved is not None:
        values = OmegaConf.to_container(cfg)
        assert isinstance(values, dict)
        new = {str(k): v for k, v in values.items() if k != "hydra"}
        _refuse_changes(run_dir, resume_changes(saved, new))
    counters = state.get("counters")
    step = counters.get("step") if isinstance(counters, dict) else None
    return cfg, run_dir, step if isinstance(step, int) else None


def _request_from_command_line(
    args: list[str], started_s: float
) -> tuple[TrainRequest, RunDirLock]:
    """Compose, validate and lock a single run (fresh or resumed); nothing is written before
    the config is known to work."""
    cfg, resume_dir, saved_step = _compose_train(args)
    overrides = [a for a in args if _key_of(a) != "resume"]
    if resume_dir is not None:
        run_dir = resume_dir
    else:
        given = str(cfg.hydra.run.dir)
        if not given.strip():
            raise UsageError("hydra.run.dir is empty: give the run's folder, hydra.run.dir=DIR")
        run_dir = Path(given).expanduser().resolve()
    config: TrainConfig = typed(cfg)
    if saved_step is not None and config.total_steps < saved_step:
        raise UsageError(
            f"{run_dir} is at agent step {saved_step:,}, past total_steps={config.total_steps:,}:"
            f" give a total_steps of at least {saved_step:,} to continue it"
        )
    return _locked_request(config, run_dir, overrides, resume_dir is not None, started_s,
                           "hydra.run.dir")  # fmt: skip


def _locked_request(
    config: TrainConfig,
    run_dir: Path,
    overrides: list[str],
    resume: bool,
    started_s: float,
    dir_option: str,
) -> tuple[TrainRequest, RunDirLock]:
    """The run's request with its directory locked, for a run from the command line and for a
    sweep's job alike: the config validated, a live run's directory refused (naming its owner),
    and a new run's directory required new or empty (`dir_option` names the setting to change)."""
    settings = validate_train(config)
    lock = RunDirLock(run_dir)
    lock.acquire()  # first: a live run's directory is refused naming its owner
    if not resume:
        try:
            require_new_run_dir(run_dir, dir_option)
        except UsageError:
            lock.release(refused=True)
            raise
    request = TrainRequest(
        config=settings.recorded(config),
        settings=settings,
        run_dir=run_dir,
        overrides=overrides,
        resume=resume,
        started_s=started_s,
    )
    return request, lock


def _run_under_signals(request: TrainRequest, lock: RunDirLock) -> int:
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


# ---------------------------------------------------------------- sweeps

# Set in a process whose sweep job was stopped by a signal: the jobs it would run next (the
# basic launcher's, in this process; a joblib worker's) do not start.
_sweep_stopped_by: list[int] = []


def _as_job(prog: str, job: Callable[[DictConfig], int], cfg: DictConfig) -> sweep.JobOutcome:
    """Run one job of a sweep to its end, whatever happens to it, and say how it ended."""
    if HydraConfig.get().mode != RunMode.MULTIRUN:  # hydra.main's single run (--run, -cd, ...)
        code = job(cfg)
        if code:
            sys.exit(code)
        return sweep.JobOutcome()
    if _sweep_stopped_by:
        code = _sweep_stopped_by[0]
        name = signal.Signals(code - 128).name
        return sweep.JobOutcome(code, f"before it started (the sweep was stopped by {name})")
    _job_label.append(f"job {HydraConfig.get().job.num}")
    try:
        code = job(cfg)
        outcome = sweep.JobOutcome(code)
    except CommandFailed as err:  # its line is printed, in the job's own output
        outcome = sweep.JobOutcome(int(err.code or 1), err.message)
    except Exception as err:  # a defect: its traceback in the job's log, the other jobs go on
        traceback.print_exc()
        outcome = sweep.JobOutcome(1, f"internal error: {type(err).__name__}: {_first_line(err)}")
    finally:
        _job_label.pop()
    if outcome.code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        _sweep_stopped_by.append(outcome.code)
        if outcome.error is None:
            name = signal.Signals(outcome.code - 128).name
            outcome = sweep.JobOutcome(
                outcome.code,
                f"{name}, with its checkpoint saved; the same sweep launched again into its "
                "hydra.sweep.dir continues it",
            )
    return outcome


def _sweep_job(cfg: DictConfig) -> sweep.JobOutcome:
    """One job of `dqn-train -m ...` (Hydra composed its config and made its directory)."""
    return _as_job("dqn-train", _run_sweep_job, cfg)


def _run_sweep_job(cfg: DictConfig) -> int:
    started_s = time.monotonic()
    hydra_conf = HydraConfig.get()
    run_dir = Path(hydra_conf.runtime.output_dir)
    job_num = hydra_conf.job.num if hydra_conf.mode == RunMode.MULTIRUN else None
    overrides = list(hydra_conf.overrides.task)
    try:
        config: TrainConfig = typed(cfg)
        # In a sweep's job, device=auto takes the job's share of the GPUs.
        config.device = sweep.sweep_device(config.device, torch.cuda.device_count(), job_num)
        latest = run_dir / "checkpoints" / LATEST
        # A job that finds its own checkpoint (requeued after a pre-emption, or the sweep run
        # again into the same folder) continues it, as resume= would.
        resume = latest.exists()
        if resume and not sweep.same_job(load_checkpoint(latest).get("overrides", []), overrides):
            raise UsageError(
                f"{run_dir} already holds another run; continue it with "
                f"{resume_command(run_dir)} or pick a new hydra.sweep.dir"
            )
        request, lock = _locked_request(
            config, run_dir, overrides, resume, started_s, "hydra.sweep.dir"
        )
    except USER_ERRORS as err:
        _fail("dqn-train", err)
    return _run_under_signals(request, lock)


def _multirun(
    prog: str, config_name: str, task: Callable[[DictConfig], Any], args: list[str]
) -> int:
    """`-m`: Hydra's sweeper and launcher run the jobs; here the composition errors are one line
    and, once every job is back, each failed one is listed; returns the sweep's exit code.

    This is what `hydra.main` does for `-m` (its Hydra object, its search path, the same
    sweeper and launcher), without its error printing and with the jobs' returns, which
    `hydra.main` drops.
    """
    from hydra._internal.hydra import Hydra  # hydra-core is pinned to 1.3
    from hydra._internal.utils import create_config_search_path
    from hydra.version import setbase

    setbase("1.3")
    GlobalHydra.instance().clear()
    try:
        app = Hydra.create_main_hydra2(
            task_name=prog, config_search_path=create_config_search_path(str(CONFIG_DIR))
        )
        batches = app.multirun(
            config_name=config_name, task_function=task, overrides=[*args, "hydra.mode=MULTIRUN"]
        )
    except (HydraException, OmegaConfBaseException) as err:
        raise _composition_error(err) from None
    finally:
        GlobalHydra.instance().clear()
    jobs = [_finished(r) for batch in batches for r in batch]
    lines, code = sweep.failure_report(jobs)
    for line in lines:
        print(f"{prog}: error: {line}", file=sys.stderr)
    return code


def _finished(ret: JobReturn) -> sweep.FinishedJob:
    outcome = ret._return_value if ret.status == JobStatus.COMPLETED else None
    if not isinstance(outcome, sweep.JobOutcome):  # cannot happen with _as_job; say so if it does
        outcome = sweep.JobOutcome(1, f"the job returned {outcome!r}, not an outcome")
    num = int(ret.hydra_cfg.hydra.job.num) if ret.hydra_cfg is not None else -1
    return sweep.FinishedJob(num, list(ret.overrides or []), outcome)


def _hydra_args(args: Sequence[str]) -> Any:
    """The command line as hydra.main reads it (its own argument parser), or None when argparse
    refuses it (hydra.main then says why)."""
    from hydra._internal.utils import get_args_parser

    try:
        return get_args_parser().parse_args(list(args))
    except SystemExit:
        return None


def _only(parsed: Any, flag: str) -> bool:
    """Whether `flag` (cfg, multirun) is the one Hydra flag of the command line, bar those that
    go with it (--resolve and --package with --cfg)."""
    flags = (
        "help", "hydra_help", "cfg", "run", "multirun", "shell_completion", "config_path",
        "config_name", "config_dir", "experimental_rerun", "info",
    )  # fmt: skip
    return bool(getattr(parsed, flag)) and not any(
        getattr(parsed, name) for name in flags if name != flag
    )


def _show_config(config_name: str, parsed: Any) -> None:
    """`--cfg job|hydra|all [--resolve] [--package P]`: the config this command line would run
    with, composed as the run composes it (a resume's from its own saved config)."""
    overrides = list(parsed.overrides)
    if config_name == "config":
        cfg, _, _ = _compose_train(overrides)
    else:
        _check_command_line(overrides)
        cfg = compose(CONFIG_DIR, config_name, overrides)
    node: Any = cfg
    if parsed.cfg == "job":
        with open_dict(cfg):
            cfg.pop("hydra")
    elif parsed.cfg == "hydra":
        node = OmegaConf.create({"hydra": cfg.hydra})
    package = parsed.package if parsed.package != "_global_" else None
    if package is not None:
        node = OmegaConf.select(node, package)
        if node is None:
            raise UsageError(f"--package {package}: no such node in the config")
        print(f"# @package {package}")
    if parsed.resolve and OmegaConf.is_config(node):
        OmegaConf.resolve(node)
    print(OmegaConf.to_yaml(node) if OmegaConf.is_config(node) else node)


def _hydra_main(prog: str, config_name: str, task: Callable[[DictConfig], Any]) -> None:
    """Hydra's own command line: sweeps (-m) and their launchers, --cfg, --help."""
    args = sys.argv[1:]
    if "--version" in args:
        print(f"{prog} {__version__} (Hydra {hydra.__version__})")
        return
    parsed = _hydra_args(args)
    try:
        if parsed is not None and _only(parsed, "cfg"):
            _show_config(config_name, parsed)
            return
        _check_command_line(args)
        args = route_game(args)
        if parsed is not None and parsed.multirun:
            if not _only(parsed, "multirun"):
                # hydra.main would run the sweep and drop what its jobs return: a failed job
                # would go unreported, and the sweep exit 0.
                raise UsageError("-m takes no other Hydra flag (--cfg, --config-dir, ...) here")
            code = _multirun(prog, config_name, task, route_game(list(parsed.overrides)))
            if code:
                raise SystemExit(code)
            return
    except KeyboardInterrupt:
        _fail(prog, "interrupted", 130)
    except USER_ERRORS as err:
        _fail(prog, err)
    sys.argv = [sys.argv[0], *args]
    hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")(task)()


def _without_run_flag(args: list[str]) -> list[str]:
    """Hydra's --run/-r asks for what a command line without flags does: a single run, which
    goes through compose (hydra.main would make its run directory before any check)."""
    flags = [a for a in args if a.startswith("-")]
    if flags and all(a in ("--run", "-r") for a in flags):
        sys.argv = [sys.argv[0], *(a for a in args if a not in flags)]
        return sys.argv[1:]
    return args


def train_entry() -> None:
    """Console script `dqn-train` (through dqn_atari.entry, which imports this module)."""
    started_s = time.monotonic()
    register_schemas()
    args = _without_run_flag(sys.argv[1:])
    if any(a.startswith("-") for a in args):
        if any(_key_of(a) == "resume" for a in args) and ("-m" in args or "--multirun" in args):
            _fail(
                "dqn-train",
                "resume=DIR continues one run and is not a sweep's value: run dqn-train "
                "resume=DIR for each run (a sweep launched again into its hydra.sweep.dir "
                "continues its unfinished jobs)",
            )
        _hydra_main("dqn-train", "config", _sweep_job)
        return
    try:
        request, lock = _request_from_command_line(args, started_s)
    except KeyboardInterrupt:
        _fail("dqn-train", "interrupted before the run started; nothing was written", 130)
    except USER_ERRORS as err:
        _fail("dqn-train", err)
    code = _run_under_signals(request, lock)
    if code:
        sys.exit(code)


# ---------------------------------------------------------------- dqn-eval


class _EvalSignals:
    """dqn-eval keeps nothing half-done to save: SIGTERM stops it as Ctrl-C does (SIGINT is
    Python's KeyboardInterrupt), and the exit code says which signal it was."""

    def __init__(self) -> None:
        self.received = signal.SIGINT
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum)
        raise KeyboardInterrupt

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _eval_job(cfg: DictConfig) -> sweep.JobOutcome:
    def job(cfg: DictConfig) -> int:
        try:
            config = typed(cfg)
        except USER_ERRORS as err:
            _fail("dqn-eval", err)
        _evaluate(config)
        return 0

    return _as_job("dqn-eval", job, cfg)


def _evaluate(config: EvalConfig) -> None:
    signals = _EvalSignals()
    signals.install()
    try:
        device = validate_eval(config)
        summary = eval_run(config, device)
    except KeyboardInterrupt as err:  # the video is left as it was before (EvalInterrupted)
        video = err.video if isinstance(err, EvalInterrupted) else None
        _fail(
            "dqn-eval",
            f"interrupted by {signals.received.name}: the evaluation did not finish, no scores. "
            f"{video or 'No video was written'}",
            128 + signals.received,
        )
    except CheckpointWriteError as err:
        _fail("dqn-eval", err, 3)
    except USER_ERRORS as err:
        _fail("dqn-eval", err)
    finally:
        signals.restore()
    print(json.dumps(summary))


def eval_entry() -> None:
    """Console script `dqn-eval` (through dqn_atari.entry, which imports this module)."""
    register_schemas()
    args = _without_run_flag(sys.argv[1:])
    if any(a.startswith("-") for a in args):
        _hydra_main("dqn-eval", "eval", _eval_job)
        return
    signals = _EvalSignals()
    signals.install()
    try:
        _check_command_line(args)
        config: EvalConfig = typed(compose(CONFIG_DIR, "eval", args))
    except KeyboardInterrupt:
        _fail(
            "dqn-eval",
            f"interrupted by {signals.received.name}; nothing was written",
            128 + signals.received,
        )
    except USER_ERRORS as err:
        _fail("dqn-eval", err)
    finally:
        signals.restore()
    _evaluate(config)
