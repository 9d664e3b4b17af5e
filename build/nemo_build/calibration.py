"""Calibration data for FP8 PTQ: read a local set, tokenize it with Tekken, hash what the model will see.

Accepted inputs:

* a JSONL file whose records have a ``text`` field (plain text, encoded with ``<s>`` first), or a
  ``messages`` field (+ optional ``tools``): an OpenAI-shaped conversation rendered through the
  Mistral NeMo v3 template, control tokens included — the traffic the model will serve;
* a folder of ``.txt`` files (one sample per file, read in name order);
* nothing: the small set shipped in ``nemo_build/data/calibration.jsonl`` (multilingual prose, code,
  chat turns, tool calls), so that calibration needs no download.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from nemo_build.errors import BuildError
from nemo_client.chat_format import encode_chat
from nemo_client.errors import InvalidRequestError
from nemo_client.tekken import Tekkenizer

DEFAULT_CALIB_SIZE = 512
DEFAULT_CALIB_SEQ_LEN = 512


@dataclass(frozen=True)
class CalibrationSet:
    """Token-id samples, each at most ``seq_len`` long, and a hash of exactly those ids."""

    source: str
    samples: tuple[tuple[int, ...], ...]
    seq_len: int
    requested_size: int

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


def default_calibration_path() -> Path:
    return Path(str(resources.files("nemo_build") / "data" / "calibration.jsonl"))


def load_calibration(
    tokenizer: Tekkenizer,
    path: str | Path | None = None,
    size: int = DEFAULT_CALIB_SIZE,
    seq_len: int = DEFAULT_CALIB_SEQ_LEN,
) -> CalibrationSet:
    """Read up to ``size`` samples from ``path`` (default: the shipped set), truncated to ``seq_len`` ids."""
    if size < 1:
        raise BuildError(f"--calib-size must be >= 1, got {size}")
    if seq_len < 2:
        raise BuildError(f"--calib-seq-len must be >= 2, got {seq_len}")
    source = Path(path) if path is not None else default_calibration_path()
    if not source.exists():
        raise BuildError(f"calibration data {source} does not exist; pass a JSONL file or a folder of .txt files")
    if source.is_dir():
        samples = _read_text_folder(tokenizer, source, size)
    elif source.suffix in (".jsonl", ".json"):
        samples = _read_jsonl(tokenizer, source, size)
    else:
        raise BuildError(
            f"calibration data {source} is neither a .jsonl file nor a folder; accepted: JSONL with a `text` "
            "or `messages` field per line, or a folder of .txt files"
        )
    if not samples:
        raise BuildError(f"calibration data {source} holds no non-empty sample")
    truncated = tuple(tuple(s[:seq_len]) for s in samples)
    return CalibrationSet(str(source), truncated, seq_len, size)


def _read_text_folder(tokenizer: Tekkenizer, folder: Path, size: int) -> list[list[int]]:
    files = sorted(p for p in folder.iterdir() if p.suffix == ".txt" and p.is_file())
    if not files:
        raise BuildError(f"calibration folder {folder} has no .txt files")
    samples = []
    for file in files[:size]:
        text = file.read_text(encoding="utf-8").strip()
        if text:
            samples.append(tokenizer.encode(text, bos=True))
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
        except InvalidRequestError as exc:
            raise BuildError(f"{where}: the conversation is not valid for the v3 template: {exc}") from exc
    raise BuildError(f"{where}: each record needs a string `text` field or a `messages` list")
