"""Measure the bytes of a replay memory: what its tensors hold and what the process gains.

    python scripts/replay_memory.py                 # 1M frames on the CPU
    python scripts/replay_memory.py --capacity 200000 --device cuda
    python scripts/replay_memory.py --save-dir /tmp/replay   # also time saving and loading it

Prints one JSON object: the tensors' bytes, the formula's bytes, and the growth of the process's
resident memory (CPU) or of torch's allocated memory (CUDA) after every slot has been written.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from dqn_atari.replay import ReplayMemory, check_fits, replay_bytes


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=1_000_000, help="slots (frames)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--save-dir", type=Path, help="time save() to and load() from here")
    args = parser.parse_args()
    device = torch.device(args.device)
    check_fits(args.capacity, (84, 84), device)

    rss_before = rss_bytes()
    cuda_before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    memory = ReplayMemory(args.capacity, device=device)
    frame = np.random.default_rng(0).integers(0, 256, (84, 84), dtype=np.uint8)
    start = time.perf_counter()
    memory.start_episode(frame)
    for _ in range(args.capacity - 1):  # touch every page, as a full run does
        memory.add(0, 0.0, False, False, frame)
    fill_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        grown = torch.cuda.memory_allocated(device) - cuda_before
    else:
        grown = rss_bytes() - rss_before
    report: dict[str, object] = {}
    if args.save_dir is not None:
        rss_before_save = rss_bytes()
        start = time.perf_counter()
        memory.save(args.save_dir)
        save_s = time.perf_counter() - start
        report["save_seconds"] = round(save_s, 1)
        report["save_mb_per_s"] = round(memory.nbytes / save_s / 1e6)
        report["save_rss_growth_bytes"] = rss_bytes() - rss_before_save
        del memory
        memory = ReplayMemory(args.capacity, device=device)
        start = time.perf_counter()
        memory.load(args.save_dir)
        report["load_seconds"] = round(time.perf_counter() - start, 1)
    print(
        json.dumps(
            {
                "capacity_frames": args.capacity,
                "device": str(device),
                "tensor_bytes": memory.nbytes,
                "formula_bytes": replay_bytes(args.capacity),
                "measured_growth_bytes": grown,
                "measured_growth_gb": round(grown / 1e9, 3),
                "fill_seconds": round(fill_s, 1),
                "inserts_per_s": round((args.capacity - 1) / fill_s),
                **report,
            }
        )
    )


if __name__ == "__main__":
    main()
