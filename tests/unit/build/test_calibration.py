"""Calibration data: `auto` and its offline fallback, generated chat/tool conversations, JSONL, folders of
.txt, local Hugging Face dataset folders, and clear errors."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from nemo_build.calibration import (
    CHAT_SHARE,
    DEFAULT_CALIB_SEQ_LEN,
    DEFAULT_CALIB_SIZE,
    LANGUAGES,
    OFFLINE_ENV_VARS,
    chat_conversations,
    chat_sample_count,
    default_calibration_path,
    gather_article_windows,
    load_calibration,
)
from nemo_build.checkpoint import CheckpointResult, summary
from nemo_build.cli import build_parser
from nemo_build.errors import BuildError
from nemo_protocol.chat_format import encode_chat

# A word or a script of each NeMo language, as it appears in the shipped set.
LANGUAGE_MARKERS = {
    "en": "Photosynthesis",
    "fr": "boulangers",
    "de": "Energiewende",
    "es": "investigación",
    "it": "museo",
    "pt": "relatório",
    "zh": "人工智能",
    "ja": "[\u3040-\u309f]",  # hiragana
    "ko": "[\uac00-\ud7a3]",  # hangul
    "ar": "[\u0600-\u06ff]",
    "hi": "[\u0900-\u097f]",  # devanagari
}


@pytest.fixture(scope="module")
def tokenizer(tekken_path: Path):
    from nemo_protocol.tekken import Tekkenizer

    return Tekkenizer.from_file(tekken_path)


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture()
def without_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process cannot import `datasets` (None in sys.modules makes the import raise ImportError)."""
    for var in OFFLINE_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)


def shipped_records() -> int:
    return sum(1 for line in default_calibration_path().read_text(encoding="utf-8").splitlines() if line.strip())


def test_default_offline_falls_back_to_the_shipped_set_and_covers_every_language(tokenizer, offline) -> None:
    calib = load_calibration(tokenizer)
    assert calib.fallback_reason == "HF_HUB_OFFLINE is set"
    assert calib.source.startswith("auto fell back to shipped: ") and str(default_calibration_path()) in calib.source
    chats = DEFAULT_CALIB_SIZE // CHAT_SHARE
    assert f"+ {chats} generated chat/tool conversations" in calib.source
    assert len(calib.samples) == shipped_records() + chats >= 32 + chats  # 32: the shipped set before `auto`
    flat = [t for s in calib.samples for t in s]
    for control in ("[INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[TOOL_RESULTS]"):
        assert tokenizer.control_id(control) in flat, control
    prose = [tokenizer.decode(s) for s in calib.samples if s[1] != tokenizer.control_id("[INST]")]
    text = "\n".join(prose)
    for language, marker in LANGUAGE_MARKERS.items():
        assert re.search(marker, text), language
    assert "def merge_intervals" in text and "Искусственный" in text
    assert load_calibration(tokenizer).sha256 == calib.sha256


