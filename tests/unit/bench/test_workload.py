"""Synthetic prompts have the asked Tekken length; prompt files are read or refused with the line named."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from nemo_bench.workload import FilePrompts, SyntheticPrompts, WorkloadError
from nemo_protocol.tekken import Tekkenizer


@pytest.fixture(scope="module")
def tokenizer(tekken_path: Path) -> Tekkenizer:
    return Tekkenizer.from_file(tekken_path)


@pytest.mark.parametrize("length", [1, 128, 1000, 2048])
def test_synthetic_prompts_measure_exactly_the_input_length(tokenizer: Tekkenizer, length: int) -> None:
    for request in itertools.islice(SyntheticPrompts(tokenizer, length, 64, seed=3), 5):
        assert len(tokenizer.encode(request.messages[0]["content"])) == length
        assert request.input_tokens == length
        assert request.max_tokens == 64


def test_synthetic_prompts_differ_and_repeat_with_the_seed(tokenizer: Tekkenizer) -> None:
    first = [r.messages[0]["content"] for r in itertools.islice(SyntheticPrompts(tokenizer, 32, 8, seed=1), 20)]
    again = [r.messages[0]["content"] for r in itertools.islice(SyntheticPrompts(tokenizer, 32, 8, seed=1), 20)]
    other = [r.messages[0]["content"] for r in itertools.islice(SyntheticPrompts(tokenizer, 32, 8, seed=2), 20)]
    assert len(set(first)) == 20
    assert first == again
    assert first != other


@pytest.mark.parametrize(("isl", "osl"), [(0, 8), (8, 0)])
def test_synthetic_prompts_refuse_empty_lengths(tokenizer: Tekkenizer, isl: int, osl: int) -> None:
    with pytest.raises(WorkloadError, match="at least 1 token"):
        SyntheticPrompts(tokenizer, isl, osl)


def test_prompt_file_gives_prompts_and_conversations_in_order(tmp_path: Path, tokenizer: Tekkenizer) -> None:
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        json.dumps({"prompt": "Hello world", "max_tokens": 5}) + "\n\n" + json.dumps({"messages": conversation}) + "\n"
    )
    first, second, third = itertools.islice(iter(FilePrompts(path, 77, tokenizer)), 3)
    assert first.messages == [{"role": "user", "content": "Hello world"}]
    assert (first.max_tokens, first.input_tokens) == (5, 2)
    assert (second.messages, second.max_tokens, second.input_tokens) == (conversation, 77, None)
    assert third == first  # the file is cycled


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no prompts"),
        ('{"prompt": "a"}\n{"prompt": ', ":2: not valid JSON"),
        ('["a"]', ":1: each line must be a JSON object"),
        ('{"prompt": "a", "max_tokens": 0}', ":1: 'max_tokens' must be a positive integer"),
        ('{"messages": []}', ":1: needs 'prompt'"),
    ],
)
def test_bad_prompt_files_are_refused_naming_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(WorkloadError, match=message):
        FilePrompts(path, 16)


def test_missing_prompt_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match=r"cannot read the prompt file .*missing\.jsonl"):
        FilePrompts(tmp_path / "missing.jsonl", 16)
