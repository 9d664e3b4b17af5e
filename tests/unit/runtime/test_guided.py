"""Guided decoding on CPU: an untrained model held to JSON schemas, regexes and grammars by xgrammar masks.

The model is the random 2-layer one: whatever it writes is the mask's doing. Every output must parse and
validate against its schema with `jsonschema` (control characters, which JSON forbids raw, included).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import pytest
import torch

from nemo_chat_core.engine_tensors import GenerationRequest
from nemo_chat_core.guided import Guide, choice_guide, grammar_guide, json_schema_guide, regex_guide
from nemo_chat_core.sampling import Sampling
from nemo_protocol.errors import BadRequestError
from nemo_protocol.tekken import Tekkenizer
from nemo_runtime.guided import GrammarEngine, GuidedMask
from nemo_runtime.inflight import InflightBatcher
from nemo_runtime.scheduler import ReferenceRuntime
from tests.unit.runtime.sinks import RecordingSink

MAX_TOKENS = 200
SCHEMAS = json.loads((Path(__file__).with_name("guided_schemas.json")).read_text(encoding="utf-8"))
"""50 schemas: every type, nesting, arrays, enums, numbers, unicode strings, formats, patterns, references,
required and optional properties. Strings and arrays are bounded (maxLength, maxItems, enum, format): an
untrained model never closes an open string of its own accord."""
POINT = SCHEMAS[24]


@pytest.fixture(scope="module")
def grammar(tekken_path: Path) -> GrammarEngine:
    return GrammarEngine(Tekkenizer.from_file(tekken_path))


@pytest.fixture(scope="module")
def prompt(tekken_path: Path) -> list[int]:
    tokenizer = Tekkenizer.from_file(tekken_path)
    return [tokenizer.bos_id, tokenizer.control_id("[INST]"), *tokenizer.encode("Answer in JSON."), 4]


@pytest.fixture
def batcher(bf16_checkpoint_dir: Path, grammar: GrammarEngine) -> Iterator[InflightBatcher]:
    """The random (untrained) tiny model, NeMo's vocabulary, with guided decoding."""
    running = InflightBatcher(ReferenceRuntime.from_checkpoint(bf16_checkpoint_dir, max_batch_size=8), grammar)
    yield running
    running.close()


def generate(batcher: InflightBatcher, prompt: list[int], guides: list[Guide], *, seed: int = 0) -> list[list[int]]:
    sinks = [RecordingSink() for _ in guides]
    for index, (guide, sink) in enumerate(zip(guides, sinks, strict=True)):
        request = GenerationRequest(
            prompt,
            MAX_TOKENS,
            end_id=2,
            streaming=True,
            sampling=Sampling(temperature=1.0, seed=seed + index),
            guide=guide,
        )
        batcher.submit(request, sink)
    for sink in sinks:
        assert sink.wait().error is None, sink.error
    return [sink.tokens for sink in sinks]


def test_fifty_schemas_hold_an_untrained_model_to_valid_json(
    batcher: InflightBatcher, prompt: list[int], tok: Tekkenizer
) -> None:
    assert len(SCHEMAS) == 50
    outputs = generate(batcher, prompt, [json_schema_guide(schema, "schema") for schema in SCHEMAS])
    for schema, ids in zip(SCHEMAS, outputs, strict=True):
        assert len(ids) < MAX_TOKENS, f"{schema} never ended: {tok.decode(ids)!r}"  # the end id came
        assert not [t for t in ids if tok.is_control(t)], ids  # decode() would hide them: check the ids
        text = tok.decode(ids)
        jsonschema.validate(json.loads(text), schema)  # strict JSON: no raw control characters


