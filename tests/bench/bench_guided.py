"""Guided decoding on CPU: decode speed with and without a JSON-schema guide, and grammar compile times.

The reference runtime (FP8 checkpoint of the trained tiny model) decodes the same prompt at batch 1 and 8,
unconstrained and held to a JSON schema by xgrammar masks (nemo_runtime.guided), side by side in one run;
each figure is the median of :data:`REPEATS` runs. The schema's string is unbounded, so the guided run
decodes as many tokens as the free one. Compile times are cold (cache cleared) and cached, for the 50 test
schemas of tests/unit/runtime/guided_schemas.json, a required tool call, a regex and an EBNF grammar.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from nemo_build.tiny.chat import WEATHER_TOOL
from nemo_chat_core.guided import Guide, grammar_guide, json_schema_guide, regex_guide, tool_calls_guide
from nemo_protocol.tekken import Tekkenizer, default_tekken_path
from nemo_runtime.guided import GrammarEngine
from nemo_runtime.scheduler import ReferenceRuntime
from tests.bench.timing import markdown_table
from tests.reliability.servers import tiny_checkpoint

DECODE_TOKENS = 96
REPEATS = 5
BATCHES = (1, 8)
ANSWER = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
SCHEMAS = json.loads((Path(__file__).parents[1] / "unit" / "runtime" / "guided_schemas.json").read_text("utf-8"))


def _decode_tokens_per_s(
    runtime: ReferenceRuntime, prompt: list[int], batch: int, guide: Guide | None, grammar: GrammarEngine
) -> float:
    for index in range(batch):
        mask = grammar.mask(guide) if guide is not None else None
        runtime.add_request(str(index), prompt, max_new_tokens=DECODE_TOKENS, logits_mask=mask)
    runtime.step()  # prefill: not part of the decode rate
    started, produced = time.perf_counter(), 0
    while runtime.has_work():
        produced += sum(len(output.new_token_ids) for output in runtime.step())
    return produced / (time.perf_counter() - started)


def _compile_ms(grammar: GrammarEngine, guides: list[Guide]) -> tuple[list[float], list[float]]:
    grammar.compile.cache_clear()
    cold, cached = [], []
    for guide in guides:
        for into in (cold, cached):
            started = time.perf_counter()
            grammar.compile(guide.type, guide.text)
            into.append(1000 * (time.perf_counter() - started))
    return cold, cached


def run() -> dict[str, Any]:
    tokenizer = Tekkenizer.from_file(default_tekken_path())
    grammar = GrammarEngine(tokenizer)
    checkpoint = tiny_checkpoint()
    prompt = [tokenizer.bos_id, tokenizer.control_id("[INST]"), *tokenizer.encode("Answer in JSON."), 4]
    guide = json_schema_guide(ANSWER, "response_format")
    grammar.compile(guide.type, guide.text)  # compile time is reported below, not in the decode rate
    rates: dict[str, dict[int, float]] = {"unconstrained": {}, "JSON schema guide": {}}
    for batch in BATCHES:
        runtime = ReferenceRuntime.from_checkpoint(checkpoint, max_batch_size=batch)
        samples: dict[str, list[float]] = {name: [] for name in rates}
        for _ in range(REPEATS):  # alternate, so that both see the same machine
            samples["unconstrained"].append(_decode_tokens_per_s(runtime, prompt, batch, None, grammar))
            samples["JSON schema guide"].append(_decode_tokens_per_s(runtime, prompt, batch, guide, grammar))
        for name, values in samples.items():
            rates[name][batch] = statistics.median(values)
    rows = [[name, *[round(rates[name][b]) for b in BATCHES]] for name in rates]
    slowdown = [
        [f"batch {b}", f"{100 * (1 - rates['JSON schema guide'][b] / rates['unconstrained'][b]):.1f} %"]
        for b in BATCHES
    ]
    families = {
        "50 test schemas": [json_schema_guide(schema, "schema") for schema in SCHEMAS],
        "required tool call (weather tool)": [tool_calls_guide([WEATHER_TOOL], None, one_call=False)],
        "regex": [regex_guide(r"[A-Z][a-z]{2,8} [0-9]{1,2}", "guided_regex")],
        "EBNF grammar": [grammar_guide('root ::= "(" digit ("+" digit)* ")"\ndigit ::= [0-9]', "guided_grammar")],
    }
    compile_rows = []
    compile_data = {}
    for name, guides in families.items():
        cold, cached = _compile_ms(grammar, guides)
        compile_data[name] = {"cold_ms": cold, "cached_ms": cached}
        compile_rows.append(
            [
                name,
                len(guides),
                round(statistics.median(cold), 2),
                round(max(cold), 2),
                round(statistics.median(cached), 4),
            ]
        )
    markdown = "\n\n".join(
        [
            f"Reference runtime, FP8 checkpoint of the trained tiny model, {DECODE_TOKENS} decode steps per request, "
            f"median of {REPEATS} alternating runs. The guide is `{json.dumps(ANSWER)}` (xgrammar mask before every "
            "token, `nemo_runtime.guided`). `python -m tests.bench.run bench_guided` runs it alone.",
            markdown_table(["decode tokens/s", *[f"batch {b}" for b in BATCHES]], rows),
            markdown_table(["guided vs unconstrained", "slower per token"], slowdown),
            "Grammar compile time (xgrammar over the Tekken vocabulary; a compiled guide is cached per schema, so "
            "only a schema's first request pays it):",
            markdown_table(["guides", "count", "cold median ms", "cold max ms", "cached median ms"], compile_rows),
        ]
    )
    return {
        "title": "Guided decoding (CPU, xgrammar)",
        "markdown": markdown,
        "data": {"decode_tokens_per_s": rates, "compile": compile_data},
    }


if __name__ == "__main__":
    print(run()["markdown"])
