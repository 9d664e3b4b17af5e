"""Reading request tensors (numpy arrays as Triton hands them over) with errors that name the tensor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from nemo_protocol.errors import BadRequestError

T = TypeVar("T")

Inputs = Callable[[str], "np.ndarray | None"]
"""Looks an input tensor of one request up by name; None when the request does not carry it."""


def scalar(array: np.ndarray | None, name: str, convert: Callable[[Any], T], default: T) -> T:
    """The one value of a per-request scalar tensor (any shape holding one element), or `default`."""
    if array is None:
        return default
    if array.size != 1:
        raise BadRequestError(f"expected one value, got shape {list(array.shape)}", param=name)
    return convert(array.reshape(-1)[0].item())


def scalar_tensor(value: object, dtype: type) -> np.ndarray:
    """A per-request scalar tensor of a batch of one: shape [1, 1]."""
    return np.array([[value]], dtype=dtype)


def string_tensor(text: str) -> np.ndarray:
    """A BYTES tensor of shape [1] holding ``text`` as UTF-8."""
    return np.array([text.encode("utf-8")], dtype=object)


def texts(array: np.ndarray | None, name: str) -> list[str]:
    """The UTF-8 strings of a BYTES tensor, flattened; empty strings are dropped."""
    if array is None:
        return []
    out = []
    for item in array.reshape(-1):
        raw = item if isinstance(item, bytes) else str(item).encode()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequestError(f"is not valid UTF-8 ({exc.reason} at byte {exc.start})", param=name) from None
        if text:
            out.append(text)
    return out


def single_text(array: np.ndarray, name: str) -> str:
    """The one string of a per-request BYTES tensor."""
    if array.size != 1:
        raise BadRequestError(f"expected one string, got shape {list(array.shape)}", param=name)
    values = texts(array, name)
    return values[0] if values else ""
