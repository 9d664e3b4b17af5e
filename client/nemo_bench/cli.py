"""``nemo-bench``: measure a Mistral NeMo deployment the way NVIDIA measures NIMs.

Examples::

    nemo-bench --grpc-url localhost:8001 --input-tokens 128 --output-tokens 128 --concurrency 1,8,32,128
    nemo-bench --http-url http://localhost:8000 --prompts prompts.jsonl --request-rate 1,2,4 --duration 60
    nemo-bench --grpc-url ipv4:10.0.0.1:8001,10.0.0.2:8001 --concurrency 16,32
    nemo-bench --http-url http://gw-a:8000,http://gw-b:8000 --concurrency 32 \
        --spread-metrics-url http://triton-a:8002/metrics,http://triton-b:8002/metrics
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nemo_bench.load import Level, StopRule
from nemo_bench.plot import plot_sweep
from nemo_bench.report import console_table, write_csv, write_json
from nemo_bench.spread import DEFAULT_MODEL, TritonCounters
from nemo_bench.sweep import BenchError, SweepResult, sweep
from nemo_bench.targets import EndpointsInTurn, GrpcTarget, HttpTarget, SamplingOptions, Target
from nemo_bench.workload import FilePrompts, SyntheticPrompts, WorkloadError
from nemo_client.grpc_target import DEFAULT_LB_POLICY, LB_POLICIES
from nemo_protocol.errors import TokenizerFileError
from nemo_protocol.tekken import Tekkenizer, default_tekken_path

DEFAULT_OUTPUT_TOKENS = 128
API_KEY_ENV = "NEMO_GATEWAY_API_KEY"
GRPC_TARGET_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:")


def _positive_list(kind: type, name: str) -> Any:
    def parse(text: str) -> list[Any]:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes comma-separated numbers, got {text!r}") from None
        if not values or any(value <= 0 for value in values):
            raise argparse.ArgumentTypeError(f"{name} takes positive numbers, got {text!r}")
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nemo-bench",
        description="Load-test a Mistral NeMo deployment (Triton's gRPC `chat` model or an OpenAI-compatible "
        "HTTP endpoint such as nemo-gateway) and report, per load level, requests/s, output tokens/s, time to "
        "first token, inter-token latency and end-to-end latency (p50/p90/p99) and errors by type. Writes "
        "results.json, results.csv and results.png (throughput vs latency) to --out.",
        epilog="Definitions (genai-perf's): TTFT = request sent → first chunk with generated text; "
        "ITL = (e2e − TTFT) / (output tokens − 1); throughput counts successful requests over the span "
        "from the first measured request's start to the last one's end. Warm-up requests are not measured. "
        f"With --http-url, the API key (if the server needs one) is read from ${API_KEY_ENV}.",
    )
    targets = parser.add_argument_group("target (one of)")
    target = targets.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--grpc-url",
        help="Triton gRPC host:port, or several: comma-separated host:port (each request to the next in turn), or "
        "one gRPC target naming several (dns:///NAME:PORT, ipv4:HOST:PORT,HOST:PORT; spread by --lb-policy); "
        "requests go to the `chat` model via nemo_client",
    )
    target.add_argument(
        "--http-url",
        help="base URL of an OpenAI-compatible server, e.g. http://localhost:8000, or several, comma-separated "
        "(each request to the next in turn)",
    )
    targets.add_argument(
        "--lb-policy",
        choices=LB_POLICIES,
        default=DEFAULT_LB_POLICY,
        help="with a --grpc-url target naming several servers: how nemo_client spreads requests over them "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="with --grpc-url: the direct path (nemo_client renders and parses here and streams the tensorrt_llm "
        "model; --tokenizer must be the deployment's Tekken file) instead of the `chat` model",
    )

    workload = parser.add_argument_group("workload")
    workload.add_argument(
        "--input-tokens", type=int, default=128, help="synthetic prompt length in Tekken tokens (default %(default)s)"
    )
    workload.add_argument(
        "--output-tokens",
        type=int,
        default=DEFAULT_OUTPUT_TOKENS,
        help="max_tokens of each request (default %(default)s)",
    )
    workload.add_argument(
        "--prompts",
        type=Path,
        help='JSONL file instead of synthetic prompts: one {"prompt": ...} or {"messages": [...]} a line, '
        'optional "max_tokens" (else --output-tokens)',
    )
    workload.add_argument(
        "--ignore-eos",
        choices=["auto", "on", "off"],
        default="auto",
        help="ask for exactly max_tokens with nvext.ignore_eos; auto falls back (and says so) when the server "
        "refuses it, and the report then gives the actual output lengths (default %(default)s)",
    )
    workload.add_argument(
        "--temperature", type=float, default=0.0, help="sampling temperature of every request (default %(default)s)"
    )
    workload.add_argument("--model", help="model name sent in each request (the HTTP gateway checks it)")
    workload.add_argument("--tokenizer", type=Path, help="Tekken file (default: mistral-common's NeMo tekken file)")
    workload.add_argument(
        "--seed", type=int, default=0, help="seed of the synthetic prompts and Poisson arrivals (default %(default)s)"
    )

    load = parser.add_argument_group("load (one of)").add_mutually_exclusive_group()
    load.add_argument(
        "--concurrency",
        type=_positive_list(int, "--concurrency"),
        help="comma-separated concurrent streams per level (default 1,2,4,8)",
    )
    load.add_argument(
        "--request-rate",
        type=_positive_list(float, "--request-rate"),
        help="comma-separated request rates (requests/s, Poisson arrivals) per level",
    )
    parser.add_argument("--max-concurrency", type=int, help="with --request-rate: most requests in flight at once")
    parser.add_argument(
        "--requests",
        type=int,
        help="measured requests per level (default: max(32, 4 × widest level) unless --duration)",
    )
    parser.add_argument("--duration", type=float, help="seconds each level sends requests")
    parser.add_argument(
        "--warmup", type=int, default=4, help="unmeasured requests before each level (default %(default)s)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds one request may take (default %(default)s)"
    )

    spread = parser.add_argument_group("spread over servers")
    spread.add_argument(
        "--spread-metrics-url",
        help="Triton metrics endpoints, comma-separated (http://HOST:8002/metrics): each level reports how many of "
        "its measured requests each server completed (its nv_inference_request_success of --spread-model), for "
        "servers the benchmark does not see (behind a gateway). Without it, a level sent to several endpoints "
        "reports its requests per endpoint",
    )
    spread.add_argument(
        "--spread-model",
        default=DEFAULT_MODEL,
        help="the Triton model counted for the spread (default %(default)s: every path runs it once per request)",
    )

    output = parser.add_argument_group("output")
    output.add_argument(
        "--out", type=Path, default=Path("bench-results"), help="directory for the result files (default %(default)s)"
    )
    output.add_argument("--no-plot", action="store_true", help="skip results.png (no matplotlib needed)")
    output.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _levels(args: argparse.Namespace) -> list[Level]:
    if args.request_rate:
        return [Level(rate=rate, max_concurrency=args.max_concurrency) for rate in args.request_rate]
    return [Level(concurrency=c) for c in (args.concurrency or [1, 2, 4, 8])]


def _stop(args: argparse.Namespace, levels: Sequence[Level]) -> StopRule:
    if args.requests is None and args.duration is None:
        widest = max(level.warmup_concurrency for level in levels)
        return StopRule(requests=max(32, 4 * widest))
    return StopRule(requests=args.requests, duration_s=args.duration)


def _workload(args: argparse.Namespace) -> SyntheticPrompts | FilePrompts:
    path = args.tokenizer or default_tekken_path()
    tokenizer = Tekkenizer.from_file(path)
    if args.prompts:
        return FilePrompts(args.prompts, args.output_tokens, tokenizer)
    return SyntheticPrompts(tokenizer, args.input_tokens, args.output_tokens, seed=args.seed)


def endpoints(value: str) -> list[str]:
    """The endpoints a --grpc-url or --http-url names: one gRPC target with a scheme as it is, else each
    comma-separated part."""
    if value.startswith(GRPC_TARGET_SCHEMES):
        return [value]
    return [part.strip() for part in value.split(",") if part.strip()]


def _target(args: argparse.Namespace, levels: Sequence[Level]) -> Target:
    targets: dict[str, Target] = {}
    if args.grpc_url:
        for url in endpoints(args.grpc_url):
            targets[url] = GrpcTarget(
                url, timeout_s=args.timeout, direct=args.direct, tokenizer_file=args.tokenizer, lb_policy=args.lb_policy
            )
    else:
        if args.direct:
            raise SystemExit("nemo-bench: --direct goes with --grpc-url (a gateway chooses its own path: --chat-path)")
        widest = max(level.max_concurrency or level.warmup_concurrency * 4 for level in levels)
        for url in endpoints(args.http_url):
            targets[url] = HttpTarget(
                url, timeout_s=args.timeout, max_connections=widest, api_key=os.environ.get(API_KEY_ENV)
            )
    if len(targets) == 1:
        return next(iter(targets.values()))
    return EndpointsInTurn(targets)


def _counters(args: argparse.Namespace) -> TritonCounters | None:
    if not args.spread_metrics_url:
        return None
    return TritonCounters(endpoints(args.spread_metrics_url), model=args.spread_model)


async def _run(args: argparse.Namespace, levels: list[Level], stop: StopRule, workload: Any) -> SweepResult:
    target = _target(args, levels)
    try:
        options = SamplingOptions(temperature=args.temperature, ignore_eos=args.ignore_eos != "off", model=args.model)
        result = await sweep(
            target, workload, options, levels, stop, warmup=args.warmup, seed=args.seed,
            progress=not args.no_progress, counters=_counters(args),
        )  # fmt: skip
        if args.ignore_eos == "on" and not result.options.ignore_eos:
            raise BenchError(f"--ignore-eos on, but {result.notes[0]}")
        return result
    finally:
        await target.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_concurrency is not None and not args.request_rate:
        parser.error("--max-concurrency applies to --request-rate only")
    for name in ("requests", "duration", "max_concurrency", "timeout"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.warmup < 0:
        parser.error(f"--warmup must be 0 or more, got {args.warmup}")
    for flag, value in (("--grpc-url", args.grpc_url), ("--http-url", args.http_url),
                        ("--spread-metrics-url", args.spread_metrics_url)):  # fmt: skip
        if value is not None and not endpoints(value):
            parser.error(f"{flag} names no endpoint")
    levels = _levels(args)
    stop = _stop(args, levels)
    try:
        workload = _workload(args)
    except (WorkloadError, TokenizerFileError, OSError) as error:
        print(f"nemo-bench: {error}", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.timezone.utc)
    try:
        result = asyncio.run(_run(args, levels, stop, workload))
    except BenchError as error:
        print(f"nemo-bench: {error}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {
        "target": f"grpc {args.grpc_url}" if args.grpc_url else f"http {args.http_url}",
        "endpoints": endpoints(args.grpc_url or args.http_url),
        "lb_policy": args.lb_policy if args.grpc_url else None,
        "spread_metrics": endpoints(args.spread_metrics_url) if args.spread_metrics_url else [],
        "workload": workload.describe(),
        "levels": [{"mode": level.mode, "value": level.value} for level in levels],
        "stop": {"requests": stop.requests, "duration_s": stop.duration_s},
        "warmup": args.warmup,
        "temperature": args.temperature,
        "ignore_eos": result.options.ignore_eos,
        "seed": args.seed,
        "started": started.isoformat(timespec="seconds"),
        "notes": result.notes,
    }
    write_json(args.out / "results.json", settings, result.levels)
    write_csv(args.out / "results.csv", result.levels)
    written = ["results.json", "results.csv"]
    if not args.no_plot:
        plot_sweep(args.out / "results.png", result.levels, _title(workload.describe()))
        written.append("results.png")
    for note in result.notes:
        print(f"note: {note}")
    print(console_table(result.levels))
    print(f"wrote {', '.join(str(args.out / name) for name in written)}")
    return 0 if all(level.successes for level in result.levels) else 1


def _title(workload: dict[str, Any]) -> str:
    if workload["kind"] == "synthetic":
        return f"ISL {workload['input_tokens']} / OSL {workload['output_tokens']}"
    return f"prompts from {Path(workload['path']).name}"


if __name__ == "__main__":
    raise SystemExit(main())
