"""The long-context step's pieces, on the CPU: haystacks whose size is what mistral-common counts for the chat (the
real Tekken file), needles where they were asked to be, the answer check and which sizes a deployment serves."""

from __future__ import annotations

from pathlib import Path

import pytest
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from nemo_build.profiles import load_profile
from nemo_ops.gpu_check.needle import (
    FILLER,
    HAYSTACK_TOKENS,
    QUESTION,
    answer_found,
    build_haystack,
    long_context_problems,
    planned_haystacks,
)
from nemo_protocol.tekken import Tekkenizer


@pytest.fixture(scope="module")
def mistral_common(tekken_path: Path) -> MistralTokenizer:
    return MistralTokenizer.from_file(str(tekken_path))


def _counted(reference: MistralTokenizer, messages: list[dict[str, str]]) -> int:
    request = ChatCompletionRequest.from_openai(messages=messages)  # type: ignore[arg-type]
    return len(reference.encode_chat_completion(request).tokens)


@pytest.mark.parametrize("size", [2_000, HAYSTACK_TOKENS[0]])
@pytest.mark.parametrize("depth", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_a_haystack_is_as_long_as_mistral_common_counts_it_with_the_needle_at_its_depth(
    tok: Tekkenizer, mistral_common: MistralTokenizer, size: int, depth: float
) -> None:
    haystack = build_haystack(tok, size, depth, "amber-falcon-731")
    assert haystack.prompt_tokens == _counted(mistral_common, haystack.messages)
    longest_sentence = max(len(tok.encode(f" {sentence}")) for sentence in FILLER)
    assert size - longest_sentence <= haystack.prompt_tokens <= size
    [message] = haystack.messages
    text = message["content"]
    assert text.count("The secret passphrase is amber-falcon-731.") == 1 and text.endswith(f"\n\n{QUESTION}")
    filler = text.removesuffix(QUESTION).replace("The secret passphrase is amber-falcon-731.", "")
    assert "passphrase" not in filler and "amber" not in filler
    assert haystack.needle_depth == pytest.approx(depth, abs=0.01)
    before = text[: text.index("The secret passphrase is amber-falcon-731.")]
    filler_tokens = haystack.prompt_tokens - len(tok.encode(f"{QUESTION} The secret passphrase is x."))
    assert len(tok.encode(before)) == pytest.approx(depth * filler_tokens, abs=0.01 * size + 30)


def test_the_128k_haystack_fits_128k(tok: Tekkenizer, mistral_common: MistralTokenizer) -> None:
    haystack = build_haystack(tok, HAYSTACK_TOKENS[-1], 0.5, "cobalt-otter-258")
    assert HAYSTACK_TOKENS[-1] - 40 <= haystack.prompt_tokens <= HAYSTACK_TOKENS[-1]
    assert haystack.prompt_tokens == _counted(mistral_common, haystack.messages)


def test_a_haystack_smaller_than_its_question_or_a_depth_outside_0_1_is_refused(tok: Tekkenizer) -> None:
    with pytest.raises(ValueError, match="too small: the needle and question take"):
        build_haystack(tok, 20, 0.5, "x")
    with pytest.raises(ValueError, match=r"depth is 1\.5: a fraction from 0"):
        build_haystack(tok, 1000, 1.5, "x")


@pytest.mark.parametrize(
    ("answer", "found"),
    [
        ("amber-falcon-731", True),
        ("The passphrase is Amber-Falcon-731.", True),
        ("amber falcon 731", True),
        ("amber-falcon-73", False),
        ("I could not find a passphrase.", False),
        ("", False),
    ],
)
def test_the_answer_must_name_the_passphrase(answer: str, found: bool) -> None:
    assert answer_found(answer, "amber-falcon-731") is found


def test_sizes_past_a_deployments_limits_are_skipped_with_the_reason() -> None:
    assert planned_haystacks(131_072, 131_072) == [(size, None) for size in HAYSTACK_TOKENS]
    sixteen = planned_haystacks(16_384, 16_384)
    assert sixteen[0] == (16_000, None)
    why = "the profile serves max_input_len 16384, max_seq_len 16384"
    assert sixteen[1:] == [(64_000, why), (128_000, why)]
    assert planned_haystacks(131_072, 128_010)[-1][1] is not None  # no room for the answer


def test_preflight_refuses_long_context_on_a_profile_that_serves_no_haystack() -> None:
    assert long_context_problems(load_profile("h100-fp8-tp1-128k")) == []
    assert long_context_problems(load_profile("h100-fp8-tp1")) == []  # the 16k haystack runs
    [problem] = long_context_problems(load_profile("h100-fp8-tp1-eval"))
    assert "profile h100-fp8-tp1-eval serves no haystack (the profile serves max_input_len 4096" in problem
    assert problem.endswith("use h100-fp8-tp1-128k")
