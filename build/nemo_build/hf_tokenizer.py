"""A Hugging Face tokenizer directory for a Tekken file, for tools that only take ``AutoTokenizer`` paths.

Benchmarks such as NVIDIA's aiperf count tokens with ``AutoTokenizer.from_pretrained(DIR)``; the Mistral NeMo
Hub repository has such a directory, an offline machine does not. transformers 4.57 cannot make one from the
Tekken file that mistral-common ships: ``integrations.mistral.convert_tekken_tokenizer`` fails on mistral-common
1.x's special tokens (dicts, unhashable), and ``convert_slow_tokenizer.MistralConverter`` needs the
``special_tokens`` list that the NeMo v3 file predates. So the directory is written here from the
:class:`Tekkenizer`: a byte-level BPE ``tokenizer.json`` (each byte as GPT-2's printable character, as in
xgrammar_info), the file's own pre-tokenizer regex, and the control tokens as special tokens at ids
``0 .. num_control_tokens-1``. ``split_special_tokens`` makes text like ``[INST]`` encode as plain text, as
Tekkenizer does, so ids match it exactly; no BOS is added, as ``Tekkenizer.encode`` adds none by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nemo_build.atomic_dir import atomic_directory, refuse_to_overwrite
from nemo_build.errors import BuildError
from nemo_build.xgrammar_info import byte_to_unicode
from nemo_protocol.errors import TokenizerFileError
from nemo_protocol.tekken import Tekkenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

CONTEXT_LENGTH = 128_000  # Mistral NeMo's context window: model_max_length, so long prompts raise no warning


def vocab_and_merges(tok: Tekkenizer) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocabulary (piece -> id) and merges that reproduce tiktoken's encoding of ``tok``.

    tiktoken merges, at each step, the adjacent pair whose concatenation has the lowest rank; a Hugging Face
    BPE merges the pair listed first. So every split of a token into two tokens is a merge, listed in the
    order of the merged token's id (ties by the parts' ids, as transformers' tiktoken converters do).
    """
    table = byte_to_unicode()
    first = tok.num_control_tokens
    ids = {tok.token_bytes(i): i for i in range(first, tok.vocab_size)}
    vocab = {"".join(table[byte] for byte in piece): token_id for piece, token_id in ids.items()}
    merges: list[tuple[int, int, int]] = []
    for piece, token_id in ids.items():
        for cut in range(1, len(piece)):
            left, right = ids.get(piece[:cut]), ids.get(piece[cut:])
            if left is not None and right is not None:
                merges.append((token_id, left, right))
    merges.sort()
    pieces = {token_id: piece for piece, token_id in vocab.items()}
    return vocab, [(pieces[left], pieces[right]) for _, left, right in merges]


def build_tokenizer(tok: Tekkenizer) -> PreTrainedTokenizerFast:
    """A ``PreTrainedTokenizerFast`` that encodes and decodes like ``tok``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    vocab, merges = vocab_and_merges(tok)
    controls = sorted(tok.control_ids.items(), key=lambda item: item[1])
    if clash := sorted(name for name, _ in controls if name in vocab):
        raise BuildError(f"control tokens {clash} are also BPE pieces; one id each cannot be written")
    # in the BPE vocabulary at their Tekken ids, so that marking them special below keeps those ids (added
    # tokens that are not in the vocabulary would be appended after it); no merge can produce them
    vocab.update(controls)
    # ignore_merges: a pre-token that is itself in the vocabulary is one id, as tiktoken looks it up whole
    backend = Tokenizer(BPE(vocab, merges, fuse_unk=False, ignore_merges=True))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(tok.pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(name, special=True, normalized=False) for name, _ in controls])
    for name, token_id in controls:
        if backend.token_to_id(name) != token_id:
            raise BuildError(f"control token {name} got id {backend.token_to_id(name)}, not {token_id}")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        split_special_tokens=True,
        model_max_length=CONTEXT_LENGTH,
        clean_up_tokenization_spaces=False,
    )


def write_hf_tokenizer(tekken_file: Path, out: Path, *, force: bool = False) -> Path:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` for ``tekken_file`` to ``out`` (atomically)."""
    out = Path(out)
    refuse_to_overwrite(out, force)
    try:
        tok = Tekkenizer.from_file(tekken_file)
    except TokenizerFileError as exc:
        raise BuildError(str(exc)) from exc
    hf = build_tokenizer(tok)
    with atomic_directory(out) as staging:
        hf.save_pretrained(staging)
    return out
