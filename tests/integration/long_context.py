"""Long prompts for the 128k tests and the long-context benchmark: a haystack of varied text of a given token length,
its chat's prompt tokens counted by mistral-common (the oracle), and the engine stub's peak resident memory."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from nemo_build.repository import TEMPLATES_DIR, RepositorySettings, render_repository
from nemo_ops.stub_supervisor import stub_processes
from nemo_protocol.tekken import Tekkenizer, default_tekken_path
from tests.integration.oracle import chat_prompt_ids

MAX_SEQ_LEN = 131072  # the tiny model's max_position_embeddings, as Mistral NeMo's 128k context
MAX_INPUT_LEN = 130000
SERVED = "nemo-tiny"
_WORDS = [
    "river",
    "mountain",
    "ledger",
    "copper",
    "violet",
    "signal",
    "harbor",
    "lantern",
    "meadow",
    "orbit",
    "quartz",
    "saddle",
    "timber",
    "velvet",
    "walnut",
    "anchor",
    "beacon",
    "canyon",
    "delta",
    "ember",
    "falcon",
    "glacier",
    "hollow",
    "island",
    "jasmine",
    "kettle",
    "lagoon",
    "marble",
    "nectar",
    "oasis",
    "pepper",
    "quiver",
    "raven",
    "summit",
    "tundra",
    "umbra",
    "vessel",
    "willow",
    "xenon",
    "yonder",
    "zephyr",
]


def haystack(tokens: int, seed: int = 0) -> str:
    """Numbered lines of pseudo-random words, at least ``tokens`` Tekken tokens long (and not many more)."""
    tokenizer = Tekkenizer.from_file(default_tekken_path())
    rng = random.Random(seed)
    lines, count = [], 0
    while count < tokens:
        line = f"Record {len(lines)}: " + " ".join(rng.choice(_WORDS) for _ in range(12)) + ".\n"
        lines.append(line)
        count += len(tokenizer.encode(line))
    return "".join(lines)


def oracle_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The prompt tokens mistral-common renders for a chat (Mistral NeMo Instruct: v3, Tekken)."""
    return len(chat_prompt_ids(messages))


def render_long_repository(checkpoint: Path, tekken: Path, out: Path, **settings: Any) -> Path:
    """A cpu repository for 128k prompts: max_input_len 130000, max_seq_len 131072 (``settings`` override)."""
    values: dict[str, Any] = {"max_batch_size": 4, "max_input_len": MAX_INPUT_LEN, "max_seq_len": MAX_SEQ_LEN}
    values.update(settings)
    render_repository(
        TEMPLATES_DIR, RepositorySettings(target="cpu", model_dir=checkpoint, served_model_name=SERVED, **values),
        tekken, out,
    )  # fmt: skip
    return out


def _engine_stub(triton_pid: int) -> int:
    (pid,) = stub_processes(triton_pid)["tensorrt_llm"]
    return pid


def reset_engine_peak_rss(triton_pid: int) -> None:
    """Reset the ``tensorrt_llm`` stub's peak resident memory to what it holds now (so that the model loading's
    transient copies are not counted in what a request is measured to take)."""
    Path(f"/proc/{_engine_stub(triton_pid)}/clear_refs").write_text("5")


def engine_peak_rss_mib(triton_pid: int) -> float:
    """The peak resident memory (VmHWM) of the ``tensorrt_llm`` stub, where the reference runtime runs, in MiB."""
    pid = _engine_stub(triton_pid)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM")
