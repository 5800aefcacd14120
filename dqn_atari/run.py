"""One dqn-train run and one dqn-eval scoring, from a validated config.

This is the composition root: named builders make every component from the typed config
(games, replay memory, network and learner, metrics), `restore` brings them back from a
checkpoint, `train_run` runs the loop and finishes the run (final evaluation, summary.json).
The CLI (`cli.py`) composes and validates the config, owns the run directory and the signals,
and maps errors to exit codes; nothing here reads a DictConfig.
"""

from __future__ import annotations

import shlex
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from dqn_atari import summary
from dqn_atari.checkpoint import (
    CheckpointError,
    CheckpointManager,
    TrainCheckpoint,
    load_checkpoint,
    load_error_reason,
)
from dqn_atari.config import RunSettings, TrainConfig
from dqn_atari.envs import AtariOptions, resolve_game
from dqn_atari.evaluation import EvalResult, play_games
from dqn_atari.files import write_atomic
from dqn_atari.hooks import DivergenceError, RunHooks
from dqn_atari.learner import Learner, prepare_update
from dqn_atari.loop import Schedule, TrainState, train
from dqn_atari.metrics import Metrics
from dqn_atari.networks import NetworkSpec, build_network
from dqn_atari.optim import make_optimizer
from dqn_atari.perf import keep_freed_host_memory
from dqn_atari.replay import Prioritization, ReplayMemory, ReplayMemoryError, check_fits
from dqn_atari.rng import RandomStreams
from dqn_atari.vector import Games, make_games

CONFIG_FILE = "config.yaml"


def resume_command(run_dir: Path) -> str:
    """The command that continues the run, quoted for a POSIX shell."""
    return f"dqn-train resume={shlex.quote(str(run_dir))}"


@dataclass
class TrainRequest:
    """What the CLI hands a run: its validated config and where it runs."""

    config: TrainConfig  # validated, as the run records it (RunSettings.recorded)
    settings: RunSettings  # the device, and what num_envs, compile and cuda_graph mean there
    run_dir: Path
    overrides: list[str]  # this command line's overrides
    resume: bool  # continue the checkpoint in run_dir
    started_s: float  # time.monotonic() when the command started
    # Both set by the CLI's signal handling (cli._run_under_signals), the same for a single run
    # and a sweep's job: a signal's name once one asked the run to stop; what to do after the
    # stop's checkpoint (a sweep's requeue).
    stop_requested: Callable[[], str | None] = lambda: None
    on_stopped: Callable[[], None] = lambda: None


# ---------------------------------------------------------------- builders


def build_games(
    config: TrainConfig, settings: RunSettings, step: int, states: list[dict[str, Any]] | None
) -> Games:
    """The N games; fresh ones are seeded seed + agent step (+ i for game i), so a resume
    without its replay memory plays new games."""
    return make_games(config.env.game, config.env, config.seed + step, settings.num_envs, states)


def build_replay(
    config: TrainConfig, settings: RunSettings, updates_before: int = 0
) -> ReplayMemory:
    """The run's replay memory; `updates_before` is the updates a resumed run already made
    (with a saved memory, the memory's own count replaces it when it is loaded)."""
    env, algo = config.env, config.algo
    prioritized = None
    if algo.prioritized:
        # beta reaches 1 at the run's last update (Schaul et al., 2016, section 3.4): by update
        # rather than by agent step, since the update counts its own batches on the device.
        # The run's updates are at the agent steps after learning_starts divisible by
        # train_every (loop.Schedule.learns_at).
        updates = config.total_steps // algo.train_every
        updates -= config.learning_starts // algo.train_every
        prioritized = Prioritization(
            alpha=algo.priority_alpha,
            beta_start=algo.priority_beta_start,
            eps=algo.priority_eps,
            beta_updates=max(updates, 1),
            updates_before=updates_before,
        )
    return ReplayMemory(
        config.buffer_size,
        (env.screen_size, env.screen_size),
        env.frame_stack,
        settings.device,
        seed=config.seed,
        num_games=settings.num_envs,
        max_batch_size=config.batch_size,
        gamma=algo.gamma,
        n_step=algo.n_step,
        prioritized=prioritized,
    )


