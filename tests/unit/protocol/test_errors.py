"""One invalid-request error, one OpenAI error-body builder, one request-id helper."""

from __future__ import annotations

import pytest

from nemo_protocol.errors import APIError, BadRequestError, NotFoundError, error_body, error_from_body
from nemo_protocol.request_ids import new_request_id


def test_bad_request_names_the_field_in_its_text() -> None:
    error = BadRequestError("must be >= 0, got -1", param="temperature")
    assert isinstance(error, APIError) and isinstance(error, ValueError)
    assert (error.param, error.message) == ("temperature", "must be >= 0, got -1")
    assert str(error) == "temperature: must be >= 0, got -1"
    assert str(BadRequestError("the request body must be a JSON object")) == "the request body must be a JSON object"
    with pytest.raises(ValueError, match=r"^temperature: must be"):
        raise error


def test_an_error_read_back_from_a_chat_body_does_not_repeat_its_field() -> None:
    sent = BadRequestError("is required", param="messages")
    body = error_body(str(sent), error_type=sent.error_type, param=sent.param, code=sent.status_code)
    assert body == {
        "error": {"message": "messages: is required", "type": "invalid_request_error", "param": "messages", "code": 400}
    }
    received = error_from_body(body)
    assert isinstance(received, BadRequestError) and received.param == "messages"
    assert str(received) == received.message == "messages: is required"


def test_to_openai_is_the_one_error_body() -> None:
    error = NotFoundError("the model 'x' does not exist", param="model", code="model_not_found")
    assert error.to_openai() == error_body(
        "the model 'x' does not exist", error_type="not_found_error", param="model", code="model_not_found"
    )
    assert BadRequestError("bad").to_openai() == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}
    }


def test_request_ids_are_fresh_and_shaped_for_their_use() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert new_request_id("chatcmpl-").startswith("chatcmpl-")
    numeric = [new_request_id(numeric=True) for _ in range(1000)]
    assert all(i.isdigit() and 0 <= int(i) < 2**63 for i in numeric) and len(set(numeric)) == 1000
