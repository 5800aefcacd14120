"""summary.json on its own: protocol names, atomic writes, what counts as done, segments across
resumes, and a stop request during the final evaluation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from dqn_atari import __version__
from dqn_atari.envs import AtariOptions
from dqn_atari.evaluation import EvalResult, play_games
from dqn_atari.networks import NatureQNetwork, q_function
from dqn_atari.summary import (
    SUMMARY,
    RunFacts,
    RunRecord,
    is_done,
    protocol_name,
    read_summary,
    write_json_atomic,
)


def test_protocol_is_named_from_the_env_settings() -> None:
    assert protocol_name(0.0, 30) == "Nature"
    assert protocol_name(0.25, 0) == "Machado"
    assert protocol_name(0.25, 30) == "Machado"
    assert protocol_name(0.0, 0) == "custom (sticky_action_prob=0, noop_max=0)"
    assert protocol_name(0.1, 30) == "custom (sticky_action_prob=0.1, noop_max=30)"


def test_json_is_replaced_atomically_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def facts(**changes: object) -> RunFacts:
    base = dict(
        game="Pong",
        rom="pong",
        seed=3,
        protocol="Nature",
        algo="dqn",
        device="cpu",
        total_steps=1000,
        frame_skip=4,
        final_eval_episodes=2,
        eval_epsilon=0.05,
        overrides=["env=Pong", "seed=3"],
        config={"seed": 3},
    )
    base.update(changes)
    return RunFacts(**base)  # type: ignore[arg-type]


def test_a_stopped_then_finished_run_sums_its_segments(tmp_path: Path) -> None:
    first = RunRecord(tmp_path, facts(), start_step=0, started_s=time.monotonic(), resumed=False)
    first.loop_start_s, first.loop_end_s = 100.0, 102.0  # 400 agent steps in 2 s of loop
    stopped = first.write("stopped", 400, stopped_by="SIGTERM")
    assert stopped["status"] == "stopped" and stopped["stopped_by"] == "SIGTERM"
    assert stopped["agent_steps"] == 400 and stopped["frames"] == 1600
    assert stopped["evaluation"] is None and stopped["version"] == __version__
    assert not is_done(stopped, 1000, 2)

    second = RunRecord(tmp_path, facts(), start_step=400, started_s=time.monotonic(), resumed=True)
    assert [s["end_step"] for s in second.segments] == [400]
    second.loop_start_s, second.loop_end_s = 200.0, 206.0  # 600 more in 6 s
    result = EvalResult(returns=[-21.0, -19.0], lengths=[800, 820])
    done = second.write("finished", 1000, final=result)
    assert [(s["start_step"], s["end_step"]) for s in done["segments"]] == [(0, 400), (400, 1000)]
    assert [s["train_s"] for s in done["segments"]] == [2.0, 6.0]
    assert done["agent_steps_per_s"] == 125.0  # 1000 agent steps in 8 s of training loop
    assert done["evaluation"] == {
        "kind": "final",
        "agent_step": 1000,
        "epsilon": 0.05,
        "episodes": 2,
        "return_mean": -20.0,
        "return_std": 1.0,
        "returns": [-21.0, -19.0],
        "lengths": [800, 820],
        "steps": 1620,
    }
    assert read_summary(tmp_path) == done
    assert is_done(done, 1000, 2)
    assert not is_done(done, 2000, 2)  # asked to train longer
    assert not is_done(done, 1000, 30)  # asked for another final evaluation
    assert is_done({**done, "evaluation": None}, 1000, 0)


def test_the_last_periodic_evaluation_is_kept_for_a_stopped_run(tmp_path: Path) -> None:
    record = RunRecord(tmp_path, facts(), start_step=0, started_s=time.monotonic(), resumed=False)
    evaluate_at = record.remember(lambda step: EvalResult([float(step)], [10]), 0.05)
    evaluate_at(200)
    evaluate_at(400)
    summary = record.write("diverged", 450, error="training diverged by agent step 450")
    assert summary["evaluation"]["kind"] == "periodic"
    assert summary["evaluation"]["agent_step"] == 400
    assert summary["evaluation"]["returns"] == [400.0]
    assert summary["error"].startswith("training diverged")


def test_a_summary_of_another_format_is_not_read(tmp_path: Path) -> None:
    (tmp_path / SUMMARY).write_text('{"status": "finished"}')
    assert read_summary(tmp_path) is None
    (tmp_path / SUMMARY).write_text("{not json")
    assert read_summary(tmp_path) is None


def test_status_must_be_known(tmp_path: Path) -> None:
    record = RunRecord(tmp_path, facts(), start_step=0, started_s=time.monotonic(), resumed=False)
    with pytest.raises(ValueError, match="status must be one of"):
        record.write("crashed", 10)


def test_a_stop_request_ends_the_final_evaluation_at_once() -> None:
    """A final evaluation of 30 games can take minutes; a stop request ends it within a step."""
    asked = iter([False] * 5 + [True] * 1000)
    steps = []

    def stop_requested() -> bool:
        steps.append(1)
        return next(asked)

    net = NatureQNetwork(6)
    result = play_games(
        q_function(net, torch.device("cpu")),
        "Pong",
        AtariOptions().for_evaluation(18_000),
        30,
        0.05,
        env_seed=102,
        rng_seed=[0, 100, 1],
        device=torch.device("cpu"),
        stop_requested=stop_requested,
    )
    assert result is None
    assert len(steps) == 6  # asked before every agent step; the sixth ends it
