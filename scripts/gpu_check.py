"""Helpers of scripts/gpu_check.sh: the environment it runs in, and its one report.

    python scripts/gpu_check.py info --device cuda --out OUT/stages/info.json
    python scripts/gpu_check.py report OUT

`info` prints and records which python, torch, CUDA and GPU the check runs on and which of
dqn-atari's dependencies can be imported (and from where); it exits 1 when the device cannot be
used or a dependency dqn-train needs is missing, so the check stops before stages that would all
fail. `report` gathers every stage's status and figures into OUT/gpu_check.json and prints one
table. The report imports only the standard library, so it works whatever else is broken.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

# Import name -> distribution, for what dqn-train needs; the optional ones only skip a stage.
REQUIRED = {
    "numpy": "numpy",
    "gymnasium": "gymnasium",
    "ale_py": "ale-py",
    "cv2": "opencv-python-headless",
    "tensorboard": "tensorboard",
    "hydra": "hydra-core",
    "omegaconf": "omegaconf",
    "antlr4": "antlr4-python3-runtime",
    "farama_notifications": "farama-notifications",
    # Their own dependencies, which a torch install may or may not bring.
    "cloudpickle": "cloudpickle",
    "yaml": "PyYAML",
    "packaging": "packaging",
    "typing_extensions": "typing-extensions",
}
OPTIONAL = {"pytest": "pytest", "stable_baselines3": "stable-baselines3"}
TABLE_FIGURE_WIDTH = 96


def module_version(name: str, distribution: str | None = None) -> dict[str, str]:
    try:
        module = importlib.import_module(name)
    except Exception as err:  # a broken install fails with more than ImportError
        return {"error": f"{type(err).__name__}: {err}"}
    version = getattr(module, "__version__", None)
    if version is None and distribution is not None:
        try:  # unpacked wheels keep their .dist-info beside the package
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            version = "?"
    return {"version": str(version), "from": str(Path(module.__file__ or "?").parent)}


def info(device: str, out: Path) -> int:
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "pythonpath": os.environ.get("PYTHONPATH", ""),
    }
    problems = []
    try:
        import torch
    except ImportError as err:
        problems.append(f"torch cannot be imported: {err}")
    else:
        report["torch"] = torch.__version__
        report["torch_cuda"] = torch.version.cuda
        report["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            index = torch.device(device).index or 0 if device.startswith("cuda") else 0
            gpu = torch.cuda.get_device_properties(index)
            report["gpu"] = gpu.name
            report["gpu_memory_bytes"] = gpu.total_memory
            report["gpu_capability"] = f"{gpu.major}.{gpu.minor}"
            report["gpu_count"] = torch.cuda.device_count()
            report["bf16_supported"] = torch.cuda.is_bf16_supported()
            report["cudnn"] = torch.backends.cudnn.version()
        if device.startswith("cuda") and not torch.cuda.is_available():
            problems.append(
                f"--device {device} but torch {torch.__version__} sees no CUDA device "
                "(torch.cuda.is_available() is False); use --device cpu for the non-CUDA parts"
            )
    distributions = {**REQUIRED, **OPTIONAL, "dqn_atari": "dqn-atari"}
    packages = {name: module_version(name, dist) for name, dist in distributions.items()}
    report["packages"] = packages
    missing = [REQUIRED[n] for n in REQUIRED if "error" in packages[n]]
    if missing:
        problems.append(
            f"missing: {', '.join(missing)} (unpack their wheels into a folder on PYTHONPATH; "
            "see README, On a GPU)"
        )
    # The CLI module imports everything dqn-train uses: a broken install shows here.
    cli = module_version("dqn_atari.cli")
    if "error" in cli:
        problems.append(f"dqn_atari.cli cannot be imported: {cli['error']}")
    report["optional_missing"] = [OPTIONAL[n] for n in OPTIONAL if "error" in packages[n]]
    report["problems"] = problems
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(environment_line(report))
    for name, found in packages.items():
        print(
            f"  {name:22s} {found.get('version', '-'):14s} {found.get('from', found.get('error'))}"
        )
    for problem in problems:
        print(f"gpu_check: {problem}", file=sys.stderr)
    return 1 if problems else 0


def environment_line(env: dict[str, Any]) -> str:
    gpu = (
        f"{env['gpu']} ({env['gpu_memory_bytes'] / 2**30:.0f} GiB), CUDA {env['torch_cuda']}"
        if env.get("gpu")
        else "no CUDA device"
    )
    return (
        f"python {env.get('python')}, torch {env.get('torch', '-')}, {gpu}, "
        f"{env.get('cpu_count')} cores"
    )


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def summarize(stage: str, figures: Any) -> str:
    """One line of the table: the figures that matter of one stage's JSON."""
    if not isinstance(figures, dict):
        return ""
    if stage == "info":
        return environment_line(figures)
    if stage == "pytest":
        return (
            f"{figures['passed']} passed, {figures['failed']} failed, {figures['skipped']} skipped"
        )
    if stage == "replay_1m":
        return (
            f"{fmt(figures['tensor_bytes'] / 1e9, 2)} GB ({figures['tensor_bytes']:,} bytes; "
            f"+{fmt(figures['measured_growth_bytes'] / 1e9, 2)} GB measured), filled in "
            f"{figures['fill_seconds']} s ({figures['inserts_per_s']:,} inserts/s)"
        )
    parts = []
    for setting, runs in figures.get("end_to_end_dqn_train", {}).items():
        for name, run in (runs if "skipped" not in runs else {"": runs["skipped"]}).items():
            value = (
                f"{fmt(run['agent_steps_per_s_learning'])} agent steps/s"
                if isinstance(run, dict)
                else str(run)[:60]
            )
            parts.append(f"{setting} {name}: {value}".replace(" :", ":"))
    if "baseline_sb3_dqn" in figures:
        base = figures["baseline_sb3_dqn"]
        parts.append(
            f"SB3 DQN: {fmt(base['agent_steps_per_s_learning'])} agent steps/s"
            if isinstance(base, dict)
            else f"SB3 DQN {base[:70]}"
        )
    for name, rates in figures.get("learner_batch32", {}).items():
        parts.append(
            f"{name}: {fmt(rates['updates_per_s_with_sampling'])} updates/s with sampling"
            if isinstance(rates, dict)
            else f"{name}: {rates}"
        )
    if "replay" in figures:
        replay = figures["replay"]
        games = next((k for k in replay if k.endswith("_games")), None)
        parts.append(f"insert {fmt(replay['insert_transitions_per_s'], 0)}/s")
        if games:
            parts.append(f"{games.split('per_s_')[1]} {fmt(replay[games], 0)}/s")
        parts.append(f"sample {fmt(replay['sample_batches32_per_s'], 0)} batches of 32/s")
    if "ops_per_agent_step" in figures:
        ops = figures["ops_per_agent_step"]
        top = ", ".join(f"{n} {v}" for n, v in list(ops["top_ops_per_agent_step"].items())[:3])
        parts.append(f"{fmt(ops['ops_per_agent_step'])} aten ops/agent step (top: {top})")
        if "device_kernels_and_copies_per_agent_step" in ops:
            kernels = ops["device_kernels_and_copies_per_agent_step"]
            parts.append(f"{fmt(kernels)} device kernels+copies/agent step")
    if "raw_emulator_frames_per_s" in figures:
        parts.append(f"raw ALE {fmt(figures['raw_emulator_frames_per_s'], 0)} frames/s")
        for name, value in figures["phi_agent_steps_per_s"].items():
            parts.append(f"phi {name}: {fmt(value, 0)} agent steps/s")
    if "variants" in figures:
        variants = figures["variants"]
        parts.append(
            "updates/s vs DQN: "
            + ", ".join(f"{n} {r:.2f}x" for n, r in variants["against_dqn"].items() if n != "dqn")
        )
    return "; ".join(parts)


