"""What one gateway process is configured with: the CLI (flags and environment) builds it, ``create_app`` takes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nemo_client.grpc_target import DEFAULT_LB_POLICY, DEFAULT_RESOLVE_INTERVAL_S, LbPolicy
from nemo_gateway.admission import AdmissionLimits
from nemo_gateway.response_store import DEFAULT_RETENTION_S
from nemo_protocol.request_limits import RequestLimits
from nemo_protocol.served_model import DEFAULT_SERVED_MODEL_NAME

DEFAULT_TRITON_URL = "localhost:8001"
DEFAULT_REQUEST_TIMEOUT_S = 600.0
DEFAULT_BODY_TIMEOUT_S = 60.0  # a 128k-token prompt's body (1-3 MB in any language) at 400 kbit/s


@dataclass(frozen=True)
class GatewaySettings:
    triton_url: str = DEFAULT_TRITON_URL
    """Triton's gRPC target: ``host:port``, or every server of a DNS name (``dns:///name:port``, a headless Service)
    or a list (``ipv4:host:port,host:port``)."""
    triton_lb_policy: LbPolicy = DEFAULT_LB_POLICY
    """How requests spread over the servers ``triton_url`` names (:mod:`nemo_client.balancer`)."""
    triton_resolve_interval_s: float = DEFAULT_RESOLVE_INTERVAL_S
    """Seconds between look-ups of a DNS name's servers (0: looked up once)."""
    triton_metrics_url: str | None = None
    """Triton's metrics endpoints (comma-separated), read for the engine figures in ``/v1/metrics`` and summed
    (None: port 8002 of every server ``triton_url`` names; see :mod:`nemo_gateway.engine_metrics`)."""
    served_model_name: str = DEFAULT_SERVED_MODEL_NAME
    """The one model name clients may send as ``model`` (and ``/v1/models`` lists)."""
    api_key: str | None = None
    """When set, the OpenAI routes want ``Authorization: Bearer <api_key>``; probes and metrics never do."""
    limits: RequestLimits = field(default_factory=RequestLimits)
    """Bounds on one request: body size (413 before it is read whole), nesting, messages, tools, stop, tokens."""
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    """Seconds one upstream call may take, a stream included."""
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    """Seconds a request body may take to arrive whole (408 past it); a stalled upload holds a connection no longer."""
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
    """Generations upstream at once, and how many requests may wait how long for a slot (429 past that)."""
    direct: bool = True
    """Chat on the direct path: the gateway renders prompts and parses outputs itself and streams Triton's
    ``tensorrt_llm`` model (no python inside Triton on the token path); False: through Triton's ``chat`` model."""
    tokenizer_file: Path | None = None
    """The model's ``tekken.json`` for the direct path (None: mistral-common's copy of the NeMo file); it must be
    the file the repository was rendered with (checked by SHA-256 against the ``chat`` model's config)."""
    response_store: str | None = None
    """Where ``/v1/responses`` keeps stored responses: a SQLite file's path, or a ``postgresql://`` URL shared by
    gateway replicas (None: nothing is stored; ``store: true`` is refused)."""
    response_retention_s: float = DEFAULT_RETENTION_S
    """Seconds a stored response is kept (0: for ever)."""
