"""gateway.requests in the chart: the per-request timeout, the body deadline and the body size limit reach
`nemo-gateway` as flags its own parser takes, in the gateway Deployment and in the Triton pods' gateways
(routing.mode=inferencePool), and the schema refuses values the gateway would refuse."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from nemo_gateway.settings import DEFAULT_BODY_TIMEOUT_S, DEFAULT_REQUEST_TIMEOUT_S
from nemo_protocol.request_limits import DEFAULT_MAX_BODY_BYTES
from tests.helm.chart_support import container, parse_gateway_args, pod_spec, render, values_from

LIMIT_FLAGS = ("--request-timeout", "--body-timeout", "--max-body-bytes")


def limits(args: list[str]) -> tuple[Any, ...]:
    parsed = parse_gateway_args(args)
    return tuple(parsed[flag] for flag in LIMIT_FLAGS)


def test_the_defaults_are_the_gateways_own_and_fit_a_128k_prompt_in_any_language() -> None:
    args = container(pod_spec(render().component("Deployment", "gateway")), "gateway")["args"]
    assert limits(args) == (DEFAULT_REQUEST_TIMEOUT_S, DEFAULT_BODY_TIMEOUT_S, DEFAULT_MAX_BODY_BYTES)
    # 128k tokens of Arabic JSON with \uXXXX escapes took up to 18.7 bytes a token (docs/BENCHMARKS.md).
    assert DEFAULT_MAX_BODY_BYTES >= 131072 * 19


@pytest.mark.parametrize("mode", ["gateway", "inferencePool"])
def test_set_values_reach_every_gateway(mode: str) -> None:
    values = values_from(
        **{
            "routing.mode": mode,
            "routing.inferencePool.httpRoute.gateway.name": "inference-gateway",
            "gateway.requests.timeoutSeconds": 1800,
            "gateway.requests.bodyTimeoutSeconds": 12.5,
            "gateway.requests.maxBodyBytes": 67108864,
        }
    )
    component = "gateway" if mode == "gateway" else "triton"
    args = container(pod_spec(render(values).component("Deployment", component)), "gateway")["args"]
    assert limits(args) == (1800.0, 12.5, 67108864)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("timeoutSeconds", 0, "exclusiveMinimum"),
        ("bodyTimeoutSeconds", -1, "exclusiveMinimum"),
        ("maxBodyBytes", 0, "minimum"),
        ("maxBodyBytes", "16Mi", "integer"),
    ],
)
def test_the_schema_refuses_what_the_gateway_would(key: str, value: Any, reason: str) -> None:
    with pytest.raises(helm.HelmValuesError) as raised:
        render(values_from(**{f"gateway.requests.{key}": value}))
    assert f"/gateway/requests/{key}" in str(raised.value) and reason in str(raised.value)
