"""Throughput of every stage of dqn-atari on this machine, measured in one run.

    python scripts/benchmark.py                      # Breakout on the CPU, every stage
    python scripts/benchmark.py --device cuda --num-envs 1 8 16 --e2e-steps 20000
    python scripts/benchmark.py --num-envs 1 2 --rounds 3   # end-to-end figures: medians of 3
    python scripts/benchmark.py --stages ops         # the profiler's ops per agent step only
    python scripts/benchmark.py --stages variants --variants dqn,rainbow --variant-ops-compiled
                                        # the family against DQN, ops eager and compiled
    python scripts/benchmark.py --stages e2e --num-envs 16 --settings bf16_compiled \
        --json-out e2e.json                          # one setting, as scripts/gpu_check.sh runs it

Prints one JSON object (and writes it to --json-out): raw emulator frames/s, phi'd agent steps/s,
replay insert and sample rates, uniform against prioritized sampling (batches of 32 per second
at 1M slots), learner updates/s (batch 32) with and without sampling for each precision and
compile setting, end-to-end dqn-train agent steps/s at the Nature replay ratio (one
update of 32 per 4 agent steps) after learning_starts for each num_envs, Stable-Baselines3's DQN
on the same device, the top-level aten ops per agent step of a whole dqn-train run, peak RSS and
the bytes of a 1M-transition replay memory. Every figure comes from this run; compare figures
only within one run. `--stages` picks a subset (emulator, replay, learner, e2e, sb3, ops,
host_memory, variants: the DQN family's updates/s against DQN's and ops per agent step).

Settings (`--settings`, for the learner and end-to-end stages) are `fp32`, `bf16`, either with
`_compiled` (`compile=true`) and then optionally `_adam` (Adam instead of Nature's RMSProp).

Two comparisons are measured in the same run, for the choices they justify:
- ale-py's threaded C++ `AtariVectorEnv` against our subprocess workers, with its own
  preprocessing and with ours applied to its max-pooled RGB screens;
- Stable-Baselines3's DQN (CnnPolicy, AtariWrapper, same replay ratio, batch, replay size and
  learning_starts) end to end on the same device, when `stable_baselines3` can be imported
  (`pip install stable-baselines3`; it is not a dependency of dqn-atari), as the baseline the
  speed-up is quoted against.

The stages that call the library's internals (`replay_rates`, `learner_rates`) are small
functions of their own; everything else measures the real `dqn-train`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ale_py.env import AtariEnv
from ale_py.vector_env import AtariVectorEnv
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dqn_atari.config import AlgoConfig
from dqn_atari.envs import AtariOptions, display_name, make_atari_env, resolve_game
from dqn_atari.learner import Learner
from dqn_atari.networks import NatureQNetwork, bf16_supported
from dqn_atari.optim import make_optimizer
from dqn_atari.perf import keep_freed_host_memory
from dqn_atari.preprocessing import resize, to_grayscale
from dqn_atari.replay import (
    Prioritization,
    PrioritizedSampler,
    ReplayMemory,
    UniformSampler,
    ValidityChange,
    sum_tree,
)
from dqn_atari.replay.staging import Staging
from dqn_atari.vector import WorkerGames

STAGES = ("emulator", "replay", "learner", "e2e", "sb3", "ops", "host_memory", "variants")
DEFAULT_STAGES = STAGES[:-1]  # the variants stage trains a run per variant: asked for by name
# The DQN family's presets and components, as dqn-train overrides: the `variants` stage measures
# each one's learner updates/s against DQN's, and its top-level ops per agent step at
# num_envs=16 (OPS_RUN).
VARIANTS = {
    "dqn": [],
    "double_dqn": ["algo=double_dqn"],
    "dueling": ["algo=dueling"],
    "n_step_3": ["algo.n_step=3"],
    "c51": ["algo=c51"],
    "qr_dqn": ["algo=qr_dqn"],
    "prioritized": ["algo=prioritized"],
    "noisy": ["algo.noisy=true"],
    "rainbow": ["algo=rainbow"],
}
# The run issue #9 counts its CPU target with: 113 top-level aten ops per agent step at 308d3ff.
OPS_RUN = ["env=Pong", "num_envs=16", "total_steps=4000", "learning_starts=800"]
OPS_RUN += ["buffer_size=40000", "compile=false"]
# Not part of the count: the final evaluation's 30 games (added in 0.2) would dominate
# a 4,000-step run.
OPS_RUN += ["final_eval_episodes=0"]


def rate(work: Callable[[], int], seconds: float) -> float:
    """Units of work per second: call `work` (returning units done) until `seconds` pass."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += work()
    return done / (time.perf_counter() - start)


def raw_emulator_fps(game: str, seconds: float) -> float:
    env = AtariEnv(game=resolve_game(game), frameskip=1, repeat_action_probability=0.0)
    env.reset(seed=0)
    ale, actions = env.ale, env._action_set
    rng = np.random.default_rng(0)

    def frames() -> int:
        for _ in range(1000):
            ale.act(actions[rng.integers(len(actions))])
            if ale.game_over():
                ale.reset_game()
        return 1000

    return rate(frames, seconds)


def phi_steps_per_s(game: str, seconds: float) -> float:
    env = make_atari_env(game, seed=0)
    env.reset()
    rng = np.random.default_rng(0)

    def steps() -> int:
        for _ in range(200):
            _, _, terminated, truncated, _ = env.step(int(rng.integers(env.num_actions)))
            if terminated or truncated:
                env.reset()
        return 200

    return rate(steps, seconds)


