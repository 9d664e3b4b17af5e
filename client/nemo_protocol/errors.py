"""Error types of the protocol layer. Every invalid request raises :class:`InvalidRequestError`."""

from __future__ import annotations


class NemoError(Exception):
    """Base class of every error this package raises on purpose."""


class TokenizerFileError(NemoError, ValueError):
    """A Tekken file is missing or malformed."""


class InvalidRequestError(NemoError, ValueError):
    """A chat request breaks a rule; ``param`` names the offending field, as in OpenAI error bodies.

    ``param`` is a path such as ``messages[2].tool_calls[0].function.arguments``.
    """

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}" if param else message)
        self.param = param
        self.message = message


class APIError(NemoError):
    """A call to the serving stack failed. Carries the server's message and OpenAI-style error fields."""

    status_code: int = 500
    error_type: str = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_openai(self) -> dict[str, dict[str, str | None]]:
        """The body an OpenAI-compatible server answers with."""
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


class BadRequestError(APIError):
    """The request is invalid (400); ``param`` names the field."""

    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(APIError):
    status_code = 401
    error_type = "authentication_error"


class NotFoundError(APIError):
    """Unknown model (404)."""

    status_code = 404
    error_type = "not_found_error"


class RequestTooLargeError(APIError):
    status_code = 413
    error_type = "invalid_request_error"


class ServerError(APIError):
    """The server failed while handling a valid request (500)."""


class UnavailableError(APIError):
    """Triton cannot be reached or is not ready (503); safe to retry later."""

    status_code = 503
    error_type = "service_unavailable"


class StreamInterruptedError(UnavailableError):
    """A stream broke after it had started: the output received so far is incomplete."""


class DeadlineExceededError(APIError):
    """The call did not finish within its timeout (504)."""

    status_code = 504
    error_type = "timeout"


_BY_TYPE: dict[str, type[APIError]] = {
    cls.error_type: cls
    for cls in (BadRequestError, AuthenticationError, NotFoundError, UnavailableError, DeadlineExceededError)
}


def error_from_body(body: object) -> APIError:
    """The typed error for an OpenAI error body ``{"error": {"message", "type", "param", "code"}}``."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ServerError(f"malformed error body: {body!r}")
    cls = _BY_TYPE.get(str(error.get("type")), ServerError)
    return cls(str(error.get("message", "")), param=error.get("param"), code=error.get("code"))
