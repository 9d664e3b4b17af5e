"""Fixtures shared by every test layer."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tekken_path() -> Path:
    """The NeMo Tekken file shipped by mistral-common (the tokenizer Mistral NeMo uses)."""
    from nemo_client.tekken import default_tekken_path

    return default_tekken_path()
