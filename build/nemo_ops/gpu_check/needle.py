"""The ``long-context`` step of ``make gpu-check --long-context``: a needle in 16k, 64k and 128k-token haystacks.

A haystack is a chat whose one user message is filler prose with one sentence, the needle, that says what a
passphrase is, placed at a chosen depth (0 = the start of the filler, 1 = its end), followed by the question that
asks for it. Its size is the whole prompt in tokens, exactly as the model sees it (the v3 chat template over
Tekken, :func:`nemo_protocol.chat_format.encode_chat`, which matches mistral-common), so the usage the gateway
reports for the request equals it. Each haystack is sent alone, streamed, through the gateway at temperature 0: the
time to the first token is the prefill of the whole prompt, and the answer must contain the passphrase.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nemo_build.profiles import Profile
from nemo_ops.gpu_check.plan import serving_limits
from nemo_ops.steps import StepFailed
from nemo_protocol.chat_format import encode_chat
from nemo_protocol.tekken import Tekkenizer

HAYSTACK_TOKENS = (16_000, 64_000, 128_000)  # the whole prompt, in tokens: "16k, 64k and 128k"
DEPTHS = (0.1, 0.5, 0.9)
ANSWER_TOKENS = 32  # max_tokens of each answer; a haystack must leave room for it in max_seq_len
QUESTION = "What is the secret passphrase mentioned in the text above? Reply with the passphrase only."
PASSPHRASES = ("amber-falcon-731", "cobalt-otter-258", "juniper-comet-964", "saffron-harbor-417", "violet-summit-82")
# Filler: plain sentences on many subjects, cycled; none mentions a passphrase.
FILLER = (
    "The river bends twice before it reaches the old mill at the edge of town.",
    "Farmers in the valley rotate barley, clover and potatoes to keep the soil rich.",
    "A lighthouse keeper once logged every ship that passed during a forty-year career.",
    "Copper roofs turn green as they weather, a patina that protects the metal below.",
    "The library's reading room stays quiet even when the square outside is crowded.",
    "Migrating geese fly in a V shape, taking turns at the front to share the effort.",
    "Bakers start before dawn so that the first loaves are cool enough to slice by seven.",
    "The committee met on Thursdays to discuss the budget for the new community garden.",
    "Glaciers carve wide U-shaped valleys as they move slowly down from the mountains.",
    "An orchestra tunes to the oboe because its pitch is steady and easy to hear.",
    "Tide tables list the times of high and low water for each day of the month.",
    "The museum rotated its collection so that fragile textiles rested away from light.",
    "Cyclists in the city use painted lanes that run alongside the main avenues.",
    "A well-kept notebook records the date, the weather and the work done each day.",
    "The market sells apples from the hills and fish from the harbour every Saturday.",
    "Engineers tested the bridge by driving loaded trucks across it at walking pace.",
)


@dataclass(frozen=True)
class Haystack:
    """One long-context request: the chat, its size in tokens and where the needle is."""

    messages: list[dict[str, str]]
    prompt_tokens: int  # the whole prompt as the model sees it (chat template included)
    needle_depth: float  # where the needle sentence starts, as a fraction of the filler's tokens
    passphrase: str


def _needle(passphrase: str) -> str:
    return f"The secret passphrase is {passphrase}."


def _text(sentences: Sequence[str]) -> str:
    return " ".join(sentences)


def _messages(sentences: Sequence[str]) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{_text(sentences)}\n\n{QUESTION}"}]


def build_haystack(tokenizer: Tekkenizer, prompt_tokens: int, depth: float, passphrase: str) -> Haystack:
    """A chat of at most ``prompt_tokens`` tokens (within one filler sentence of it) with the needle at ``depth``."""
    if not 0 <= depth <= 1:
        raise ValueError(f"depth is {depth}: a fraction from 0 (start) to 1 (end)")
    overhead = len(encode_chat(tokenizer, _messages([_needle(passphrase)])))
    if prompt_tokens <= overhead:
        raise ValueError(f"a haystack of {prompt_tokens} tokens is too small: the needle and question take {overhead}")
    sizes = [len(tokenizer.encode(f" {sentence}")) for sentence in FILLER]
    filler: list[str] = []
    budget = prompt_tokens - overhead
    while budget >= sizes[len(filler) % len(FILLER)]:
        budget -= sizes[len(filler) % len(FILLER)]
        filler.append(FILLER[len(filler) % len(FILLER)])
    while True:  # the sum of sentence sizes estimates the joined text's; measure, and drop sentences while over
        at = round(depth * len(filler))
        sentences = [*filler[:at], _needle(passphrase), *filler[at:]]
        measured = len(encode_chat(tokenizer, _messages(sentences)))
        if measured <= prompt_tokens or not filler:
            break
        filler.pop()
    before = len(tokenizer.encode(_text(filler[:at]))) if at else 0
    total = len(tokenizer.encode(_text(filler))) or 1
    return Haystack(_messages(sentences), measured, before / total, passphrase)


def answer_found(answer: str, passphrase: str) -> bool:
    """Whether ``answer`` names the passphrase (case, spaces and punctuation around it do not matter)."""
    squeeze = re.compile(r"[^a-z0-9]+")
    return squeeze.sub("", passphrase.lower()) in squeeze.sub("", answer.lower())


def planned_haystacks(max_input_len: int, max_seq_len: int) -> list[tuple[int, str | None]]:
    """Each haystack size with why it is skipped (None: it runs) under a deployment's limits."""
    plans: list[tuple[int, str | None]] = []
    for size in HAYSTACK_TOKENS:
        if size > max_input_len or size + ANSWER_TOKENS > max_seq_len:
            why = f"the profile serves max_input_len {max_input_len}, max_seq_len {max_seq_len}"
            plans.append((size, why))
        else:
            plans.append((size, None))
    return plans


