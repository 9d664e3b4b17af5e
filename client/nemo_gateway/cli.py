"""``nemo-gateway``: serve the OpenAI-compatible HTTP API in front of a Triton deployment."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path

from nemo_gateway.app import create_app
from nemo_gateway.settings import DEFAULT_REQUEST_TIMEOUT_S, DEFAULT_TRITON_URL, GatewaySettings
from nemo_protocol.json_values import MAX_JSON_DEPTH
from nemo_protocol.request_limits import RequestLimits
from nemo_protocol.served_model import DEFAULT_SERVED_MODEL_NAME

API_KEY_ENV = "NEMO_GATEWAY_API_KEY"
CHAT_PATHS = ("direct", "chat-model")


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
        help="Triton gRPC address host:port (env TRITON_GRPC_URL)",
    )
    parser.add_argument(
        "--triton-metrics-url",
        default=os.environ.get("TRITON_METRICS_URL"),
        help="Triton's metrics endpoint, read at each /v1/metrics scrape for the engine figures (requests running "
        "and waiting, KV-cache usage) under NIM's names; default: http://<--triton-url host>:8002/metrics "
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
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT_S,
        help="seconds one request may take, stream included",
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


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.chat_path not in CHAT_PATHS:  # argparse checks choices on the command line, not on env defaults
        parser.error(f"NEMO_GATEWAY_CHAT_PATH is {args.chat_path!r}; accepted: {', '.join(CHAT_PATHS)}")
    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = GatewaySettings(
        triton_url=args.triton_url,
        triton_metrics_url=args.triton_metrics_url,
        served_model_name=args.served_model_name,
        # The key comes from the environment only, so that it never shows in a process list.
        api_key=os.environ.get(API_KEY_ENV) or None,
        limits=RequestLimits(**{field: getattr(args, field) for field, _, _ in LIMIT_FLAGS.values()}),
        request_timeout_s=args.request_timeout,
        direct=args.chat_path == "direct",
        tokenizer_file=args.tokenizer,
    )
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
