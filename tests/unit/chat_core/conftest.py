"""The chat core the serving tests share."""

from __future__ import annotations

import pytest

from nemo_chat_core.chat import ChatEndpoint
from nemo_chat_core.length_limits import LengthLimits
from nemo_protocol.tekken import Tekkenizer


@pytest.fixture(scope="module")
def endpoint(tok: Tekkenizer) -> ChatEndpoint:
    """The chat core as a CPU deployment configures it (prompts up to 256 tokens, sequences up to 512)."""
    return ChatEndpoint(tok, LengthLimits(256, 512), "nemo-test", supports_penalties=False)