def network_spec(config: TrainConfig, num_actions: int) -> NetworkSpec:
    """The Q-network the algorithm asks for, as its checkpoints record it."""
    algo, env = config.algo, config.env
    atoms = {"c51": algo.atoms, "qr": algo.quantiles}.get(algo.distribution, 1)
    return NetworkSpec(
        num_actions=num_actions,
        frames=env.frame_stack,
        frame_size=env.screen_size,
        dueling=algo.dueling,
        distribution=algo.distribution,
        atoms=atoms,
        v_min=algo.v_min,
        v_max=algo.v_max,
        noisy=algo.noisy,
        sigma0=algo.noisy_sigma0,
    )


def build_learner(
    config: TrainConfig, settings: RunSettings, num_actions: int, replay: ReplayMemory
) -> Learner:
    network = build_network(network_spec(config, num_actions)).to(settings.device)
    return Learner(
        network,
        make_optimizer(config.algo, list(network.parameters())),
        config.algo,
        replay=replay,
        batch_size=config.batch_size,
        device=settings.device,
        precision=config.precision,
        compile=settings.compile,
        cuda_graph=settings.cuda_graph,
    )


def build_metrics(config: TrainConfig, run_dir: Path, games: Games, step: int) -> Metrics:
    # Opened only once the run is sure to start: on resume it hides what a crashed run logged
    # after its last checkpoint.
    return Metrics(
        run_dir,
        config.total_steps,
        start_step=step,
        progress_interval_s=config.progress_interval_s,
        label=f"[{games.display_name}] ",
        log_file=run_dir / "dqn-train.log",
    )


def save_config(config: TrainConfig, run_dir: Path) -> None:
    """The run's resolved config, which `resume=` composes new overrides on top of."""
    node = OmegaConf.structured(config)
    node.resume = None  # describes the run, not one invocation of it
    node.refill_replay = False  # a permission for one resume, not for the next
    text = (
        "# The resolved config of this run. `dqn-train resume=DIR key=value` continues the run\n"
        "# from this file, with the new values composed on top (and saved back here).\n"
        "defaults:\n  - train_schema\n  - _self_\n\n" + OmegaConf.to_yaml(node)
    )
    write_atomic(run_dir / CONFIG_FILE, text)


def evaluator(
    config: TrainConfig,
    learner: Learner,
    device: torch.device,
    stop_requested: Callable[[], object],
) -> Callable[[int], EvalResult | None]:
    """The periodic evaluation: Nature's protocol, abandoned at once when a stop is asked."""
    options = config.env.for_evaluation(config.eval_max_episode_frames)

    def evaluate_at(step: int) -> EvalResult | None:
        # Own game and RNG per evaluation, both seeded by the step: evaluating never shifts the
        # training streams, so a resumed run evaluates and trains as the uninterrupted one.
        return play_games(
            learner.evaluation_policy(),
            config.env.game,
            options,
            config.eval_episodes,
            config.algo.eval_epsilon,
            env_seed=config.seed + 1 + step,
            rng_seed=[config.seed, step],
            device=device,
            stop_requested=stop_requested,
        )

    return evaluate_at


# ---------------------------------------------------------------- resuming


@dataclass
class Restored:
    """What a checkpoint gave the run to continue from."""

    saved: TrainCheckpoint
    replay_dir: Path | None  # the saved replay memory to load; None = refill


def read_resumable(request: TrainRequest, checkpoints: CheckpointManager) -> Restored:
    """latest.pt, checked against this run's game, action set and number of games, and its
    replay memory, which must be there unless the run was told to refill it."""
    config, path = request.config, checkpoints.latest
    saved = TrainCheckpoint.from_dict(load_checkpoint(path), path)
    game = resolve_game(config.env.game)
    if saved.game != game:
        raise CheckpointError(
            f"checkpoint {path} was trained on {saved.game}, not {game}; use a checkpoint of "
            "this game"
        )
    if saved.num_envs != request.settings.num_envs:
        raise CheckpointError(
            f"checkpoint {path} was written with num_envs={saved.num_envs}; resume with that "
            "num_envs"
        )
    replay_dir = None
    if saved.replay is not None:
        replay_dir = checkpoints.directory / saved.replay
        if not replay_dir.is_dir() and not config.refill_replay:
            raise CheckpointError(
                f"checkpoint {path} names its replay memory {saved.replay}/, which is missing "
                "from its folder: restore it for an exact resume, or continue with an empty "
                "memory refilled by acting: add refill_replay=true"
            )
        if not replay_dir.is_dir():
            replay_dir = None
    return Restored(saved, replay_dir)


def check_actions(saved: TrainCheckpoint, games: Games, path: Path) -> None:
    if saved.num_actions != games.num_actions:
        raise CheckpointError(
            f"checkpoint {path} has {saved.num_actions} actions but {games.game} here has "
            f"{games.num_actions} (full_action_space differs?)"
        )


