"""The learner: an update and a target sync, the loop on the recycling chain (it must reach Q*),
and compiling the update at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from dqn_atari.config import AlgoConfig, ConfigError, TrainConfig
from dqn_atari.hooks import RunHooks
from dqn_atari.learner import Learner, prepare_update
from dqn_atari.loop import Schedule, TrainState, select_actions, train
from dqn_atari.losses import QOutput
from dqn_atari.metrics import Metrics
from dqn_atari.networks import NatureQNetwork, q_function
from dqn_atari.optim import make_optimizer
from dqn_atari.replay import ReplayMemory
from dqn_atari.schedules import LinearSchedule
from dqn_atari.vector import InProcessGames


def test_update_moves_online_only_and_sync_copies_it() -> None:
    torch.manual_seed(0)
    net = NatureQNetwork(num_actions=4)
    replay = ReplayMemory(capacity=100, seed=0, max_batch_size=8)
    rng = np.random.default_rng(0)
    replay.start(rng.integers(0, 256, (1, 84, 84), dtype=np.uint8))
    no = np.zeros(1, np.bool_)
    for _ in range(20):
        frame = rng.integers(0, 256, (1, 84, 84), dtype=np.uint8)
        replay.add_step(rng.integers(4, size=1), np.ones(1), no, no, frame, frame)
    algo = AlgoConfig()
    learner = Learner(net, make_optimizer(algo, list(net.parameters())), algo, replay, batch_size=8)
    target_before = [p.clone() for p in learner.target.parameters()]
    online_before = [p.clone() for p in learner.online.parameters()]
    learner.update()
    means = learner.take_means()
    assert means is not None and torch.isfinite(means[0])
    assert all(
        torch.equal(a, b) for a, b in zip(target_before, learner.target.parameters(), strict=True)
    )
    assert not all(
        torch.equal(a, b) for a, b in zip(online_before, learner.online.parameters(), strict=True)
    )
    learner.sync_target()
    assert all(
        torch.equal(a, b)
        for a, b in zip(learner.online.parameters(), learner.target.parameters(), strict=True)
    )


def test_nature_network_shapes_and_uint8_scaling() -> None:
    net = NatureQNetwork(num_actions=6)
    assert net.head[0].in_features == 64 * 7 * 7  # derived by a dummy forward, not hard-coded
    obs = torch.full((2, 4, 84, 84), 255, dtype=torch.uint8)
    q = net(obs).q_values
    assert torch.allclose(q, net(torch.ones(2, 4, 84, 84) * 255.0).q_values)
    assert q.shape == (2, 6)
    small = NatureQNetwork(num_actions=3, frames=2, frame_size=64)
    assert small(torch.zeros(1, 2, 64, 64, dtype=torch.uint8)).q_values.shape == (1, 3)


def test_epsilon_schedule_nature_values() -> None:
    eps = LinearSchedule(1.0, 0.1, 1_000_000, begin_step=50_000)
    assert eps(0) == 1.0
    assert eps(50_000) == 1.0
    assert eps(550_000) == pytest.approx(0.55)
    assert eps(1_050_000) == pytest.approx(0.1)
    assert eps(5_000_000) == pytest.approx(0.1)


# --------------------------------------------------------------------------- recycling chain

LEFT, RIGHT = 0, 1


class RecyclingChain(gym.Env):
    """The 5-state recycling chain of Q-learning courses: S1 (can, +2) and S5 (bin, +10) end
    it; entering S4 gives +1; discount 0.9.

    Observations are one-hot "frames" of shape (stack=1, 1, 5), uint8 255 for the current state,
    so the real replay memory and loop run on it unchanged.
    """

    def __init__(self, seed: int) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (1, 1, 5), np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.num_actions = 2
        self.state = 1
        self.steps = 0
        self.total = 0.0

    def _obs(self) -> np.ndarray:
        obs = np.zeros((1, 1, 5), np.uint8)
        obs[0, 0, self.state] = 255
        return obs

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        self.state, self.steps, self.total = 1, 0, 0.0  # start in S2
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.state += -1 if action == LEFT else 1
        reward = {0: 2.0, 3: 1.0, 4: 10.0}.get(self.state, 0.0)
        self.steps += 1
        self.total += reward
        terminated = self.state in (0, 4)
        truncated = not terminated and self.steps >= 20  # bounds left-right dithering
        info: dict[str, Any] = {"td_terminal": terminated}
        if terminated or truncated:
            info["episode"] = {"r": self.total, "l": self.steps}
        return self._obs(), reward, terminated, truncated, info


class ChainQ(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(5, 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, obs: torch.Tensor) -> QOutput:
        return QOutput(self.body(obs.float() / 255.0))


Q_STAR = {1: (2.0, 9.0), 2: (8.1, 10.0), 3: (9.0, 10.0)}  # S2, S3, S4 (index 1, 2, 3)


def test_loop_converges_to_q_star_on_the_recycling_chain(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = ChainQ()
    config = TrainConfig(
        total_steps=4000,
        learning_starts=200,
        batch_size=32,
        checkpoint_interval=2000,
        eval_interval=0,
        log_interval=500,
        algo=AlgoConfig(
            gamma=0.9,
            optimizer="adam",
            lr=3e-3,
            train_every=1,
            target_update_interval=100,
            epsilon_start=1.0,
            epsilon_end=0.2,
            epsilon_decay_steps=1000,
        ),
    )
    algo = config.algo
    replay = ReplayMemory(capacity=2000, frame_shape=(1, 5), stack=1, seed=0, gamma=algo.gamma)
    learner = Learner(
        net,
        make_optimizer(algo, list(net.parameters())),
        algo,
        replay=replay,
        batch_size=32,
    )
    saved: list[int] = []
    hooks = RunHooks(
        config,
        learner,
        Metrics(tmp_path, total_steps=4000, progress_interval_s=1e9),
        save_checkpoint=lambda s, periodic: saved.append(s.step),
        evaluate_at=None,
        stop_requested=lambda: None,
    )
    state = train(
        InProcessGames([RecyclingChain(seed=0)]),
        learner,
        replay,
        Schedule.of(config),
        TrainState(learn_from_step=200),
        rng=np.random.default_rng(0),
        device=torch.device("cpu"),
        hooks=hooks,
    )
    assert state.step == 4000 and state.updates == 3800
    assert saved == [2000, 4000]

    q = {}
    with torch.no_grad():
        for s in (1, 2, 3):
            obs = np.zeros((1, 1, 1, 5), np.uint8)
            obs[..., s] = 255
            q[s] = net(torch.from_numpy(obs)).q_values[0].tolist()
    for s, (left, right) in Q_STAR.items():
        assert q[s][LEFT] == pytest.approx(left, abs=0.3), (s, q[s])
        assert q[s][RIGHT] == pytest.approx(right, abs=0.3), (s, q[s])

    # The greedy policy from S2 goes right, right, right into the recycling bin.
    env = RecyclingChain(seed=1)
    obs, _ = env.reset()
    actions = []
    for _ in range(3):
        action = int(
            select_actions(
                q_function(net, torch.device("cpu")),
                obs[None],
                0.0,
                2,
                np.random.default_rng(0),
                torch.device("cpu"),
            )[0]
        )
        actions.append(action)
        obs, _, terminated, _, _ = env.step(action)
    assert actions == [RIGHT, RIGHT, RIGHT] and terminated


# ---------------------------------------------------------------- compiling at start-up


class TinyQ(nn.Module):
    """Two stacked 1x5 frames -> 3 Q-values: small enough to compile in seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, obs: torch.Tensor) -> QOutput:
        return QOutput(self.body(obs.float() / 255.0))


