"""``make gpu-check``: on a GPU host, prove the whole stack in one command and keep the results.

Steps, in order; the run stops at the first one that fails, names it and says what to do:

  1 preflight  an NVIDIA GPU (name, compute capability), MODEL_DIR with config.json and tekken.json, the
               profile loads and fits this GPU (FP8 needs 8.9+), trtllm-build on PATH or docker
  2 build      scripts/make_engine.sh MODEL_DIR PROFILE OUT: FP8 checkpoint → engines → OUT/repository
  3 serve      Triton on the repository (local tritonserver, else the NGC image), until ready
  4 gateway    nemo-gateway (OpenAI-compatible HTTP) in front of Triton's gRPC endpoint
  5 smoke      through the gateway with the official openai SDK: a chat, a streamed chat, a tool call
               and the tool result → final answer
  6 bench      a short nemo-bench concurrency sweep through the gateway
  7 report     results.json and README.md (plus the bench files) in the results folder

Servers are always stopped at the end, also when a step fails or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from nemo_build.errors import BuildError
from nemo_build.preflight import (
    DISK_MARGIN_BYTES,
    NGC_IMAGE,
    PINNED_TRTLLM,
    Gpu,
    disk_problems,
    engine_disk_bytes,
    gpu_problems,
    probe_machine,
    query_gpus,
    trtllm_problems,
)
from nemo_build.profiles import DEFAULT_PROFILE, Profile, available_profiles, load_profile
from nemo_build.repository import TOKENIZER_FILE
from nemo_build.tiny.chat import WEATHER_TOOL
from nemo_ops.gateway_process import gateway, venv_bin
from nemo_ops.launcher import ServeError, TritonServer, repository_manifest
from nemo_ops.steps import RunAborted, StepFailed, StepRecord, Steps
from nemo_ops.weather_tool import get_weather

ROOT = Path(__file__).resolve().parents[2]
MAKE_ENGINE = ROOT / "scripts" / "make_engine.sh"
RESULTS_PARENT = ROOT / "docs" / "gpu"
STEP_NAMES = ("preflight", "build", "serve", "gateway", "smoke", "bench", "report")
DEFAULT_OUT = Path("artifacts/gpu-check")
DEFAULT_READY_TIMEOUT_S = 900.0  # a 12B engine loads in minutes; the first start may also pull the image
DEFAULT_BENCH_CONCURRENCY = (1, 8, 32)
DEFAULT_BENCH_REQUESTS = 64
DEFAULT_BENCH_TOKENS = 128
REQUEST_TIMEOUT_S = 300.0
LOG_TAIL_LINES = 40
# An FP8 checkpoint of NeMo 12B is ~0.55 of the bf16 weights (embedding and lm_head stay bf16).
CHECKPOINT_FRACTION = {"fp8": 0.6, "bf16": 1.0}
# Prompts the 12B Instruct model answers naturally, and that the CPU tests' trained tiny model knows
# by heart (nemo_build.tiny.chat.CHAT_SET), so the same smoke step passes on both.
CHAT_PROMPT = "What is the capital of France?"
STREAM_PROMPT = "How many days are in a week?"
TOOL_PROMPT = "What is the weather in Paris?"
SMOKE_MAX_TOKENS = 256


# ------------------------------------------------------------------------------------------ commands


def run_logged(command: Sequence[str], log_path: Path, *, cwd: Path | None = None) -> tuple[int, str]:
    """Run ``command``, echoing its output indented and writing it to ``log_path``: (status, last lines)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    print("  $ " + shlex.join(command), flush=True)
    with (
        log_path.open("w", encoding="utf-8") as log,
        subprocess.Popen(
            list(command),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        ) as process,
    ):
        assert process.stdout is not None
        try:
            for line in process.stdout:
                log.write(line)
                print("  │ " + line, end="", flush=True)
                tail.append(line.rstrip())
        except BaseException:
            process.terminate()
            raise
        status = process.wait()
    return status, "\n".join(tail)


# ----------------------------------------------------------------------------------------- preflight


@dataclass(frozen=True)
class Facts:
    """What preflight learnt about the machine; the report records it."""

    gpus: tuple[Gpu, ...] = ()
    driver: str | None = None
    gpu_memory: str | None = None
    builder: str | None = None  # "local trtllm-build" or the NGC image
    trtllm_version: str | None = None


