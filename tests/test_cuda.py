"""CUDA runs, checked on a GPU box with `pytest -m cuda` (or `scripts/gpu_check.sh`).

Every test here is marked `cuda` and skipped where `torch.cuda.is_available()` is False, so the
CPU CI passes them as skipped. The CLI tests drive dqn-train and dqn-eval as subprocesses on the
real ALE with tiny budgets, as tests/test_faults.py does, but through `python -m` with this
checkout first on PYTHONPATH: a GPU box without network needs no installed console scripts, only
the dependencies on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import cv2
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.is_available() is False"
    ),
]

TRAIN = [sys.executable, "-m", "dqn_atari"]
EVAL = [sys.executable, "-c", "from dqn_atari.cli import eval_entry; eval_entry()"]
LEARNING_STARTS = 200  # agent steps
# Breakout with life-loss terminals and the replay saved on every checkpoint: the CUDA replay
# ring goes to disk on SIGTERM and comes back on resume.
RUN = [
    "env=Breakout",
    "device=cuda",
    "seed=3",
    f"learning_starts={LEARNING_STARTS}",
    "buffer_size=4000",
    "save_replay=true",
    "checkpoint_interval=100000",
    "log_interval=100",
    "progress_interval_s=0",  # a progress line per loop iteration: the test reads the step
    "env.max_episode_frames=2000",
    "eval_interval=0",
    "final_eval_episodes=0",
]
PROGRESS = re.compile(r"([\d,]+)/[\d,]+ steps \|")


def checkout_env() -> dict[str, str]:
    """The environment for the subprocesses: this checkout's dqn_atari, installed or not."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=checkout_env()
    )


