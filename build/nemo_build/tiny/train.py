"""Teach the tiny model the synthetic chat set, so greedy decoding gives known answers and a known tool call.

Cheap despite the 131072-id vocabulary: only the embedding rows of the ids the set contains are
trained, and the loss is a softmax over only the ids the answers use plus one constant-zero logit that
stands for every other id. After training the output rows of those other ids are zeroed, so their
logits are exactly that zero and the trained answer ids win wherever trained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import MistralForCausalLM

from nemo_build.errors import BuildError
from nemo_build.tiny.chat import (
    CHAT_SET,
    COMPLETION_SET,
    DEFAULT_STEPS,
    ChatExample,
    CompletionExample,
    encode_example,
)
from nemo_build.tiny.model import random_tiny_model

LEARNING_RATE = 1e-2
TRAINING_SET: tuple[ChatExample | CompletionExample, ...] = (*CHAT_SET, *COMPLETION_SET)
TRAINING_THREADS = 2


@dataclass(frozen=True)
class TrainReport:
    steps: int
    final_loss: float
    seconds: float
    examples: int
    answer_ids: int


def _batch(tekken_path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[list[int], list[int]]]]:
    from nemo_protocol.tekken import Tekkenizer

    tokenizer = Tekkenizer.from_file(tekken_path)
    pairs = [encode_example(tokenizer, item) for item in TRAINING_SET]
    length = max(len(p) + len(a) for p, a in pairs)
    ids = torch.full((len(pairs), length), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((len(pairs), length), dtype=torch.long)
    targets = torch.full((len(pairs), length), -100, dtype=torch.long)  # target of position t is token t+1
    for row, (prompt, answer) in enumerate(pairs):
        seq = prompt + answer
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        targets[row, len(prompt) - 1 : len(seq) - 1] = torch.tensor(answer)
    return ids, mask, targets, pairs


def train_tiny_model(
    tekken_path: Path, seed: int, steps: int = DEFAULT_STEPS
) -> tuple[MistralForCausalLM, TrainReport]:
    """A random tiny model (from ``seed``) trained on the chat and completion sets; checks every answer greedily.

    The same seed gives the same model: deterministic kernels (the embedding gradient's scatter-add is not by
    default) and a fixed thread count (matmul blocking follows it); the tests read what the model writes.
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(TRAINING_THREADS)
    torch.use_deterministic_algorithms(True)
    try:
        return _train(tekken_path, seed, steps)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(tekken_path: Path, seed: int, steps: int) -> tuple[MistralForCausalLM, TrainReport]:
    started = time.perf_counter()
    model = random_tiny_model(seed)
    ids, mask, targets, pairs = _batch(tekken_path)
    used = torch.unique(targets[targets >= 0])
    # targets re-indexed into the reduced head; column 0 is the constant logit of all other ids
    reduced = torch.full_like(targets, -100)
    reduced[targets >= 0] = torch.searchsorted(used, targets[targets >= 0]) + 1
    head = torch.nn.Parameter(model.lm_head.weight.detach()[used].clone())
    seen, local_ids = torch.unique(ids, return_inverse=True)
    embedding = torch.nn.Parameter(model.model.embed_tokens.weight.detach()[seen].clone())
    params = [p for name, p in model.model.layers.named_parameters()] + [
        *model.model.norm.parameters(),
        head,
        embedding,
    ]
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    model.train()
    loss = torch.tensor(0.0)
    for _ in tqdm(range(steps), desc="training tiny model", unit="step"):
        hidden = model.model(inputs_embeds=embedding[local_ids], attention_mask=mask).last_hidden_state
        logits = hidden @ head.T
        logits = torch.cat([torch.zeros_like(logits[..., :1]), logits], dim=-1)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), reduced.flatten(), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[used] = head.detach()
        model.model.embed_tokens.weight[seen] = embedding.detach()
        model.to(torch.bfloat16).float()  # type: ignore[arg-type]  # transformers wraps .to untyped  # check what will be saved: bf16 weights
    _check_answers(model, pairs)
    report = TrainReport(steps, float(loss.detach()), time.perf_counter() - started, len(pairs), int(used.numel()))
    return model, report


@torch.no_grad()
def _check_answers(model: MistralForCausalLM, pairs: list[tuple[list[int], list[int]]]) -> None:
    wrong = []
    for index, (prompt, answer) in enumerate(pairs):
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=len(answer), do_sample=False, eos_token_id=None, pad_token_id=0
        )
        got = out[0, len(prompt) :].tolist()
        if got != answer:
            wrong.append(TRAINING_SET[index].name)
    if wrong:
        raise BuildError(
            f"the tiny model did not learn {len(wrong)} of {len(pairs)} answers ({', '.join(wrong)}); "
            "train longer with --steps"
        )