@pytest.mark.parametrize("var", OFFLINE_ENV_VARS)
def test_each_offline_variable_and_a_missing_datasets_package_say_why(
    tokenizer, monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    shipped = load_calibration(tokenizer, "shipped", size=24)
    assert shipped.fallback_reason is None and shipped.source.startswith("shipped: ")

    for other in OFFLINE_ENV_VARS:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(var, "true")
    calib = load_calibration(tokenizer, "auto", size=24)
    assert calib.fallback_reason == f"{var} is set"
    assert calib.sha256 == shipped.sha256  # the fallback is exactly the shipped set

    monkeypatch.delenv(var)
    monkeypatch.setitem(sys.modules, "datasets", None)
    calib = load_calibration(tokenizer, None, size=24)
    assert "the `datasets` package is not installed (pip install datasets==3.1.0" in (calib.fallback_reason or "")
    assert calib.sha256 == shipped.sha256


def test_auto_gives_exactly_the_budget_one_conversation_in_eight(tokenizer, offline) -> None:
    inst, tools = tokenizer.control_id("[INST]"), tokenizer.control_id("[AVAILABLE_TOOLS]")
    calib = load_calibration(tokenizer, size=20, seq_len=64)
    assert len(calib.samples) == 20 and all(len(s) <= 64 and s[0] == tokenizer.bos_id for s in calib.samples)
    conversations = [i for i, s in enumerate(calib.samples) if s[1] in (inst, tools)]
    assert conversations == [7, 15] and chat_sample_count(20) == 2
    assert tokenizer.decode(calib.samples[0]).startswith("The river rises in the mountains")
    assert len(load_calibration(tokenizer, size=1).samples) == 1
    # more than the fallback holds: all of it, no repeats
    assert len(load_calibration(tokenizer, size=4096).samples) == shipped_records() + len(chat_conversations())


def test_generated_conversations_cover_languages_and_kinds_and_fit_the_window(tokenizer) -> None:
    conversations = chat_conversations()
    assert {c.language for c in conversations} == set(LANGUAGES)
    assert {c.kind for c in conversations} >= {"tool", "chat", "code", "parallel_tools", "multi_turn_tools"}
    first = conversations[: DEFAULT_CALIB_SIZE // CHAT_SHARE]  # what the default budget takes
    assert {c.language for c in first if c.kind == "tool"} == set(LANGUAGES)
    assert {c.language for c in first if c.kind == "chat"} == set(LANGUAGES)
    assert {t["function"]["name"] for c in first for t in c.tools or []} >= {
        "get_weather",
        "convert_currency",
        "create_event",
        "search_flights",
        "get_stock_price",
    }
    rendered = [tuple(encode_chat(tokenizer, c.messages, c.tools, allow_final_assistant=True)) for c in conversations]
    assert len(set(rendered)) == len(rendered)  # no duplicates
    # never truncated at the default window, so each keeps its final answer and </s>
    assert all(len(ids) <= DEFAULT_CALIB_SEQ_LEN and ids[-1] == tokenizer.eos_id for ids in rendered)
    for conversation, ids in zip(conversations, rendered, strict=True):
        if conversation.kind == "tool":
            for control in ("[AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[TOOL_RESULTS]"):
                assert tokenizer.control_id(control) in ids, (conversation, control)


def test_generated_conversations_are_what_mistral_common_renders(tokenizer, tekken_path: Path, offline) -> None:
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.validator import ValidationMode
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    reference = MistralTokenizer.from_file(str(tekken_path), mode=ValidationMode.finetuning)
    conversations = chat_conversations()
    kinds = ("tool", "chat", "parallel_tools", "system_tools", "multi_turn_tools", "code")
    picked = {kind: next(i for i, c in enumerate(conversations) if c.kind == kind) for kind in kinds}
    picked["tool_zh"] = next(i for i, c in enumerate(conversations) if c.kind == "tool" and c.language == "zh")
    calib = load_calibration(tokenizer, "shipped", size=CHAT_SHARE * len(conversations), seq_len=1024)
    for name, index in picked.items():
        conversation = conversations[index]
        request = ChatCompletionRequest.from_openai(messages=conversation.messages, tools=conversation.tools)
        expected = reference.encode_chat_completion(request).tokens
        assert encode_chat(tokenizer, conversation.messages, conversation.tools, allow_final_assistant=True) == expected
        assert tuple(expected) in calib.samples, name
    # while the shipped texts last, conversation k is sample CHAT_SHARE * k + CHAT_SHARE - 1
    first = conversations[0]
    first_ids = encode_chat(tokenizer, first.messages, first.tools, allow_final_assistant=True)
    assert list(calib.samples[CHAT_SHARE - 1]) == first_ids


def test_article_windows_take_equal_shares_round_robin(tokenizer) -> None:
    long = " is an article long enough to fill the whole window of sixteen tokens. " * 2
    texts = {
        "en": ["A stub.", "First" + long, "Second" + long, "Third" + long, "Fourth" + long],
        "fr": ["Premier article assez long pour remplir toute la fenêtre de seize jetons. " * 2, "Deuxième" + long],
        "zh": ["第一篇中文文章足够长，可以填满一个窗口。" * 6, "第二篇中文文章。" * 9, "第三篇。" * 20],
    }
    windows = gather_article_windows(tokenizer, texts, count=7, seq_len=16)  # shares 3, 2, 2
    assert len(windows) == 7 and all(len(w) == 16 and w[0] == tokenizer.bos_id for w in windows)
    starts = ["First", "Premier", "第一篇", "Second", "Deuxième", "第二篇", "Third"]  # the stub is skipped
    assert [tokenizer.decode(w).split(" ")[0][:3] for w in windows] == [s[:3] for s in starts]
    assert gather_article_windows(tokenizer, texts, count=7, seq_len=16) == windows


def test_hub_unreachable_falls_back_quickly(tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("datasets")
    for var in OFFLINE_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: connection refused
    calib = load_calibration(tokenizer, size=16)
    assert (calib.fallback_reason or "").startswith("the Hugging Face Hub is unreachable (")
    assert calib.sha256 == load_calibration(tokenizer, "shipped", size=16).sha256


def test_local_hugging_face_dataset_folder(tokenizer, tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "parquet"
    (parquet / "data").mkdir(parents=True)
    rows = ["Première phrase du jeu de données.", "", "Second row.", "第三行。", "fifth"]
    pq.write_table(pa.table({"text": rows, "id": list(range(5))}), parquet / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"text": ["held out"]}), parquet / "data" / "test-00000-of-00001.parquet")
    calib = load_calibration(tokenizer, parquet, size=3)
    assert [tokenizer.decode(s) for s in calib.samples] == [rows[0], rows[2], rows[3]]  # empty rows skipped
    assert calib.source == f"{parquet} (Hugging Face dataset folder, train split)" and calib.fallback_reason is None

    chats = tmp_path / "jsonl"
    chats.mkdir()
    record = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    (chats / "train.jsonl").write_text(json.dumps(record) + "\n" + json.dumps({"text": "plain"}) + "\n")
    calib = load_calibration(tokenizer, chats)
    assert calib.samples[0][:2] == (tokenizer.bos_id, tokenizer.control_id("[INST]")) and len(calib.samples) == 2

    no_train = tmp_path / "no-train"
    no_train.mkdir()
    (no_train / "validation.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(BuildError, match=r"has the splits validation; a `train` split is needed"):
        load_calibration(tokenizer, no_train)

    no_text = tmp_path / "no-text"
    no_text.mkdir()
    (no_text / "train.jsonl").write_text(json.dumps({"article": "x"}) + "\n")
    with pytest.raises(BuildError, match=r"train row 0: each record needs a string `text` field or a `messages`"):
        load_calibration(tokenizer, no_text)


def test_dataset_folder_without_the_datasets_package(tokenizer, tmp_path: Path, without_datasets) -> None:
    (tmp_path / "train.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(BuildError, match=r"needs the `datasets` package \(pip install datasets==3\.1\.0") as err:
        load_calibration(tokenizer, tmp_path)
    assert "accepted: `auto`, `shipped`, a JSONL file or a folder of .txt files" in str(err.value)


def test_jsonl_and_folders_size_and_length(tokenizer, tmp_path: Path) -> None:
    jsonl = tmp_path / "c.jsonl"
    records = [
        {"text": "one two three four five six"},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
        {"text": "third"},
    ]
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    calib = load_calibration(tokenizer, jsonl, size=2, seq_len=4)
    assert len(calib.samples) == 2 and all(len(s) <= 4 for s in calib.samples)
    assert calib.samples[1][:2] == (tokenizer.bos_id, tokenizer.control_id("[INST]"))
    assert calib.source == str(jsonl) and calib.fallback_reason is None
    assert load_calibration(tokenizer, jsonl, size=2, seq_len=5).sha256 != calib.sha256

    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "b.txt").write_text("second file")
    (folder / "a.txt").write_text("first file")
    (folder / "ignored.md").write_text("not a sample")
    calib = load_calibration(tokenizer, folder)
    assert [tokenizer.decode(s) for s in calib.samples] == ["first file", "second file"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"text": "ok"}\nnot json\n', r"c\.jsonl:2 is not valid JSON"),
        ('{"prompt": "x"}\n', "needs a string `text` field or a `messages` list"),
        ('{"messages": [{"role": "robot", "content": "x"}]}\n', "not valid for the v3 template"),
    ],
)
def test_bad_jsonl_names_the_line(tokenizer, tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(content)
    with pytest.raises(BuildError, match=expected):
        load_calibration(tokenizer, path)


def test_missing_or_unsupported_inputs(tokenizer, tmp_path: Path) -> None:
    accepted = "accepted: `auto`, `shipped`, a JSONL file"
    with pytest.raises(BuildError, match="does not exist") as err:
        load_calibration(tokenizer, tmp_path / "nope.jsonl")
    assert accepted in str(err.value) and "Hugging Face dataset folder whose `train` split" in str(err.value)
    with pytest.raises(BuildError, match="does not exist"):
        load_calibration(tokenizer, "Auto")  # the keywords are exact; anything else is a path
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(BuildError, match=r"neither a \.jsonl file nor a folder") as err:
        load_calibration(tokenizer, tmp_path / "data.csv")
    assert accepted in str(err.value)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("no data here")
    with pytest.raises(BuildError, match=r"no \.txt files and no dataset files \(\.parquet, \.arrow"):
        load_calibration(tokenizer, tmp_path / "empty")
    for size, seq_len, expected in ((0, 8, "--calib-size must be >= 1"), (8, 1, "--calib-seq-len must be >= 2")):
        with pytest.raises(BuildError, match=expected):
            load_calibration(tokenizer, "shipped", size=size, seq_len=seq_len)


def test_cli_default_and_summary_name_the_source(tmp_path: Path) -> None:
    args = build_parser().parse_args(["checkpoint", "--model-dir", "m", "--out", "o"])
    assert args.calib_data == "auto"
    assert build_parser().parse_args(["checkpoint", "--model-dir", "m", "--out", "o", "--calib-data", "x.jsonl"])
    manifest = {
        "checkpoint": {"tp_size": 1, "quant_algo": "FP8", "kv_cache_quant_algo": "FP8"},
        "paths": {"calibration": "auto fell back to shipped: calibration.jsonl (43 samples) + 64 generated"},
        "calibration": {"samples": 107, "tokens": 9000, "seq_len": 512, "fallback_reason": "HF_HUB_OFFLINE is set"},
    }
    lines = summary(CheckpointResult(tmp_path, True, manifest)).splitlines()
    assert (
        "  calibration data: auto fell back to shipped: calibration.jsonl (43 samples) + 64 generated"
        "; Hub not used: HF_HUB_OFFLINE is set"
    ) in lines
    manifest["calibration"]["fallback_reason"] = None
    manifest["paths"]["calibration"] = "/data/calib.jsonl"
    assert "  calibration data: /data/calib.jsonl" in summary(CheckpointResult(tmp_path, True, manifest)).splitlines()
