"""N games behind one interface: the training loop steps them together, whatever N is.

`num_envs=1` plays the one game in the training process itself (`InProcessGames`), so the loop
keeps the exact Nature order act -> store -> learn. With N > 1, `WorkerGames` steps N
`AtariPhiEnv` games in worker processes (gymnasium's AsyncVectorEnv, so phi is the project's
own); `step_async` returns at once, and the loop runs the learner updates that fall due while
the workers emulate. Either way a vector step hands back one `VectorStep` of arrays over the N
games, with same-step autoreset: a game that ended has already started its next episode.

Stop signals are the training process's alone. A terminal's Ctrl-C reaches the whole process
group and Slurm signals every process of a job step, so the workers (and the fork server that
starts them) ignore SIGINT, SIGTERM and the pre-emption signal: they keep answering while the
training process finishes its step and checkpoints their games, and it then closes them itself.
A worker that dies anyway (SIGKILL, the OOM killer, a crash in the emulator) is reported as a
`GameWorkerError` naming the worker and how it ended.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from multiprocessing import connection, forkserver, resource_tracker, util
from multiprocessing.process import BaseProcess
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from gymnasium.vector import AsyncVectorEnv, AutoresetMode
from gymnasium.vector.async_vector_env import AsyncState, _async_worker

from dqn_atari.envs import AtariOptions, AtariPhiEnv, state_arrays, state_tensors
from dqn_atari.sweep import preemption_signal

Frames = npt.NDArray[np.uint8]


class VectorStep(NamedTuple):
    """One agent step of each of N games, as arrays over the games."""

    next_obs: Frames  # (N, stack, H, W); where a game ended, the next game's first observation
    rewards: npt.NDArray[np.float64]  # (N,) as the learner sees them (clipped when training)
    td_terminal: npt.NDArray[np.bool_]  # (N,) the TD target must not bootstrap past this step
    ended: npt.NDArray[np.bool_]  # (N,) terminated or truncated: the game was reset
    final_frames: Frames  # (N, H, W) newest frame of the observation the action led to
    episode_returns: npt.NDArray[np.float64]  # (N,) raw return of each game that ended, else 0
    episode_lengths: npt.NDArray[np.int64]  # (N,) agent steps of each game that ended, else 0


class Games(Protocol):
    """N games stepped together (see InProcessGames, WorkerGames)."""

    num_envs: int
    num_actions: int
    game: str  # ALE ROM id
    display_name: str
    action_meanings: list[str]
    # True when the games play in other processes between step_async and step_wait, so the
    # caller's work in between overlaps with emulation.
    overlaps: bool

    def reset(self) -> Frames: ...

    def observations(self) -> Frames: ...

    def step_async(self, actions: npt.NDArray[np.int64]) -> None: ...

    def step_wait(self) -> VectorStep: ...

    def state_dicts(self) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class InProcessGames:
    """Games played one after another in this process; each is a gymnasium-style env whose info
    carries `td_terminal`, and `episode` (`r`, `l`) when it ends (AtariPhiEnv's contract)."""

    overlaps = False

    def __init__(self, envs: list[Any]) -> None:
        self.envs = envs
        self.num_envs = len(envs)
        first = envs[0]
        self.num_actions = int(first.num_actions)
        self.game = str(getattr(first, "game", type(first).__name__))
        self.display_name = str(getattr(first, "display_name", self.game))
        self.action_meanings = list(getattr(first, "action_meanings", []))
        self._obs: Frames | None = None
        self._actions: npt.NDArray[np.int64] | None = None

    def reset(self) -> Frames:
        self._obs = np.stack([env.reset()[0] for env in self.envs])
        return self._obs

    def observations(self) -> Frames:
        """The current observations (after `reset`, a step, or a restored state)."""
        if self._obs is None:
            self._obs = np.stack([env.last_observation for env in self.envs])
        return self._obs

    def step_async(self, actions: npt.NDArray[np.int64]) -> None:
        self._actions = actions

    def step_wait(self) -> VectorStep:
        assert self._actions is not None, "step_async first"
        n = self.num_envs
        next_obs, final_frames = [], []
        rewards = np.zeros(n, np.float64)
        td_terminal = np.zeros(n, np.bool_)
        ended = np.zeros(n, np.bool_)
        returns = np.zeros(n, np.float64)
        lengths = np.zeros(n, np.int64)
        for i, env in enumerate(self.envs):
            obs, reward, terminated, truncated, info = env.step(int(self._actions[i]))
            rewards[i] = float(reward)
            td_terminal[i] = bool(info["td_terminal"])
            final_frames.append(obs[-1])
            if terminated or truncated:
                ended[i] = True
                returns[i] = float(info["episode"]["r"])
                lengths[i] = int(info["episode"]["l"])
                obs, _ = env.reset()
            next_obs.append(obs)
        self._actions = None
        self._obs = np.stack(next_obs)
        return VectorStep(
            self._obs, rewards, td_terminal, ended, np.stack(final_frames), returns, lengths
        )

    def state_dicts(self) -> list[dict[str, Any]]:
        return [env.state_dict() for env in self.envs]

    def close(self) -> None:
        for env in self.envs:
            env.close()


class GameWorkerError(RuntimeError):
    """A game worker process died or stopped answering; its game (and the run) cannot go on."""


def stop_signals() -> set[signal.Signals]:
    """The signals that ask a run to stop, which only the training process handles: SIGINT,
    SIGTERM, and submitit's pre-emption signal (USR2 unless configured otherwise), which Slurm
    sends to every process of the job step."""
    signals = {signal.SIGINT, signal.SIGTERM, signal.SIGUSR2}
    preemption = preemption_signal()
    if preemption is not None:
        signals.add(preemption)
    return signals


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Blocks the stop signals in this thread; one that arrives meanwhile is delivered after."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals())
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _start_fork_server() -> None:
    """Starts multiprocessing's fork server (a no-op once it runs) with the stop signals blocked:
    the mask survives its exec and every worker it forks inherits it, so a signal to the group
    neither kills the server in the middle of starting workers nor a worker before
    `_worker_ignoring_stops` runs. (The server itself only ignores SIGINT.)"""
    with _stop_signals_held():
        resource_tracker.ensure_running()
    # The tracker's own start unblocks SIGINT and SIGTERM again, so hold them anew.
    with _stop_signals_held():
        forkserver.ensure_running()


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """While the fork server and the workers start. multiprocessing would run the main module
    again in each worker (`dqn-train`'s is the whole CLI: torch and Hydra, about 190 MB and
    seconds of imports a worker, most of a stop's wait while they start), though nothing a
    worker runs comes from it: the game and the worker function are named by their modules."""
    main = sys.modules["__main__"]
    saved: dict[str, Any] = {n: vars(main)[n] for n in ("__spec__", "__file__") if n in vars(main)}
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.update(saved)


def _worker_ignoring_stops(*args: Any) -> None:
    """gymnasium's worker, in a process that leaves the stop signals to the training process.
    (Set here, in the worker: gymnasium also builds game 0 once in the training process.)"""
    for sig in stop_signals():
        signal.signal(sig, signal.SIG_IGN)
    _async_worker(*args)


def _end(processes: Sequence[BaseProcess], wait_s: float) -> None:
    """Waits up to `wait_s` in all for the workers to exit, then kills the rest: they ignore
    the SIGTERM of multiprocessing's terminate()."""
    started = [p for p in processes if p.pid is not None]
    deadline = time.monotonic() + wait_s
    for process in started:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in started:
        if process.is_alive():
            process.kill()
    for process in started:
        process.join()


def how_it_ended(exitcode: int) -> str:
    """A worker's end, from its exit code (negative: the signal that killed it)."""
    if exitcode >= 0:
        return f"exited with code {exitcode}"
    try:
        return f"was killed by {signal.Signals(-exitcode).name}"
    except ValueError:
        return f"was killed by signal {-exitcode}"


T = TypeVar("T")

# Seconds the workers get, in all, to answer `close`; and a dead worker's exit code to come
# through (the fork server reports it a moment after the worker's pipe breaks).
CLOSE_WAIT_S = 10.0
DEATH_WAIT_S = 5.0


class _Workers(AsyncVectorEnv):
    """AsyncVectorEnv whose workers ignore the stop signals (so nothing here relies on SIGTERM
    to end them), and whose calls turn a dead worker into a GameWorkerError."""

    def __init__(self, fns: Sequence[Callable[[], AtariPhiEnv]]) -> None:
        self.broken = False
        try:
            # forkserver: workers start from a clean process, not a fork of one whose torch and
            # OpenCV thread pools are already running.
            with _main_module_hidden():
                _start_fork_server()
                super().__init__(
                    fns,
                    autoreset_mode=AutoresetMode.SAME_STEP,
                    context="forkserver",
                    worker=_worker_ignoring_stops,
                )
        except BaseException as err:  # a worker died while starting, or a second Ctrl-C
            self.broken = True
            self.close()
            if isinstance(err, (EOFError, ConnectionError)):
                raise GameWorkerError(self.death(err)) from None
            raise
        # At exit, before multiprocessing's own terminate() and join() of its children, which
        # would wait forever on workers that ignore SIGTERM.
        util.Finalize(self, _end, (list(self.processes), 0.0), exitpriority=10)

    def talk(self, call: Callable[[], T]) -> T:
        """`call()`, with a dead or failed worker turned into a GameWorkerError."""
        if self.broken:
            raise GameWorkerError("a game worker died earlier; the games cannot go on")
        try:
            return call()
        except (EOFError, ConnectionError) as err:  # BrokenPipeError, ConnectionResetError
            self.broken = True
            raise GameWorkerError(self.death(err)) from None
        except Exception as err:
            # gymnasium re-raises an exception of a worker's game here (after logging its
            # traceback), having dropped that worker's pipe; the worker has exited.
            failed = [i for i, pipe in enumerate(self.parent_pipes) if pipe is None]
            if not failed:
                raise
            self.broken = True
            raise GameWorkerError(
                f"game worker {failed[0]} of {self.num_envs} failed: {type(err).__name__}: {err}"
            ) from err

    def death(self, err: BaseException) -> str:
        """Which worker died and how."""
        processes = getattr(self, "processes", [])
        started = [p.sentinel for p in processes if p.pid is not None]
        connection.wait(started, timeout=DEATH_WAIT_S)
        for index, process in enumerate(processes):
            if process.pid is not None and process.exitcode is not None:
                return (
                    f"game worker {index} of {self.num_envs} (PID {process.pid}) "
                    f"{how_it_ended(process.exitcode)}"
                )
        return f"a game worker stopped answering ({type(err).__name__}: {err})"

    def close_extras(self, timeout: float | None = None, terminate: bool = False) -> None:
        """Asks healthy, idle workers to close and kills those that do not within CLOSE_WAIT_S;
        kills them all after a dead worker or an interrupted call, where gymnasium's own close
        would wait for answers that never come."""
        pipes = getattr(self, "parent_pipes", [])
        processes = getattr(self, "processes", [])
        graceful = (
            not (terminate or self.broken)
            and self._state == AsyncState.DEFAULT
            and all(pipe is not None for pipe in pipes)
        )
        try:
            if graceful:
                for pipe in pipes:
                    pipe.send(("close", None))
                deadline = time.monotonic() + CLOSE_WAIT_S
                for pipe in pipes:
                    if pipe.poll(max(0.0, deadline - time.monotonic())):
                        pipe.recv()
        except (EOFError, ConnectionError):
            pass  # a worker that died meanwhile: ended below with the rest
        finally:
            _end(processes, CLOSE_WAIT_S if graceful else 0.0)
            for pipe in pipes:
                if pipe is not None:
                    pipe.close()


class WorkerGames:
    """N AtariPhiEnv games in worker processes, stepped with one batched call."""

    overlaps = True

    def __init__(
        self,
        game: str,
        options: AtariOptions,
        seed: int,
        num_envs: int,
        states: list[dict[str, Any]] | None = None,
    ) -> None:
        # Plain AtariOptions and arrays: unpickling config.EnvConfig or tensors would import
        # torch in every worker.
        plain = AtariOptions(**{f.name: getattr(options, f.name) for f in fields(AtariOptions)})
        arrays: list[dict[str, Any] | None] = (
            [None] * num_envs if states is None else [state_arrays(state) for state in states]
        )
        fns = [
            functools.partial(AtariPhiEnv, game, plain, seed + i, None, arrays[i])
            for i in range(num_envs)
        ]
        self.envs = _Workers(fns)
        self.num_envs = num_envs
        self.num_actions = int(self.envs.single_action_space.n)  # type: ignore[attr-defined]
        try:
            self.game = str(self._get("game")[0])
            self.display_name = str(self._get("display_name")[0])
            self.action_meanings = list(self._get("action_meanings")[0])
        except BaseException:
            self.close()
            raise

    def _get(self, name: str) -> tuple[Any, ...]:
        return self.envs.talk(lambda: self.envs.get_attr(name))

    def reset(self) -> Frames:
        obs, _ = self.envs.talk(self.envs.reset)
        return obs

    def observations(self) -> Frames:
        return np.stack(self._get("last_observation"))

    def step_async(self, actions: npt.NDArray[np.int64]) -> None:
        self.envs.talk(lambda: self.envs.step_async(actions))

    def step_wait(self) -> VectorStep:
        next_obs, rewards, terminated, truncated, infos = self.envs.talk(self.envs.step_wait)
        ended = np.logical_or(terminated, truncated)
        td_terminal = np.asarray(infos["td_terminal"], np.bool_)
        final_frames = next_obs[:, -1].copy()
        returns = np.zeros(self.num_envs, np.float64)
        lengths = np.zeros(self.num_envs, np.int64)
        if ended.any():
            # Same-step autoreset: an ended game's own last step is in final_obs / final_info.
            final = infos["final_info"]
            td_terminal = np.where(ended, np.asarray(final["td_terminal"], np.bool_), td_terminal)
            for i in np.flatnonzero(ended):
                final_frames[i] = infos["final_obs"][i][-1]
            returns = np.where(ended, np.asarray(final["episode"]["r"], np.float64), 0.0)
            lengths = np.where(ended, np.asarray(final["episode"]["l"], np.int64), 0)
        return VectorStep(
            next_obs,
            np.asarray(rewards, np.float64),
            td_terminal,
            ended,
            final_frames,
            returns,
            lengths,
        )

    def state_dicts(self) -> list[dict[str, Any]]:
        return [state_tensors(s) for s in self.envs.talk(lambda: self.envs.call("state_arrays"))]

    def close(self) -> None:
        self.envs.close()


def make_games(
    game: str,
    options: AtariOptions,
    seed: int,
    num_envs: int,
    states: list[dict[str, Any]] | None = None,
) -> Games:
    """N games of `game`; game i is seeded `seed + i`, or continues `states[i]`."""
    if num_envs == 1:
        state = None if states is None else states[0]
        return InProcessGames([AtariPhiEnv(game, options, seed, None, state)])
    return WorkerGames(game, options, seed, num_envs, states)
