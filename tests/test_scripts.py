"""scripts/benchmark.py's op counter, scripts/gpu_check.sh with its helper gpu_check.py, and
scripts/read_scalars.py's windows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import benchmark  # noqa: E402  (a script, not a package: imported from scripts/)


def test_only_aten_ops_outside_other_aten_ops_are_counted() -> None:
    x, w, b = torch.randn(4, 3), torch.randn(5, 3), torch.randn(5)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        y = torch.nn.functional.linear(x, w, b)  # aten::linear -> aten::t, aten::addmm
        with record_function("not an op"):  # a Python range does not nest what is inside it
            torch.relu(y).add_(1)
    names = {event.name for event in prof.events()}
    assert {"aten::addmm", "aten::t"} <= names  # there, but nested in aten::linear
    counts = benchmark.top_level_aten_ops(prof.events())
    assert counts == {"aten::linear": 1, "aten::relu": 1, "aten::add_": 1}


def test_the_fast_count_from_raw_events_equals_the_cpu_parent_count() -> None:
    # A DQN-like step in plain torch: uint8 frames gathered by index, a conv net forward and
    # backward (autograd nodes, nested convolution ops), Huber loss, centered RMSProp.
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 8, stride=4), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(8 * 7 * 7, 6),
    )  # fmt: skip
    optimizer = torch.optim.RMSprop(net.parameters(), lr=1e-3, centered=True, eps=0.01)
    frames = torch.randint(0, 256, (100, 32, 32), dtype=torch.uint8)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            slot = torch.randint(3, 100, (16,))
            obs = frames[slot[:, None] - torch.arange(4)].float() / 255.0
            q = net(obs).gather(1, torch.zeros(16, 1, dtype=torch.int64)).squeeze(1)
            loss = torch.nn.functional.huber_loss(q, torch.ones(16))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    exact = benchmark.top_level_aten_ops(prof.events())
    fast, aten_events, device_events = benchmark.top_level_aten_ops_raw(
        prof.profiler.kineto_results.events()
    )
    assert fast == exact
    assert exact["aten::convolution_backward"] == 3  # run by autograd, under no aten op
    # prof.events() also folds an op into a parent of the same name; the raw count keeps both.
    assert aten_events >= sum(1 for e in prof.events() if e.name.startswith("aten::"))
    assert aten_events > sum(exact.values()) and device_events == 0


def count_ops(tmp_path: Path, window_agent_steps: int) -> dict:
    out = tmp_path / f"ops_{window_agent_steps}.json"
    run = (
        "env=Pong total_steps=240 learning_starts=120 buffer_size=1000 seed=5 final_eval_episodes=0"
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--stages", "ops",
         "--ops-run", run, "--ops-window", str(window_agent_steps), "--ops-top", "1000",
         "--json-out", str(out),
         "--work-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())["ops_per_agent_step"]


@pytest.mark.slow
def test_cutting_the_profile_into_windows_neither_loses_nor_repeats_an_op(tmp_path: Path) -> None:
    # The same seeded CPU run plays the same steps, so it issues the same ops either way.
    windowed = count_ops(tmp_path, window_agent_steps=40)
    whole = count_ops(tmp_path, window_agent_steps=10**9)
    assert windowed["profiler_windows"] == 6 + 1  # cut at 40, 80, ..., 240, then the rest
    assert whole["profiler_windows"] == 1
    assert windowed["agent_steps"] == whole["agent_steps"] == 240
    assert windowed["top_level_aten_ops"] == whole["top_level_aten_ops"] > 0
    assert windowed["top_ops_per_agent_step"] == whole["top_ops_per_agent_step"]
    # The updates (one per 4 agent steps after 120) were profiled, backward passes included.
    assert windowed["top_ops_per_agent_step"].get("aten::convolution_backward", 0) > 0


def test_environment_check_names_the_device_and_refuses_cuda_without_it(tmp_path: Path) -> None:
    script = str(ROOT / "scripts" / "gpu_check.py")
    cpu = subprocess.run(
        [sys.executable, script, "info", "--device", "cpu", "--out", str(tmp_path / "cpu.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cpu.returncode == 0, cpu.stderr
    found = json.loads((tmp_path / "cpu.json").read_text())
    assert found["torch"] == torch.__version__ and found["problems"] == []
    assert found["cpu_count"] >= 1 and "version" in found["packages"]["dqn_atari"]
    if torch.cuda.is_available():
        return
    cuda = subprocess.run(
        [sys.executable, script, "info", "--device", "cuda", "--out", str(tmp_path / "cuda.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cuda.returncode == 1
    assert "sees no CUDA device" in cuda.stderr and "--device cpu" in cuda.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA this would run the whole check")
def test_gpu_check_without_cuda_stops_after_the_environment_check(tmp_path: Path) -> None:
    out = tmp_path / "check"
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cuda", "--python",
         sys.executable, str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["device"] == "cuda" and report["quick"] is False
    stages = report["stages"]
    assert stages["info"]["status"] == "failed"
    assert "sees no CUDA device" in stages["info"]["reason"]
    # Every other stage was skipped with its reason, none run: a table, not a cascade of errors.
    others = {name: stage for name, stage in stages.items() if name != "info"}
    assert {"pytest", "e2e_1_fp32", "learner_eager", "sb3", "ops", "replay_1m"} <= set(others)
    assert all(stage["status"] == "skipped" and stage["reason"] for stage in others.values())
    assert "not ok: info" in result.stdout
    assert not (out / "work").exists()


@pytest.mark.slow
def test_the_end_to_end_stage_reports_every_setting_it_ran(tmp_path: Path) -> None:
    """A num_envs whose settings all run (no 'skipped' note) still gets its figures: a KeyError
    here once lost an 18-minute benchmark at its very end."""
    out = tmp_path / "e2e.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--stages", "e2e",
         "--num-envs", "1", "--settings", "fp32", "--rounds", "1", "--learning-starts", "100",
         "--e2e-steps", "1000", "--json-out", str(out), "--work-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())["end_to_end_dqn_train"]["num_envs_1"]["fp32"]
    assert figures["agent_steps_per_s_learning"] > 0


@pytest.mark.slow
def test_a_runs_peak_rss_is_its_own_not_the_benchmarks(tmp_path: Path) -> None:
    """The benchmark forks dqn-train from a process that by then holds its replay and learner
    stages; a fork's ru_maxrss starts at the parent's resident size, so every run of one
    benchmark once read the same 1.03 GB. Here the parent holds 1.5 GB."""
    held = np.ones(1_500_000_000, np.uint8)  # touched, so resident
    figures = benchmark.end_to_end_sps(
        "Breakout", torch.device("cpu"), ["num_envs=1"], 100, 1000, tmp_path
    )
    del held
    # torch and the game take over 100 MB; a run this short stays far below 1.2 GB.
    assert 100e6 < figures["peak_rss_bytes"] < 1.2e9


def test_read_scalars_means_per_window_count_a_game_where_it_ended(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path)) as writer:
        for step, value in [(50, -21.0), (100, -19.0), (150, -10.0), (260, 3.0), (290, 5.0)]:
            writer.add_scalar("train/episode_return", value, step)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "read_scalars.py"), str(tmp_path),
         "train/episode_return", "--per", "100"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    windows = json.loads(result.stdout)["train/episode_return"]["windows"]
    # A game that ends at step 100 closes the first window, as "0-100k" reads in the tables.
    assert windows == {"0-100": [2, -20.0], "100-200": [1, -10.0], "200-300": [2, 4.0]}


def _adam_checkpoint(path: Path, grads: list[float], eps: float) -> list[str]:
    """A dqn-atari checkpoint file of a small noisy dueling network (its state dict holds the
    noise buffers besides the parameters) with a real Adam state after one step, every weight of
    parameter tensor i having had the gradient grads[i % len(grads)]. Returns the names of the
    parameter tensors."""
    from dqn_atari.checkpoint import FORMAT
    from dqn_atari.networks import NetworkSpec, build_network
    from dqn_atari.optim import Adam

    spec = NetworkSpec(num_actions=3, frames=2, frame_size=36, dueling=True, noisy=True)
    network = build_network(spec)
    named = list(network.named_parameters())
    params = [p for _, p in named]
    adam = Adam(params, lr=1e-4, eps=eps)
    with torch.no_grad():  # as the learner steps
        adam.step_(
            params, [torch.full_like(p, grads[i % len(grads)]) for i, p in enumerate(params)]
        )
    torch.save(
        {
            "format": FORMAT,
            "network": spec.to_dict(),
            "config": {"algo": {"optimizer": "adam", "adam_eps": eps}},
            "learner": {"online": network.state_dict(), "optimizer": adam.state_dict()},
        },
        path,
    )
    return [name for name, _ in named]


def test_optimizer_state_reads_adams_roots_against_eps_as_worked_out_by_hand(
    tmp_path: Path,
) -> None:
    import optimizer_state

    from dqn_atari.checkpoint import load_checkpoint

    # After one step, v = (1 - beta2) g^2 and its bias correction divides by (1 - beta2):
    # sqrt(v_hat) = |g| for every weight, and the step factor is |g| / (|g| + eps).
    path = tmp_path / "latest.pt"
    grads = [1e-5, -4e-4, 0.0]
    names = _adam_checkpoint(path, grads, eps=1e-4)
    eps, steps = optimizer_state.adam_steps(load_checkpoint(path))
    assert eps == 1e-4
    assert list(steps) == names and not any("noise" in name for name in steps)
    for i, name in enumerate(names):
        g = abs(grads[i % 3])
        row = steps[name]
        assert row.median_root == pytest.approx(g, rel=1e-5)
        assert row.share_above_eps == (1.0 if g > 1e-4 else 0.0)
        assert row.median_step_factor == pytest.approx(g / (g + 1e-4), rel=1e-5)
    assert steps[names[0]].median_step_factor == pytest.approx(1 / 11, rel=1e-5)
    assert steps[names[1]].median_step_factor == pytest.approx(0.8, rel=1e-5)

    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "optimizer_state.py"), str(tmp_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    assert lines[0] == "Adam eps 0.0001"
    assert lines[2].split() == [names[0], "1e-05", "0.000", "0.0909"]
    assert lines[3].split() == [names[1], "0.0004", "1.000", "0.8"]


def test_optimizer_state_refuses_another_optimizer_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latest.pt"
    _adam_checkpoint(path, [1.0], eps=1e-4)
    state = torch.load(path, weights_only=True)
    state["learner"]["optimizer"]["name"] = "rmsprop"
    torch.save(state, path)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "optimizer_state.py"), str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"optimizer_state: {path}: the checkpoint's optimizer is rmsprop, not adam"
    ]
