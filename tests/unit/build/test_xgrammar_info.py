"""The GPU repository's xgrammar tokenizer info, read the way TensorRT-LLM reads it (tests/data/upstream).

TensorRT-LLM builds xgrammar's TokenizerInfo from the file's ``encoded_vocab`` with the metadata xgrammar
detects in ``tokenizer_str`` and the file's ``stop_token_ids``; the same calls through xgrammar's Python API
must give back every Tekken token's exact bytes, mask every control token, and guide real Tekken ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_build.repository import XGRAMMAR_INFO_FILE, add_repository_parser, run_repository
from nemo_build.xgrammar_info import byte_to_unicode, tokenizer_info
from nemo_protocol.tekken import Tekkenizer
from tests.gpu_host.conformance import gpu_repository_problems, tokenizer_info_problems
from tests.gpu_host.upstream import upstream_data
from tests.unit.build.model_configs import load

xgrammar = pytest.importorskip("xgrammar", reason="xgrammar comes with the build extra")


@pytest.fixture(scope="module")
def info(tok: Tekkenizer) -> dict:
    return tokenizer_info(tok)


def tensorrt_llm_tokenizer_info(info: dict) -> xgrammar.TokenizerInfo:
    """guidedDecoder.cpp: DetectMetadataFromHF(tokenizer_str), then TokenizerInfo(vocab, type, size, stops, prefix)."""
    metadata = xgrammar.TokenizerInfo._detect_metadata_from_hf(info["tokenizer_str"])
    return xgrammar.TokenizerInfo(
        info["encoded_vocab"],
        xgrammar.VocabType(metadata["vocab_type"]),
        vocab_size=len(info["encoded_vocab"]),
        stop_token_ids=info["stop_token_ids"],
        add_prefix_space=metadata["add_prefix_space"],
    )


def test_the_byte_map_is_gpt2s_and_reversible() -> None:
    table = byte_to_unicode()
    assert len(set(table.values())) == 256 and table[ord("A")] == "A" and table[ord(" ")] == "Ġ"
    assert table[ord("\n")] == "Ċ" and all(len(char) == 1 for char in table.values())


def test_xgrammar_reads_back_every_token_and_masks_control_tokens(info: dict, tok: Tekkenizer) -> None:
    upstream = upstream_data("xgrammar_tokenizer_info.json")["file"]
    assert set(info) == set(upstream["keys"])
    assert json.loads(info["tokenizer_str"])["decoder"]["type"] == "ByteLevel"
    assert len(info["encoded_vocab"]) == tok.vocab_size and info["stop_token_ids"] == [tok.eos_id]
    read = tensorrt_llm_tokenizer_info(info)
    assert read.vocab_type == xgrammar.VocabType.BYTE_LEVEL and read.add_prefix_space is False
    decoded = read.decoded_vocab
    ordinary = [i for i in range(tok.vocab_size) if not tok.is_control(i)]
    assert all(decoded[i] == tok.token_bytes(i) for i in ordinary)  # non-UTF-8 fragments included
    control = {i for i in range(tok.vocab_size) if tok.is_control(i)} - {tok.eos_id}
    assert control <= set(read.special_token_ids)
    assert read.stop_token_ids == [tok.eos_id]


def test_a_guide_compiled_over_it_accepts_tekken_ids_and_refuses_control_tokens(info: dict, tok: Tekkenizer) -> None:
    compiler = xgrammar.GrammarCompiler(tensorrt_llm_tokenizer_info(info), max_threads=1)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    matcher = xgrammar.GrammarMatcher(compiler.compile_json_schema(json.dumps(schema)))
    for token in tok.encode('{"city": "Zürich 東京"}'):
        assert matcher.accept_token(token)
    assert not xgrammar.GrammarMatcher(compiler.compile_json_schema(json.dumps(schema))).accept_token(
        tok.control_id("[INST]")
    )
    assert matcher.accept_token(tok.eos_id) and matcher.is_terminated()


def test_the_gpu_repository_enables_guided_decoding_with_the_file(tmp_path: Path, tekken_path: Path) -> None:
    import argparse

    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "config.json").write_text(
        json.dumps({"build_config": {"max_batch_size": 8, "max_input_len": 1024, "max_seq_len": 2048}})
    )
    parser = argparse.ArgumentParser()
    add_repository_parser(parser.add_subparsers())
    out = tmp_path / "repository"
    args = [
        "repository",
        "--target",
        "gpu",
        "--engine",
        str(engine),
        "--tokenizer",
        str(tekken_path),
        "--out",
        str(out),
    ]
    assert run_repository(parser.parse_args(args)) == 0
    params = {key: value.string_value for key, value in load(out / "tensorrt_llm" / "config.pbtxt").parameters.items()}
    assert params["guided_decoding_backend"] == "xgrammar"
    assert params["xgrammar_tokenizer_info_path"] == str((out / "tensorrt_llm" / XGRAMMAR_INFO_FILE).resolve())
    assert tokenizer_info_problems(Path(params["xgrammar_tokenizer_info_path"])) == []
    assert gpu_repository_problems(out) == []
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"encoded_vocab": ["a", 1], "tokenizer_str": "{}"}))
    assert [p.split(": ", 1)[1].split(" (")[0] for p in tokenizer_info_problems(broken)] == [
        "encoded_vocab must be an array of strings",
        "stop_token_ids must be an array of integers",
    ]