def latest(run_dir: Path) -> dict:
    # No map_location: tensors saved from the GPU come back on the GPU.
    return torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("dqn-train: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def train_until_learning_then_sigterm(run_dir: Path, cwd: Path, num_envs: int) -> int:
    """Start an open-ended run, SIGTERM it once it has made updates; returns the saved step."""
    proc = subprocess.Popen(
        [*TRAIN, *RUN, f"num_envs={num_envs}", "total_steps=1000000", f"hydra.run.dir={run_dir}"],
        cwd=cwd,
        stderr=subprocess.PIPE,
        text=True,
        env=checkout_env(),
    )
    assert proc.stderr is not None
    watchdog = threading.Timer(300, proc.kill)  # a hung run fails the test instead of pytest
    watchdog.start()
    seen: list[str] = []
    try:
        for line in proc.stderr:
            seen.append(line)
            match = PROGRESS.search(line)
            if match and int(match.group(1).replace(",", "")) >= LEARNING_STARTS + 100:
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.stderr.read()
        code = proc.wait(timeout=120)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    output = "".join(seen[-20:]) + rest
    assert code == 128 + signal.SIGTERM, output[-3000:]
    assert "stopped by SIGTERM" in rest and f"resume={run_dir}" in rest, output[-3000:]
    assert "Traceback" not in rest
    return int(latest(run_dir)["counters"]["step"])


@pytest.mark.slow
@pytest.mark.parametrize("num_envs", [1, 4])
def test_train_sigterm_resume_and_eval_with_video_on_cuda(num_envs: int, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    stopped_at = train_until_learning_then_sigterm(run_dir, tmp_path, num_envs)
    state = latest(run_dir)
    assert stopped_at >= LEARNING_STARTS + 100
    assert stopped_at % num_envs == 0
    assert state["counters"]["updates"] > 0
    # The networks were trained on the GPU, and the GPU replay ring was written beside them.
    assert all(t.device.type == "cuda" for t in state["learner"]["online"].values())
    assert (run_dir / "checkpoints" / f"replay_{stopped_at:09d}").is_dir()

    resumed = run([*TRAIN, f"resume={run_dir}", f"total_steps={stopped_at + 200}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "with its replay memory" in resumed.stderr
    after = latest(run_dir)
    assert after["counters"]["step"] == stopped_at + 200
    # One update every 4 agent steps, learning from the first step after the resume: 200 / 4.
    assert after["counters"]["updates"] == state["counters"]["updates"] + 50
    assert after["num_envs"] == num_envs
    moved = [
        not torch.equal(after["learner"]["online"][name], tensor)
        for name, tensor in state["learner"]["online"].items()
    ]
    assert any(moved), "the resumed run's updates did not change the weights"

    ckpt = run_dir / "checkpoints" / "latest.pt"
    evaluated = run(
        [*EVAL, f"checkpoint={ckpt}", "device=cuda", "episodes=1", "max_episode_frames=800",
         "video=true"],
        tmp_path,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    summary = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 1 and summary["checkpoint_step"] == stopped_at + 200
    video = cv2.VideoCapture(summary["video"])
    assert Path(summary["video"]) == run_dir / "checkpoints" / "latest_eval.mp4"
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == summary["lengths"][0] + 1


@pytest.mark.slow
def test_a_replay_larger_than_free_gpu_memory_is_one_line_before_allocating(
    tmp_path: Path,
) -> None:
    free_bytes, total_bytes = torch.cuda.mem_get_info()
    frame_bytes = 84 * 84 + 17  # one slot of the ring, with its metadata
    too_many = 2 * total_bytes // frame_bytes  # twice the whole device, however free it is
    run_dir = tmp_path / "run"
    result = run(
        [*TRAIN, "env=Breakout", "device=cuda", f"buffer_size={too_many}",
         f"hydra.run.dir={run_dir}"],
        tmp_path,
    )  # fmt: skip
    # Had the ring been allocated first, CUDA's out-of-memory error would be a traceback.
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_error_line(result.stderr)
    assert f"replay memory of {too_many:,} frames needs" in line
    assert "GB is free" in line and "buffer_size=" in line
    # Nothing of a run was started: no checkpoints, no TensorBoard file.
    assert not list(run_dir.glob("checkpoints/*"))
    assert not list(run_dir.glob("events.out.tfevents.*"))
    assert free_bytes < too_many * frame_bytes


# ---------------------------------------------------------------- the API on CUDA


def _written_memory(device: str, num_games: int = 2, steps: int = 300) -> object:
    """A replay memory on `device` written with the same random frames and episode ends."""
    import numpy as np

    from dqn_atari.replay import ReplayMemory

    memory = ReplayMemory(
        capacity=num_games * 400, num_games=num_games, seed=11, device=torch.device(device)
    )
    rng = np.random.default_rng(3)
    memory.start(rng.integers(0, 256, (num_games, 84, 84), dtype=np.uint8))
    for _ in range(steps):  # past the wrap-around of each 400-slot ring
        ended = rng.random(num_games) < 0.03
        memory.add_step(
            rng.integers(6, size=num_games),
            rng.normal(size=num_games),
            ended & (rng.random(num_games) < 0.5),  # terminal, or truncated
            ended,
            rng.integers(0, 256, (num_games, 84, 84), dtype=np.uint8),
            rng.integers(0, 256, (num_games, 84, 84), dtype=np.uint8),
        )
    return memory


def test_the_replay_memory_on_cuda_gives_the_cpus_batches() -> None:
    """Same writes, same seed: the same slots and identical batches. The sampler's uniforms
    come from a CPU generator on both, so the devices cannot drift apart."""
    cpu, gpu = _written_memory("cpu"), _written_memory("cuda")
    assert cpu.sampleable_slots().tolist() == gpu.sampleable_slots().tolist()
    for _ in range(50):
        for a, b in zip(cpu.sample(32), gpu.sample(32), strict=True):
            assert torch.equal(a, b.cpu())


def _learner(device: str, precision: str = "fp32", compile: bool = False, graph: bool = False):
    from dqn_atari.config import AlgoConfig
    from dqn_atari.learner import Learner
    from dqn_atari.networks import NatureQNetwork
    from dqn_atari.optim import make_optimizer

    torch.manual_seed(0)
    net = NatureQNetwork(6).to(device)
    algo = AlgoConfig()
    return Learner(
        net,
        make_optimizer(algo, list(net.parameters())),
        algo,
        replay=_written_memory(device),
        batch_size=32,
        device=torch.device(device),
        precision=precision,
        compile=compile,
        cuda_graph=graph,
    )


def _updates(learner, count: int, sync_at: int = 3) -> tuple[list[float], list[torch.Tensor]]:
    losses = []
    for i in range(count):
        learner.update()
        means = learner.take_means()  # of the one update since the last call
        losses.append(means[0].item())
        if i == sync_at:
            learner.sync_target()
    return losses, [p.detach().cpu().clone() for p in learner.online.parameters()]


@pytest.fixture
def no_tf32():
    """TF32 matmuls and convolutions round to 10 bits of mantissa: off for the comparisons."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_updates_on_cuda_match_the_cpu(no_tf32) -> None:
    """Same weights, same batches: six updates with a target sync give the CPU's losses and
    weights within 1e-4 (relative) on fp32 CUDA (cuDNN and cuBLAS sum in other orders)."""
    cpu_losses, cpu_weights = _updates(_learner("cpu"), 6)
    gpu_losses, gpu_weights = _updates(_learner("cuda"), 6)
    assert gpu_losses == pytest.approx(cpu_losses, rel=1e-4)
    for a, b in zip(gpu_weights, cpu_weights, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("compile", [False, True])
def test_the_update_as_one_cuda_graph_matches_eager(no_tf32, compile: bool) -> None:
    """The graphed update (3 warm-up calls, then one capture replayed) gives eager's losses
    and weights over 8 updates with a target sync in between: sampling advances inside the
    graph, the optimizer state and the sums are the same tensors, the sync copies in place."""
    eager_losses, eager_weights = _updates(_learner("cuda"), 8)
    graphed = _learner("cuda", compile=compile, graph=True)
    graph_losses, graph_weights = _updates(graphed, 8)
    assert graphed._step.graph is not None  # captured, and replayed for the later updates
    assert graph_losses == pytest.approx(eager_losses, rel=1e-4)
    for a, b in zip(graph_weights, eager_weights, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_a_checkpoint_taken_between_graph_replays_resumes_the_same_updates(no_tf32) -> None:
    """state_dict() read between replays, loaded into a fresh learner (copied into its
    tensors) that is then captured too: both go on with identical updates."""
    first = _learner("cuda", graph=True)
    _updates(first, 6)
    saved = {k: v for k, v in first.state_dict().items()}
    saved = torch.utils._pytree.tree_map(
        lambda t: t.detach().cpu().clone() if isinstance(t, torch.Tensor) else t, saved
    )
    replay_dir = Path(tempfile.mkdtemp())
    first.replay.save(replay_dir / "replay")
    second = _learner("cuda", graph=True)
    second.load_state_dict(saved)
    second.replay.load(replay_dir / "replay")
    a_losses, a_weights = _updates(first, 6, sync_at=2)
    b_losses, b_weights = _updates(second, 6, sync_at=2)
    # The same kernels on the same data; cuDNN may pick another algorithm for the second
    # learner's convolutions, so the last bits may differ.
    assert b_losses == pytest.approx(a_losses, rel=1e-5)
    for a, b in zip(a_weights, b_weights, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_bf16_on_cuda_is_within_the_cpu_tests_tolerances() -> None:
    """As tests/test_precision.py on the CPU: the bf16 update's loss within 1% of fp32's."""
    fp32, _ = _updates(_learner("cuda"), 1)
    bf16, _ = _updates(_learner("cuda", precision="bf16"), 1)
    assert bf16[0] == pytest.approx(fp32[0], rel=1e-2)
    assert bf16[0] != fp32[0]  # the update really ran in bf16


@pytest.mark.slow
def test_a_million_transitions_hold_at_most_7_1_gb_on_the_gpu() -> None:
    import numpy as np

    from dqn_atari.replay import ReplayMemory

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    memory = ReplayMemory(1_000_000, device=torch.device("cuda"), num_games=16)
    frames = np.zeros((16, 84, 84), np.uint8)
    memory.start(frames)
    actions, rewards, no = np.zeros(16, np.int64), np.zeros(16), np.zeros(16, np.bool_)
    for _ in range(200):
        memory.add_step(actions, rewards, no, no, frames, frames)
    memory.sample(32)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    assert peak <= 7.1e9, peak
    del memory


@pytest.mark.slow
@pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="needs 2 GPUs: the run's device must not be device 0"
)
def test_the_graphed_update_captures_and_learns_on_the_last_gpu(no_tf32) -> None:
    """device=cuda:N with N > 0: the capture's streams and events are the run's device's, so
    the graph records the update's kernels. An empty graph would replay without changing the
    weights; a graph on the wrong stream fails the capture."""
    last = f"cuda:{torch.cuda.device_count() - 1}"
    assert torch.cuda.current_device() != torch.cuda.device_count() - 1
    graphed = _learner(last, graph=True)
    warm_losses, _ = _updates(graphed, 4, sync_at=99)  # 3 warm-ups, then the capture
    assert graphed._step.graph is not None
    captured = [p.detach().clone() for p in graphed.online.parameters()]
    replay_losses, after = _updates(graphed, 3, sync_at=99)  # replays only
    assert any(not torch.equal(a.cpu(), b) for a, b in zip(captured, after, strict=True))
    eager_losses, eager_weights = _updates(_learner(last), 7, sync_at=99)
    assert [*warm_losses, *replay_losses] == pytest.approx(eager_losses, rel=1e-4)
    for a, b in zip(after, eager_weights, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_the_compiled_gather_reads_frames_past_slot_304346() -> None:
    """At 84x84, slot 304,347 starts past element 2**31 of the frames: a compiled gather that
    computes slot * 7056 from an int32 slot reads the wrong frame or faults there."""
    from dqn_atari.replay import ReplayMemory

    memory = ReplayMemory(320_000, device=torch.device("cuda"))
    last = memory.capacity - 1
    slots = torch.arange(last - 3, last + 1, device="cuda", dtype=torch.int32)
    for i, slot in enumerate(slots.tolist()):
        memory.storage.frames[slot].fill_(10 + i)
    memory.storage.stacks[last] = slots  # the stack ending at the last slot: the last 4 frames
    memory.storage.next_slots[last] = last
    gather = torch.compile(memory.gather, fullgraph=True)
    batch = gather(torch.tensor([last], device="cuda"))
    torch.cuda.synchronize()
    assert batch.obs_tm1.shape == (1, 4, 84, 84)
    assert batch.obs_tm1[0].amin(dim=(1, 2)).tolist() == [10, 11, 12, 13]
    assert batch.obs_tm1[0].amax(dim=(1, 2)).tolist() == [10, 11, 12, 13]
    del memory


# The DQN family's riskiest updates on the device: distributions, n-step returns, the dueling
# head, noisy nets and the prioritized sampler's sum tree, all inside one captured graph.
FAMILY = {
    "qr_dueling_double_3_step": {
        "distribution": "qr", "dueling": True, "double": True, "n_step": 3, "optimizer": "adam",
    },
    "rainbow": {
        "distribution": "c51", "dueling": True, "double": True, "noisy": True, "n_step": 3,
        "prioritized": True, "priority_alpha": 0.5, "optimizer": "adam",
    },
}  # fmt: skip


def _family_learner(name: str, compile: bool = False, graph: bool = False):
    import numpy as np

    from dqn_atari.config import AlgoConfig, TrainConfig, resolve_settings
    from dqn_atari.run import build_learner, build_replay

    config = TrainConfig(algo=AlgoConfig(**FAMILY[name]))  # type: ignore[arg-type]
    config.num_envs, config.buffer_size, config.batch_size = 2, 800, 32
    config.total_steps, config.learning_starts, config.seed = 10_000, 0, 11
    config.compile, config.cuda_graph = compile, graph
    settings = resolve_settings(config, torch.device("cuda"))
    memory = build_replay(config, settings)
    rng = np.random.default_rng(3)
    memory.start(rng.integers(0, 256, (2, 84, 84), dtype=np.uint8))
    for _ in range(300):
        ended = rng.random(2) < 0.03
        memory.add_step(
            rng.integers(6, size=2), rng.normal(size=2), ended & (rng.random(2) < 0.5), ended,
            rng.integers(0, 256, (2, 84, 84), dtype=np.uint8),
            rng.integers(0, 256, (2, 84, 84), dtype=np.uint8),
        )  # fmt: skip
    torch.manual_seed(0)
    return build_learner(config, settings, 6, memory)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILY))
def test_a_family_update_compiled_as_one_cuda_graph_learns_and_matches_eager(
    no_tf32, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compiled and captured (3 warm-ups, then replays): the replays change the weights, and
    8 updates with a target sync give eager's losses and weights."""
    # Eager's random ops inside the compiled graph: the noisy nets draw eager's noise.
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    torch._dynamo.reset()
    graphed = _family_learner(name, compile=True, graph=True)
    graph_losses, graph_weights = _updates(graphed, 5)
    assert graphed._step.graph is not None
    more_losses, after = _updates(graphed, 3, sync_at=99)  # replays only
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(graph_weights, after, strict=True))
    eager = _family_learner(name)
    eager_losses, _ = _updates(eager, 5)
    eager_more, eager_after = _updates(eager, 3, sync_at=99)
    assert [*graph_losses, *more_losses] == pytest.approx([*eager_losses, *eager_more], rel=1e-4)
    for a, b in zip(after, eager_after, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