def pytest_figures(xml_path: Path) -> dict[str, int] | None:
    """Counts of a JUnit XML report written by pytest --junitxml."""
    if not xml_path.is_file():
        return None
    root = ET.parse(xml_path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return None
    tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    return {"tests": tests, "passed": tests - skipped - failed, "failed": failed,
            "skipped": skipped}  # fmt: skip


def log_tail(path: Path, lines: int = 15) -> str:
    if not path.is_file():
        return ""
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def report(out: Path) -> int:
    stages_dir = out / "stages"
    meta = json.loads((out / "check.json").read_text()) if (out / "check.json").is_file() else {}
    stages: dict[str, dict[str, Any]] = {}
    status_file = out / "stages.tsv"
    rows = status_file.read_text().splitlines() if status_file.is_file() else []
    for row in rows:
        name, status, rc, seconds, limit_s, reason = (row.split("\t") + [""] * 6)[:6]
        entry: dict[str, Any] = {
            "status": status,
            "exit_code": int(rc) if rc.lstrip("-").isdigit() else None,
            "seconds": float(seconds or 0),
            "limit_s": int(limit_s or 0),
        }
        if reason:
            entry["reason"] = reason
        figures: Any = None
        if name == "pytest":
            figures = pytest_figures(stages_dir / "pytest.xml")
        elif (stages_dir / f"{name}.json").is_file():
            try:
                figures = json.loads((stages_dir / f"{name}.json").read_text())
            except json.JSONDecodeError as err:
                entry["reason"] = f"unreadable figures: {err}"
        if status == "ok" and figures is None:
            # A stage that ends well writes its figures; without them it did not do its job.
            entry["status"] = status = "failed"
            entry["reason"] = entry.get("reason") or "exited 0 without writing its figures"
        entry["figures"] = figures
        log = out / "logs" / f"{name}.log"
        if log.is_file():
            entry["log"] = str(log)
            if status not in ("ok", "skipped"):
                entry["log_tail"] = log_tail(log)
        stages[name] = entry
    result = {**meta, "stages": stages}
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")

    print()
    title = f"dqn-atari GPU check: device {meta.get('device', '?')}"
    if meta.get("quick"):
        title += " (--quick: tiny settings, figures not comparable)"
    print(title)
    env = stages.get("info", {}).get("figures")
    if isinstance(env, dict):
        print(environment_line(env))
    print(f"{'stage':26s} {'status':8s} {'seconds':>8s}  figures")
    for name, entry in stages.items():
        text = summarize(name, entry["figures"]) or entry.get("reason", "")
        if entry["status"] not in ("ok", "skipped") and entry.get("reason"):
            text = f"{entry['reason']}; {text}" if text != entry["reason"] else text
        lines = textwrap.wrap(text, TABLE_FIGURE_WIDTH) or [""]
        print(f"{name:26s} {entry['status']:8s} {entry['seconds']:8.1f}  {lines[0]}")
        for line in lines[1:]:
            print(f"{'':45s}{line}")
    total = meta.get("total_seconds")
    bad = [n for n, e in stages.items() if e["status"] not in ("ok", "skipped")]
    print(
        f"total {total} s; {len(stages) - len(bad)} of {len(stages)} stages ok or skipped"
        + (f"; not ok: {', '.join(bad)} (logs in {out / 'logs'})" if bad else "")
    )
    print(f"JSON: {out / 'gpu_check.json'}")
    return 1 if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    info_parser = sub.add_parser("info", help="record the environment; exit 1 if unusable")
    info_parser.add_argument("--device", default="cuda")
    info_parser.add_argument("--out", type=Path, required=True)
    report_parser = sub.add_parser("report", help="gather the stages into one JSON and a table")
    report_parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    if args.command == "info":
        sys.exit(info(args.device, args.out))
    sys.exit(report(args.out_dir))


if __name__ == "__main__":
    main()
