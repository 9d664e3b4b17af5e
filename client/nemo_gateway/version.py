"""The installed release of this project, as ``/v1/version`` and the OpenAPI document report it."""

from __future__ import annotations

from functools import cache
from importlib import metadata

DISTRIBUTION = "mistral-nemo-trtllm"


@cache
def release() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"
