"""The DQN family on the one update: each variant builds from its config, compiles whole, and
noisy nets draw their noise where Fortunato et al. (2018) do (every update, every acting step)
and nowhere else."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from dqn_atari.config import AlgoConfig, TrainConfig, resolve_settings
from dqn_atari.heads import DuelingHead, NoisyLinear, QHead, noisy_layers
from dqn_atari.learner import Learner, prepare_update
from dqn_atari.loop import Schedule
from dqn_atari.networks import build_network
from dqn_atari.optim import make_optimizer
from dqn_atari.replay import ReplayMemory
from dqn_atari.run import build_replay, network_spec

CPU = torch.device("cpu")
FRAMES, SIZE, ACTIONS = 2, 36, 3  # the smallest input of the Nature torso: quick to compile

VARIANTS = {
    "dqn": {},
    "dueling_double": {"double": True, "dueling": True, "max_grad_norm": 10.0},
    "c51_3_step": {"distribution": "c51", "n_step": 3, "optimizer": "adam"},
    "qr_double": {"distribution": "qr", "quantiles": 8, "double": True, "optimizer": "adam"},
    "rainbow": {
        "distribution": "c51",
        "dueling": True,
        "double": True,
        "noisy": True,
        "n_step": 3,
        "prioritized": True,
        "priority_alpha": 0.5,
        "optimizer": "adam",
    },
    "noisy_dueling_c51": {
        "distribution": "c51",
        "dueling": True,
        "double": True,
        "noisy": True,
        "n_step": 3,
        "optimizer": "adam",
    },
}


def _config(**algo: object) -> TrainConfig:
    config = TrainConfig(algo=AlgoConfig(**algo))  # type: ignore[arg-type]
    config.env.frame_stack, config.env.screen_size = FRAMES, SIZE
    config.num_envs, config.buffer_size, config.batch_size = 2, 2 * 200, 16
    config.total_steps, config.learning_starts = 10_000, 100
    return config


def _replay(config: TrainConfig, seed: int = 0) -> ReplayMemory:
    """The run's own replay memory (run.build_replay) holding 120 vector steps of 2 games."""
    config.seed = seed
    replay = build_replay(config, resolve_settings(config, CPU))
    rng = np.random.default_rng(seed)
    replay.start(rng.integers(0, 256, (2, SIZE, SIZE), dtype=np.uint8))
    for _ in range(120):
        ended = rng.random(2) < 0.05
        replay.add_step(
            rng.integers(ACTIONS, size=2),
            rng.integers(-1, 2, size=2).astype(np.float64),
            ended & (rng.random(2) < 0.5),
            ended,
            rng.integers(0, 256, (2, SIZE, SIZE), dtype=np.uint8),
            rng.integers(0, 256, (2, SIZE, SIZE), dtype=np.uint8),
        )
    return replay


def _learner(config: TrainConfig, compile: bool = False) -> Learner:
    torch.manual_seed(0)
    network = build_network(network_spec(config, ACTIONS))
    return Learner(
        network,
        make_optimizer(config.algo, list(network.parameters())),
        config.algo,
        replay=_replay(config),
        batch_size=16,
        device=CPU,
        compile=compile,
    )


def _means(learner: Learner, updates: int) -> list[float]:
    out = []
    for _ in range(updates):
        learner.update()
        means = learner.take_means()
        assert means is not None
        out += [means[0].item(), means[1].item()]
    return out


