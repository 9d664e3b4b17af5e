"""Guided decoding on CPU: xgrammar token masks over the Tekken vocabulary, as the tensorrtllm backend does it.

The engine side of ``nemo_chat_core.guided``: a request's guide compiles once per (type, text) and is cached;
each request gets its own matcher, which the sampler asks for the allowed ids before every token
(:class:`GuidedMask`, a ``TokenMask``). Control tokens are never allowed inside a guide (xgrammar treats ids
whose text is empty as special), the end id only where the grammar may end, and once the grammar has ended
only the end id. JSON guides are compiled without free whitespace between tokens (compact ``", "`` / ``": "``
separators), and allow no raw control characters (U+0000-U+001F, which JSON forbids unescaped in strings and
xgrammar's string rule lets through), so that even an untrained model writes parseable JSON; TensorRT-LLM
compiles JSON schemas with whitespace allowed (its default), which a trained model does not abuse.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from nemo_chat_core.guided import Guide
from nemo_protocol.errors import BadRequestError
from nemo_protocol.tekken import Tekkenizer

if TYPE_CHECKING:  # imported when the first guided request arrives: xgrammar loads transformers
    import xgrammar

COMPILED_CACHE_SIZE = 256  # grammars kept compiled (a schema compiles once, then every request reuses it)


class GrammarEngine:
    """xgrammar set up for one tokenizer: compiles guides (cached) and makes per-request masks.

    Nothing is loaded until the first guided request (xgrammar imports transformers; the vocabulary takes a
    fraction of a second), so a server that never sees one never pays for it.
    """

    def __init__(self, tokenizer: Tekkenizer, vocab_size: int | None = None) -> None:
        self._tokenizer = tokenizer
        self.vocab_size = vocab_size or tokenizer.vocab_size
        self.end_id = tokenizer.eos_id
        self._lock = threading.Lock()
        self._compiler: xgrammar.GrammarCompiler | None = None
        self._json_allowed: torch.Tensor | None = None  # int32 bitmask, built with the compiler
        self.compile = functools.lru_cache(maxsize=COMPILED_CACHE_SIZE)(self._compile)

    def mask(self, guide: Guide) -> GuidedMask:
        """A fresh matcher for one request (BadRequestError naming the guide when it does not compile)."""
        import xgrammar

        compiled = self.compile(guide.type, guide.text)
        extra = self._json_allowed if guide.type in ("json", "json_schema") else None
        return GuidedMask(xgrammar.GrammarMatcher(compiled), self.vocab_size, self.end_id, extra)

    def _loaded_compiler(self) -> xgrammar.GrammarCompiler:  # under self._lock
        if self._compiler is None:
            import xgrammar

            tokenizer = self._tokenizer
            vocab = [b"" if tokenizer.is_control(i) else tokenizer.token_bytes(i) for i in range(tokenizer.vocab_size)]
            info = xgrammar.TokenizerInfo(
                vocab, xgrammar.VocabType.RAW, vocab_size=self.vocab_size, stop_token_ids=[self.end_id]
            )
            allowed = [
                token_id == self.end_id or not any(byte < 0x20 for byte in t) for token_id, t in enumerate(vocab)
            ]
            allowed += [True] * (self.vocab_size - len(vocab))
            self._json_allowed = _bitmask(torch.tensor(allowed))
            self._compiler = xgrammar.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        return self._compiler

    def _compile(self, guide_type: str, text: str) -> xgrammar.CompiledGrammar:
        try:
            with self._lock:
                compiler = self._loaded_compiler()
                if guide_type == "json":
                    return compiler.compile_builtin_json_grammar()
                if guide_type == "json_schema":
                    return compiler.compile_json_schema(text, any_whitespace=False)
                if guide_type == "regex":
                    return compiler.compile_regex(text)
                return compiler.compile_grammar(text)
        except (RuntimeError, ValueError) as error:  # xgrammar's parse errors
            raise BadRequestError(
                f"the {guide_type} guide does not compile: {str(error).splitlines()[0]}", param="guided_decoding_guide"
            ) from None


class GuidedMask:
    """One request's grammar state: call it with the request's logits and the ids generated so far (a
    ``LogitsMask``); the ids the grammar does not allow next get -inf, in place."""

    def __init__(
        self, matcher: xgrammar.GrammarMatcher, vocab_size: int, end_id: int, extra: torch.Tensor | None
    ) -> None:
        import xgrammar

        self._matcher = matcher
        self._vocab_size = vocab_size
        self._end_id = end_id
        self._extra = extra  # int32 bitmask of the ids the guide's type allows at all (None: every id)
        self._seen = 0
        self._bitmask = xgrammar.allocate_token_bitmask(1, vocab_size)
        self._apply_bitmask = xgrammar.apply_token_bitmask_inplace

    def __call__(self, logits: torch.Tensor, generated: Sequence[int]) -> None:
        matcher = self._matcher
        for token in generated[self._seen :]:
            if not matcher.is_terminated() and not matcher.accept_token(token):
                raise RuntimeError(f"token {token} breaks the grammar it was drawn under")
        self._seen = len(generated)
        if matcher.is_terminated():  # the grammar is complete: only the end of sequence
            end = logits[self._end_id].clone()
            logits.fill_(float("-inf"))
            logits[self._end_id] = end
            return
        matcher.fill_next_token_bitmask(self._bitmask)
        if self._extra is not None:
            self._bitmask &= self._extra
        self._apply_bitmask(logits, self._bitmask[0], vocab_size=self._vocab_size)


def _bitmask(allowed: torch.Tensor) -> torch.Tensor:
    """xgrammar's bitmask layout ([1, ceil(vocab / 32)] int32, bit i of word w is id 32 w + i) of a bool vector."""
    words = -(-allowed.numel() // 32)
    padded = torch.zeros(words * 32, dtype=torch.int64)
    padded[: allowed.numel()] = allowed.to(torch.int64)
    packed = (padded.view(words, 32) << torch.arange(32, dtype=torch.int64)).sum(dim=1)
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32).view(1, words)
