"""How large Adam's steps are, per parameter tensor, from a checkpoint: are the gradients big
enough for the learning rate to be the step size, or does Adam's epsilon shrink the steps?

    python scripts/optimizer_state.py runs/Pong/2026-12-05_07-17-00/checkpoints/latest.pt

Adam (Kingma and Ba, 2015, Algorithm 1) moves each weight by lr * m_hat / (sqrt(v_hat) + eps),
v_hat = v / (1 - beta2^t) the bias-corrected mean of its squared gradients. Where sqrt(v_hat) is
well above eps the step is about lr whatever the gradient's scale; where it is well below, the
step is about lr * m_hat / eps, as many times smaller than lr as eps is larger than the root.
Prints, per tensor of the online network, the median sqrt(v_hat), the share of its weights whose
sqrt(v_hat) is above eps, and the median of sqrt(v_hat) / (sqrt(v_hat) + eps): the factor by
which eps scales a typical weight's step (1 = undamped).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NamedTuple

import torch

from dqn_atari.checkpoint import CheckpointError, load_checkpoint
from dqn_atari.networks import NetworkSpec, build_network

BETA2 = 0.999  # dqn_atari.optim.Adam's second-moment decay


class TensorSteps(NamedTuple):
    median_root: float  # median over the tensor's weights of sqrt(v_hat), gradient units
    share_above_eps: float  # fraction of its weights with sqrt(v_hat) > eps
    median_step_factor: float  # median of sqrt(v_hat) / (sqrt(v_hat) + eps)


def adam_steps(checkpoint: dict[str, Any]) -> tuple[float, dict[str, TensorSteps]]:
    """(eps, per online-network tensor its TensorSteps) of a dqn-atari checkpoint trained with
    Adam; ValueError with a one-line reason otherwise."""
    algo = checkpoint.get("config", {}).get("algo", {})
    optimizer = checkpoint.get("learner", {}).get("optimizer", {})
    if optimizer.get("name") != "adam":
        raise ValueError(f"the checkpoint's optimizer is {optimizer.get('name')}, not adam")
    eps = float(algo["adam_eps"])
    if "network" not in checkpoint:
        raise ValueError("the checkpoint records no network spec to name the parameters by")
    # The optimizer's moments follow named_parameters(); the state dict also holds buffers.
    network = build_network(NetworkSpec.from_dict(checkpoint["network"]))
    names = [name for name, _ in network.named_parameters()]
    squares = optimizer["exp_avg_sq"]
    if len(names) != len(squares):
        raise ValueError(f"{len(squares)} second moments for {len(names)} parameter tensors")
    step = float(optimizer["step"])
    if step < 1:
        raise ValueError("the optimizer has taken no step yet")
    correction = 1.0 - BETA2**step
    out = {}
    for name, square in zip(names, squares, strict=True):
        root = (square.double() / correction).sqrt().flatten()
        out[name] = TensorSteps(
            root.median().item(),
            (root > eps).double().mean().item(),
            (root / (root + eps)).median().item(),
        )
    return eps, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint file or a run's checkpoints/")
    args = parser.parse_args()
    try:
        eps, steps = adam_steps(load_checkpoint(args.checkpoint))
    except (CheckpointError, ValueError, KeyError) as err:
        sys.exit(f"optimizer_state: {args.checkpoint}: {err}")
    print(f"Adam eps {eps:.3g}")
    print(f"{'tensor':24s} {'median sqrt(v_hat)':>19s} {'share > eps':>12s} {'step factor':>12s}")
    for name, row in steps.items():
        print(
            f"{name:24s} {row.median_root:19.3g} {row.share_above_eps:12.3f} "
            f"{row.median_step_factor:12.3g}"
        )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
