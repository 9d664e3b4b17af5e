"""The long-context step's request, for real on the CPU stack: a haystack as long as the integration repository takes
(its max_input_len), streamed through the gateway and Triton to the tiny model. What is checked is the plumbing: the
deployment counts the prompt exactly as the haystack builder does (which is mistral-common's count, see
tests/unit/ops/test_needle.py) and the time to the first token is measured. Whether the needle is found says nothing
here: the tiny model only knows its few chat answers."""

from __future__ import annotations

from pathlib import Path

from openai import OpenAI

from nemo_ops.gpu_check.needle import ask, build_haystack
from nemo_protocol.tekken import Tekkenizer
from tests.integration.conftest import MAX_INPUT_LEN
from tests.integration.gateways import SERVED


def test_a_haystack_goes_through_with_its_exact_size_and_a_measured_ttft(gateway: str, tekken_path: Path) -> None:
    haystack = build_haystack(Tekkenizer.from_file(tekken_path), MAX_INPUT_LEN, 0.5, "amber-falcon-731")
    sdk = OpenAI(base_url=f"{gateway}/v1", api_key="not-needed", max_retries=0)
    result = ask(sdk, SERVED, haystack)
    assert result["usage_prompt_tokens"] == haystack.prompt_tokens > MAX_INPUT_LEN - 40
    assert result["ttft_s"] is not None and 0 < result["ttft_s"] <= result["e2e_s"]
    assert result["answer"], "the tiny model answers something (its first token is what TTFT times)"
    assert result["needle_depth"] == haystack.needle_depth and result["passphrase"] == "amber-falcon-731"
