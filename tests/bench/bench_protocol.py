"""Protocol-layer benchmarks, side by side with mistral-common on the same inputs.

* encode throughput (MB/s) of our Tekkenizer vs mistral-common's, on the multilingual corpus;
* ``encode_chat`` vs mistral-common's ``encode_chat_completion`` on a tools conversation;
* streaming decode cost per token at 256 vs 8192 generated tokens.

Run alone with ``python -m tests.bench.bench_protocol``; ``make bench`` runs it with the others.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from nemo_protocol.chat_format import encode_chat, to_model_tool_call_id
from nemo_protocol.tekken import Tekkenizer, default_tekken_path
from tests.bench.timing import markdown_table, median_seconds
from tests.unit.protocol.conversations import WEATHER_TOOL, calls, result, system, user
from tests.unit.protocol.corpus import MULTILINGUAL

TOOLS_CONVERSATION = [
    system("You are a weather assistant. Answer briefly."),
    user("What's the weather in Paris and in Tokyo?"),
    calls(("call_paris_0001", "get_weather", {"city": "Paris"}), ("call_tokyo_0002", "get_weather", {"city": "Tokyo"})),
    result("call_paris_0001", '{"temperature": 21, "sky": "clear"}'),
    result("call_tokyo_0002", '{"temperature": 9, "sky": "rain"}'),
    {"role": "assistant", "content": "Paris: 21°C and clear. Tokyo: 9°C with rain."},
    user("And should I take an umbrella in Tokyo tomorrow?"),
]


def _encode_throughput(ours: Tekkenizer, theirs: Any) -> dict[str, Any]:
    documents = list(MULTILINGUAL.values()) * 40
    megabytes = sum(len(d.encode("utf-8")) for d in documents) / 1e6

    def run_ours() -> None:
        for document in documents:
            ours.encode(document)

    def run_theirs() -> None:
        for document in documents:
            theirs.encode(document, bos=False, eos=False)

    ours_s, theirs_s = median_seconds(run_ours, repeats=9), median_seconds(run_theirs, repeats=9)
    return {
        "documents": len(documents),
        "megabytes": round(megabytes, 3),
        "ours_mb_per_s": round(megabytes / ours_s, 2),
        "mistral_common_mb_per_s": round(megabytes / theirs_s, 2),
        "ratio": round(theirs_s / ours_s, 2),
    }


def _chat_encoding(ours: Tekkenizer, reference: MistralTokenizer) -> dict[str, Any]:
    oracle_messages = copy.deepcopy(TOOLS_CONVERSATION)
    for message in oracle_messages:
        for call in message.get("tool_calls") or []:
            call["id"] = to_model_tool_call_id(call["id"])
        if message["role"] == "tool":
            message["tool_call_id"] = to_model_tool_call_id(message["tool_call_id"])
    tools = [WEATHER_TOOL]
    expected = reference.encode_chat_completion(
        ChatCompletionRequest.from_openai(messages=oracle_messages, tools=tools)
    ).tokens
    assert encode_chat(ours, TOOLS_CONVERSATION, tools) == expected, "benchmark inputs must encode identically"

    calls_per_run = 200

    def run_ours() -> None:
        for _ in range(calls_per_run):
            encode_chat(ours, TOOLS_CONVERSATION, tools)

    def run_theirs() -> None:
        for _ in range(calls_per_run):
            request = ChatCompletionRequest.from_openai(messages=oracle_messages, tools=tools)
            reference.encode_chat_completion(request)

    ours_s, theirs_s = median_seconds(run_ours), median_seconds(run_theirs)
    return {
        "prompt_tokens": len(expected),
        "ours_us_per_request": round(ours_s / calls_per_run * 1e6, 1),
        "mistral_common_us_per_request": round(theirs_s / calls_per_run * 1e6, 1),
        "ratio": round(theirs_s / ours_s, 2),
    }


def _streaming_decode(ours: Tekkenizer) -> dict[str, Any]:
    text = "".join(MULTILINGUAL.values())
    stream = ours.encode(text * (8192 // len(ours.encode(text)) + 1))

    def per_token_ns(length: int) -> float:
        ids = stream[:length]

        def run() -> None:
            decoder = ours.incremental_decoder()
            for token_id in ids:
                decoder.feed(token_id)
            decoder.flush()

        return median_seconds(run, repeats=9) / length * 1e9

    short, long = per_token_ns(256), per_token_ns(8192)
    return {
        "ns_per_token_256": round(short),
        "ns_per_token_8192": round(long),
        "ratio_8192_vs_256": round(long / short, 3),
    }


def run() -> dict[str, Any]:
    path = default_tekken_path()
    ours = Tekkenizer.from_file(path)
    reference = MistralTokenizer.from_file(str(path))
    encode = _encode_throughput(ours, reference.instruct_tokenizer.tokenizer)
    chat = _chat_encoding(ours, reference)
    stream = _streaming_decode(ours)
    markdown = "\n\n".join(
        [
            "Same inputs for both sides, medians of repeated runs (`python -m tests.bench.bench_protocol`).",
            markdown_table(
                ["measure", "nemo_client", "mistral-common", "ratio (ours ÷ theirs speed)", "target"],
                [
                    [
                        f"Tekken encode, MB/s ({encode['documents']} multilingual docs, {encode['megabytes']} MB)",
                        encode["ours_mb_per_s"],
                        encode["mistral_common_mb_per_s"],
                        f"{encode['ratio']}×",
                        "≥ 1.0×",
                    ],
                    [
                        f"chat encoding with tools, µs/request ({chat['prompt_tokens']} prompt tokens)",
                        chat["ours_us_per_request"],
                        chat["mistral_common_us_per_request"],
                        f"{chat['ratio']}×",
                        "≥ 3×",
                    ],
                ],
            ),
            markdown_table(
                ["streaming decode", "ns/token at 256 tokens", "ns/token at 8192 tokens", "ratio 8192 ÷ 256", "target"],
                [
                    [
                        "IncrementalDecoder, one id at a time",
                        stream["ns_per_token_256"],
                        stream["ns_per_token_8192"],
                        f"{stream['ratio_8192_vs_256']}×",
                        "≤ 1.3×",
                    ]
                ],
            ),
        ]
    )
    return {
        "title": "Protocol layer (Tekken, chat format, streaming decode)",
        "markdown": markdown,
        "data": {"encode": encode, "chat": chat, "stream": stream},
    }


if __name__ == "__main__":
    print(json.dumps(run()["data"], indent=2))