def restore(
    restored: Restored,
    learner: Learner,
    random: RandomStreams,
    replay: ReplayMemory,
    path: Path,
) -> None:
    """Each component takes back its own state."""
    try:
        learner.load_state_dict(restored.saved.learner)
        random.load_state_dict(restored.saved.random)
        if restored.replay_dir is not None:
            replay.load(restored.replay_dir)
    except (CheckpointError, ReplayMemoryError):
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        reason = load_error_reason(err)
        raise CheckpointError(f"checkpoint {path} does not fit this run: {reason}") from None


# ---------------------------------------------------------------- the run


def train_run(request: TrainRequest) -> int:
    """One dqn-train run in `request.run_dir` (which the caller has locked); returns the exit
    code: 0 when finished, 128 + signal number when a signal stopped it."""
    keep_freed_host_memory()
    config, settings, run_dir = request.config, request.settings, request.run_dir
    device = settings.device
    if device.type == "cuda":
        # Every stream, event and graph capture that names no device uses the current one.
        torch.cuda.set_device(device)
    checkpoints = CheckpointManager(run_dir / "checkpoints", keep=config.keep_checkpoints)
    checkpoints.remove_orphans()
    restored = read_resumable(request, checkpoints) if request.resume else None
    state = TrainState(learn_from_step=config.learning_starts)
    if restored is not None:
        try:
            state = TrainState.from_state_dict(restored.saved.counters)
        except ValueError as err:
            raise CheckpointError(f"checkpoint {checkpoints.latest} is damaged: {err}") from None
        done = summary.is_done(
            summary.read_summary(run_dir), config.total_steps, config.final_eval_episodes
        )
        if state.step >= config.total_steps and done:
            print(
                f"{run_dir} already reached total_steps={config.total_steps:,}; nothing to do "
                "(pass a larger total_steps with resume= to train longer)",
                file=sys.stderr,
            )
            return 0
    # Before anything is allocated on the device: a memory that cannot fit is one line.
    check_fits(
        config.buffer_size,
        (config.env.screen_size, config.env.screen_size),
        device,
        config.env.frame_stack,
    )
    random = RandomStreams(config.seed)
    # With its replay memory, the run continues the very games the memory was filled from.
    exact = restored is not None and restored.replay_dir is not None
    games = build_games(config, settings, state.step, restored.saved.games if exact else None)  # type: ignore[union-attr]
    try:
        return _start_and_train(request, checkpoints, restored, state, random, games)
    finally:
        games.close()