def test_each_variant_builds_its_network_from_the_config() -> None:
    heads = {name: type(build_network(network_spec(_config(**v), ACTIONS)).head) for name, v in
             VARIANTS.items()}  # fmt: skip
    assert heads == {
        "dqn": QHead,
        "dueling_double": DuelingHead,
        "c51_3_step": QHead,
        "qr_double": QHead,
        "rainbow": DuelingHead,
        "noisy_dueling_c51": DuelingHead,
    }
    c51 = build_network(network_spec(_config(**VARIANTS["c51_3_step"]), ACTIONS))
    out = c51(torch.zeros(4, FRAMES, SIZE, SIZE, dtype=torch.uint8))
    assert out.logits is not None and out.logits.shape == (4, ACTIONS, 51)
    qr = build_network(network_spec(_config(**VARIANTS["qr_double"]), ACTIONS))
    out = qr(torch.zeros(4, FRAMES, SIZE, SIZE, dtype=torch.uint8))
    assert out.quantiles is not None and out.quantiles.shape == (4, ACTIONS, 8)
    noisy = build_network(network_spec(_config(**VARIANTS["noisy_dueling_c51"]), ACTIONS))
    assert sum(isinstance(m, NoisyLinear) for m in noisy.modules()) == 4  # 2 streams x 2 layers


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_learns_from_the_replay(name: str) -> None:
    learner = _learner(_config(**VARIANTS[name]))
    before = [p.detach().clone() for p in learner.params]
    means = _means(learner, 3)
    assert all(np.isfinite(means)), means
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.params, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variants_update_compiles_as_one_graph_and_matches_eager(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fullgraph=True raises on any graph break: the variant's whole update (sampling, n-step
    gather, its loss, gradients, optimizer) is one graph, as DQN's is."""
    # Inductor draws random numbers (the noisy nets' noise) with its own kernels, from other
    # streams than eager's; with this it calls eager's ops, so that both draw the same noise.
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    torch._dynamo.reset()
    config = _config(**VARIANTS[name])
    eager, compiled = _learner(config), _learner(config, compile=True)
    assert prepare_update(compiled, torch.zeros(2, FRAMES, SIZE, SIZE, dtype=torch.uint8),
                          compile_auto=False, cuda_graph_auto=False) == []  # fmt: skip
    # Noisy nets draw their noise from the global stream: the same state for both runs.
    torch.manual_seed(1)
    compiled_means = _means(compiled, 3)
    torch.manual_seed(1)
    assert compiled_means == pytest.approx(_means(eager, 3), rel=1e-4, abs=1e-6)
    for a, b in zip(compiled.params, eager.params, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- noisy nets


def _noise(network: torch.nn.Module) -> list[torch.Tensor]:
    return [b.clone() for m in noisy_layers(network) for b in (m.noise_in, m.noise_out)]


def test_noisy_nets_explore_with_their_noise_not_epsilon() -> None:
    schedule = Schedule.of(_config(noisy=True))
    assert [schedule.epsilon(step) for step in (0, 50_000, 10**7)] == [0.0, 0.0, 0.0]
    assert Schedule.of(_config()).epsilon(0) == 1.0


def test_noise_is_redrawn_for_every_acting_step_and_every_update_only() -> None:
    learner = _learner(_config(**VARIANTS["noisy_dueling_c51"]))
    obs = torch.zeros(2, FRAMES, SIZE, SIZE, dtype=torch.uint8)
    first = _noise(learner.online)
    q1 = learner.q_online(obs)
    after_act = _noise(learner.online)
    q2 = learner.q_online(obs)
    assert all(not torch.equal(a, b) for a, b in zip(first, after_act, strict=True))
    assert not torch.equal(q1, q2)  # the same state, other noise: other Q-values
    before_update = _noise(learner.online)
    target_before = _noise(learner.target)
    learner.update()
    assert all(
        not torch.equal(a, b) for a, b in zip(before_update, _noise(learner.online), strict=True)
    )
    target_after = _noise(learner.target)
    assert all(not torch.equal(a, b) for a, b in zip(target_before, target_after, strict=True))
    # Taking the mean loss, syncing or evaluating draws nothing.
    still = _noise(learner.online)
    learner.take_means()
    learner.sync_target()
    policy = learner.evaluation_policy()
    policy(obs)
    assert all(torch.equal(a, b) for a, b in zip(still, _noise(learner.online), strict=True))


def test_evaluation_plays_the_mean_weights() -> None:
    learner = _learner(_config(**VARIANTS["noisy_dueling_c51"]))
    obs = torch.randint(0, 256, (2, FRAMES, SIZE, SIZE), dtype=torch.uint8)
    policy = learner.evaluation_policy()
    q = policy(obs)
    learner.q_online(obs)  # new noise in the online network: the mean weights do not see it
    assert torch.equal(policy(obs), q)
    assert torch.equal(learner.evaluation_policy()(obs), q)


def test_compiling_a_noisy_update_at_start_up_draws_from_no_stream() -> None:
    learner = _learner(_config(**VARIANTS["noisy_dueling_c51"]))
    rng = torch.get_rng_state()
    noise = _noise(learner.online)
    learner.dry_run(torch.zeros(2, FRAMES, SIZE, SIZE, dtype=torch.uint8), capture=False)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(noise, _noise(learner.online), strict=True))


# ---------------------------------------------------------------- each preset, end to end

TRAIN = shutil.which("dqn-train") or "dqn-train"
EVAL = shutil.which("dqn-eval") or "dqn-eval"
TINY = [
    "env=Pong",
    "device=cpu",
    "total_steps=400",
    "learning_starts=200",
    "buffer_size=1000",
    "checkpoint_interval=200",
    "eval_interval=0",
    "final_eval_episodes=0",
    "progress_interval_s=60",
]


def _command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["dueling", "c51", "qr_dqn", "prioritized", "rainbow"])
def test_each_preset_trains_is_scored_from_its_checkpoint_alone_and_resumes(
    preset: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    trained = _command(TRAIN, *TINY, f"algo={preset}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    saved = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert (
        saved["network"]
        == network_spec(_preset_config(preset), num_actions=saved["num_actions"]).to_dict()
    )
    # No algo given: the checkpoint says which network it holds.
    scored = _command(EVAL, f"checkpoint={run_dir}", "episodes=1", "max_episode_frames=1000",
                      "device=cpu", cwd=tmp_path)  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-3000:]
    result = json.loads(scored.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 1 and result["checkpoint_step"] == 400
    changed = _command(TRAIN, f"resume={run_dir}", "algo=dqn", cwd=tmp_path)
    assert changed.returncode == 2 and "cannot change" in changed.stderr, changed.stderr[-2000:]
    resumed = _command(TRAIN, f"resume={run_dir}", "total_steps=600", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["agent_steps"] == 600


def _preset_config(preset: str) -> TrainConfig:
    """The preset composed as dqn-train composes it, with TINY's settings."""
    from dqn_atari.cli import CONFIG_DIR, compose, register_schemas, route_game, typed

    register_schemas()
    return typed(compose(CONFIG_DIR, "config", route_game([*TINY, f"algo={preset}"])))  # type: ignore[no-any-return]
