"""``nemo-gateway``: serve the OpenAI-compatible HTTP API in front of a Triton deployment."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path

from nemo_client.grpc_target import (
    DEFAULT_LB_POLICY,
    DEFAULT_RESOLVE_INTERVAL_S,
    LB_POLICIES,
    check_lb_policy,
    parse_target,
)
from nemo_gateway.admission import DEFAULT_MAX_QUEUE_WAIT_S, AdmissionLimits
from nemo_gateway.app import create_app
from nemo_gateway.response_store import DEFAULT_RETENTION_S
from nemo_gateway.settings import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_TRITON_URL,
    GatewaySettings,
)
from nemo_protocol.json_values import MAX_JSON_DEPTH
from nemo_protocol.request_limits import RequestLimits
from nemo_protocol.served_model import DEFAULT_SERVED_MODEL_NAME

API_KEY_ENV = "NEMO_GATEWAY_API_KEY"
CHAT_PATHS = ("direct", "chat-model")
# Not the working directory: a gateway started from a checkout or a read-only image directory would write there.
DEFAULT_RESPONSE_STORE = str(
    Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "nemo-gateway" / "responses.sqlite3"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nemo-gateway",
        description="OpenAI / NIM-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models, "
        "/v1/health/{live,ready}, /v1/metrics, /v1/version) in front of Triton's gRPC endpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog=f"API key: set env {API_KEY_ENV} and clients must send 'Authorization: Bearer <key>' on the /v1 "
        "API routes (probes, /v1/metrics and /v1/version stay open). It is read from the environment only, "
        "never a flag, so that it does not show in process lists.",
    )
    parser.add_argument(
        "--triton-url",
        default=os.environ.get("TRITON_GRPC_URL", DEFAULT_TRITON_URL),
        help="Triton's gRPC target: host:port, or several servers: dns:///NAME:PORT (every address of the name, "
        "e.g. a Kubernetes headless Service, looked up again every --triton-resolve-interval-s) or "
        "ipv4:HOST:PORT,HOST:PORT (env TRITON_GRPC_URL)",
    )
    parser.add_argument(
        "--triton-lb-policy",
        choices=LB_POLICIES,
        default=os.environ.get("NEMO_GATEWAY_TRITON_LB_POLICY", DEFAULT_LB_POLICY),
        help="how requests spread over the servers --triton-url names: round_robin (each to the next connected "
        "server), least_requests (to the one with the fewest of this gateway's requests in flight) or pick_first "
        "(all over one connection); a request a server refuses before it started (down, or shutting down) goes to "
        "another (env NEMO_GATEWAY_TRITON_LB_POLICY)",
    )
    parser.add_argument(
        "--triton-resolve-interval-s",
        type=_seconds,
        default=os.environ.get("NEMO_GATEWAY_TRITON_RESOLVE_INTERVAL_S", str(DEFAULT_RESOLVE_INTERVAL_S)),
        help="seconds between look-ups of a DNS name's servers, so that a Triton pod that joins gets requests "
        "(0: looked up once) (env NEMO_GATEWAY_TRITON_RESOLVE_INTERVAL_S)",
    )
    parser.add_argument(
        "--triton-metrics-url",
        default=os.environ.get("TRITON_METRICS_URL"),
        help="Triton's metrics endpoints, comma-separated, read at each /v1/metrics scrape for the engine figures "
        "(requests running and waiting, summed; KV-cache usage, the mean) under NIM's names; default: port 8002 of "
        "every server --triton-url names (each address of a dns:/// name or ipv4: list, the host of host:port) "
        "(env TRITON_METRICS_URL)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("NIM_SERVER_PORT", "8000")),
        help="port to listen on (env NIM_SERVER_PORT)",
    )
    parser.add_argument(
        "--served-model-name",
        default=os.environ.get("NIM_SERVED_MODEL_NAME", DEFAULT_SERVED_MODEL_NAME),
        help="model name clients use (env NIM_SERVED_MODEL_NAME)",
    )
    parser.add_argument(
        "--chat-path",
        choices=CHAT_PATHS,
        default=os.environ.get("NEMO_GATEWAY_CHAT_PATH", "direct"),
        help="direct: this process renders prompts, streams Triton's tensorrt_llm model and parses the output "
        "(the same code as the chat model; no python inside Triton on the token path, so frontend work scales "
        "with gateway replicas); chat-model: forward to Triton's chat model (env NEMO_GATEWAY_CHAT_PATH)",
    )
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=os.environ.get("NEMO_TOKENIZER_FILE"),
        help="the model's tekken.json for the direct path; it must be the file the repository was rendered with "
        "(checked by SHA-256). Default: mistral-common's copy of the NeMo file (env NEMO_TOKENIZER_FILE)",
    )
    add_limit_arguments(parser.add_argument_group("request limits (400 naming the field; 413 for the body size)"))
    admission = parser.add_argument_group(
        "admission (429 with Retry-After past these bounds; counted in nemo_gateway_requests_shed_total)"
    )
    admission.add_argument(
        "--max-in-flight",
        type=_at_least(0),
        default=os.environ.get("NEMO_GATEWAY_MAX_IN_FLIGHT", "0"),
        help="generations this gateway runs upstream at once (a chat request with n choices counts n; a stream "
        "until its end); 0: no bound, and the other admission flags do nothing (env NEMO_GATEWAY_MAX_IN_FLIGHT)",
    )
    admission.add_argument(
        "--max-queued",
        type=_at_least(0),
        default=os.environ.get("NEMO_GATEWAY_MAX_QUEUED"),
        help="requests that may wait for a slot; one more is refused at once (default: as many as --max-in-flight; "
        "0: none wait) (env NEMO_GATEWAY_MAX_QUEUED)",
    )
    admission.add_argument(
        "--max-queue-wait-s",
        type=_seconds,
        default=os.environ.get("NEMO_GATEWAY_MAX_QUEUE_WAIT_S", str(DEFAULT_MAX_QUEUE_WAIT_S)),
        help="seconds a request may wait for a slot before it is refused; 0: no bound "
        "(env NEMO_GATEWAY_MAX_QUEUE_WAIT_S)",
    )
    store = parser.add_argument_group("stored responses (/v1/responses with store, previous_response_id)")
    store.add_argument(
        "--response-store",
        default=os.environ.get("NEMO_GATEWAY_RESPONSE_STORE", DEFAULT_RESPONSE_STORE),
        help="a SQLite file's path (created with its directory when missing; on Kubernetes a volume that outlives "
        "the pod), or a postgresql://USER@HOST:PORT/DB URL that gateway replicas share (password: PGPASSWORD or "
        "~/.pgpass, never the URL); '' stores nothing (env NEMO_GATEWAY_RESPONSE_STORE)",
    )
    store.add_argument(
        "--response-retention",
        dest="response_retention_s",
        type=_seconds,
        default=os.environ.get("NEMO_GATEWAY_RESPONSE_RETENTION_S", str(DEFAULT_RETENTION_S)),
        help="seconds a stored response is kept; 0: for ever (env NEMO_GATEWAY_RESPONSE_RETENTION_S)",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT_S,
        help="seconds one request may take, stream included",
    )
    parser.add_argument(
        "--body-timeout",
        type=_positive_seconds,
        default=os.environ.get("NEMO_GATEWAY_BODY_TIMEOUT_S", str(DEFAULT_BODY_TIMEOUT_S)),
        help="seconds a request body may take to arrive whole: a caller that stalls mid-upload gets 408 and its "
        "connection is closed (a body still arriving when the gateway shuts down gets 503 at once) "
        "(env NEMO_GATEWAY_BODY_TIMEOUT_S)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("NIM_LOG_LEVEL", "info").lower(),
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (env NIM_LOG_LEVEL)",
    )
    return parser  # fmt: skip


def _at_least(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, 0 or more, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _depth(text: str) -> int:
    value = _at_least(1)(text)
    if value > MAX_JSON_DEPTH:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_JSON_DEPTH} (the chat model's own bound), got {value}")
    return value


# flag → (RequestLimits field, parser, help)
LIMIT_FLAGS: dict[str, tuple[str, Callable[[str], int], str]] = {
    "--max-body-bytes": ("max_body_bytes", _at_least(1), "largest request body, in bytes"),
    "--max-json-depth": ("max_json_depth", _depth, f"deepest nesting of objects and lists (at most {MAX_JSON_DEPTH})"),
    "--max-messages": ("max_messages", _at_least(1), "most messages in a chat request"),
    "--max-tools": ("max_tools", _at_least(1), "most tools in a chat request"),
    "--max-tool-bytes": ("max_tool_bytes", _at_least(1), "largest tool definition, in bytes of JSON"),
    "--max-stop-chars": ("max_stop_chars", _at_least(1), "longest stop string, in characters"),
    "--max-output-tokens": (
        "max_output_tokens",
        _at_least(0),
        "largest max_tokens / max_completion_tokens; 0: only the engine's max_seq_len bounds it",
    ),
}


def add_limit_arguments(group: argparse._ArgumentGroup) -> None:
    defaults = RequestLimits()
    for flag, (field, parse, help_text) in LIMIT_FLAGS.items():
        group.add_argument(flag, dest=field, type=parse, default=getattr(defaults, field), help=help_text)


def settings_from(parser: argparse.ArgumentParser, args: argparse.Namespace) -> GatewaySettings:
    """The gateway's settings from parsed arguments; ``parser.error`` (exit 2) for what the parser could not check."""
    if args.chat_path not in CHAT_PATHS:  # argparse checks choices on the command line, not on env defaults
        parser.error(f"NEMO_GATEWAY_CHAT_PATH is {args.chat_path!r}; accepted: {', '.join(CHAT_PATHS)}")
    if args.triton_lb_policy not in LB_POLICIES:
        parser.error(f"NEMO_GATEWAY_TRITON_LB_POLICY is {args.triton_lb_policy!r}; accepted: {', '.join(LB_POLICIES)}")
    try:
        parse_target(args.triton_url)
    except ValueError as error:
        parser.error(f"--triton-url: {error}")
    return GatewaySettings(
        triton_url=args.triton_url,
        triton_lb_policy=check_lb_policy(args.triton_lb_policy),
        triton_resolve_interval_s=args.triton_resolve_interval_s,
        triton_metrics_url=args.triton_metrics_url,
        served_model_name=args.served_model_name,
        # The key comes from the environment only, so that it never shows in a process list.
        api_key=os.environ.get(API_KEY_ENV) or None,
        limits=RequestLimits(**{field: getattr(args, field) for field, _, _ in LIMIT_FLAGS.values()}),
        request_timeout_s=args.request_timeout,
        body_timeout_s=args.body_timeout,
        admission=AdmissionLimits(args.max_in_flight, args.max_queued, args.max_queue_wait_s),
        direct=args.chat_path == "direct",
        tokenizer_file=args.tokenizer,
        response_store=args.response_store or None,
        response_retention_s=args.response_retention_s,
    )


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = settings_from(parser, args)
    from nemo_gateway.server import GatewayServer

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    GatewayServer(create_app(settings), host=args.host, port=args.port, log_level=args.log_level).run()


if __name__ == "__main__":
    main()