def _tiny_learner(compile: bool, backend: Any = "inductor") -> Learner:
    replay = ReplayMemory(capacity=200, frame_shape=(1, 5), stack=2, seed=0, max_batch_size=8)
    rng = np.random.default_rng(0)
    replay.start(rng.integers(0, 256, (1, 1, 5), dtype=np.uint8))
    no = np.zeros(1, np.bool_)
    for _ in range(60):
        frame = rng.integers(0, 256, (1, 1, 5), dtype=np.uint8)
        replay.add_step(rng.integers(3, size=1), rng.normal(size=1), no, no, frame, frame)
    torch.manual_seed(0)
    net = TinyQ()
    algo = AlgoConfig(optimizer="adam", lr=1e-2)
    return Learner(
        net,
        make_optimizer(algo, list(net.parameters())),
        algo,
        replay=replay,
        batch_size=8,
        compile=compile,
        compile_backend=backend,
    )


def _losses(learner: Learner, updates: int) -> list[float]:
    losses = []
    for _ in range(updates):
        learner.update()
        means = learner.take_means()  # of the one update since the last call
        assert means is not None
        losses.append(means[0].item())
    return losses


def _broken_compiler(gm: Any, example_inputs: Any) -> Any:
    """A torch.compile backend that fails as a missing or broken compiler would."""
    raise RuntimeError("this compiler is broken")


