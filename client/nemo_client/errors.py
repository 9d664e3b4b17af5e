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
