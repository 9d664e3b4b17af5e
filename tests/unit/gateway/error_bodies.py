"""The OpenAI error body every refusal of the gateway carries, read with its shape checked."""

from __future__ import annotations

ERROR_KEYS = {"message", "type", "param", "code"}


def error_of(response: object) -> dict[str, object]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    return body["error"]
