"""`make bench`: run every benchmark module side by side and regenerate docs/BENCHMARKS.md.

Each ``tests/bench/bench_*.py`` exposes ``run() -> dict`` with ``title`` and ``markdown`` (and its raw
``data``). A benchmark that draws writes its PNGs into :data:`PLOTS_DIR` and links them from its markdown
as ``benchmarks/<name>.png``. Numbers in the report come only from this run; a benchmark that fails is
reported as failed. The GPU section is built from the ``nemo-bench`` result files of an H100 run kept
under ``docs/gpu/`` (see docs/BENCHMARKING.md), and says how to produce them when there are none.

``python -m tests.bench.run NAME...`` runs only those benchmarks and writes a report of them alone;
``python -m tests.bench.run --merge NAME...`` puts their sections into the existing report instead, in place of
their earlier ones (or before the GPU section), each saying when it ran: the other sections keep the figures of
their own run.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import platform
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "docs" / "BENCHMARKS.md"
RAW = ROOT / "docs" / "benchmarks.json"
PLOTS_DIR = ROOT / "docs" / "benchmarks"
GPU_RESULTS = ROOT / "docs" / "gpu"
GPU_WORKLOADS = ("isl128-osl128", "isl1000-osl1000", "isl2048-osl2048")
PACKAGES = ["tiktoken", "mistral_common", "torch", "nvidia-modelopt", "transformers", "nvidia-pytriton", "tritonclient"]


def _machine() -> list[str]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return [
        f"- Machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; " + ", ".join(versions),
        f"- Run: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
    ]


def _gpu_section() -> str:
    """The H100 figures from ``docs/gpu/<workload>/results.json`` (written by nemo-bench), or how to get them."""
    from nemo_bench.metrics import LevelSummary
    from nemo_bench.report import console_table

    lines = [
        "## GPU figures (H100, TensorRT-LLM engines)",
        "Produced on a GPU host with the recipe in [BENCHMARKING.md](BENCHMARKING.md): build the default "
        "profile, serve it, then for each workload run "
        "`nemo-bench --grpc-url HOST:8001 --input-tokens N --output-tokens N --concurrency 1,8,32,64,128,256 "
        "--out docs/gpu/islN-oslN` and copy `docs/gpu/` here; `make bench` then renders the tables below from "
        "those files. BENCHMARKING.md compares them with the published Llama-3.1-8B FP8 figures and the "
        "decode roofline.",
    ]
    machine = GPU_RESULTS / "machine.txt"
    if machine.is_file():
        lines.append("GPU run on: " + " ".join(machine.read_text(encoding="utf-8").split()))
    found = False
    for workload in GPU_WORKLOADS:
        results = GPU_RESULTS / workload / "results.json"
        if not results.is_file():
            continue
        found = True
        document = json.loads(results.read_text(encoding="utf-8"))
        levels = [LevelSummary.from_dict(level) for level in document["levels"]]
        plot = GPU_RESULTS / workload / "results.png"
        lines.append(f"### {workload} (started {document['settings'].get('started', '?')})")
        lines.append("```\n" + console_table(levels) + "\n```")
        if plot.is_file():
            lines.append(f"![{workload}](gpu/{workload}/results.png)")
    if not found:
        lines.append(
            f"_No GPU result files in this checkout ({GPU_RESULTS.relative_to(ROOT)}/<workload>/results.json)._"
        )
    return "\n\n".join(lines)


def _sections(report: str) -> list[str]:
    """The report's parts: the preamble, then each ``## `` section."""
    parts = report.split("\n\n## ")
    return [parts[0], *(f"## {part}" for part in parts[1:])]


def _section_name(section: str) -> str | None:
    """The benchmark a section came from (its closing ``_NAME took N s`` line), else None (preamble, GPU)."""
    for line in reversed(section.rstrip().splitlines()):
        if line.startswith("_bench_") and " took " in line:
            return line[1:].split(" took ", 1)[0]
    return None


def merge(report: str, sections: dict[str, str]) -> str:
    """``report`` with each named section put in place of the section of the same benchmark, or, for a new one,
    before the GPU section."""
    parts = _sections(report.rstrip("\n"))
    placed = set()
    for index, part in enumerate(parts):
        name = _section_name(part)
        if name in sections:
            parts[index] = sections[name]
            placed.add(name)
    gpu = next((i for i, part in enumerate(parts) if part.startswith("## GPU figures")), len(parts))
    parts[gpu:gpu] = [section for name, section in sections.items() if name not in placed]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    merging = bool(argv) and argv[0] == "--merge"
    if merging:
        argv = argv[1:]
        if not argv or not REPORT.is_file():
            print("--merge takes the benchmarks to run, and an existing report to merge them into", file=sys.stderr)
            return 2
    names = argv or sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    PLOTS_DIR.mkdir(parents=True, exist_ok=True)
    sections: dict[str, str] = {}
    raw: dict[str, object] = {}
    failed: list[str] = []
    for name in names:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            result = importlib.import_module(f"tests.bench.{name}").run()
        except Exception:
            failed.append(name)
            sections[name] = f"## {name}\n\nFAILED in this run:\n\n```\n{traceback.format_exc()}```\n\n_{name} took -_"
            print(traceback.format_exc(), file=sys.stderr)
            continue
        elapsed = time.perf_counter() - start
        raw[name] = result.get("data", result)
        body = result.get("markdown") or f"```json\n{json.dumps(result, indent=2, default=str)}\n```"
        when = ""
        if merging:
            ran = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            when = f"; run alone at {ran} (`python -m tests.bench.run --merge {name}`); other sections: the run above"
        sections[name] = f"## {result.get('title', name)}\n\n{body}\n\n_{name} took {elapsed:.0f} s{when}._"
    if merging:
        REPORT.write_text(merge(REPORT.read_text(encoding="utf-8"), sections), encoding="utf-8")
        previous = json.loads(RAW.read_text(encoding="utf-8")) if RAW.is_file() else {}
        RAW.write_text(json.dumps({**previous, **raw}, indent=2, default=str) + "\n", encoding="utf-8")
    else:
        report = "\n\n".join(
            [
                "# Benchmarks",
                "Generated by `make bench` (`python -m tests.bench.run`); do not edit by hand. "
                "Figures are medians of repeated runs on the machine below; ratios compare runs made side by side "
                "in the same process.",
                "\n".join(_machine()),
                *sections.values(),
                _gpu_section(),
            ]
        )
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(report + "\n", encoding="utf-8")
        RAW.write_text(json.dumps(raw, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {REPORT.relative_to(ROOT)}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
