"""``nemo-gateway``: serve the OpenAI-compatible HTTP API in front of a Triton deployment."""

from __future__ import annotations

import argparse
import logging
import os

from nemo_gateway.app import create_app
from nemo_gateway.settings import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_TRITON_URL,
    GatewaySettings,
)
from nemo_protocol.served_model import DEFAULT_SERVED_MODEL_NAME

API_KEY_ENV = "NEMO_GATEWAY_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nemo-gateway",
        description="OpenAI / NIM-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models, "
        "/v1/health/{live,ready}, /v1/metrics, /v1/version) in front of Triton's gRPC endpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--triton-url",
        default=os.environ.get("TRITON_GRPC_URL", DEFAULT_TRITON_URL),
        help="Triton gRPC address host:port (env TRITON_GRPC_URL)",
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
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="largest request body accepted"
    )
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


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = GatewaySettings(
        triton_url=args.triton_url,
        served_model_name=args.served_model_name,
        # The key comes from the environment only, so that it never shows in a process list.
        api_key=os.environ.get(API_KEY_ENV) or None,
        max_body_bytes=args.max_body_bytes,
        request_timeout_s=args.request_timeout,
    )
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
