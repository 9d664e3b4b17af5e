"""The upstream test data in `tests/data/upstream/` (each file names the repository, commit and path it holds)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

UPSTREAM = Path(__file__).resolve().parents[1] / "data" / "upstream"


@cache
def upstream_data(name: str) -> dict[str, Any]:
    """One file, parsed once per process; callers read it, never change it."""
    return json.loads((UPSTREAM / name).read_text())
