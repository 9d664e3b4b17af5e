"""The tiny NeMo-shaped models: shape, determinism, and the trained one's answers through the FP8 export."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest

from nemo_build.cli import main
from nemo_build.tiny.chat import CHAT_SET, COMPLETION_SET, TOOL_SPELLINGS, ChatExample, encode_example, example
from nemo_runtime.scheduler import ReferenceRuntime


def test_tiny_model_is_shaped_like_nemo(tiny_model_dir: Path, tekken_path: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["architectures"] == ["MistralForCausalLM"]
    assert config["vocab_size"] == 131072 and config["rope_theta"] == 1_000_000.0
    assert config["head_dim"] != config["hidden_size"] // config["num_attention_heads"]
    assert config["num_attention_heads"] // config["num_key_value_heads"] == 32 // 8
    index = json.loads((tiny_model_dir / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((tiny_model_dir / s).is_file() for s in shards)
    assert (tiny_model_dir / "tekken.json").read_bytes() == tekken_path.read_bytes()
    assert sum(p.stat().st_size for p in tiny_model_dir.iterdir()) < 64 << 20


def test_same_seed_same_bytes_and_no_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tiny-model", "--out", str(tmp_path / "a"), "--seed", "7"]) == 0
    assert main(["tiny-model", "--out", str(tmp_path / "b"), "--seed", "7"]) == 0
    assert "tiny NeMo-shaped model" in capsys.readouterr().out
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)
    assert main(["tiny-model", "--out", str(tmp_path / "a"), "--seed", "7"]) == 2
    assert "pass --force" in capsys.readouterr().err


def test_trained_model_answers_every_chat_example_through_the_fp8_checkpoint(
    fp8_checkpoint_dir: Path, tekken_path: Path
) -> None:
    from nemo_protocol.tekken import Tekkenizer

    tokenizer = Tekkenizer.from_file(tekken_path)
    runtime = ReferenceRuntime.from_checkpoint(fp8_checkpoint_dir)
    for item in CHAT_SET:
        prompt, answer = encode_example(tokenizer, item)
        result = runtime.generate(prompt, max_new_tokens=len(answer) + 5, end_id=tokenizer.eos_id)
        assert (result.token_ids, result.finish_reason) == (answer[:-1], "stop"), item.name

    for completion in COMPLETION_SET:  # no end trained: the continuation, then whatever comes
        prompt, answer = encode_example(tokenizer, completion)
        result = runtime.generate(prompt, max_new_tokens=len(answer), end_id=tokenizer.eos_id)
        assert tokenizer.decode(result.token_ids) == completion.continuation, completion.name

    prompt, answer = encode_example(tokenizer, example("tool_call"))
    assert answer[0] == tokenizer.control_id("[TOOL_CALLS]")
    calls = json.loads(tokenizer.decode(answer))
    assert calls == [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1b2c3d4e"}]
    assert example("tool_call").answer_tool_calls == calls
    assert tokenizer.decode(encode_example(tokenizer, example("chinese"))[1]) == "你好！有什么可以帮你的吗？"


def test_the_trained_model_answers_a_tool_result_under_call_ids_it_never_saw(
    fp8_checkpoint_dir: Path, tekken_path: Path
) -> None:
    """The server gives every call a fresh random id, which the tool result then carries: the integration tests
    (LangChain, the Agents SDK, the openai SDK) pass only if the answer does not depend on it, in every spelling."""
    from nemo_protocol.tekken import Tekkenizer

    tokenizer = Tekkenizer.from_file(tekken_path)
    runtime = ReferenceRuntime.from_checkpoint(fp8_checkpoint_dir)
    trained = example("tool_result")
    draw = random.Random(2026)
    for spelling, tool in TOOL_SPELLINGS.items():
        for _ in range(8):
            call_id = "".join(draw.choice(string.ascii_letters + string.digits) for _ in range(9))
            messages = json.loads(json.dumps(trained.messages).replace("a1b2c3d4e", call_id))
            prompt, answer = encode_example(tokenizer, ChatExample("unseen", tuple(messages), trained.answer, (tool,)))
            result = runtime.generate(prompt, max_new_tokens=len(answer) + 5, end_id=tokenizer.eos_id)
            assert tokenizer.decode(result.token_ids) == trained.answer_text, (spelling, call_id)