def probe_driver() -> tuple[str | None, str | None]:
    """(driver version, memory of the first GPU) as nvidia-smi reports them; (None, None) without one."""
    lines = query_gpus("driver_version", "memory.total")
    driver, _, memory = (lines[0] if lines else "").partition(",")
    return driver.strip() or None, memory.strip() or None


def python3_package_version(package: str) -> str | None:
    """The version of ``package`` in the ``python3`` on PATH (the interpreter make_engine.sh runs locally)."""
    python = shutil.which("python3")
    if python is None:
        return None
    script = (
        "import importlib.metadata as m, sys\n"
        "for name in sys.argv[1:]:\n"
        "    try: print(m.version(name)); break\n"
        "    except m.PackageNotFoundError: pass\n"
    )
    try:
        out = subprocess.run(
            [python, "-c", script, package, package.replace("_", "-")],
            capture_output=True, text=True, timeout=60, check=False,
        ).stdout  # fmt: skip
    except (subprocess.SubprocessError, OSError):
        return None
    return out.strip() or None


def docker_problem() -> str | None:
    """Why docker cannot run the NGC image here, or None when its daemon answers."""
    if shutil.which("docker") is None:
        return "docker is not installed"
    try:
        answer = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30, check=False)
    except (subprocess.SubprocessError, OSError) as error:
        return f"`docker info` failed ({error})"
    if answer.returncode != 0:
        last = (answer.stderr.strip().splitlines() or ["no message"])[-1]
        return f"docker is installed but its daemon does not answer (`docker info`: {last})"
    return None


def model_dir_problems(model_dir: Path, *, need_weights: bool) -> list[str]:
    if not model_dir.is_dir():
        return [f"MODEL_DIR {model_dir} is not a directory: pass the Hugging Face Mistral NeMo directory"]
    problems = []
    if not (model_dir / "config.json").is_file():
        problems.append(f"MODEL_DIR {model_dir} has no config.json: it is not a Hugging Face model directory")
    if not (model_dir / "tekken.json").is_file():
        problems.append(
            f"MODEL_DIR {model_dir} has no tekken.json (the Tekken tokenizer the repository serves): download the "
            "full model repository, e.g. `huggingface-cli download mistralai/Mistral-Nemo-Instruct-2407 "
            "--local-dir DIR`"
        )
    if need_weights and not any(model_dir.glob("*.safetensors")):
        problems.append(f"MODEL_DIR {model_dir} has no *.safetensors weights")
    return problems


def repository_problems(repository: Path) -> list[str]:
    """Why ``repository`` cannot be served as it is; for GPU ones, that its engine directory exists here."""
    try:
        manifest = repository_manifest(repository)
    except ServeError as error:
        return [str(error)]
    if manifest.target == "gpu":
        engine = manifest.model_dir
        if not (engine / "config.json").is_file():
            return [
                f"{repository} serves the engine directory {engine}, which does not exist on this machine "
                "(rendered on another machine or inside a container?): render the repository where it is served"
            ]
    return []


LOCAL_BUILDER = "local trtllm-build"


def engine_builder(*, build: bool) -> str | None:
    """Who builds the engines: a local trtllm-build, else make_engine.sh's docker run of the NGC image."""
    if not build:
        return None
    return LOCAL_BUILDER if shutil.which("trtllm-build") else NGC_IMAGE


def trtllm_version(builder: str | None) -> str | None:
    """The TensorRT-LLM that builds (or, not building, serves): the pinned image's, or the local ``python3``'s."""
    local = builder == LOCAL_BUILDER or (builder is None and shutil.which("tritonserver") is not None)
    return python3_package_version("tensorrt_llm") if local else PINNED_TRTLLM


def tool_problems(builder: str | None) -> list[str]:
    """Docker, when building (no trtllm-build) or serving (no tritonserver) needs it."""
    needs = [what for what, needed in (("build the engines", builder == NGC_IMAGE),
                                       ("serve them", shutil.which("tritonserver") is None)) if needed]  # fmt: skip
    why = docker_problem() if needs else None
    if why is None:
        return []
    missing = ", ".join(n for n in ("trtllm-build", "tritonserver") if shutil.which(n) is None)
    return [
        f"{why}; with no {missing} on PATH, docker is what runs {NGC_IMAGE} to {' and '.join(needs)}: install "
        "docker with the NVIDIA container toolkit (daemon running, your user in the docker group), or run inside "
        "that image"
    ]