EXAMPLE_OBS = torch.zeros((1, 2, 1, 5), dtype=torch.uint8)


@pytest.mark.slow
def test_the_compiled_update_and_act_forward_compile_once() -> None:
    """Compiled once, never again: a recompile is a second first-update stall (the sampler's
    batch range, built lazily inside the compiled update, once failed its guards)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    learner = _tiny_learner(compile=True)
    _losses(learner, 4)
    assert counters["stats"]["unique_graphs"] == 1  # dynamo's own count of graphs compiled
    for _ in range(3):
        learner.q_online(EXAMPLE_OBS)
    assert counters["stats"]["unique_graphs"] == 2


@pytest.mark.slow
def test_compiling_at_start_up_changes_no_weight_and_no_random_stream() -> None:
    """prepare_update runs the real compiled update once, before acting, and puts back every
    tensor it wrote: the run then makes the very updates it would have made without it."""
    torch._dynamo.reset()
    plain = _tiny_learner(compile=True)
    expected = _losses(plain, 3)
    prepared = _tiny_learner(compile=True)
    assert prepared.replay is not None
    generator = prepared.replay.sampler.state_dict()["generator"]
    torch_rng = torch.get_rng_state()
    before = [p.detach().clone() for p in prepared.params]
    assert prepare_update(prepared, EXAMPLE_OBS, compile_auto=False, cuda_graph_auto=False) == []
    assert prepared.compiled
    for a, b in zip(prepared.params, before, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(prepared.replay.sampler.state_dict()["generator"], generator)
    assert torch.equal(torch.get_rng_state(), torch_rng)
    assert prepared.take_means() is None  # no update was counted or summed
    assert _losses(prepared, 3) == expected
    for a, b in zip(prepared.params, plain.params, strict=True):
        assert torch.equal(a, b)


def test_a_failing_compiler_with_compile_auto_falls_back_to_eager_with_one_warning() -> None:
    torch._dynamo.reset()
    broken = _tiny_learner(compile=True, backend=_broken_compiler)
    before = [p.detach().clone() for p in broken.params]
    warnings = prepare_update(broken, EXAMPLE_OBS, compile_auto=True, cuda_graph_auto=True)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("compile=auto: the compiled update fails on cpu")
    assert "this compiler is broken" in warnings[0] and "eagerly" in warnings[0]
    assert not broken.compiled
    for a, b in zip(broken.params, before, strict=True):
        assert torch.equal(a, b)
    # Eager from then on: the same updates as a learner that never tried to compile.
    assert _losses(broken, 3) == _losses(_tiny_learner(compile=False), 3)


def test_a_failing_compiler_with_compile_true_is_a_one_line_config_error() -> None:
    torch._dynamo.reset()
    broken = _tiny_learner(compile=True, backend=_broken_compiler)
    with pytest.raises(ConfigError) as caught:
        prepare_update(broken, EXAMPLE_OBS, compile_auto=False, cuda_graph_auto=False)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("compile=true, but the compiled update fails on cpu")
    assert "this compiler is broken" in message and "compile=false" in message
