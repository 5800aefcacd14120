"""Throughput of every stage of dqn-atari on this machine, measured in one run.

    python scripts/benchmark.py                      # Breakout on the CPU, about 7 minutes
    python scripts/benchmark.py --game Pong --device cuda --e2e-steps 20000
    python scripts/benchmark.py --num-envs 2 --rounds 3  # end-to-end figures: medians of 3

Prints one JSON object: raw emulator frames/s, phi'd agent steps/s, replay insert and sample
rates, learner updates/s (batch 32) for each precision and compile setting, end-to-end dqn-train
agent steps/s at the Nature replay ratio (one update of 32 per 4 agent steps) after
learning_starts, peak RSS and the bytes of a 1M-transition replay memory. Every figure comes
from this run; compare figures only within one run.

Two comparisons are measured in the same run, for the choices they justify:
- ale-py's threaded C++ `AtariVectorEnv` against our subprocess workers, with its own
  preprocessing and with ours applied to its max-pooled RGB screens;
- Stable-Baselines3's DQN (CnnPolicy, AtariWrapper, same replay ratio, batch, replay size and
  learning_starts) end to end, when `stable_baselines3` is installed (`pip install
  stable-baselines3`; it is not a dependency of dqn-atari), as the baseline the speed-up is
  quoted against.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ale_py.env import AtariEnv
from ale_py.vector_env import AtariVectorEnv
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dqn_atari.cli import keep_freed_host_memory
from dqn_atari.envs import AtariOptions, display_name, make_atari_env, resolve_game
from dqn_atari.learner import Learner, LearnerSettings, make_optimizer
from dqn_atari.networks import NatureQNetwork, bf16_supported
from dqn_atari.preprocessing import resize, to_grayscale
from dqn_atari.replay import ReplayMemory
from dqn_atari.vector import make_vector_env


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
    envs = make_vector_env(game, AtariOptions(), 0, num_envs)
    envs.reset()
    rng = np.random.default_rng(0)
    n_actions = int(envs.single_action_space.n)  # type: ignore[attr-defined]

    def steps() -> int:
        for _ in range(50):
            envs.step(rng.integers(n_actions, size=num_envs))
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


def replay_rates(device: torch.device, seconds: float) -> dict[str, float]:
    memory = ReplayMemory(100_000, device=device)
    frame = np.zeros((84, 84), np.uint8)
    memory.start_episode(frame)

    def inserts() -> int:
        for _ in range(1000):
            memory.add(1, 0.0, False, False, frame)
        return 1000

    insert_rate = rate(inserts, seconds)

    def samples() -> int:
        for _ in range(20):
            batch = memory.sample(32)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        del batch
        return 20

    return {
        "insert_transitions_per_s": insert_rate,
        "sample_batches32_per_s": rate(samples, seconds),
    }


def learner_updates_per_s(
    device: torch.device, precision: str, compiled: bool, seconds: float
) -> float:
    keep_freed_host_memory()  # as dqn-train does
    torch.manual_seed(0)
    net = NatureQNetwork(6).to(device)
    learner = Learner(
        net,
        make_optimizer("rmsprop", net.parameters(), lr=2.5e-4),
        LearnerSettings(),
        device=device,
        precision=precision,
        compile=compiled,
    )
    memory = ReplayMemory(5000, device=device)
    rng = np.random.default_rng(0)
    memory.start_episode(rng.integers(0, 256, (84, 84), dtype=np.uint8))
    for _ in range(4000):
        frame = rng.integers(0, 256, (84, 84), dtype=np.uint8)
        memory.add(int(rng.integers(6)), 0.0, False, False, frame)
    batch = memory.sample(32)
    for _ in range(5):  # warm-up, and compilation when compiled
        learner.update(batch)

    def updates() -> int:
        for _ in range(5):
            out = learner.update(batch)
        out.loss.item()  # wait for the device
        return 5

    return rate(updates, seconds)


def end_to_end_sps(
    game: str,
    device: torch.device,
    overrides: list[str],
    learning_starts: int,
    steps: int,
) -> dict[str, float]:
    """Real dqn-train at the Nature replay ratio; agent steps/s measured after learning_starts.

    Epsilon is at its final 0.1 from learning_starts on, so nine steps in ten act greedily (a
    forward pass each), as in the bulk of a real run; the baseline is measured the same way.
    """
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        start = time.perf_counter()
        command = [
            sys.executable, "-c", "from dqn_atari.cli import train_entry; train_entry()",
            f"env={game}", f"device={device}", *overrides, "algo.epsilon_decay_steps=1",
            f"total_steps={learning_starts + steps}", f"learning_starts={learning_starts}",
            "buffer_size=100000", "eval_interval=0", "log_interval=500",
            f"checkpoint_interval={learning_starts + steps}", f"hydra.run.dir={run_dir}",
        ]  # fmt: skip
        with (Path(tmp) / "output.txt").open("w+") as output:
            proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=tmp)
            # wait4 gives this run's own peak RSS (its worker processes are not counted).
            _, status, usage = os.wait4(proc.pid, 0)
            if status != 0:
                output.seek(0)
                raise RuntimeError(f"{' '.join(command)} failed:\n{output.read()}")
        wall_s = time.perf_counter() - start
        events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        events.Reload()
        # perf/sps at step S covers (S - 500, S]: keep the windows that start after learning.
        learning = [e.value for e in events.Scalars("perf/sps") if e.step > learning_starts + 500]
    return {
        "agent_steps_per_s_learning": float(np.mean(learning)),
        "wall_s": wall_s,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
    }


def sb3_dqn_sps(game: str, learning_starts: int, steps: int) -> dict[str, float] | str:
    """Stable-Baselines3's DQN at the same replay ratio, batch and replay size, on this device.

    Its standard Atari setup (AtariWrapper: no-op starts, action repeat 4 with max-pool,
    life-loss terminals, FIRE on reset, reward clipping, 84x84 grayscale; 4-frame stack), Adam,
    one update of 32 every 4 agent steps, 100k replay, epsilon 0.1. Agent steps/s after
    learning_starts.
    """
    try:
        import ale_py
        import gymnasium as gym
        from stable_baselines3 import DQN
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.env_util import make_atari_env as sb3_atari_env
        from stable_baselines3.common.vec_env import VecFrameStack
    except ImportError as err:
        return f"not measured: {err} (pip install stable-baselines3)"

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
        train_freq=4, gradient_steps=1, target_update_interval=1000, device="cpu", seed=0,
        # Epsilon 0.1 from learning_starts on, as in our end-to-end runs.
        exploration_fraction=1 / (learning_starts + steps), exploration_final_eps=0.1,
        optimize_memory_usage=True, replay_buffer_kwargs={"handle_timeout_termination": False},
    )  # fmt: skip
    clock = Clock()
    model.learn(total_timesteps=learning_starts + steps, callback=clock)
    learning_s = time.perf_counter() - clock.start
    return {
        "agent_steps_per_s_learning": (steps - 1) / learning_s,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=5.0, help="per micro-benchmark")
    parser.add_argument("--learning-starts", type=int, default=2000, help="agent steps")
    parser.add_argument("--e2e-steps", type=int, default=6000, help="agent steps after learning")
    parser.add_argument("--num-envs", type=int, default=4, help="N for the num_envs=N figures")
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="end-to-end runs of each setting, taken in turn; figures are their median",
    )  # fmt: skip
    parser.add_argument(
        "--no-baseline", dest="baseline", action="store_false",
        help="skip Stable-Baselines3's DQN (measured only on the CPU)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    device = torch.device(args.device)
    precisions = ["fp32", "bf16"] if bf16_supported(device) else ["fp32"]

    raw_fps = raw_emulator_fps(args.game, args.seconds)
    phi_sps = phi_steps_per_s(args.game, args.seconds)
    vector_sps = vector_steps_per_s(args.game, args.num_envs, args.seconds)
    ale_vector = {
        f"own_phi_num_envs_{args.num_envs}": ale_vector_steps_per_s(
            args.game, args.num_envs, args.seconds, own_phi=True
        ),
        f"our_phi_num_envs_{args.num_envs}": ale_vector_steps_per_s(
            args.game, args.num_envs, args.seconds, own_phi=False
        ),
    }
    learner = {
        f"{precision}_{'compiled' if compiled else 'eager'}": in_fresh_process(
            learner_updates_per_s, device, precision, compiled, args.seconds
        )
        for precision in precisions
        for compiled in (False, True)
    }
    # The Nature recipe (RMSProp) in fp32 and bf16, eager and compiled; the fastest setting
    # with Adam, the baseline's optimizer; then N games in worker processes.
    settings: dict[str, list[str]] = {}
    for precision in precisions:
        settings[precision] = [f"precision={precision}"]
        settings[f"{precision}_compiled"] = [f"precision={precision}", "compile=true"]
    fastest = f"{precisions[-1]}_compiled"
    e2e_settings: dict[tuple[str, str], list[str]] = {
        **{("num_envs_1", name): overrides for name, overrides in settings.items()},
        ("num_envs_1", f"{fastest}_adam"): [*settings[fastest], "algo.optimizer=adam"],
        **{
            (f"num_envs_{args.num_envs}", name): [*settings[name], f"num_envs={args.num_envs}"]
            for name in dict.fromkeys(["fp32", fastest])
        },
    }
    # Rounds run every setting (and the baseline) once each, in turn, so that a slow spell of
    # this shared machine falls on all of them alike instead of on one setting's figure.
    measured: dict[tuple[str, str], list[dict[str, float]]] = {key: [] for key in e2e_settings}
    baseline_runs: list[dict[str, float]] = []
    measure_baseline = args.baseline and device.type == "cpu"
    baseline_note = (
        "not measured: the baseline runs on the CPU only"
        if args.baseline
        else "not measured: --no-baseline"
    )
    for _ in range(args.rounds):
        for key, overrides in e2e_settings.items():
            measured[key].append(
                end_to_end_sps(args.game, device, overrides, args.learning_starts, args.e2e_steps)
            )
        if measure_baseline:
            result = in_fresh_process(sb3_dqn_sps, args.game, args.learning_starts, args.e2e_steps)
            if isinstance(result, str):  # stable_baselines3 is not installed
                baseline_note, measure_baseline = result, False
            else:
                baseline_runs.append(result)
    e2e: dict[str, dict[str, dict[str, Any]]] = {}
    for (setting, name), results in measured.items():
        e2e.setdefault(setting, {})[name] = over_rounds(results)
    baseline = over_rounds(baseline_runs) if baseline_runs else baseline_note
    speedup = {}
    if isinstance(baseline, dict):
        base_sps = baseline["agent_steps_per_s_learning"]
        speedup = {
            f"{setting}_{name}": run["agent_steps_per_s_learning"] / base_sps
            for setting, runs in e2e.items()
            for name, run in runs.items()
        }
    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "device": str(device),
            "torch": torch.__version__,
        },
        "game": args.game,
        "raw_emulator_frames_per_s": raw_fps,
        "phi_agent_steps_per_s": {
            "num_envs_1": phi_sps,
            f"num_envs_{args.num_envs}_workers": vector_sps,
        },
        "phi_vs_raw_over_4": phi_sps / (raw_fps / 4),
        "ale_vector_env_agent_steps_per_s": ale_vector,
        "replay": replay_rates(device, args.seconds),
        "learner_updates_per_s_batch32": learner,
        "end_to_end_dqn_train": e2e,
        "baseline_sb3_dqn": baseline,
        "speedup_vs_sb3": speedup,
        "peak_rss_bytes_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        # The tensors' bytes (on the CPU they are allocated lazily, so this costs no memory).
        "replay_1m_bytes": ReplayMemory(1_000_000).nbytes,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