def build_disk_bytes(model_dir: Path, profile: Profile) -> int:
    """The free disk make_engine.sh needs in OUT: the checkpoint it writes first, then the engines built from it."""
    weights = sum(path.stat().st_size for path in model_dir.glob("*.safetensors"))
    checkpoint = int(weights * CHECKPOINT_FRACTION[profile.precision])
    return checkpoint + engine_disk_bytes(checkpoint)


def preflight(model_dir: Path, profile_name: str, out: Path, repository: Path | None) -> tuple[Facts, Profile]:
    """Step 1: everything that would fail later, all at once. ``repository`` set means: do not build."""
    build = repository is None
    problems: list[str] = []
    machine = probe_machine(out)
    driver, memory = probe_driver()
    for gpu in machine.gpus:
        cap = ".".join(map(str, gpu.compute_capability))
        print(f"  GPU: {gpu.name}, compute capability {cap}, driver {driver}, {memory}")
    builder = engine_builder(build=build)
    version = trtllm_version(builder)
    profile: Profile | None = None
    try:
        profile = load_profile(profile_name)
        print(f"  profile: {profile.name} ({profile.gpu}, {profile.precision}, KV {profile.kv_cache}, TP {profile.tp})")
    except BuildError as error:
        problems.append(str(error))
    if profile is not None:
        # make_engine.sh exports the checkpoint the profile expects, so only the machine is judged here.
        problems += gpu_problems(machine, profile)
        if builder == LOCAL_BUILDER:  # make_engine.sh runs python3: its TensorRT-LLM builds (the image's is pinned)
            problems += trtllm_problems(replace(machine, trtllm_version=version))
        problems += disk_problems(machine, build_disk_bytes(model_dir, profile) if build else DISK_MARGIN_BYTES)
    elif not machine.gpus:
        problems.append("no NVIDIA GPU found (nvidia-smi is missing or lists none): run this on the GPU host")
    problems += model_dir_problems(model_dir, need_weights=build)
    problems += tool_problems(builder)
    if repository is not None:
        problems += repository_problems(repository)
    if problems:
        hint = "\n  (Without a GPU, `make demo` runs the same stack on CPU.)" if not machine.gpus else ""
        raise StepFailed(f"{len(problems)} problem(s):\n  - " + "\n  - ".join(problems) + hint)
    assert profile is not None
    print(f"  model: {model_dir}")
    print(f"  engines built by: {builder or 'not built (--skip-build)'}; TensorRT-LLM {version}")
    return Facts(machine.gpus, driver, memory, builder, version), profile


def _profile_or_none(name: str) -> Profile | None:
    try:
        return load_profile(name)
    except BuildError:
        return None


def gpu_facts() -> Facts:
    """What the report records when preflight is skipped."""
    driver, memory = probe_driver()
    return Facts(probe_machine(Path.cwd()).gpus, driver, memory, None, trtllm_version(None))


# --------------------------------------------------------------------------------------------- build