def _start_and_train(
    request: TrainRequest,
    checkpoints: CheckpointManager,
    restored: Restored | None,
    state: TrainState,
    random: RandomStreams,
    games: Games,
) -> int:
    config, settings, run_dir = request.config, request.settings, request.run_dir
    device = settings.device
    replay = build_replay(config, settings, updates_before=state.updates)
    learner = build_learner(config, settings, games.num_actions, replay)
    note, start_obs = "", None
    if restored is not None:
        check_actions(restored.saved, games, checkpoints.latest)
        restore(restored, learner, random, replay, checkpoints.latest)
        if restored.replay_dir is not None:
            start_obs = games.observations()
            note = (
                f"resumed {run_dir} at agent step {state.step:,} with its replay memory "
                f"({len(replay):,} transitions)"
            )
        else:
            state.learn_from_step = max(state.learn_from_step, state.step + config.learning_starts)
            why = (
                f"its replay memory {restored.saved.replay}/ is missing (refill_replay=true)"
                if restored.saved.replay is not None
                else "no replay memory was saved (save_replay=false)"
            )
            note = (
                f"resumed {run_dir} at agent step {state.step:,}; {why}, so the memory starts "
                f"empty and learning resumes after {config.learning_starts:,} agent steps of "
                "refilling"
            )
    env = config.env
    example_obs = torch.zeros(
        (settings.num_envs, env.frame_stack, env.screen_size, env.screen_size),
        dtype=torch.uint8,
        device=device,
    )
    fallbacks = prepare_update(
        learner, example_obs, "compile" in settings.auto, "cuda_graph" in settings.auto
    )
    metrics = build_metrics(config, run_dir, games, state.step)
    for warning in fallbacks:
        metrics.message(f"warning: {warning}")
    if note:
        metrics.message(note)
    save_config(config, run_dir)
    started_with = restored.saved.overrides if restored is not None else request.overrides
    record = summary.RunRecord(
        run_dir,
        summary.RunFacts(
            game=games.display_name,
            rom=games.game,
            seed=config.seed,
            protocol=summary.protocol_name(config.env.sticky_action_prob, config.env.noop_max),
            algo=config.algo.name,
            device=str(device),
            total_steps=config.total_steps,
            frame_skip=config.env.frame_skip,
            final_eval_episodes=config.final_eval_episodes,
            eval_epsilon=config.algo.eval_epsilon,
            overrides=started_with if restored is None else [*started_with, *request.overrides],
            config=OmegaConf.to_container(OmegaConf.structured(config)),  # type: ignore[arg-type]
            warnings=fallbacks,
        ),
        start_step=state.step,
        started_s=request.started_s,
        resumed=restored is not None,
    )

    def save(current: TrainState, periodic: bool) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in learner.online.parameters()):
            raise DivergenceError(
                f"non-finite weights at agent step {current.step:,}", current.step
            )
        checkpoint = TrainCheckpoint(
            game=games.game,
            num_actions=games.num_actions,
            action_meanings=games.action_meanings,
            env_options={
                name: getattr(config.env, name) for name in AtariOptions.__dataclass_fields__
            },
            num_envs=settings.num_envs,
            config=record.facts.config,
            overrides=started_with,
            counters=current.state_dict(),
            learner=learner.state_dict(),
            random=random.state_dict(),
            games=games.state_dicts(),
            network=network_spec(config, games.num_actions).to_dict(),
        )
        checkpoints.save(
            checkpoint.to_dict(),
            current.step,
            periodic,
            replay=replay if config.save_replay else None,
        )

    try:
        hooks = RunHooks(
            config,
            learner,
            metrics,
            save_checkpoint=save,
            evaluate_at=record.remember(
                evaluator(config, learner, device, request.stop_requested),
                config.algo.eval_epsilon,
            ),
            stop_requested=request.stop_requested,
        )
        state = train(
            games,
            learner,
            replay,
            Schedule.of(config),
            state,
            rng=random.numpy,
            device=device,
            hooks=hooks,
            start_obs=start_obs,
        )
    except DivergenceError as err:
        record.write("diverged", err.step, error=str(err))
        metrics.close()
        raise
    finally:
        record.loop_done()
    try:
        if state.stopped_by is not None:
            record.write("stopped", state.step, stopped_by=state.stopped_by)
            metrics.message(
                f"stopped by {state.stopped_by} at agent step {state.step:,}; checkpoint saved. "
                f"Continue with: {resume_command(run_dir)}"
            )
            request.on_stopped()
            return 128 + int(signal.Signals[state.stopped_by])
        metrics.message(f"done: {state.step:,} agent steps; checkpoint {checkpoints.latest}")
        return _finish(request, learner, state, record, metrics)
    finally:
        metrics.close()


def _finish(
    request: TrainRequest,
    learner: Learner,
    state: TrainState,
    record: summary.RunRecord,
    metrics: Metrics,
) -> int:
    """The final evaluation (Nature's protocol, `final_eval_episodes` games) and summary.json."""
    config = request.config
    final = None
    if config.final_eval_episodes:
        metrics.message(f"final evaluation: {config.final_eval_episodes} games")
        # Nature's evaluation at the end of training, with its own game and random stream,
        # seeded apart from the periodic evaluations.
        final = play_games(
            learner.evaluation_policy(),
            config.env.game,
            config.env.for_evaluation(config.eval_max_episode_frames),
            config.final_eval_episodes,
            config.algo.eval_epsilon,
            env_seed=config.seed + 2 + state.step,
            rng_seed=[config.seed, state.step, 1],
            device=request.settings.device,
            stop_requested=request.stop_requested,
        )
        if final is None:  # stopped: the checkpoint of the last step is already written
            stopped_by = request.stop_requested() or "SIGTERM"
            record.write("stopped", state.step, stopped_by=stopped_by)
            metrics.message(
                f"stopped by {stopped_by} during the final evaluation; continue with: "
                f"{resume_command(request.run_dir)}"
            )
            request.on_stopped()
            return 128 + int(signal.Signals[stopped_by])
        metrics.message(
            f"final evaluation ({config.final_eval_episodes} games, epsilon "
            f"{config.algo.eval_epsilon}): return {final.return_mean:.1f} +- "
            f"{final.return_std:.1f}"
        )
    record.write("finished", state.step, final=final)
    return 0
