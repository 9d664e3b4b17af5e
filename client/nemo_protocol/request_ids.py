"""Fresh request and response ids: every id the stack mints comes from :func:`new_request_id`."""

from __future__ import annotations

import uuid


def new_request_id(prefix: str = "", *, numeric: bool = False) -> str:
    """A fresh random id (a UUID4): ``prefix`` then 32 hex digits.

    ``numeric`` gives decimal digits below 2**63 instead (a non-negative int64), the form of the ids the
    `chat` and `ensemble` models give their `tensorrt_llm` requests: the tensorrtllm backend keys requests by
    integer ids.
    """
    value = uuid.uuid4()
    return f"{prefix}{value.int >> 65}" if numeric else f"{prefix}{value.hex}"