def _script_path(path: Path) -> str:
    """``path`` for make_engine.sh, which runs from the project root (inside the image: mounted at /workspace)."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)


def build_engines(model_dir: Path, profile_name: str, out: Path) -> Path:
    """Step 2: make_engine.sh; returns OUT/repository."""
    log = out / "logs" / "make_engine.log"
    profile = _script_path(Path(profile_name)) if profile_name.endswith((".yaml", ".yml")) else profile_name
    command = [str(MAKE_ENGINE), str(model_dir.resolve()), profile, _script_path(out)]
    status, tail = run_logged(command, log, cwd=ROOT)
    if status != 0:
        raise StepFailed(
            f"scripts/make_engine.sh exited with status {status}; its last lines:\n{tail}\n"
            f"(full log: {log}; the first error above it is the cause)"
        )
    repository = out / "repository"
    problems = repository_problems(repository)
    if problems:
        raise StepFailed(f"make_engine.sh finished but the repository is not servable: {'; '.join(problems)}")
    return repository


# --------------------------------------------------------------------------------------- serve, gateway


def ensure_image(image: str, log: Path) -> None:
    """Pull ``image`` unless docker has it, so the ready timeout measures the server, not the download."""
    present = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    if present.returncode == 0:
        return
    print(f"  pulling {image} (once; about 20 GB)", flush=True)
    status, tail = run_logged(["docker", "pull", image], log)
    if status != 0:
        raise StepFailed(f"`docker pull {image}` failed (status {status}):\n{tail}")


def start_triton(repository: Path, out: Path, ready_timeout_s: float, stack: contextlib.ExitStack) -> TritonServer:
    """Step 3: Triton on ``repository``, ready; ``stack`` stops it."""
    server = TritonServer(repository, log_path=out / "logs" / "tritonserver.log")
    print(f"  repository {repository} ({server.target}), launcher {server.launcher}, log {server.log_path}")
    if server.launcher == "docker":
        ensure_image(server.image, out / "logs" / "docker-pull.log")
    server.start()
    stack.callback(_stop, server)
    try:
        server.wait_ready(ready_timeout_s)
    except ServeError as error:
        raise StepFailed(
            f"{error}\n(an engine that was still loading needs a longer --ready-timeout; otherwise the errors "
            "above say why it did not load)"
        ) from error
    print(f"  Triton gRPC at {server.grpc_url}, HTTP at {server.http_url}")
    return server


def _stop(server: TritonServer) -> None:
    started = time.perf_counter()
    print("\n  stopping Triton ...", flush=True)
    server.stop()
    print(f"  Triton stopped in {time.perf_counter() - started:.1f} s", flush=True)


def start_gateway(server: TritonServer, stack: contextlib.ExitStack) -> str:
    """Step 4: nemo-gateway in front of Triton; ``stack`` stops it (before Triton)."""
    try:
        url = stack.enter_context(gateway(server.grpc_url))
    except RuntimeError as error:
        raise StepFailed(
            f"{error} (its /v1/health/ready checks Triton at {server.grpc_url} and its chat model): "
            f"see the gateway's output above and Triton's log {server.log_path}"
        ) from error
    print(f"  gateway at {url}")
    return url


# --------------------------------------------------------------------------------------------- smoke


def _usage(usage: Any) -> dict[str, int] | None:
    if usage is None:
        return None
    return {k: int(getattr(usage, k)) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def _show(name: str, record: dict[str, Any]) -> None:
    tokens = (record.get("usage") or {}).get("completion_tokens", "?")
    reply = record.get("reply") if record.get("reply") is not None else json.dumps(record.get("tool_calls"))
    print(f"  {name}: {record['latency_s']:.2f} s, {tokens} tokens, finish {record['finish_reason']}: {reply!r}")


def smoke_chat(sdk: Any, model: str) -> dict[str, Any]:
    started = time.perf_counter()
    reply = sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": CHAT_PROMPT}], temperature=0, max_tokens=SMOKE_MAX_TOKENS
    )
    choice = reply.choices[0]
    record = {
        "prompt": CHAT_PROMPT,
        "reply": choice.message.content,
        "finish_reason": choice.finish_reason,
        "latency_s": round(time.perf_counter() - started, 3),
        "usage": _usage(reply.usage),
    }
    if not (choice.message.content or "").strip() or choice.finish_reason not in ("stop", "length"):
        raise StepFailed(f"the plain chat got no text answer (finish_reason {choice.finish_reason!r}): {record}")
    return record


def smoke_stream(sdk: Any, model: str) -> dict[str, Any]:
    started = time.perf_counter()
    pieces: list[str] = []
    first_token_s: float | None = None
    finish_reason = None
    usage = None
    stream = sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": STREAM_PROMPT}],
        temperature=0,
        max_tokens=SMOKE_MAX_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        usage = chunk.usage or usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        if choice.delta.content:
            first_token_s = first_token_s or time.perf_counter() - started
            pieces.append(choice.delta.content)
        finish_reason = choice.finish_reason or finish_reason
    record = {
        "prompt": STREAM_PROMPT,
        "reply": "".join(pieces),
        "finish_reason": finish_reason,
        "chunks": len(pieces),
        "ttft_s": None if first_token_s is None else round(first_token_s, 3),
        "latency_s": round(time.perf_counter() - started, 3),
        "usage": _usage(usage),
    }
    if len(pieces) < 2:
        raise StepFailed(f"the streamed chat did not arrive in pieces ({len(pieces)} text chunk(s)): {record}")
    if finish_reason not in ("stop", "length"):
        raise StepFailed(f"the streamed chat did not end with a finish_reason (got {finish_reason!r}): {record}")
    return record


def _tool_call_record(reply: Any, started: float) -> tuple[dict[str, Any], list[Any]]:
    choice = reply.choices[0]
    calls = list(choice.message.tool_calls or [])
    record = {
        "prompt": TOOL_PROMPT,
        "reply": choice.message.content,
        "tool_calls": [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in calls],
        "finish_reason": choice.finish_reason,
        "latency_s": round(time.perf_counter() - started, 3),
        "usage": _usage(reply.usage),
    }
    if choice.finish_reason != "tool_calls" or not calls:
        raise StepFailed(
            f"asked {TOOL_PROMPT!r} with a get_weather tool, the model answered without a tool call "
            f"(finish_reason {choice.finish_reason!r}): {record}. The Instruct model calls tools; a Base one does not"
        )
    return record, calls


def _checked_arguments(call: Any) -> dict[str, Any]:
    import jsonschema

    try:
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])
    except (json.JSONDecodeError, jsonschema.ValidationError) as error:
        raise StepFailed(
            f"the tool call's arguments {call.function.arguments!r} are not valid get_weather arguments: {error}"
        ) from error
    if call.function.name != "get_weather":
        raise StepFailed(f"the model called {call.function.name!r}; the only tool offered was get_weather")
    return arguments


def smoke_tools(sdk: Any, model: str) -> dict[str, Any]:
    """A tool call, then the tool result → the final answer."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": TOOL_PROMPT}]
    started = time.perf_counter()
    reply = sdk.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL], temperature=0, max_tokens=SMOKE_MAX_TOKENS
    )
    record, calls = _tool_call_record(reply, started)
    call = calls[0]
    result = json.dumps(get_weather(str(_checked_arguments(call)["city"])))
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]
    started = time.perf_counter()
    final = sdk.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL], temperature=0, max_tokens=SMOKE_MAX_TOKENS
    )
    choice = final.choices[0]
    record["tool_result"] = result
    record["final"] = {
        "reply": choice.message.content,
        "finish_reason": choice.finish_reason,
        "latency_s": round(time.perf_counter() - started, 3),
        "usage": _usage(final.usage),
    }
    if not (choice.message.content or "").strip():
        raise StepFailed(f"after the tool result {result} the model gave no text answer: {record['final']}")
    return record


