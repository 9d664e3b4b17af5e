"""The gateway's request limits and hostile bodies: each refusal is a 400/413 in the OpenAI shape, nothing
reaches upstream, and the limits come from the CLI flags."""

from __future__ import annotations

from typing import Any

import pytest

from nemo_gateway.cli import LIMIT_FLAGS, build_parser
from nemo_protocol.request_limits import RequestLimits
from tests.unit.gateway.conftest import FRANCE, Gateway, MakeGateway
from tests.unit.gateway.error_bodies import error_of

JSON = {"content-type": "application/json"}


def refused(gw: Gateway, path: str, content: bytes | str, status: int = 400) -> dict[str, object]:
    response = gw.http.post(path, content=content, headers=JSON)
    assert response.status_code == status, response.text
    assert gw.upstream.bodies == [], "a refused request never reaches Triton"
    return error_of(response)


@pytest.mark.parametrize("depth", [65, 5_000, 200_000])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_deep_nesting_is_a_400(gateway: Gateway, path: str, depth: int) -> None:
    error = refused(gateway, path, '{"messages": ' + "[" * depth + "]" * depth + "}")
    assert "nested deeper than 64 levels" in str(error["message"])


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ('{"messages": [{"role": "user", "content": "\\ud800"}]}', "messages[0].content"),
        ('{"messages": [{"role": "tool", "tool_call_id": "\\udfff", "content": "x"}]}', "messages[0].tool_call_id"),
        ('{"prompt": "a\\ud800"}', "prompt"),
    ],
)
def test_a_lone_surrogate_is_a_400_naming_the_field(gateway: Gateway, raw: str, param: str) -> None:
    path = "/v1/completions" if "prompt" in raw else "/v1/chat/completions"
    assert refused(gateway, path, raw)["param"] == param


def test_nan_is_refused_as_not_json(gateway: Gateway) -> None:
    error = refused(gateway, "/v1/chat/completions", '{"messages": [], "temperature": NaN}')
    assert "NaN is not a JSON number" in str(error["message"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": FRANCE * 5}, "messages"),
        ({"messages": FRANCE, "tools": [{"type": "function", "function": {"name": "f"}}] * 3}, "tools"),
        ({"messages": FRANCE, "tools": [{"type": "function", "function": {"name": "f" * 600}}]}, "tools[0]"),
        ({"messages": FRANCE, "stop": ["ok", "x" * 11]}, "stop[1]"),
        ({"messages": FRANCE, "max_completion_tokens": 65}, "max_completion_tokens"),
    ],
)
def test_configured_limits_refuse_chat_bodies(make_gateway: MakeGateway, body: dict[str, Any], param: str) -> None:
    limits = RequestLimits(max_messages=4, max_tools=2, max_tool_bytes=512, max_stop_chars=10, max_output_tokens=64)
    gw = make_gateway(limits=limits)
    response = gw.http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400 and error_of(response)["param"] == param
    assert gw.upstream.bodies == []
    assert gw.sample("nemo_gateway_requests_total", endpoint="chat", status="400") == 1


def test_configured_limits_refuse_completion_bodies(make_gateway: MakeGateway) -> None:
    gw = make_gateway(limits=RequestLimits(max_stop_chars=3, max_output_tokens=8))
    assert error_of(gw.http.post("/v1/completions", json={"prompt": "a", "stop": "abcd"}))["param"] == "stop"
    assert error_of(gw.http.post("/v1/completions", json={"prompt": "a", "max_tokens": 9}))["param"] == "max_tokens"
    assert gw.upstream.bodies == []


@pytest.mark.parametrize("options", [[None, None], "x", 3, {"include_usage": "yes"}, {"include_usage": 1}])
def test_a_malformed_stream_options_goes_upstream_untouched(gateway: Gateway, options: object) -> None:
    # The chat model refuses it naming the field (tests/unit/chat_core); the gateway must not crash on it.
    response = gateway.http.post(
        "/v1/chat/completions", json={"messages": FRANCE, "stream": True, "stream_options": options}
    )
    assert response.status_code == 200
    assert gateway.upstream.bodies[-1]["stream_options"] == options


def test_every_limit_has_a_flag_and_the_flags_reach_the_settings() -> None:
    assert {field for field, _, _ in LIMIT_FLAGS.values()} == set(vars(RequestLimits()))
    args = build_parser().parse_args(["--max-messages", "7", "--max-output-tokens", "0", "--max-json-depth", "9"])
    assert (args.max_messages, args.max_output_tokens, args.max_json_depth) == (7, 0, 9)
    for bad in (["--max-tools", "0"], ["--max-json-depth", "257"], ["--max-stop-chars", "many"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)


def test_help_names_the_api_key_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    assert "NEMO_GATEWAY_API_KEY" in capsys.readouterr().out
