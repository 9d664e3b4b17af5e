"""OpenAI's ``user`` field: the caller's stable id for its own end user, so that the operator can tell whose
requests are whose (abuse, quotas, support).

Nothing here stores it: the server that takes a request naming a user logs one line with the user and the
request's id (the gateway when the request is answered, the ``chat`` model when it is admitted), so that
a log search for a user finds their requests and one for an id finds its user.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nemo_protocol.errors import BadRequestError

MAX_END_USER_CHARS = 256


def end_user(body: Mapping[str, Any]) -> str | None:
    """The request's ``user``: None when absent; a BadRequestError naming ``user`` unless 1-256 printable chars."""
    value = body.get("user")
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequestError(f"must be a string, got {type(value).__name__}", param="user")
    if not 0 < len(value) <= MAX_END_USER_CHARS or not value.isprintable():
        raise BadRequestError(
            f"must be 1-{MAX_END_USER_CHARS} printable characters (it goes into the server's log)", param="user"
        )
    return value


def end_user_line(response_id: str, user: str) -> str:
    """The log line that ties a response the client saw (its ``id``) to the end user the request named."""
    return f"{response_id} answers end user {user!r}"
