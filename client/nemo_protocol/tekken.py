"""Tekken, the tiktoken-based byte-level BPE tokenizer of Mistral NeMo.

Ids ``0 .. num_control_tokens-1`` are control tokens (``<s>``, ``[INST]``, ``[TOOL_CALLS]``, ...);
every BPE rank ``r`` of the file becomes id ``r + num_control_tokens``. Text is only ever encoded
through the BPE, so no user-supplied string can produce a control id.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import tiktoken

from nemo_protocol.errors import TokenizerFileError
from nemo_protocol.incremental_decoder import IncrementalDecoder

# Control tokens of files that predate the ``special_tokens`` list (v3, the Mistral NeMo file).
LEGACY_CONTROL_TOKENS: tuple[str, ...] = (
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[TOOL_CALLS]",
    "[IMG]",
    "<pad>",
    "[IMG_BREAK]",
    "[IMG_END]",
    "[PREFIX]",
    "[MIDDLE]",
    "[SUFFIX]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
)
FILLER_CONTROL_TOKEN = "<SPECIAL_{id}>"
MISTRAL_NEMO_TEKKEN_FILE = "tekken_240718.json"


def default_tekken_path() -> Path:
    """The Mistral NeMo Tekken file (``tekken_240718.json``) shipped inside the ``mistral-common`` package.

    A model directory's own ``tekken.json`` is the same file; prefer it when you have one.
    """
    try:
        import mistral_common
    except ImportError as exc:
        raise TokenizerFileError(
            "no Tekken file given and mistral-common is not installed; pass the model's tekken.json "
            "or `pip install mistral-common` to use its bundled NeMo tokenizer"
        ) from exc
    path = Path(mistral_common.__file__).parent / "data" / MISTRAL_NEMO_TEKKEN_FILE
    if not path.is_file():
        raise TokenizerFileError(f"mistral-common does not ship {MISTRAL_NEMO_TEKKEN_FILE} (looked at {path})")
    return path


def find_tekken_file(model_dir: str | Path) -> Path:
    """The ``tekken.json`` inside a Hugging Face model directory, with a clear error when it is missing."""
    path = Path(model_dir) / "tekken.json"
    if not path.is_file():
        raise TokenizerFileError(f"{model_dir} has no tekken.json; Mistral NeMo checkpoints ship it beside config.json")
    return path


class Tekkenizer:
    """Encode and decode Tekken ids. Load with :meth:`from_file`."""

    def __init__(
        self,
        *,
        token_bytes: Sequence[bytes],
        control_tokens: Sequence[str],
        pattern: str,
        version: str,
        name: str = "tekken",
    ) -> None:
        self._num_control = len(control_tokens)
        self._control_tokens: tuple[str, ...] = tuple(control_tokens)
        self._control_ids: dict[str, int] = {token: i for i, token in enumerate(control_tokens)}
        if len(self._control_ids) != self._num_control:
            raise TokenizerFileError("control token names must be unique")
        self.version = version
        self.pattern = pattern  # the pre-tokenizer regex, for writers of other tokenizer formats
        # Ranks are stored already shifted by the control block: BPE merge order only depends on the
        # relative order of ranks, so tiktoken returns final ids and encoding costs no per-token work.
        self._bpe = tiktoken.Encoding(
            name=name,
            pat_str=pattern,
            mergeable_ranks={piece: rank + self._num_control for rank, piece in enumerate(token_bytes)},
            special_tokens={},
        )
        self._token_bytes: tuple[bytes, ...] = (b"",) * self._num_control + tuple(token_bytes)

    @classmethod
    def from_file(cls, path: str | Path) -> Tekkenizer:
        """Load a Tekken JSON file: v3 files without ``special_tokens`` (Mistral NeMo) and newer ones with it."""
        path = Path(path)
        if not path.is_file():
            raise TokenizerFileError(f"Tekken file not found: {path}")
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TokenizerFileError(f"{path} is not a Tekken JSON file: {exc}") from exc
        return cls.from_dict(data, name=path.stem)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str = "tekken") -> Tekkenizer:
        """Build from the parsed contents of a Tekken JSON file."""
        try:
            config = data["config"]
            vocab = data["vocab"]
            vocab_size = int(config["default_vocab_size"])
            num_control = int(config["default_num_special_tokens"])
            pattern = str(config["pattern"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TokenizerFileError(
                f"not a Tekken file: needs 'vocab' and 'config' with 'pattern', 'default_vocab_size' and "
                f"'default_num_special_tokens' ({exc!r})"
            ) from exc
        num_bpe = vocab_size - num_control
        if num_bpe <= 256 or len(vocab) < num_bpe:
            raise TokenizerFileError(
                f"vocab holds {len(vocab)} entries, fewer than the {num_bpe} that "
                f"default_vocab_size={vocab_size} minus {num_control} control tokens needs"
            )
        token_bytes = [base64.b64decode(entry["token_bytes"]) for entry in vocab[:num_bpe]]
        control_names = _control_token_names(data.get("special_tokens"), num_control)
        return cls(
            token_bytes=token_bytes,
            control_tokens=control_names,
            pattern=pattern,
            version=str(config.get("version", "unknown")),
            name=name,
        )

    # ----- vocabulary ---------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Control tokens plus BPE tokens (131072 for Mistral NeMo)."""
        return len(self._token_bytes)

    @property
    def num_control_tokens(self) -> int:
        return self._num_control

    @property
    def control_ids(self) -> Mapping[str, int]:
        """Every control token's id, by name (``"[INST]" -> 3``)."""
        return dict(self._control_ids)

    def control_id(self, name: str) -> int:
        """The id of one control token, e.g. ``control_id("[TOOL_CALLS]") == 9``."""
        try:
            return self._control_ids[name]
        except KeyError:
            known = ", ".join(t for t in self._control_tokens if not t.startswith("<SPECIAL_"))
            raise KeyError(f"unknown control token {name!r}; this tokenizer has: {known}") from None

    def is_control(self, token_id: int) -> bool:
        return 0 <= token_id < self._num_control

    @cached_property
    def bos_id(self) -> int:
        return self.control_id("<s>")

    @cached_property
    def eos_id(self) -> int:
        return self.control_id("</s>")

    @cached_property
    def pad_id(self) -> int:
        return self.control_id("<pad>")

    @cached_property
    def unk_id(self) -> int:
        return self.control_id("<unk>")

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of a BPE token (empty for control tokens)."""
        self._check_id(token_id)
        return self._token_bytes[token_id]

    def id_to_piece(self, token_id: int) -> str:
        """A readable form of one id: the control token's name, or the token's text."""
        self._check_id(token_id)
        if token_id < self._num_control:
            return self._control_tokens[token_id]
        return self._token_bytes[token_id].decode("utf-8", errors="replace")

    # ----- encoding -----------------------------------------------------------------------------------
    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Encode text as plain text: control-token names in it stay ordinary pieces."""
        ids = self._bpe.encode_ordinary(text)
        if bos:
            ids.insert(0, self.bos_id)
        if eos:
            ids.append(self.eos_id)
        return ids

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        """Encode many texts with tiktoken's thread pool (no control tokens added)."""
        return self._bpe.encode_ordinary_batch(list(texts))

    # ----- decoding -----------------------------------------------------------------------------------
    def decode(self, ids: Iterable[int], *, keep_control_tokens: bool = False) -> str:
        """Decode ids to text. Control tokens are dropped, or written by name with ``keep_control_tokens``.

        Bytes that are not valid UTF-8 become U+FFFD, as in mistral-common. A control token ends a run of
        BPE bytes, so a character split by one decodes as replacement characters, also as in mistral-common.
        """
        decoder = self.incremental_decoder(keep_control_tokens=keep_control_tokens)
        return decoder.feed(ids) + decoder.flush()

    def incremental_decoder(self, *, keep_control_tokens: bool = False) -> IncrementalDecoder:
        """A streaming decoder: feed ids as they are generated, get only complete characters back."""
        return IncrementalDecoder(
            self._token_bytes,
            self._num_control,
            self._control_tokens if keep_control_tokens else None,
        )

    def _check_id(self, token_id: int) -> None:
        if not 0 <= token_id < len(self._token_bytes):
            raise ValueError(f"token id {token_id} is outside the vocabulary [0, {len(self._token_bytes)})")


def _control_token_names(special_tokens: Any, num_control: int) -> list[str]:
    if special_tokens is None:
        names = list(LEGACY_CONTROL_TOKENS)
    else:
        try:
            by_rank = sorted(special_tokens, key=lambda entry: int(entry["rank"]))
            names = [str(entry["token_str"]) for entry in by_rank]
            ranks = [int(entry["rank"]) for entry in by_rank]
        except (KeyError, TypeError, ValueError) as exc:
            raise TokenizerFileError(f"'special_tokens' entries need 'rank' and 'token_str' ({exc!r})") from exc
        if ranks != list(range(len(ranks))):
            raise TokenizerFileError("'special_tokens' ranks must be 0, 1, 2, ... without gaps")
    if len(names) > num_control:
        raise TokenizerFileError(f"{len(names)} special tokens do not fit default_num_special_tokens={num_control}")
    names += [FILLER_CONTROL_TOKEN.format(id=i) for i in range(len(names), num_control)]
    return names