def long_context_problems(profile: Profile) -> list[str]:
    """Preflight's judgement of ``--long-context`` for a profile: at least one haystack must fit its limits."""
    limits = serving_limits(profile)
    plans = planned_haystacks(int(limits["max_input_len"]), int(limits["max_seq_len"]))
    if all(why is not None for _, why in plans):
        return [
            f"--long-context: profile {profile.name} serves no haystack ({plans[0][1]}; the smallest is "
            f"{HAYSTACK_TOKENS[0]} tokens): use h100-fp8-tp1-128k"
        ]
    return []


def ask(sdk: Any, model: str, haystack: Haystack) -> dict[str, Any]:
    """One haystack, streamed at temperature 0: the answer, TTFT, end-to-end time and usage."""
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    usage = None
    stream = sdk.chat.completions.create(
        model=model, messages=haystack.messages, temperature=0, max_tokens=ANSWER_TOKENS, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                first = first if first is not None else time.perf_counter()
                parts.append(choice.delta.content)
    answer = "".join(parts)
    done = time.perf_counter()
    return {
        **{key: value for key, value in asdict(haystack).items() if key != "messages"},
        "answer": answer,
        "found": answer_found(answer, haystack.passphrase),
        "ttft_s": None if first is None else round(first - started, 3),
        "e2e_s": round(done - started, 3),
        "usage_prompt_tokens": None if usage is None else usage.prompt_tokens,
    }


def long_context(base_url: str, model: str, tokenizer_file: Path, limits: tuple[int, int]) -> dict[str, Any]:
    """The step: every planned haystack at every depth, one at a time; fails when a needle is missed or the
    deployment counts a prompt otherwise than the chat template does."""
    from openai import OpenAI

    tokenizer = Tekkenizer.from_file(tokenizer_file)
    sdk = OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", timeout=1800, max_retries=0)
    results, skipped = [], {}
    for size, why in planned_haystacks(*limits):
        if why is not None:
            skipped[str(size)] = why
            print(f"  {size} tokens: skipped ({why})", flush=True)
            continue
        for index, depth in enumerate(DEPTHS):
            haystack = build_haystack(tokenizer, size, depth, PASSPHRASES[index % len(PASSPHRASES)])
            result = ask(sdk, model, haystack)
            results.append(result)
            print(
                f"  {haystack.prompt_tokens} tokens, needle at {haystack.needle_depth:.2f}: "
                f"{'found' if result['found'] else 'MISSED'}, TTFT {result['ttft_s']} s ({result['answer']!r})",
                flush=True,
            )
    if not results:
        raise StepFailed(f"no haystack fits this deployment: {'; '.join(sorted(set(skipped.values())))}")
    problems = [
        f"{r['prompt_tokens']} tokens at depth {r['needle_depth']:.2f}: answered {r['answer']!r}, not "
        f"{r['passphrase']}" for r in results if not r["found"]
    ] + [
        f"{r['prompt_tokens']}-token prompt counted as {r['usage_prompt_tokens']} by the deployment"
        for r in results if r["usage_prompt_tokens"] != r["prompt_tokens"]
    ]  # fmt: skip
    document = {"depths": list(DEPTHS), "results": results, "skipped": skipped}
    if problems:
        raise StepFailed("the long-context check failed:\n  - " + "\n  - ".join(problems))
    return document