def test_regex_choice_and_grammar_guides(batcher: InflightBatcher, prompt: list[int], tok: Tekkenizer) -> None:
    guides = [
        regex_guide(r"[a-z]{2,5}-[0-9]{3}", "guided_regex"),
        choice_guide(["yes", "no", "peut-être (?)"], "guided_choice"),
        grammar_guide('root ::= "(" digit ("+" digit)* ")"\ndigit ::= [0-9]', "guided_grammar"),
    ]
    outputs = generate(batcher, prompt, guides * 4)
    assert not [t for ids in outputs for t in ids if tok.is_control(t)]
    texts = [tok.decode(ids) for ids in outputs]
    for index, text in enumerate(texts):
        pattern = [r"[a-z]{2,5}-[0-9]{3}", r"yes|no|peut-être \(\?\)", r"\([0-9](\+[0-9])*\)"][index % 3]
        assert re.fullmatch(pattern, text), (index, text)


def allowed_ids(mask: GuidedMask, generated: list[int], vocab_size: int) -> set[int]:
    logits = torch.zeros(vocab_size)
    mask(logits, generated)
    return set(torch.isfinite(logits).nonzero().flatten().tolist())


def parses_as_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    ("guide", "text", "complete"),
    [
        (
            json_schema_guide({"type": "object", "properties": {"note": {"type": "string"}}}, "schema"),
            '{"note": "a b"}',
            parses_as_json,
        ),
        (regex_guide(r"[a-z ]{1,12}", "guided_regex"), "hello world", re.compile(r"[a-z ]{1,12}").fullmatch),
        (grammar_guide('root ::= "(" [a-z]+ ")"', "guided_grammar"), "(abc)", re.compile(r"\([a-z]+\)").fullmatch),
    ],
    ids=["json_schema", "regex", "ebnf_grammar"],
)
def test_a_guide_allows_no_control_id_and_the_end_id_only_where_the_text_may_end(
    grammar: GrammarEngine, tok: Tekkenizer, guide: Guide, text: str, complete: Callable[[str], object]
) -> None:
    """The mask itself, at every step of a valid text (inside a JSON string too): no control id is ever allowed
    but the end id, and that one only where the text so far is complete; after it nothing else."""
    ids = tok.encode(text)
    mask = grammar.mask(guide)
    controls = {i for i in range(grammar.vocab_size) if tok.is_control(i)}
    for step in range(len(ids) + 1):
        allowed = allowed_ids(mask, ids[:step], grammar.vocab_size)
        prefix = tok.decode(ids[:step])
        assert step == len(ids) or ids[step] in allowed, (step, prefix)
        expected = {tok.eos_id} if step and complete(prefix) else set()
        assert allowed & controls == expected, (step, prefix, sorted(allowed & controls)[:5])
    assert allowed_ids(mask, [*ids, tok.eos_id], grammar.vocab_size) == {tok.eos_id}


def test_without_a_guide_the_same_model_writes_no_json(
    batcher: InflightBatcher, prompt: list[int], tok: Tekkenizer
) -> None:
    # the control: an unguided run of the same model is not JSON, so the masks above did the work
    sink = RecordingSink()
    batcher.submit(
        GenerationRequest(prompt, 20, end_id=2, streaming=True, sampling=Sampling(temperature=1.0, seed=0)), sink
    )
    with pytest.raises(ValueError):
        json.loads(tok.decode(sink.wait().tokens))


def test_a_guide_that_does_not_compile_is_refused_naming_the_input(batcher: InflightBatcher, prompt: list[int]) -> None:
    request = GenerationRequest(prompt, 8, guide=Guide("ebnf_grammar", "root ::= (", "guided_decoding_guide_type"))
    with pytest.raises(BadRequestError) as refused:
        batcher.submit(request, RecordingSink())
    assert refused.value.param == "guided_decoding_guide" and "does not compile" in refused.value.message
    assert batcher.active_requests == 0


def test_a_schema_compiles_once(grammar: GrammarEngine) -> None:
    grammar.compile.cache_clear()
    guide = json_schema_guide(POINT, "schema")
    for _ in range(3):
        grammar.mask(guide)
    info = grammar.compile.cache_info()
    assert (info.misses, info.hits) == (1, 2)
