"""Step 7 of ``make gpu-check``: ``results.json``, ``README.md`` and the bench files in the results folder."""

from __future__ import annotations

import datetime as dt
import json
import platform
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nemo_build.preflight import NGC_IMAGE, Gpu
from nemo_build.profiles import Profile
from nemo_ops.accuracy.report import save_accuracy
from nemo_ops.gpu_check.compare import render_comparison
from nemo_ops.gpu_check.plan import TARGET_RUNTIME
from nemo_ops.gpu_check.preflight import Facts
from nemo_ops.steps import StepRecord

# Where the dated results folders go unless --results-root says otherwise: relative to the current directory, which
# is the project root under `make gpu-check` (docs/gpu/ holds the committed runs, see docs/gpu/README.md).
DEFAULT_RESULTS_ROOT = Path("docs/gpu")


def slug(text: str) -> str:
    """``NVIDIA H100 80GB HBM3`` → ``h100-80gb-hbm3``."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words.removeprefix("nvidia-") or "unknown"


def default_results_dir(day: dt.date, gpus: Sequence[Gpu], profile: str, parent: Path = DEFAULT_RESULTS_ROOT) -> Path:
    """``<parent>/<UTC date>-<gpu>-<profile>``, with ``-2``, ``-3`` … when a run of the day is there already."""
    base = f"{day.isoformat()}-{slug(gpus[0].name) if gpus else 'no-gpu'}-{slug(profile)}"
    candidate, n = parent / base, 2
    while candidate.exists():
        candidate, n = parent / f"{base}-{n}", n + 1
    return candidate


def model_summary(model_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        config = {}
    keys = ("architectures", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "vocab_size", "max_position_embeddings")  # fmt: skip
    return {"name": model_dir.resolve().name, **{key: config[key] for key in keys if key in config}}


@dataclass
class Run:
    """Everything the report says, filled in as the steps run."""

    started: dt.datetime
    model_dir: Path
    profile_name: str
    profile: Profile | None = None
    facts: Facts = field(default_factory=Facts)
    repository: Path | None = None
    launcher: str | None = None
    target: str | None = None
    smoke: dict[str, Any] = field(default_factory=dict)
    bench: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)  # a nemo-accuracy run document, per-sample scores included
    long_context: dict[str, Any] = field(default_factory=dict)

    @property
    def runtime(self) -> str | None:
        """What served: the repository's target when it was served, else the profile's runtime."""
        if self.target is not None:
            return TARGET_RUNTIME.get(self.target, self.target)
        return self.profile.runtime if self.profile else None

    def document(self, steps: Sequence[StepRecord]) -> dict[str, Any]:
        trtllm = None if self.target == "cpu" else self.facts.trtllm_version
        return {
            "kind": "gpu-check",
            "started": self.started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": {
                "gpus": [
                    {"name": g.name, "compute_capability": ".".join(map(str, g.compute_capability))}
                    for g in self.facts.gpus
                ],
                "driver": self.facts.driver,
                "gpu_memory": self.facts.gpu_memory,
                "tensorrt_llm": trtllm,
                "engine_builder": self.facts.builder,
                "triton_launcher": self.launcher,
                "triton_image": NGC_IMAGE if self.launcher == "docker" else None,
                "platform": platform.platform(),
            },
            "profile": self.profile.as_dict() if self.profile else {"name": self.profile_name},
            "model": model_summary(self.model_dir),
            "repository_target": self.target,
            "runtime": self.runtime,
            "steps": [asdict(record) for record in steps],
            "smoke": self.smoke,
            "bench": self.bench,
            "long_context": self.long_context,
            "accuracy": {  # the per-sample scores are in accuracy/<precision>.json
                name: {key: task[key] for key in ("lm_eval_task", "fewshot", "metric", "score", "n")}
                for name, task in self.accuracy.get("tasks", {}).items()
            },
        }


def _cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_readme(doc: dict[str, Any]) -> str:
    """The human summary of a results.json."""
    machine, smoke_doc = doc["machine"], doc["smoke"]
    gpu = ", ".join(f"{g['name']} (CC {g['compute_capability']})" for g in machine["gpus"]) or "no GPU"
    lines = [
        f"# gpu-check {doc['started'][:10]}: {gpu}, profile `{doc['profile']['name']}`",
        "",
        f"Made by `make gpu-check` (`python -m nemo_ops.gpu_check`) from {doc['started']} to {doc['finished']}. "
        "Every figure below is in `results.json`; the bench files are in `bench/`.",
        "",
        "| machine | |",
        "| --- | --- |",
        f"| GPU | {_cell(gpu)} |",
        f"| driver | {_cell(machine['driver'])} |",
        f"| GPU memory | {_cell(machine['gpu_memory'])} |",
        f"| TensorRT-LLM | {_cell(machine['tensorrt_llm'])} |",
        f"| runtime | {_cell(doc.get('runtime'))} |",
        f"| built by | {_cell(machine['engine_builder'])} |",
        f"| Triton launcher | {_cell(' '.join(filter(None, (machine['triton_launcher'], machine['triton_image']))))} |",
        f"| model | {_cell(doc['model'].get('name'))} |",
        "",
        "| step | status | seconds | note |",
        "| --- | --- | ---: | --- |",
        *(f"| {s['number']} {s['name']} | {s['status']} | {s['seconds']:.1f} | {_cell(s['detail'])} |"
          for s in doc["steps"]),
        "",
        "## Smoke (openai SDK through nemo-gateway, temperature 0)",
        "",
        "| request | finish | latency s | completion tokens | reply |",
        "| --- | --- | ---: | ---: | --- |",
    ]  # fmt: skip
    rows = [("chat", smoke_doc.get("chat")), ("stream", smoke_doc.get("stream")), ("tool call", smoke_doc.get("tools"))]
    if smoke_doc.get("tools"):
        rows.append(("tool result → answer", smoke_doc["tools"]["final"]))
    for name, record in rows:
        if not record:
            continue
        reply = record["reply"] if record.get("reply") else json.dumps(record.get("tool_calls"), ensure_ascii=False)
        tokens = (record.get("usage") or {}).get("completion_tokens")
        lines.append(
            f"| {name} | {record['finish_reason']} | {record['latency_s']:.2f} | {_cell(tokens)} | {_cell(reply)} |"
        )
    bench_doc = doc["bench"]
    if bench_doc:
        workload = bench_doc["settings"].get("workload", {})
        lines += [
            "",
            f"## nemo-bench through the gateway (ISL {workload.get('input_tokens')} / OSL "
            f"{workload.get('output_tokens')}, ignore_eos {bench_doc['settings'].get('ignore_eos')})",
            "",
            "| concurrency | ok/sent | req/s | out tok/s | TTFT p50 / p99 ms | ITL p50 / p99 ms | e2e p50 / p99 ms |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in bench_doc["levels"]:
            lines.append(
                f"| {row['concurrency']:g} | {row['successes']}/{row['requests']} | "
                f"{_cell(row['request_throughput'], 2)} | {_cell(row['output_token_throughput'])} | "
                + " | ".join(
                    f"{_cell(row[f'{m}_p50_ms'])} / {_cell(row[f'{m}_p99_ms'])}" for m in ("ttft", "itl", "e2e")
                )
                + " |"
            )
        lines += ["", "![throughput vs latency](bench/results.png)"]
    lines += render_long_context(doc.get("long_context") or {})
    return "\n".join(lines) + "\n"


def render_long_context(long_context: dict[str, Any]) -> list[str]:
    """The long-context step's table: each haystack, where its needle was, the answer and the TTFT."""
    if not long_context:
        return []
    lines = [
        "",
        "## Long context: a needle in a haystack (one request at a time, streamed, temperature 0)",
        "",
        "| prompt tokens | needle depth | found | TTFT s | e2e s | answer |",
        "| ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for r in long_context["results"]:
        lines.append(
            f"| {r['prompt_tokens']} | {r['needle_depth']:.2f} | {'yes' if r['found'] else 'no'} | "
            f"{_cell(r['ttft_s'], 2)} | {_cell(r['e2e_s'], 2)} | {_cell(r['answer'])} |"
        )
    lines += [f"- {size} tokens: skipped ({why})" for size, why in long_context["skipped"].items()]
    return lines


def write_report(results_dir: Path, doc: dict[str, Any], bench_dir: Path, accuracy_run: dict[str, Any]) -> None:
    """Step 7: results.json, README.md and the bench files in ``results_dir``; with an accuracy run, accuracy/."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "results.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    readme = render_readme(doc)
    if accuracy_run:
        readme += "\n" + save_accuracy(results_dir / "accuracy", [accuracy_run])
    (results_dir / "README.md").write_text(readme, encoding="utf-8")
    copied = results_dir / "bench"
    copied.mkdir(exist_ok=True)
    for name in ("results.json", "results.csv", "results.png"):
        if (bench_dir / name).is_file():
            shutil.copy2(bench_dir / name, copied / name)
    print(f"  wrote {results_dir}/results.json, README.md and bench/")


def write_comparison(results_dir: Path, doc: dict[str, Any], accuracy_runs: Sequence[dict[str, Any]]) -> None:
    """The compare step's side by side: comparison.json and README.md at the top of ``results_dir``; with accuracy
    runs, their table (FP8 − BF16 when both are there) in accuracy/ and the README."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "comparison.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    title = f"# gpu-check: {' vs '.join(run['profile'] for run in doc['runs'])}\n\n"
    readme = title + render_comparison(doc)
    if accuracy_runs:
        readme += "\n" + save_accuracy(results_dir / "accuracy", accuracy_runs)
    (results_dir / "README.md").write_text(readme, encoding="utf-8")
    print(f"  wrote {results_dir}/comparison.json and README.md")