def vector_steps_per_s(game: str, num_envs: int, seconds: float) -> float:
    """Agent steps/s of N phi'd games in worker processes (what num_envs=N plays with)."""
    envs = WorkerGames(game, AtariOptions(), 0, num_envs)
    envs.reset()
    rng = np.random.default_rng(0)

    def steps() -> int:
        for _ in range(50):
            envs.step_async(rng.integers(envs.num_actions, size=num_envs))
            envs.step_wait()
        return 50 * num_envs

    try:
        return rate(steps, seconds)
    finally:
        envs.close()


def ale_vector_steps_per_s(game: str, num_envs: int, seconds: float, own_phi: bool) -> float:
    """Agent steps/s of ale-py's AtariVectorEnv (C++ threads, one per core).

    own_phi: its built-in preprocessing, which is not our phi (it converts each screen to ALE's
    palette grayscale before the max-pool; Nature, and dqn_atari, take the max of the RGB
    screens first). Otherwise it returns the max-pooled RGB screens and our grayscale + resize
    run on them here, which is what using it with our phi would cost.
    """
    rom = resolve_game(game)
    if own_phi:
        envs = AtariVectorEnv(rom, num_envs, num_threads=2, reward_clipping=False)
    else:
        envs = AtariVectorEnv(
            rom, num_envs, num_threads=2, reward_clipping=False,
            grayscale=False, img_height=210, img_width=160, stack_num=1,
        )  # fmt: skip
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    n_actions = int(envs.single_action_space.n)  # type: ignore[attr-defined]

    def steps() -> int:
        for _ in range(50):
            obs, *_ = envs.step(rng.integers(n_actions, size=num_envs))
            if not own_phi:
                for screens in obs:
                    resize(to_grayscale(screens[-1]), 84)
        return 50 * num_envs

    try:
        return rate(steps, seconds)
    finally:
        envs.close()


def setting_overrides(name: str) -> list[str]:
    """dqn-train overrides of a setting name such as `bf16_compiled_adam`; `defaults` is a bare
    dqn-train (num_envs, compile and cuda_graph on auto)."""
    if name == "defaults":
        return []
    parts = name.split("_")
    if parts[0] not in ("fp32", "bf16") or any(p not in ("compiled", "adam") for p in parts[1:]):
        raise ValueError(
            f"setting must be fp32 or bf16, then optionally _compiled and _adam; got '{name}'"
        )
    # compile is named either way: its default, auto, compiles on CUDA.
    overrides = [f"precision={parts[0]}", f"compile={'true' if 'compiled' in parts else 'false'}"]
    if "adam" in parts:
        overrides.append("algo.optimizer=adam")
    return overrides


def unsupported(name: str, device: torch.device) -> str | None:
    """Why a setting cannot run on `device`, or None."""
    if name.startswith("bf16") and not bf16_supported(device):
        return f"skipped: bf16 is not supported on {device} here"
    return None


