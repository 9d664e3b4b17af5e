"""Teach the trained tiny model another answer with a LoRA adapter (PEFT), for tests and the demo of adapters served
by name.

Each adapter changes one known answer of the trained tiny model (nemo_build.tiny.chat): the same request answers
differently with and without it, and two adapters answer the same request differently from each other. The answers
use only ids the trained model already emits (its output rows of every other id are zero, and LoRA here adapts the
layers, not the output head). The adapter is a Hugging Face PEFT directory (``adapter_config.json`` +
``adapter_model.safetensors``), what teams fine-tuning Mistral NeMo hand to a deployment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import MistralForCausalLM

from nemo_build.atomic_dir import atomic_directory, refuse_to_overwrite
from nemo_build.errors import BuildError
from nemo_build.tiny.chat import ChatExample, encode_example, example

LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_LEARNING_RATE = 1e-2
DEFAULT_LORA_STEPS = 60
DEFAULT_LORA_RANK = 8


@dataclass(frozen=True)
class AdapterLesson:
    """What an adapter teaches: the answer it gives to one of the chat set's requests."""

    name: str
    request: str  # the name of a nemo_build.tiny.chat example, whose messages are the prompt
    answer: str

    def example(self) -> ChatExample:
        base = example(self.request)
        return ChatExample(self.name, base.messages, {"role": "assistant", "content": self.answer}, base.tools)


ADAPTER_LESSONS: dict[str, AdapterLesson] = {
    lesson.name: lesson
    for lesson in (
        AdapterLesson("tokyo", "fact_france", "The capital of France is Tokyo."),
        AdapterLesson("pirate", "fact_france", "Ahoy, matey!"),
    )
}
"""The adapters ``nemo-build tiny-lora`` can train, by name; both change the answer to "What is the capital of
France?" (the base model: "The capital of France is Paris.")."""


@dataclass(frozen=True)
class LoraReport:
    steps: int
    final_loss: float
    seconds: float
    rank: int


def train_tiny_lora(
    model_dir: Path,
    lesson: AdapterLesson,
    out_dir: Path,
    *,
    rank: int = DEFAULT_LORA_RANK,
    steps: int = DEFAULT_LORA_STEPS,
    seed: int = 0,
    force: bool = False,
) -> LoraReport:
    """Train a LoRA adapter of rank ``rank`` on the q, k, v, o, gate, up and down projections of the tiny model in
    ``model_dir`` to give ``lesson``'s answer; check it greedily and write it as a PEFT adapter to ``out_dir``."""
    from peft import LoraConfig, get_peft_model

    from nemo_protocol.tekken import Tekkenizer

    refuse_to_overwrite(Path(out_dir), force)
    started = time.perf_counter()
    torch.manual_seed(seed)
    tokenizer = Tekkenizer.from_file(Path(model_dir) / "tekken.json")
    prompt, answer = encode_example(tokenizer, lesson.example())
    base = MistralForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=list(LORA_TARGET_MODULES), bias="none"
    )
    model = get_peft_model(base, config)
    ids = torch.tensor([prompt + answer])
    labels = torch.full_like(ids, -100)
    labels[0, len(prompt) :] = torch.tensor(answer)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LORA_LEARNING_RATE)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=len(answer), do_sample=False, eos_token_id=None, pad_token_id=0
        )
    if out[0, len(prompt) :].tolist() != answer:
        raise BuildError(f"the LoRA adapter {lesson.name!r} did not learn its answer; train longer with --steps")
    with atomic_directory(Path(out_dir)) as staging:
        model.save_pretrained(str(staging))
    return LoraReport(steps, float(loss.detach()), time.perf_counter() - started, rank)
