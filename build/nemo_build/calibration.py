"""Calibration data for FP8 PTQ: gather a set, tokenize it with Tekken, hash what the model will see.

``--calib-data`` accepts:

* ``auto`` (the default): text from the Hugging Face dataset ``wikimedia/wikipedia`` (:data:`HUB_DATASET`),
  configs ``20231101.<lang>`` (:data:`HUB_SNAPSHOT`), in the languages the Mistral NeMo model card lists
  (:data:`LANGUAGES`: en fr de es it pt zh ja ko ar hi), equal shares, streamed: the first window of at most
  ``seq_len`` tokens of each article, in the dataset's order, skipping stubs shorter than half a window, so
  the same snapshot always gives the same ids. One sample in :data:`CHAT_SHARE` is a generated chat or
  tool-calling conversation instead (see below). When the ``datasets`` package is missing,
  ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` is set, or the Hub does not answer within
  :data:`HUB_TIMEOUT_S` seconds (or fails while streaming), it falls back to ``shipped`` and records why;
* ``shipped``: the set shipped in ``nemo_build/data/calibration.jsonl`` (prose in the languages above and
  Russian, code, chat turns, tool calls) plus the same share of generated conversations; needs nothing
  but this package;
* a JSONL file whose records have a ``text`` field (plain text, encoded with ``<s>`` first), or a
  ``messages`` field (+ optional ``tools``): an OpenAI-shaped conversation rendered through the
  Mistral NeMo v3 template, control tokens included — the traffic the model will serve;
* a folder of ``.txt`` files (one sample per file, read in name order);
* a local Hugging Face dataset folder (data files such as parquet or JSONL; records of its ``train``
  split need a ``text`` or ``messages`` column), read with ``datasets.load_dataset(folder)`` as upstream
  TensorRT-LLM ``quantize.py`` does — the way to use a copy of a real set on a host without the Hub.

Generated conversations (:func:`chat_conversations`) combine the building blocks of
``nemo_build/data/calibration_chat.json``: per language a weather, currency and calendar tool dialogue
(user → ``[TOOL_CALLS]`` → ``[TOOL_RESULTS]`` → answer, with ``[AVAILABLE_TOOLS]``) over two cities and
two multi-turn chats; plus code questions, parallel and chained tool calls, and system prompts. They are
rendered with :func:`nemo_protocol.chat_format.encode_chat`, the ids mistral-common produces.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

from tqdm import tqdm

from nemo_build.errors import BuildError
from nemo_protocol.chat_format import encode_chat
from nemo_protocol.errors import BadRequestError
from nemo_protocol.tekken import Tekkenizer

DEFAULT_CALIB_SIZE = 512
DEFAULT_CALIB_SEQ_LEN = 512

AUTO = "auto"
SHIPPED = "shipped"
HUB_DATASET = "wikimedia/wikipedia"
HUB_SNAPSHOT = "20231101"
# The languages the Mistral NeMo model card names, in its order.
LANGUAGES: tuple[str, ...] = ("en", "fr", "de", "es", "it", "pt", "zh", "ja", "ko", "ar", "hi")
# One sample in CHAT_SHARE is a generated conversation.
CHAT_SHARE = 8
HUB_TIMEOUT_S = 10.0
OFFLINE_ENV_VARS: tuple[str, ...] = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
DATASET_FILE_SUFFIXES: tuple[str, ...] = (".parquet", ".arrow", ".jsonl", ".json", ".csv")
# No prose script needs more characters per token than this; cutting an article here keeps a 200k-character
# article from being tokenized whole just to keep its first window.
_MAX_CHARS_PER_TOKEN = 8
_DATASETS_HINT = "pip install datasets==3.1.0, the TensorRT-LLM 1.2.1 pin, shipped in its NGC image"
_ACCEPTED = (
    f"accepted: `{AUTO}`, `{SHIPPED}`, a JSONL file with a `text` or `messages` field per line, a folder of "
    "`.txt` files, or a Hugging Face dataset folder whose `train` split has a `text` column"
)


@dataclass(frozen=True)
class CalibrationSet:
    """Token-id samples, each at most ``seq_len`` long, and a hash of exactly those ids.

    ``source`` says in words where the samples came from; ``fallback_reason`` is set when ``auto`` could not
    use the Hub and took the shipped set instead.
    """

    source: str
    samples: tuple[tuple[int, ...], ...]
    seq_len: int
    requested_size: int
    fallback_reason: str | None = None

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for sample in self.samples:
            digest.update(json.dumps(sample).encode())
            digest.update(b"\n")
        return digest.hexdigest()

    @property
    def num_tokens(self) -> int:
        return sum(len(s) for s in self.samples)


@dataclass(frozen=True)
class Conversation:
    """One generated OpenAI-shaped conversation; ``kind`` and ``language`` say what it exercises."""

    kind: str
    language: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None


def default_calibration_path() -> Path:
    return _data_path("calibration.jsonl")


def load_calibration(
    tokenizer: Tekkenizer,
    path: str | Path | None = None,
    size: int = DEFAULT_CALIB_SIZE,
    seq_len: int = DEFAULT_CALIB_SEQ_LEN,
) -> CalibrationSet:
    """Gather ``size`` samples of at most ``seq_len`` ids from ``path``: ``auto`` (also ``None``), ``shipped``
    or a local file or folder (see the module docstring)."""
    if size < 1:
        raise BuildError(f"--calib-size must be >= 1, got {size}")
    if seq_len < 2:
        raise BuildError(f"--calib-seq-len must be >= 2, got {seq_len}")
    if path is None or str(path) == AUTO:
        return _auto(tokenizer, size, seq_len)
    if str(path) == SHIPPED:
        return _shipped(tokenizer, size, seq_len, fallback_reason=None)
    return _local(tokenizer, Path(path), size, seq_len)


def chat_sample_count(size: int) -> int:
    """How many of ``size`` samples ``auto`` and ``shipped`` fill with generated conversations."""
    return min(size // CHAT_SHARE, len(chat_conversations()))


# ----- auto: the Hub, else the shipped set ------------------------------------------------------------------
def _auto(tokenizer: Tekkenizer, size: int, seq_len: int) -> CalibrationSet:
    datasets, reason = _hub_datasets()
    if datasets is not None:
        chats = _chat_samples(tokenizer, chat_sample_count(size))
        texts_by_language = {lang: _wikipedia_texts(datasets, lang) for lang in LANGUAGES}
        try:
            texts = gather_article_windows(tokenizer, texts_by_language, size - len(chats), seq_len)
        except _network_errors() as exc:
            reason = f"reading {HUB_DATASET} from the Hugging Face Hub failed ({_network_cause(exc)})"
        else:
            source = (
                f"{AUTO}: {HUB_DATASET} {HUB_SNAPSHOT} ({len(texts)} article windows in {len(LANGUAGES)} languages: "
                f"{', '.join(LANGUAGES)}) + {len(chats)} generated chat/tool conversations (v3 template)"
            )
            return _assemble(source, texts, chats, seq_len, size)
    return _shipped(tokenizer, size, seq_len, fallback_reason=reason)


def _hub_datasets() -> tuple[ModuleType | None, str]:
    """The ``datasets`` module when the Hub can be used, else ``None`` and why not."""
    for var in OFFLINE_ENV_VARS:
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return None, f"{var} is set"
    try:
        import datasets
    except ImportError:
        return None, f"the `datasets` package is not installed ({_DATASETS_HINT})"
    from huggingface_hub import HfApi

    # One bounded request first: datasets.load_dataset retries an unreachable Hub for tens of seconds.
    # The endpoint is read now (not at import) so a mirror named in HF_ENDPOINT is what gets probed.
    try:
        HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None).dataset_info(HUB_DATASET, timeout=HUB_TIMEOUT_S)
    except _network_errors() as exc:
        return None, f"the Hugging Face Hub is unreachable ({_network_cause(exc)})"
    return datasets, ""


def _wikipedia_texts(datasets: ModuleType, language: str) -> Iterator[str]:
    # A generator: the stream of a language opens only when the gatherer reaches it.
    stream = datasets.load_dataset(HUB_DATASET, f"{HUB_SNAPSHOT}.{language}", split="train", streaming=True)
    for row in stream:
        yield row["text"]


def gather_article_windows(
    tokenizer: Tekkenizer, texts_by_language: Mapping[str, Iterable[str]], count: int, seq_len: int
) -> list[list[int]]:
    """``count`` samples in equal shares over the languages: each the first ``seq_len`` ids (``<s>`` first) of
    one article, articles shorter than half a window skipped; returned round-robin over the languages so
    that any prefix of the set (``--verify`` uses the first few) spans them."""
    languages = list(texts_by_language)
    shares = dict(zip(languages, _equal_shares(count, len(languages)), strict=True))
    min_len = max(2, seq_len // 2)
    windows: dict[str, list[list[int]]] = {}
    with tqdm(total=count, desc="calibration data", unit="sample") as bar:
        for language in languages:
            bar.set_postfix_str(language)
            windows[language] = []
            for text in texts_by_language[language]:
                if len(windows[language]) >= shares[language]:
                    break
                ids = tokenizer.encode(text[: seq_len * _MAX_CHARS_PER_TOKEN], bos=True)[:seq_len]
                if len(ids) >= min_len:
                    windows[language].append(ids)
                    bar.update()
    rounds = itertools.zip_longest(*windows.values())
    return [ids for round_ in rounds for ids in round_ if ids is not None]


def _equal_shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _network_errors() -> tuple[type[BaseException], ...]:
    # requests', huggingface_hub's (0.x) and datasets' errors are OSErrors; fsspec streams over aiohttp and
    # huggingface_hub 1.x talks httpx, whose errors are not.
    errors: list[type[BaseException]] = [OSError]
    try:
        import aiohttp

        errors.append(aiohttp.ClientError)
    except ImportError:
        pass
    try:
        import httpx

        errors.append(httpx.HTTPError)
    except ImportError:
        pass
    return tuple(errors)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _network_cause(exc: BaseException) -> str:
    """The innermost library error of the chain (e.g. urllib3's "Failed to resolve 'huggingface.co'"): the
    outer ones wrap it in retry noise, the socket error under it no longer names the host."""
    chain = [exc]
    while (inner := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 16:
        chain.append(inner)
    library = [e for e in chain if type(e).__module__ not in ("builtins", "socket", "ssl")]
    return _one_line(library[-1] if library else exc)


# ----- shipped: the offline set -----------------------------------------------------------------------------
def _shipped(tokenizer: Tekkenizer, size: int, seq_len: int, fallback_reason: str | None) -> CalibrationSet:
    chats = _chat_samples(tokenizer, chat_sample_count(size))
    path = default_calibration_path()
    texts = _read_jsonl(tokenizer, path, size - len(chats))
    label = f"{AUTO} fell back to {SHIPPED}" if fallback_reason else SHIPPED
    source = f"{label}: {path} ({len(texts)} samples) + {len(chats)} generated chat/tool conversations (v3 template)"
    return _assemble(source, texts, chats, seq_len, size, fallback_reason)


def _assemble(
    source: str,
    texts: Sequence[Sequence[int]],
    chats: Sequence[Sequence[int]],
    seq_len: int,
    size: int,
    fallback_reason: str | None = None,
) -> CalibrationSet:
    """Every CHAT_SHARE-th sample a conversation while both last, so any prefix of the set holds some."""
    merged: list[Sequence[int]] = []
    text_iter, chat_iter = iter(texts), iter(chats)
    for index in itertools.count():
        pick = chat_iter if (index + 1) % CHAT_SHARE == 0 else text_iter
        sample = next(pick, None)
        if sample is None:
            merged.extend(text_iter if pick is chat_iter else chat_iter)
            break
        merged.append(sample)
    if not merged:
        raise BuildError(f"calibration data ({source}) holds no non-empty sample")
    return CalibrationSet(source, tuple(tuple(s[:seq_len]) for s in merged), seq_len, size, fallback_reason)


# ----- generated chat and tool-calling conversations --------------------------------------------------------
def _chat_samples(tokenizer: Tekkenizer, count: int) -> list[list[int]]:
    return [
        encode_chat(tokenizer, c.messages, c.tools, allow_final_assistant=True) for c in chat_conversations()[:count]
    ]


def chat_conversations() -> tuple[Conversation, ...]:
    """Every generated conversation, ordered so that any prefix mixes languages and kinds.

    Round ``r`` holds the ``r``-th conversation of each language (tool dialogues and chats alternate, the
    tools rotate by language) and a share of the code / multi-tool conversations.
    """
    blocks = _chat_blocks()
    per_language = {lang: _language_conversations(blocks, index, lang) for index, lang in enumerate(LANGUAGES)}
    extras = [_conversation(blocks, e["kind"], e["language"], e.get("tools"), e["turns"]) for e in blocks["extras"]]
    rounds = max(len(c) for c in per_language.values())
    extras_per_round = math.ceil(len(extras) / rounds)
    ordered: list[Conversation] = []
    for r in range(rounds):
        ordered.extend(convs[r] for convs in per_language.values() if r < len(convs))
        ordered.extend(extras[r * extras_per_round : (r + 1) * extras_per_round])
    return tuple(ordered)


def _language_conversations(blocks: Mapping[str, Any], index: int, language: str) -> list[Conversation]:
    phrases = blocks["languages"][language]
    local_tools = blocks["local_tools"]
    tools = [local_tools[(index + k) % len(local_tools)] for k in range(len(local_tools))]
    # Each (tool, city) pair once; both chats early, so that a small budget still gets them.
    plan: list[tuple[str, int]] = [
        (tools[0], 0),
        ("chat", 0),
        (tools[1], 1),
        ("chat", 1),
        (tools[2], 0),
        (tools[0], 1),
        (tools[1], 0),
        (tools[2], 1),
    ]
    out = []
    for variant, (what, n) in enumerate(plan):
        if what == "chat":
            turns = [{("user", "assistant")[i % 2]: text} for i, text in enumerate(phrases["chats"][n])]
            out.append(_conversation(blocks, "chat", language, None, turns))
        else:
            # Two tools offered (three would not leave room for the dialogue in 512 tokens of CJK text), the
            # called one first or second in turn, so the model must pick rather than take the first.
            others = [t for t in local_tools if t != what]
            offered = [what, others[variant % len(others)]][:: 1 if variant % 2 else -1]
            out.append(_conversation(blocks, "tool", language, offered, _tool_dialogue(blocks, language, what, n)))
    return out


def _tool_dialogue(blocks: Mapping[str, Any], language: str, tool: str, n: int) -> list[dict[str, Any]]:
    phrases = blocks["languages"][language]
    pick = _picker(f"{language}:{tool}:{n}")
    if tool == "get_weather":
        city = phrases["cities"][n]
        temperature = 4 + pick(27)
        slots: dict[str, Any] = {"city": city, "temperature": temperature}
        arguments: dict[str, Any] = {"city": city, "unit": "celsius"}
        condition = blocks["conditions"][pick(len(blocks["conditions"]))]
        result: Any = {"city": city, "temperature": temperature, "unit": "celsius", "condition": condition}
    elif tool == "convert_currency":
        money = phrases["currency"]
        amount = money["amounts"][n]
        converted = round(amount * money["rate"], 2)
        slots = {"amount": amount, "source": money["from"], "target": money["to"], "rate": money["rate"]}
        slots["result"] = f"{converted:.2f}"
        arguments = {"amount": amount, "from_currency": money["from"], "to_currency": money["to"]}
        result = {"amount": amount, "rate": money["rate"], "result": converted, "currency": money["to"]}
    elif tool == "create_event":
        title = phrases["event_titles"][n]
        date = f"2025-{1 + pick(12):02d}-{1 + pick(28):02d}"
        time_ = blocks["times"][pick(len(blocks["times"]))]
        minutes = blocks["minutes"][pick(len(blocks["minutes"]))]
        slots = {"title": title, "date": date, "time": time_, "minutes": minutes}
        arguments = {"title": title, "date": date, "time": time_, "duration_minutes": minutes}
        result = {"status": "created", "event_id": f"evt_{pick(10**6):06d}"}
    else:
        raise ValueError(f"no dialogue template for tool {tool!r}")
    question, answer = phrases[tool]
    return [
        {"user": question.format(**slots)},
        {"calls": [{"name": tool, "arguments": arguments}]},
        {"results": [result]},
        {"assistant": answer.format(**slots)},
    ]


def _conversation(
    blocks: Mapping[str, Any], kind: str, language: str, tool_names: Sequence[str] | None, turns: Sequence[Any]
) -> Conversation:
    """Compact turns ({role: text}, {"calls": [...]}, {"results": [...]}) → OpenAI-shaped messages."""
    messages: list[dict[str, Any]] = []
    open_ids: list[str] = []
    for turn in turns:
        if "calls" in turn:
            key = f"{kind}:{language}:{len(messages)}:{json.dumps(turn, ensure_ascii=False, sort_keys=True)}"
            open_ids = [_tool_call_id(f"{key}:{i}") for i in range(len(turn["calls"]))]
            calls = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
                }
                for call_id, c in zip(open_ids, turn["calls"], strict=True)
            ]
            messages.append({"role": "assistant", "content": None, "tool_calls": calls})
        elif "results" in turn:
            messages.extend(
                {"role": "tool", "tool_call_id": call_id, "content": json.dumps(result, ensure_ascii=False)}
                for call_id, result in zip(open_ids, turn["results"], strict=True)
            )
        else:
            ((role, text),) = turn.items()
            messages.append({"role": role, "content": text})
    tools = [blocks["tools"][name] for name in tool_names] if tool_names else None
    return Conversation(kind, language, messages, tools)


def _tool_call_id(key: str) -> str:
    # 9 alphanumerics, as the model was trained on; derived from the conversation so the set is reproducible.
    return hashlib.sha256(key.encode()).hexdigest()[:9]


def _picker(key: str) -> Callable[[int], int]:
    """Successive deterministic choices in ``range(n)`` for one dialogue."""
    counter = itertools.count()

    def pick(n: int) -> int:
        return int(hashlib.sha256(f"{key}:{next(counter)}".encode()).hexdigest(), 16) % n

    return pick


@cache
def _chat_blocks() -> dict[str, Any]:
    return json.loads(_data_path("calibration_chat.json").read_text(encoding="utf-8"))


def _data_path(name: str) -> Path:
    return Path(str(resources.files("nemo_build") / "data" / name))


# ----- local files and folders ------------------------------------------------------------------------------
def _local(tokenizer: Tekkenizer, source: Path, size: int, seq_len: int) -> CalibrationSet:
    if not source.exists():
        raise BuildError(f"calibration data {source} does not exist; {_ACCEPTED}")
    label = str(source)
    if source.is_dir() and _has_txt_files(source):
        samples = _read_text_folder(tokenizer, source, size)
    elif source.is_dir():
        samples = _read_dataset_folder(tokenizer, source, size)
        label = f"{source} (Hugging Face dataset folder, train split)"
    elif source.suffix in (".jsonl", ".json"):
        samples = _read_jsonl(tokenizer, source, size)
    else:
        raise BuildError(f"calibration data {source} is neither a .jsonl file nor a folder; {_ACCEPTED}")
    if not samples:
        raise BuildError(f"calibration data {source} holds no non-empty sample")
    return CalibrationSet(label, tuple(tuple(s[:seq_len]) for s in samples), seq_len, size)


def _has_txt_files(folder: Path) -> bool:
    return any(p.suffix == ".txt" and p.is_file() for p in folder.iterdir())


def _read_text_folder(tokenizer: Tekkenizer, folder: Path, size: int) -> list[list[int]]:
    files = sorted(p for p in folder.iterdir() if p.suffix == ".txt" and p.is_file())
    samples = []
    for file in files[:size]:
        text = file.read_text(encoding="utf-8").strip()
        if text:
            samples.append(tokenizer.encode(text, bos=True))
    return samples


def _read_dataset_folder(tokenizer: Tekkenizer, folder: Path, size: int) -> list[list[int]]:
    data_files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in DATASET_FILE_SUFFIXES)
    if not data_files:
        raise BuildError(
            f"calibration folder {folder} has no .txt files and no dataset files "
            f"({', '.join(DATASET_FILE_SUFFIXES)}); {_ACCEPTED}"
        )
    try:
        import datasets
    except ImportError:
        raise BuildError(
            f"calibration folder {folder} holds dataset files ({data_files[0].name}, ...) but reading a Hugging "
            f"Face dataset folder needs the `datasets` package ({_DATASETS_HINT}); without it, accepted: "
            f"`{AUTO}`, `{SHIPPED}`, a JSONL file or a folder of .txt files"
        ) from None
    try:
        # Streaming reads only the rows needed and writes no Arrow cache for a one-off read.
        splits = datasets.load_dataset(str(folder), streaming=True)
    except Exception as exc:  # datasets raises many unrelated types for unreadable folders
        raise BuildError(f"datasets.load_dataset could not read calibration folder {folder}: {_one_line(exc)}") from exc
    if "train" not in splits:
        raise BuildError(
            f"calibration folder {folder} has the splits {', '.join(sorted(splits)) or 'none'}; a `train` split "
            "is needed (files named train*, or a train/ folder, or files without split names)"
        )
    samples: list[list[int]] = []
    for row_number, row in enumerate(splits["train"]):
        if len(samples) >= size:
            break
        ids = _encode_record(tokenizer, row, f"{folder} train row {row_number}")
        if ids:
            samples.append(ids)
    return samples


def _read_jsonl(tokenizer: Tekkenizer, file: Path, size: int) -> list[list[int]]:
    samples: list[list[int]] = []
    with file.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if len(samples) >= size:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BuildError(f"{file}:{line_number} is not valid JSON: {exc.msg}") from exc
            ids = _encode_record(tokenizer, record, f"{file}:{line_number}")
            if ids:
                samples.append(ids)
    return samples


def _encode_record(tokenizer: Tekkenizer, record: Any, where: str) -> list[int]:
    if isinstance(record, dict) and isinstance(record.get("text"), str):
        return tokenizer.encode(record["text"], bos=True) if record["text"].strip() else []
    if isinstance(record, dict) and isinstance(record.get("messages"), list):
        try:
            return encode_chat(tokenizer, record["messages"], record.get("tools"), allow_final_assistant=True)
        except BadRequestError as exc:
            raise BuildError(f"{where}: the conversation is not valid for the v3 template: {exc}") from exc
    raise BuildError(f"{where}: each record needs a string `text` field or a `messages` list")