def smoke(base_url: str) -> dict[str, Any]:
    """Step 5: the official openai SDK against the gateway."""
    from openai import OpenAI, OpenAIError

    sdk = OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", timeout=REQUEST_TIMEOUT_S, max_retries=0)
    results: dict[str, Any] = {}
    check = "models"
    try:
        results["model"] = model = sdk.models.list().data[0].id
        for check, request in (("chat", smoke_chat), ("stream", smoke_stream), ("tools", smoke_tools)):
            results[check] = request(sdk, model)
            _show(check, results[check])
            if check == "tools":
                _show("tool result → answer", results[check]["final"])
    except OpenAIError as error:
        raise StepFailed(f"the {check} request through the gateway failed: {type(error).__name__}: {error}") from error
    return results


# --------------------------------------------------------------------------------------------- bench


@dataclass(frozen=True)
class BenchPlan:
    concurrency: tuple[int, ...] = DEFAULT_BENCH_CONCURRENCY
    requests: int = DEFAULT_BENCH_REQUESTS
    input_tokens: int = DEFAULT_BENCH_TOKENS
    output_tokens: int = DEFAULT_BENCH_TOKENS


def bench_summary(levels: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row a level: the figures the report shows."""
    return [
        {
            "concurrency": level["level"],
            "requests": level["requests"],
            "successes": level["successes"],
            "errors": level["errors"],
            "request_throughput": level["request_throughput"],
            "output_token_throughput": level["output_token_throughput"],
            "mean_output_tokens": level["mean_output_tokens"],
            **{f"{m}_p{q}_ms": level[f"{m}_ms"].get(f"p{q}") for m in ("ttft", "itl", "e2e") for q in (50, 99)},
        }
        for level in levels
    ]


def bench(base_url: str, model: str, tokenizer: Path, plan: BenchPlan, out: Path) -> dict[str, Any]:
    """Step 6: nemo-bench through the gateway into ``out``; fails on any error or an empty level."""
    command = [
        venv_bin("nemo-bench"), "--http-url", base_url, "--model", model, "--tokenizer", str(tokenizer),
        "--concurrency", ",".join(map(str, plan.concurrency)), "--requests", str(plan.requests),
        "--input-tokens", str(plan.input_tokens), "--output-tokens", str(plan.output_tokens),
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    status, tail = run_logged(command, out / "nemo-bench.log")
    if status != 0:
        raise StepFailed(f"nemo-bench exited with status {status}:\n{tail}")
    document = json.loads((out / "results.json").read_text())
    summary = bench_summary(document["levels"])
    for level, row in zip(document["levels"], summary, strict=True):
        if row["errors"] or not row["output_token_throughput"]:
            first = "; ".join(level.get("first_errors") or []) or "no tokens"
            raise StepFailed(f"nemo-bench at concurrency {row['concurrency']}: errors {row['errors']} ({first})")
    return {"settings": document["settings"], "levels": summary}


# -------------------------------------------------------------------------------------------- report


def slug(text: str) -> str:
    """``NVIDIA H100 80GB HBM3`` → ``h100-80gb-hbm3``."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words.removeprefix("nvidia-") or "unknown"


def default_results_dir(day: dt.date, gpus: Sequence[Gpu], profile: str, parent: Path = RESULTS_PARENT) -> Path:
    """``docs/gpu/<UTC date>-<gpu>-<profile>``, with ``-2``, ``-3`` … when a run of the day is there already."""
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
            "steps": [asdict(record) for record in steps],
            "smoke": self.smoke,
            "bench": self.bench,
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
        f"| engines built by | {_cell(machine['engine_builder'])} |",
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
    return "\n".join(lines) + "\n"


def write_report(results_dir: Path, doc: dict[str, Any], bench_dir: Path) -> None:
    """Step 7: results.json, README.md and the bench files in ``results_dir``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "results.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (results_dir / "README.md").write_text(render_readme(doc), encoding="utf-8")
    copied = results_dir / "bench"
    copied.mkdir(exist_ok=True)
    for name in ("results.json", "results.csv", "results.png"):
        if (bench_dir / name).is_file():
            shutil.copy2(bench_dir / name, copied / name)
    print(f"  wrote {results_dir}/results.json, README.md and bench/")


# ----------------------------------------------------------------------------------------------- CLI


def _concurrency(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"comma-separated positive integers, got {text!r}")
    return values


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"a positive number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"a positive number, got {text!r}")
        return value

    return parse


EPILOG = f"""\
needs:   an NVIDIA GPU host and its driver; docker with the NVIDIA container toolkit (the build and Triton
         then run in {NGC_IMAGE}, TensorRT-LLM {PINNED_TRTLLM}),
         or trtllm-build and tritonserver on PATH; the Hugging Face Mistral NeMo Instruct directory
         (config.json, tekken.json, *.safetensors); ~50 GB of disk (the image, OUT).
takes:   the first run roughly 30-60 min (image pull, FP8 calibration, engine build, engine load);
         then minutes with --skip-build (estimates).
results: docs/gpu/<UTC date>-<gpu>-<profile>/ (results.json, README.md, bench/) unless --results-dir;
         checkpoint, engines, repository and logs (logs/make_engine.log, logs/tritonserver.log) in --out.
         See docs/gpu/README.md.

examples:
  make gpu-check MODEL_DIR=/models/Mistral-Nemo-Instruct-2407
  python -m nemo_ops.gpu_check --model-dir /models/Mistral-Nemo-Instruct-2407 --profile l40s-fp8-tp1
  python -m nemo_ops.gpu_check --model-dir /models/Mistral-Nemo-Instruct-2407 --skip-build   # reuse OUT/repository
  python -m nemo_ops.gpu_check --model-dir DIR --skip-preflight --repository artifacts/demo/repository \\
      --results-dir /tmp/check        # the steps after the build against any rendered repository (CPU too)

Exit status 0 when every step passed; 1 at the first failed step ("gpu-check: step N (name) failed: ...");
2 for bad arguments.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-check",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-dir", type=Path, required=True, help="Hugging Face Mistral NeMo (Instruct) directory")
    parser.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        help=f"build profile name or .yaml path (default %(default)s; known: {', '.join(available_profiles())})",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="engines, repository and logs (default %(default)s)"
    )
    parser.add_argument(
        "--results-dir", type=Path, help="where the report goes (default docs/gpu/<UTC date>-<gpu>-<profile>)"
    )
    reuse = parser.add_argument_group("reuse and testing")
    reuse.add_argument("--skip-build", action="store_true", help="skip step 2 and serve the existing OUT/repository")
    reuse.add_argument(
        "--repository",
        type=Path,
        help="serve this rendered repository instead of OUT/repository (implies --skip-build)",
    )
    reuse.add_argument(
        "--skip-preflight",
        action="store_true",
        help="skip step 1 (its checks need a GPU): with --repository, runs steps 3-7 on any machine, CPU included",
    )
    tuning = parser.add_argument_group("serving and bench")
    tuning.add_argument(
        "--ready-timeout",
        type=_positive(float),
        default=DEFAULT_READY_TIMEOUT_S,
        help="seconds to wait for Triton to load the engine (default %(default)s)",
    )
    tuning.add_argument(
        "--bench-concurrency",
        type=_concurrency,
        default=DEFAULT_BENCH_CONCURRENCY,
        help="nemo-bench concurrency levels (default 1,8,32)",
    )
    tuning.add_argument(
        "--bench-requests",
        type=_positive(int),
        default=DEFAULT_BENCH_REQUESTS,
        help="measured requests per level (default %(default)s)",
    )
    tuning.add_argument(
        "--bench-input-tokens",
        type=_positive(int),
        default=DEFAULT_BENCH_TOKENS,
        help="prompt length (default %(default)s)",
    )
    tuning.add_argument(
        "--bench-output-tokens",
        type=_positive(int),
        default=DEFAULT_BENCH_TOKENS,
        help="max_tokens per request (default %(default)s)",
    )
    return parser