def cores_allow(num_envs: int) -> bool:
    """num_envs=N runs N worker processes beside the learner's: only with a core for each."""
    return num_envs <= (os.cpu_count() or 1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def filled_memory(
    capacity: int, device: torch.device, steps: int, num_games: int = 1
) -> ReplayMemory:
    """A replay memory on `device` holding `steps` vector steps of random frames."""
    return write_random_steps(ReplayMemory(capacity, device=device, num_games=num_games), steps)


def write_random_steps(memory: ReplayMemory, steps: int, num_actions: int = 6) -> ReplayMemory:
    """`memory` (empty) after `steps` vector steps of random frames and actions, no rewards and
    no episode ends."""
    num_games = memory.num_games
    rng = np.random.default_rng(0)
    memory.start(rng.integers(0, 256, (num_games, 84, 84), dtype=np.uint8))
    no = np.zeros(num_games, np.bool_)
    for _ in range(steps):
        frames = rng.integers(0, 256, (num_games, 84, 84), dtype=np.uint8)
        memory.add_step(
            rng.integers(num_actions, size=num_games), np.zeros(num_games), no, no, frames, frames
        )
    return memory


def sampled_updates_per_s(learner: Learner, seconds: float) -> float:
    """Updates/s of `learner` as dqn-train makes them (each batch sampled inside the update),
    after 5 warm-up updates (and compilation, and CUDA graph capture, when compiled)."""
    for _ in range(5):
        learner.update()

    def updates() -> int:
        for _ in range(5):
            learner.update()
        learner.loss_sum.item()  # wait for the device
        return 5

    return rate(updates, seconds)


def replay_rates(device: torch.device, seconds: float, num_games: int) -> dict[str, float]:
    """Insert and sample rates of the replay memory on `device` (uses the replay's own API).

    Inserts as dqn-train writes them: one vector step at a time, for one game and for
    `num_games` games (one call writes all of them).
    """

    def insert_rate(n: int) -> float:
        memory = ReplayMemory(100_000, device=device, num_games=n)
        frames = np.zeros((n, 84, 84), np.uint8)
        memory.start(frames)
        actions, rewards, no = np.ones(n, np.int64), np.zeros(n), np.zeros(n, np.bool_)

        def inserts() -> int:
            for _ in range(200):
                memory.add_step(actions, rewards, no, no, frames, frames)
            sync(device)
            return 200 * n

        return rate(inserts, seconds)

    memory = filled_memory(100_000, device, steps=4000)

    def samples() -> int:
        for _ in range(20):
            batch = memory.sample(32)
        sync(device)
        del batch
        return 20

    return {
        "insert_transitions_per_s": insert_rate(1),
        f"insert_transitions_per_s_{num_games}_games": insert_rate(num_games),
        "sample_batches32_per_s": rate(samples, seconds),
    }


def sampling_rates(
    device: torch.device, seconds: float, slots: int = 1_000_000
) -> dict[str, float]:
    """Batches of 32 slots drawn per second from `slots` sampleable slots by the samplers alone
    (eager, no frames gathered): uniform; prioritized, the draw with its weights, and the draw
    with the priority update the learner makes after its loss; and, for the choice of search,
    the prioritized draw by one cumulative sum over every slot and one searchsorted instead of
    the two-level sum tree."""
    layout = sum_tree.block_layout(slots)
    valid = torch.zeros(layout.padded, dtype=torch.bool, device=device)
    valid[:slots] = True  # the storage's flags, set by hand
    uniform = UniformSampler(valid, layout, seed=0, max_batch_size=32)
    prioritized = PrioritizedSampler(layout, slots, device, 0, 32, Prioritization(beta_updates=1))
    every_slot = ValidityChange(
        np.arange(slots, dtype=np.int64), np.zeros(slots, np.bool_), np.ones(slots, np.bool_)
    )
    for sampler in (uniform, prioritized):  # every slot becomes sampleable, in one write
        staging = Staging(sampler.staging_bytes(slots), device)
        staging.begin()
        sections = sampler.stage(every_slot, staging)
        sampler.apply(sections, staging.send())
    # Priorities spread over [eps^alpha, 1] rather than all at the initial maximum, a few
    # thousand slots at a time (an update reads a whole block per slot it sets).
    generator = torch.Generator(device=device).manual_seed(0)
    errors = torch.rand(slots, device=device, generator=generator)
    for chunk in torch.arange(slots, device=device).split(4096):
        prioritized.update_priorities(chunk, errors[chunk])
    ones = torch.ones(32, device=device)
    strata = torch.arange(32, dtype=torch.float64, device=device)

    def flat_draw() -> None:
        u = prioritized.uniforms.take(32)
        cumulative = torch.cumsum(prioritized.priorities, 0)
        torch.searchsorted(cumulative, (strata + u) * (cumulative[-1] / 32), right=True)

    def batches(sampler: UniformSampler | PrioritizedSampler, draw: Callable[[], Any]) -> float:
        def work() -> int:
            for _ in range(20):
                sampler.prepare(32)
                draw()
            sync(device)
            return 20

        return rate(work, seconds)

    def draw_and_update() -> None:
        drawn = prioritized.draw_weighted(32)
        prioritized.update_priorities(drawn.slots, ones)

    return {
        "uniform": batches(uniform, lambda: uniform.draw(32)),
        "prioritized": batches(prioritized, lambda: prioritized.draw_weighted(32)),
        "prioritized_with_update": batches(prioritized, draw_and_update),
        "prioritized_flat_cumsum": batches(prioritized, flat_draw),
    }


def learner_rates(device: torch.device, setting: str, seconds: float) -> dict[str, float]:
    """Batch-32 updates/s of the Learner as dqn-train runs it: each batch sampled from a replay
    memory on the same device inside the update (one CUDA graph on CUDA with compile)."""
    keep_freed_host_memory()  # as dqn-train does
    overrides = setting_overrides(setting)
    precision = overrides[0].split("=")[1]
    compiled = "compile=true" in overrides
    torch.manual_seed(0)
    net = NatureQNetwork(6).to(device)
    memory = filled_memory(5000, device, steps=4000)
    algo = AlgoConfig(optimizer="adam" if "algo.optimizer=adam" in overrides else "rmsprop")
    learner = Learner(
        net,
        make_optimizer(algo, list(net.parameters())),
        algo,
        replay=memory,
        batch_size=32,
        device=device,
        precision=precision,
        compile=compiled,
        cuda_graph=compiled,
    )  # fmt: skip
    return {"updates_per_s_with_sampling": sampled_updates_per_s(learner, seconds)}


def variant_config(overrides: list[str], device: torch.device) -> Any:
    """A variant's TrainConfig, composed as dqn-train composes it, for a learner benchmark."""
    from dqn_atari.cli import CONFIG_DIR, compose, register_schemas, route_game, typed

    register_schemas()
    base = ["env=Breakout", "buffer_size=5000", "num_envs=1", f"device={device}"]
    base += ["compile=false", "cuda_graph=false"]  # eager, whatever the device's auto would pick
    return typed(compose(CONFIG_DIR, "config", route_game([*base, *overrides])))


def variant_updates_per_s(device: torch.device, overrides: list[str], seconds: float) -> float:
    """Batch-32 eager fp32 updates/s of one variant's learner, each batch sampled from the
    run's own replay memory (run.build_replay / build_learner), holding 4,000 random steps."""
    from dqn_atari.config import resolve_settings
    from dqn_atari.run import build_learner, build_replay

    keep_freed_host_memory()  # as dqn-train does
    config = variant_config(overrides, device)
    config.learning_starts, config.total_steps = 0, 1_000_000
    settings = resolve_settings(config, device)
    torch.manual_seed(0)
    memory = write_random_steps(build_replay(config, settings), 4000, num_actions=4)  # Breakout
    return sampled_updates_per_s(build_learner(config, settings, 4, memory), seconds)


def variants(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Per variant of the DQN family: learner updates/s against DQN's (in turn, `args.rounds`
    rounds, medians), and top-level ops per agent step at num_envs=16."""
    names = ["dqn", *(n for n in args.variants if n != "dqn")]  # DQN is the yardstick
    rounds: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            overrides = VARIANTS[name]
            rounds[name].append(
                in_fresh_process(variant_updates_per_s, device, overrides, args.seconds)
            )
    median = {name: float(np.median(values)) for name, values in rounds.items()}
    report: dict[str, Any] = {
        "updates_per_s": median,
        "updates_per_s_rounds": rounds,
        "against_dqn": {name: value / median["dqn"] for name, value in median.items()},
    }
    if args.variant_ops:
        ops = {}
        for name in names:
            run = in_fresh_process(
                ops_per_agent_step, device, [*OPS_RUN, *VARIANTS[name]], args.ops_window,
                args.ops_top, args.work_dir,
            )  # fmt: skip
            ops[name] = round(run["ops_per_agent_step"], 2)
        report["ops_per_agent_step_num_envs_16"] = ops
    if args.variant_ops_compiled:
        # The path CUDA runs by default (compile=auto is true there): the update and the act
        # forward each one compiled graph, whose fused kernels are no aten ops; what remains is
        # the extern kernels (convolutions, matmuls), the host-side sampling and acting, and
        # the start-up's tracing, which this count includes.
        compiled_run = [o for o in OPS_RUN if not o.startswith("compile=")] + ["compile=true"]
        compiled = {}
        for name in names:
            run = in_fresh_process(
                ops_per_agent_step, device, [*compiled_run, *VARIANTS[name]], args.ops_window,
                args.ops_top, args.work_dir,
            )  # fmt: skip
            compiled[name] = round(run["ops_per_agent_step"], 2)
        report["ops_per_agent_step_num_envs_16_compiled"] = compiled
    return report


def own_peak_rss_bytes() -> int:
    """This process's own peak RSS (VmHWM of its address space). Not getrusage's ru_maxrss:
    Linux carries that across fork and exec, so a child started by a large process reports at
    least its parent's size (every run of one benchmark once read the same 1.03 GB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux


# dqn-train as the user runs it, writing its own VmHWM line to the file named by argv[1] at
# exit (own_peak_rss_bytes inlined: importing this script would add its imports to the figure).
TRAIN_WITH_PEAK_RSS = (
    "import atexit, sys; out = sys.argv.pop(1); "
    "atexit.register(lambda: open(out, 'w').write([line for line in "
    "open('/proc/self/status').read().splitlines() if line.startswith('VmHWM:')][0])); "
    "from dqn_atari.cli import train_entry; train_entry()"
)


def e2e_overrides(
    game: str, device: torch.device, learning_starts: int, total_steps: int, run_dir: Path
) -> list[str]:
    """The end-to-end run's dqn-train overrides that every dqn-atari version takes (also
    scripts/ab_defaults.py's, for an earlier checkout): epsilon at its final 0.1 once learning
    starts, no evaluation, one checkpoint at the end."""
    return [
        f"env={game}", f"device={device}", "algo.epsilon_decay_steps=1",
        f"total_steps={total_steps}", f"learning_starts={learning_starts}", "buffer_size=100000",
        "eval_interval=0", "log_interval=500", f"checkpoint_interval={total_steps}",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip


def sps_after(run_dir: Path, learning_starts: int) -> list[float]:
    """perf/sps of the logging windows that start after learning_starts (each covers 500 agent
    steps)."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [e.value for e in events.Scalars("perf/sps") if e.step > learning_starts + 500]


def end_to_end_sps(
    game: str,
    device: torch.device,
    overrides: list[str],
    learning_starts: int,
    steps: int,
    work_dir: Path | None = None,
) -> dict[str, float]:
    """Real dqn-train at the Nature replay ratio; agent steps/s measured after learning_starts.

    Epsilon is at its final 0.1 from learning_starts on, so nine steps in ten act greedily (a
    forward pass each), as in the bulk of a real run; the baseline is measured the same way.
    """
    explicit = [o.split("=")[1] for o in overrides if o.startswith("num_envs=")]
    # auto picks at most 16 games, a power of two, so a multiple of 16 divides among them.
    num_envs = 16 if "auto" in explicit else max([1, *(int(n) for n in explicit)])
    # dqn-train takes N agent steps at a time, so total_steps must be a multiple of N.
    total_steps = -(-(learning_starts + steps) // num_envs) * num_envs
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        run_dir = Path(tmp) / "run"
        start = time.perf_counter()
        command = [
            sys.executable, "-c", TRAIN_WITH_PEAK_RSS, str(Path(tmp) / "peak_rss"),
            *e2e_overrides(game, device, learning_starts, total_steps, run_dir),
            *overrides, "final_eval_episodes=0",
        ]  # fmt: skip
        with (Path(tmp) / "output.txt").open("w+") as output:
            proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=tmp)
            try:
                status = proc.wait()
            except BaseException:  # stopped (SIGTERM, Ctrl-C): the run goes before its folder
                proc.kill()
                proc.wait()
                raise
            if status != 0:
                output.seek(0)
                tail = output.read()[-3000:]
                last = ([line for line in tail.splitlines() if line.strip()] or [""])[-1]
                raise RuntimeError(
                    f"dqn-train exited {status}: {last}\n{' '.join(command)}\n{tail}"
                )
        wall_s = time.perf_counter() - start
        # The training process's own (its worker processes are not counted).
        peak_rss_bytes = int((Path(tmp) / "peak_rss").read_text().split()[1]) * 1024
        learning = sps_after(run_dir, learning_starts)
    if not learning:
        raise RuntimeError(f"no perf/sps window after learning_starts: raise --e2e-steps ({steps})")
    return {
        "agent_steps_per_s_learning": float(np.mean(learning)),
        "wall_s": wall_s,
        "peak_rss_bytes": peak_rss_bytes,
    }


def sb3_dqn_sps(
    game: str, device: torch.device, learning_starts: int, steps: int
) -> dict[str, float] | str:
    """Stable-Baselines3's DQN at the same replay ratio, batch and replay size, on `device`.

    Its standard Atari setup (AtariWrapper: no-op starts, action repeat 4 with max-pool,
    life-loss terminals, FIRE on reset, reward clipping, 84x84 grayscale; 4-frame stack), Adam,
    one update of 32 every 4 agent steps, 100k replay (on the host, as SB3 keeps it), epsilon
    0.1. Agent steps/s after learning_starts. A string when SB3 cannot be imported.
    """
    try:
        import ale_py
        import gymnasium as gym
        from stable_baselines3 import DQN
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.env_util import make_atari_env as sb3_atari_env
        from stable_baselines3.common.vec_env import VecFrameStack
    except ImportError as err:
        return f"skipped: {err} (pip install stable-baselines3, or put its wheel on PYTHONPATH)"

    gym.register_envs(ale_py)

    class Clock(BaseCallback):
        start = 0.0

        def _on_step(self) -> bool:
            if self.num_timesteps == learning_starts + 1:
                self.start = time.perf_counter()
            return True

    env_id = f"{display_name(resolve_game(game))}NoFrameskip-v4"
    env = VecFrameStack(sb3_atari_env(env_id, n_envs=1, seed=0), n_stack=4)
    model = DQN(
        "CnnPolicy", env, buffer_size=100_000, learning_starts=learning_starts, batch_size=32,
        train_freq=4, gradient_steps=1, target_update_interval=1000, device=device, seed=0,
        # Epsilon 0.1 from learning_starts on, as in our end-to-end runs.
        exploration_fraction=1 / (learning_starts + steps), exploration_final_eps=0.1,
        optimize_memory_usage=True, replay_buffer_kwargs={"handle_timeout_termination": False},
    )  # fmt: skip
    clock = Clock()
    model.learn(total_timesteps=learning_starts + steps, callback=clock)
    sync(device)
    learning_s = time.perf_counter() - clock.start
    return {
        "agent_steps_per_s_learning": (steps - 1) / learning_s,
        "peak_rss_bytes": own_peak_rss_bytes(),
    }


def top_level_aten_ops(events: Any) -> Counter[str]:
    """Names of the host-side aten ops none of whose enclosing events is an aten op, from the
    profiler's parsed events and their cpu_parent chains (`prof.events()`).

    A nested aten op (aten::linear -> aten::addmm) is part of its caller's work; each top-level
    one is at least one kernel launch or copy on a GPU. Enclosing non-aten events (Python
    record_function ranges, autograd's evaluate_function nodes) do not count as nesting.
    """
    counts: Counter[str] = Counter()
    for event in events:
        if event.device_type != torch.autograd.DeviceType.CPU:
            continue
        if not event.name.startswith("aten::"):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if parent is None:
            counts[event.name] += 1
    return counts


# Events torch.autograd.profiler leaves out of prof.events() (profiler_util._filter_name).
UNLISTED_EVENTS = {
    "[memory]",
    "[OutOfMemory]",
    "profiler::_record_function_enter",
    "profiler::_record_function_enter_new",
    "profiler::_record_function_exit",
    "aten::is_leaf",
    "aten::output_nr",
    "aten::_version",
}


def top_level_aten_ops_raw(kineto_events: Any) -> tuple[Counter[str], int, int]:
    """`top_level_aten_ops` from the profiler's raw events, 20x faster than parsing them.

    Builds the same nesting as torch's cpu_parent (EventList._populate_cpu_children): per
    thread, events sorted by start then by end, latest first; an event is nested in the
    innermost open event whose interval holds it; async events and the ones prof.events()
    leaves out take no part. Returns the counts, the aten events nested ones included, and the
    device events (kernels, copies, memsets).
    """
    cpu = torch.autograd.DeviceType.CPU
    by_thread: dict[int, list[tuple[int, int, int, str]]] = {}
    aten_events = device_events = 0
    for order, event in enumerate(kineto_events):
        if event.device_type() != cpu:
            device_events += 1
            continue
        name = event.name()
        if name in UNLISTED_EVENTS or event.is_async():
            continue
        if getattr(event, "is_hidden_event", lambda: False)():
            continue  # left out of prof.events() too
        if event.start_thread_id() != event.end_thread_id():
            continue  # async as well
        aten_events += name.startswith("aten::")
        start = event.start_ns()
        by_thread.setdefault(event.start_thread_id(), []).append(
            (start, -(start + event.duration_ns()), order, name)
        )
    counts: Counter[str] = Counter()
    for thread_events in by_thread.values():
        thread_events.sort()
        # (end, inside or is an aten op) of the open events, innermost last.
        open_events: list[tuple[int, bool]] = []
        for start, minus_end, _, name in thread_events:
            end = -minus_end
            while open_events and (start >= open_events[-1][0] or end > open_events[-1][0]):
                open_events.pop()
            nested = bool(open_events) and open_events[-1][1]
            is_aten = name.startswith("aten::")
            if is_aten and not nested:
                counts[name] += 1
            open_events.append((end, nested or is_aten))
    return counts, aten_events, device_events


@contextmanager
def profiled_in_windows(device: torch.device, window_agent_steps: int) -> Iterator[dict[str, Any]]:
    """Profile everything in the block, counted and dropped every `window_agent_steps`.

    One trace of a whole run would hold millions of events (gigabytes once parsed), so the
    trace is cut between loop iterations: Metrics.progress runs once per iteration of every
    training loop, outside any op, and steps the profiler there. Each finished window is
    counted and released. If that hook is never called, the whole run is one window: the
    count is the same, only the memory is larger.
    """
    from torch.profiler import ProfilerActivity, profile, schedule

    from dqn_atari.metrics import Metrics

    tally: dict[str, Any] = {"ops": Counter(), "aten_events": 0, "device_events": 0, "windows": 0}

    def count(prof: Any) -> None:
        # The raw events: parsing a window into FunctionEvents takes ~70 us an event here.
        ops, aten_events, device_events = top_level_aten_ops_raw(
            prof.profiler.kineto_results.events()
        )
        tally["windows"] += 1
        tally["ops"].update(ops)
        tally["aten_events"] += aten_events
        tally["device_events"] += device_events

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    progress = Metrics.progress
    last_cut = 0
    with warnings.catch_warnings():
        # "won't be using warmup" and "clears events at the end of each cycle": both intended.
        warnings.filterwarnings("ignore", message=".*[Pp]rofiler.*", category=UserWarning)
        prof = profile(
            activities=activities,
            schedule=schedule(wait=0, warmup=0, active=1),
            on_trace_ready=count,
        )

        def progress_and_cut(self: Metrics, step: int, *args: Any, **kwargs: Any) -> None:
            nonlocal last_cut
            progress(self, step, *args, **kwargs)
            if step - last_cut >= window_agent_steps:
                last_cut = step
                prof.step()

        Metrics.progress = progress_and_cut  # type: ignore[method-assign]
        try:
            with prof:
                yield tally
        finally:
            Metrics.progress = progress  # type: ignore[method-assign]


def ops_per_agent_step(
    device: torch.device,
    overrides: list[str],
    window_agent_steps: int,
    top: int,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Top-level aten ops of the main process per agent step over a whole dqn-train run.

    Runs the real dqn-train entry point in this process under torch.profiler (host activity;
    on CUDA the device's kernels and copies are counted too), from start-up to the final
    checkpoint, and divides by the agent steps the run took. Run it in a fresh process.
    """
    from dqn_atari.cli import train_entry

    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        run_dir = Path(tmp) / "run"
        argv = [*overrides, f"device={device}", f"hydra.run.dir={run_dir}"]
        saved_argv, sys.argv = sys.argv, ["dqn-train", *argv]
        start = time.perf_counter()
        try:
            with profiled_in_windows(device, window_agent_steps) as tally:
                train_entry()
        except SystemExit as stop:
            if stop.code:
                raise RuntimeError(f"dqn-train {' '.join(argv)} exited {stop.code}") from None
        finally:
            sys.argv = saved_argv
        wall_s = time.perf_counter() - start
        checkpoint = torch.load(
            run_dir / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True
        )
        agent_steps = int(checkpoint["counters"]["step"])
    ops: Counter[str] = tally["ops"]
    total = sum(ops.values())
    report: dict[str, Any] = {
        "command": ["dqn-train", *argv[:-1]],
        "agent_steps": agent_steps,
        "top_level_aten_ops": total,
        "ops_per_agent_step": total / agent_steps,
        "top_ops_per_agent_step": {
            name: round(n / agent_steps, 3) for name, n in ops.most_common(top)
        },
        "aten_events_per_agent_step_nested_included": tally["aten_events"] / agent_steps,
        "profiler_windows": tally["windows"],
        "window_agent_steps": window_agent_steps,
        "wall_s_under_profiler": wall_s,
        "peak_rss_bytes": own_peak_rss_bytes(),
    }
    if device.type == "cuda":
        report["device_kernels_and_copies_per_agent_step"] = tally["device_events"] / agent_steps
    return report


def over_rounds(results: list[dict[str, float]]) -> dict[str, Any]:
    """One setting's figures over the rounds: the median of each rate and time, the largest
    peak RSS, and each round's agent steps/s when there was more than one round."""
    figures: dict[str, Any] = {}
    for key in results[0]:
        values = [result[key] for result in results]
        figures[key] = max(values) if key == "peak_rss_bytes" else float(np.median(values))
    if len(results) > 1:
        figures["rounds_agent_steps_per_s"] = [r["agent_steps_per_s_learning"] for r in results]
    return figures


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn(*args) in a new process: compiled code, OpenMP pools and other libraries' state
    would otherwise slow whatever is measured after it."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(fn, *args).result()


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def e2e_and_baseline(
    args: argparse.Namespace, device: torch.device, settings: list[str] | None, baseline: bool
) -> dict[str, Any]:
    """End-to-end dqn-train for each num_envs and setting, and SB3's DQN, in `args.rounds`
    rounds taken in turn, so that a slow spell of a shared machine falls on all of them alike
    instead of on one setting's figure."""
    precisions = ["fp32", "bf16"] if bf16_supported(device) else ["fp32"]
    fastest = f"{precisions[-1]}_compiled"
    e2e: dict[str, dict[str, Any]] = {}
    runs: dict[tuple[str, str], list[str]] = {}
    for num_envs in args.num_envs:
        key = f"num_envs_{num_envs}"
        if not cores_allow(num_envs):
            e2e[key] = {
                "skipped": f"num_envs={num_envs} needs {num_envs} cores for its workers; "
                f"this machine has {os.cpu_count()}"
            }
            continue
        if settings is not None:
            names = settings
        elif num_envs == 1:
            names = [*(f"{p}{c}" for p in precisions for c in ("", "_compiled")), f"{fastest}_adam"]
        else:
            names = list(dict.fromkeys(["fp32", fastest]))
        e2e[key] = {}
        for name in names:
            why_not = unsupported(name, device)
            if why_not is not None:
                e2e[key][name] = why_not
                continue
            if name == "defaults":  # a bare dqn-train: num_envs too is its own choice
                e2e.setdefault("num_envs_auto", {})
                runs[("num_envs_auto", name)] = ["num_envs=auto"]
                continue
            runs[(key, name)] = [*setting_overrides(name), f"num_envs={num_envs}"]
        if not e2e[key]:
            del e2e[key]
    if device.type == "cuda" and settings is None:
        # What a bare `dqn-train` does on this box: num_envs, compile and cuda_graph on auto.
        e2e["num_envs_auto"] = {}
        runs[("num_envs_auto", "defaults")] = ["num_envs=auto"]
    measured: dict[tuple[str, str], list[dict[str, float]]] = {run: [] for run in runs}
    failed: dict[tuple[str, str], str] = {}
    baseline_runs: list[dict[str, float]] = []
    baseline_note = "skipped: not asked for" if not baseline else ""
    for _ in range(args.rounds):
        for run, overrides in runs.items():
            if run in failed:
                continue
            try:
                measured[run].append(
                    end_to_end_sps(
                        args.game, device, overrides, args.learning_starts, args.e2e_steps,
                        args.work_dir,
                    )
                )  # fmt: skip
            except RuntimeError as err:
                failed[run] = f"failed: {err}"
        if baseline and not baseline_note:
            result = in_fresh_process(
                sb3_dqn_sps, args.game, device, args.learning_starts, args.e2e_steps
            )
            if isinstance(result, str):  # stable_baselines3 cannot be imported
                baseline_note = result
            else:
                baseline_runs.append(result)
    for (setting, name), results in measured.items():
        # setdefault: a num_envs whose settings all ran has no entry yet (only notes made one)
        e2e.setdefault(setting, {})[name] = failed.get((setting, name)) or over_rounds(results)
    report: dict[str, Any] = {}
    if runs or e2e:
        report["end_to_end_dqn_train"] = e2e
    if baseline:
        report["baseline_sb3_dqn"] = over_rounds(baseline_runs) if baseline_runs else baseline_note
    if baseline_runs and measured:
        base_sps = over_rounds(baseline_runs)["agent_steps_per_s_learning"]
        report["speedup_vs_sb3"] = {
            f"{setting}_{name}": run["agent_steps_per_s_learning"] / base_sps
            for setting, by_name in e2e.items()
            for name, run in by_name.items()
            if isinstance(run, dict) and "agent_steps_per_s_learning" in run
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--stages", default=",".join(DEFAULT_STAGES),
        help=f"comma-separated subset of {','.join(STAGES)} (default: all but variants)",
    )  # fmt: skip
    parser.add_argument("--seconds", type=float, default=5.0, help="per micro-benchmark")
    parser.add_argument("--learning-starts", type=int, default=2000, help="agent steps")
    parser.add_argument("--e2e-steps", type=int, default=6000, help="agent steps after learning")
    parser.add_argument(
        "--num-envs", type=int, nargs="+", default=[1, 8, 16, 32],
        help="num_envs of the end-to-end runs; N > os.cpu_count() is skipped (default 1 8 16 32)",
    )  # fmt: skip
    parser.add_argument(
        "--settings",
        help="comma-separated learner and end-to-end settings, e.g. fp32,bf16_compiled "
        "(default: every precision the device supports, eager and compiled; with num_envs > 1 "
        "fp32 and the fastest; with num_envs=1 also the fastest with Adam)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="end-to-end runs of each setting, taken in turn; figures are their median",
    )  # fmt: skip
    parser.add_argument(
        "--replay-games", type=int, default=16, help="games of the N-game replay insert rate"
    )
    parser.add_argument(
        "--ops-run", help="dqn-train overrides of the ops stage, space-separated "
        f"(default: {' '.join(OPS_RUN)})",
    )  # fmt: skip
    parser.add_argument(
        "--ops-window", type=int, default=250,
        help="agent steps per profiler window of the ops stage (bounds the profiler's memory)",
    )  # fmt: skip
    parser.add_argument("--ops-top", type=int, default=15, help="op names in the breakdown")
    parser.add_argument(
        "--variants", type=lambda text: text.split(","), default=list(VARIANTS),
        help=f"variants stage: a comma-separated subset of {','.join(VARIANTS)} (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--no-variant-ops", dest="variant_ops", action="store_false",
        help="variants stage: skip the ops per agent step of each variant (a run each)",
    )  # fmt: skip
    parser.add_argument(
        "--variant-ops-compiled", action="store_true",
        help="variants stage: also count each variant's ops per agent step with compile=true "
        "(a compiled run each, a minute or two apiece on a CPU)",
    )  # fmt: skip
    parser.add_argument("--work-dir", type=Path, help="where run directories go (default: TMPDIR)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON object here")
    args = parser.parse_args()
    # SIGTERM (a time limit) unwinds like Ctrl-C, so that runs and temporary folders are cleaned.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    stages = [s for s in args.stages.split(",") if s]
    if unknown_variants := sorted(set(args.variants) - set(VARIANTS)):
        parser.error(
            f"unknown variant(s) {', '.join(unknown_variants)}; choose from {', '.join(VARIANTS)}"
        )
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    settings = [s for s in args.settings.split(",") if s] if args.settings else None
    try:
        for name in settings or []:
            setting_overrides(name)
    except ValueError as err:
        parser.error(str(err))
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    precisions = ["fp32", "bf16"] if bf16_supported(device) else ["fp32"]
    report: dict[str, Any] = {"machine": machine(device), "game": args.game}

    if "emulator" in stages:
        raw_fps = raw_emulator_fps(args.game, args.seconds)
        phi_sps = phi_steps_per_s(args.game, args.seconds)
        workers = [n for n in args.num_envs if n > 1 and cores_allow(n)][:1] or [2]
        report["raw_emulator_frames_per_s"] = raw_fps
        report["phi_agent_steps_per_s"] = {
            "num_envs_1": phi_sps,
            f"num_envs_{workers[0]}_workers": vector_steps_per_s(
                args.game, workers[0], args.seconds
            ),
        }
        report["phi_vs_raw_over_4"] = phi_sps / (raw_fps / 4)
        report["ale_vector_env_agent_steps_per_s"] = {
            f"{kind}_phi_num_envs_{workers[0]}": ale_vector_steps_per_s(
                args.game, workers[0], args.seconds, own_phi=kind == "own"
            )
            for kind in ("own", "our")
        }
    if "replay" in stages:
        report["replay"] = replay_rates(device, args.seconds, args.replay_games)
        # The tensors' bytes (on the CPU they are allocated lazily, so this costs no memory).
        report["replay_1m_bytes"] = ReplayMemory(1_000_000).nbytes
        sampling = sampling_rates(device, args.seconds)
        report["sampling_1m_slots_batches32_per_s"] = sampling
        print(
            "batches of 32 drawn per second from 1M slots (eager, no frames): "
            + ", ".join(f"{name} {per_s:,.0f}" for name, per_s in sampling.items()),
            file=sys.stderr,
        )
    if "learner" in stages:
        names = settings or [f"{p}{c}" for p in precisions for c in ("", "_compiled")]
        learner: dict[str, Any] = {}
        for name in names:
            why_not = unsupported(name, device)
            key = name if "compiled" in name else f"{name}_eager"
            learner[key] = why_not or in_fresh_process(learner_rates, device, name, args.seconds)
        report["learner_batch32"] = learner
    if "e2e" in stages or "sb3" in stages:
        if "e2e" not in stages:
            args.num_envs = []
        report.update(e2e_and_baseline(args, device, settings, baseline="sb3" in stages))
    if "ops" in stages:
        overrides = args.ops_run.split() if args.ops_run else OPS_RUN
        ops = in_fresh_process(
            ops_per_agent_step, device, overrides, args.ops_window, args.ops_top, args.work_dir
        )
        report["ops_per_agent_step"] = ops
        print(
            f"{ops['ops_per_agent_step']:.1f} top-level aten ops per agent step "
            f"({ops['top_level_aten_ops']:,} over {ops['agent_steps']:,} agent steps of "
            f"{' '.join(ops['command'])}); the most frequent, per agent step:",
            file=sys.stderr,
        )
        for name, per_step in ops["top_ops_per_agent_step"].items():
            print(f"  {per_step:8.2f}  {name}", file=sys.stderr)
    if "host_memory" in stages:
        report["host_memory_page_faults"] = host_memory_faults()
    if "variants" in stages:
        report["variants"] = variants(args, device)
        for name, ratio in report["variants"]["against_dqn"].items():
            ops = report["variants"].get("ops_per_agent_step_num_envs_16", {}).get(name)
            compiled_ops = (
                report["variants"].get("ops_per_agent_step_num_envs_16_compiled", {}).get(name)
            )
            print(
                f"  {name:12s} {report['variants']['updates_per_s'][name]:7.1f} updates/s "
                f"({ratio:.2f}x DQN)"
                + ("" if ops is None else f", {ops} ops per agent step")
                + ("" if compiled_ops is None else f" ({compiled_ops} compiled)"),
                file=sys.stderr,
            )
    report["peak_rss_bytes_this_process"] = own_peak_rss_bytes()
    text = json.dumps(report, indent=1)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    print(text)
    failed = failures(report)
    if failed:  # every other figure is in the JSON; the exit code tells a script
        sys.exit(f"benchmark: {len(failed)} failed: {'; '.join(failed)[:500]}")


# An update-like pattern: allocate and touch 5 blocks of 20 MB, free them all, repeat. Both
# probes start from glibc's initial thresholds (128 KiB for mmap and trim; glibc raises them on
# its own as a process frees memory). By default each block is mapped and unmapped, and each
# repeat faults all 25,600 pages in again; keep_freed_host_memory makes glibc reuse them. Five
# repeats come before the count, while the heap settles.
HOST_MEMORY_PROBE = """
import ctypes, resource, sys, torch
from dqn_atari.perf import keep_freed_host_memory
mallopt = ctypes.CDLL(None).mallopt
assert mallopt(-1, 128 * 1024) and mallopt(-3, 128 * 1024)  # M_TRIM_/M_MMAP_THRESHOLD
if sys.argv[1] == "keep":
    assert keep_freed_host_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def update_like():
    blocks = [torch.ones(5 * 1024 * 1024) for _ in range(5)]
    del blocks
for _ in range(5):
    update_like()
before = faults()
for _ in range(10):
    update_like()
print(faults() - before)
"""


def host_memory_faults() -> dict[str, Any]:
    """Page faults of ten update-like repeats with glibc's defaults and with
    perf.keep_freed_host_memory (what dqn-train calls): the measurement behind that setting."""
    if not sys.platform.startswith("linux"):
        return {"skipped": "glibc's mallopt is Linux's"}
    counts = {}
    for mode in ("default", "keep"):
        out = subprocess.run(
            [sys.executable, "-c", HOST_MEMORY_PROBE, mode],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            return {"failed": out.stderr.strip().splitlines()[-1:]}
        counts[mode] = int(out.stdout.strip())
    return {
        "glibc_default": counts["default"],
        "keep_freed_host_memory": counts["keep"],
        "pages_per_repeat": 5 * 20 * 1024 * 1024 // 4096,
    }


def failures(report: Any, where: str = "") -> list[str]:
    """The figures of `report` that are a failure's message, as 'path: message'."""
    if isinstance(report, dict):
        return [f for key, value in report.items() for f in failures(value, f"{where}.{key}")]
    if isinstance(report, str) and report.startswith("failed:"):
        return [f"{where.lstrip('.')}: {report.splitlines()[0]}"]
    return []


if __name__ == "__main__":
    main()
