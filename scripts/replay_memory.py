"""Measure the bytes of a replay memory: what its tensors hold and what the process gains.

    python scripts/replay_memory.py                 # 1M frames on the CPU, written by 16 games
    python scripts/replay_memory.py --capacity 200000 --device cuda --num-games 1
    python scripts/replay_memory.py --save-dir /tmp/replay   # also time saving and loading it

Prints one JSON object: the tensors' bytes, the formula's bytes, and the growth of the process's
resident memory (CPU) or of torch's allocated memory (CUDA, with its peak) after every slot has
been written, one vector step of `--num-games` games at a time as dqn-train writes them.
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
    parser.add_argument("--num-games", type=int, default=16, help="games writing at once")
    parser.add_argument("--save-dir", type=Path, help="time save() to and load() from here")
    args = parser.parse_args()
    device = torch.device(args.device)
    check_fits(args.capacity, (84, 84), device)

    rss_before = rss_bytes()
    cuda_before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    n = args.num_games
    memory = ReplayMemory(args.capacity, device=device, num_games=n)
    frames = np.random.default_rng(0).integers(0, 256, (n, 84, 84), dtype=np.uint8)
    actions, rewards, no = np.zeros(n, np.int64), np.zeros(n), np.zeros(n, np.bool_)
    start = time.perf_counter()
    memory.start(frames)
    for _ in range(memory.ring_capacity - 1):  # touch every page, as a full run does
        memory.add_step(actions, rewards, no, no, frames, frames)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    fill_s = time.perf_counter() - start
    memory.sample(32)  # the sampling's own buffers count towards the peak
    peak: dict[str, object] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        grown = torch.cuda.memory_allocated(device) - cuda_before
        peak["max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
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
        memory = ReplayMemory(args.capacity, device=device, num_games=n)
        start = time.perf_counter()
        memory.load(args.save_dir)
        report["load_seconds"] = round(time.perf_counter() - start, 1)
    print(
        json.dumps(
            {
                "capacity_frames": args.capacity,
                "num_games": n,
                "device": str(device),
                "tensor_bytes": memory.nbytes,
                "formula_bytes": replay_bytes(args.capacity),
                "measured_growth_bytes": grown,
                "measured_growth_gb": round(grown / 1e9, 3),
                **peak,
                "fill_seconds": round(fill_s, 1),
                "inserts_per_s": round(n * (memory.ring_capacity - 1) / fill_s),
                **report,
            }
        )
    )


if __name__ == "__main__":
    main()
