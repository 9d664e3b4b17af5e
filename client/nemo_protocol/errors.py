"""Error types of the protocol layer and the one builder of OpenAI error bodies.

Every invalid request, found on the client or on the server, raises :class:`BadRequestError`.
"""

from __future__ import annotations

ErrorBody = dict[str, dict[str, str | int | None]]


def error_body(message: str, *, error_type: str, param: str | None = None, code: str | int | None = None) -> ErrorBody:
    """``{"error": {"message", "type", "param", "code"}}``, the error body of OpenAI and NIM."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class NemoError(Exception):
    """Base class of every error this package raises on purpose."""


class TokenizerFileError(NemoError, ValueError):
    """A Tekken file is missing or malformed."""


class APIError(NemoError):
    """A call to the serving stack failed. Carries the server's message and OpenAI-style error fields."""

    status_code: int = 500
    error_type: str = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def named(self) -> str:
        """``param: message`` (the message alone when it names ``param`` already, or there is none): the text a
        Triton error response carries, by which clients tell the input at fault."""
        if self.param and not self.message.startswith(f"{self.param}: "):
            return f"{self.param}: {self.message}"
        return self.message

    def to_openai(self) -> ErrorBody:
        """The body an OpenAI-compatible server answers with; its message names ``param`` (as ``str()`` does)."""
        return error_body(str(self), error_type=self.error_type, param=self.param, code=self.code)


class BadRequestError(APIError, ValueError):
    """The request is invalid (400); ``param`` names the offending field, as in OpenAI error bodies.

    ``param`` is a path such as ``messages[2].tool_calls[0].function.arguments`` (or a tensor name on the
    Triton side). ``str()`` is ``param: message``, the text a Triton error response carries.
    """

    status_code = 400
    error_type = "invalid_request_error"

    def __str__(self) -> str:
        return self.named()


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


ENGINE_OUT_OF_MEMORY = "the engine ran out of memory"
"""How an engine words a request it had to end for want of memory (the CPU runtime's chunked prefill ends that request
alone): transports that carry errors as text answer it 503, a resource refusal to retry later, not a server bug."""


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