def run_check(args: argparse.Namespace) -> Path:
    """Steps 1-7; returns the results folder. Raises :class:`RunAborted` at the first failed step."""
    out: Path = args.out
    run = Run(started=dt.datetime.now(dt.timezone.utc), model_dir=args.model_dir, profile_name=args.profile)
    steps = Steps("gpu-check", STEP_NAMES)
    repository: Path | None = args.repository or (out / "repository" if args.skip_build else None)
    try:
        if args.skip_preflight:
            steps.skip("preflight", "--skip-preflight")
            run.facts, run.profile = gpu_facts(), _profile_or_none(args.profile)
        else:
            with steps.step("preflight", "GPU, model directory, profile, toolchain"):
                run.facts, run.profile = preflight(args.model_dir, args.profile, out, repository)
        if repository is not None:
            steps.skip("build", f"serving {repository}")
        else:
            with steps.step("build", "scripts/make_engine.sh: FP8 checkpoint → engines → repository"):
                repository = build_engines(args.model_dir, args.profile, out)
        run.repository = repository
        bench_dir = out / "bench"
        with contextlib.ExitStack() as servers:
            with steps.step("serve", f"Triton on {repository} (ready timeout {args.ready_timeout:.0f} s)"):
                server = start_triton(repository, out, args.ready_timeout, servers)
                run.launcher, run.target = server.launcher, server.target
            with steps.step("gateway", "nemo-gateway in front of Triton's gRPC endpoint"):
                base_url = start_gateway(server, servers)
            with steps.step("smoke", "chat, streamed chat, tool call → tool result → answer (openai SDK)"):
                run.smoke = smoke(base_url)
            plan = BenchPlan(
                args.bench_concurrency, args.bench_requests, args.bench_input_tokens, args.bench_output_tokens
            )
            with steps.step("bench", f"nemo-bench, concurrency {','.join(map(str, plan.concurrency))}"):
                run.bench = bench(base_url, run.smoke["model"], repository / TOKENIZER_FILE, plan, bench_dir)
        profile_name = run.profile.name if run.profile else Path(args.profile).stem
        results_dir = args.results_dir or default_results_dir(run.started.date(), run.facts.gpus, profile_name)
        report_started = time.perf_counter()
        with steps.step("report", f"results in {results_dir}"):
            document = run.document(steps.records)
            seconds = round(time.perf_counter() - report_started, 2)  # the writing below takes milliseconds
            document["steps"].append(asdict(StepRecord(steps.number("report"), "report", "ok", seconds)))
            write_report(results_dir, document, bench_dir)
    finally:
        steps.summary()
    return results_dir


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results_dir = run_check(args)
    except RunAborted as failure:
        print(f"\n{failure}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ngpu-check: interrupted (servers stopped)", file=sys.stderr)
        return 130
    print(f"\ngpu-check: every step passed; results in {results_dir}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
