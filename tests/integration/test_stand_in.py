"""The stand-in engine behind the real frontend models, and frontend instances that really share the streams.

A second Triton serves ``nemo-build repository --target stand-in --frontend-instances 2``: `tensorrt_llm`
streams known text at a fixed rate with no model, and `chat`, `ensemble`, `preprocessing` and
`postprocessing` run two python stub processes each. Concurrent streams must each get exactly their text,
and the work must land on both instances of a model (each stub's CPU time, from /proc, grows).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nemo_build.repository import TEMPLATES_DIR, RepositorySettings, render_repository
from nemo_client import NemoClient
from nemo_ops.launcher import TritonServer
from nemo_ops.stub_supervisor import stub_processes
from nemo_protocol.chat_format import encode_chat
from nemo_protocol.tekken import Tekkenizer
from nemo_runtime.stand_in import StandInEngine, text_token_ids
from tests.integration.triton_calls import ensemble_inputs, stream
from tests.reliability.servers import process_cpu_seconds

INSTANCES = 2
STREAMS = 16
TOKENS = 160
TOKENS_PER_S = 400.0


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory, tekken_path: Path) -> Iterator[TritonServer]:
    settings = RepositorySettings(
        target="stand-in",
        model_dir=tekken_path,
        max_batch_size=32,
        max_input_len=1024,
        max_seq_len=2048,
        frontend_instances=INSTANCES,
        stand_in_tokens_per_s=TOKENS_PER_S,
    )
    repository = tmp_path_factory.mktemp("stand-in") / "repository"
    render_repository(TEMPLATES_DIR, settings, tekken_path, repository)
    with TritonServer(repository) as server:
        yield server


@pytest.fixture(scope="module")
def expected_tokens(tekken_path: Path) -> Iterator[StandInEngine]:
    """An engine of the same text, asked only what it would send for a prompt (`tokens_for`)."""
    engine = StandInEngine(text_token_ids(Tekkenizer.from_file(tekken_path)))
    yield engine
    engine.close()


def stub_cpu(server: TritonServer, model: str) -> list[float]:
    assert server.pid is not None
    return [process_cpu_seconds(pid) for pid in sorted(stub_processes(server.pid)[model])]


def spread(before: list[float], after: list[float]) -> list[float]:
    """Each instance's share of the CPU time its model used between the two readings."""
    used = [b - a for a, b in zip(before, after, strict=True)]
    return [share / sum(used) for share in used]


def test_concurrent_chat_streams_get_their_text_and_use_every_chat_instance(
    stand_in: TritonServer, expected_tokens: StandInEngine, tekken_path: Path
) -> None:
    tokenizer = Tekkenizer.from_file(tekken_path)
    questions = [[{"role": "user", "content": f"Question number {n}?"}] for n in range(STREAMS)]
    assert len(stub_cpu(stand_in, "chat")) == INSTANCES
    before = stub_cpu(stand_in, "chat")
    with NemoClient(stand_in.grpc_url, timeout=120) as client:

        def ask(messages: list[dict[str, str]]) -> str:
            chunks = client.chat.completions.create(messages=messages, max_tokens=TOKENS, stream=True)
            return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)

        with ThreadPoolExecutor(STREAMS) as pool:
            answers = list(pool.map(ask, questions))
    shares = spread(before, stub_cpu(stand_in, "chat"))
    for messages, answer in zip(questions, answers, strict=True):
        prompt = encode_chat(tokenizer, messages)
        assert answer == tokenizer.decode(expected_tokens.tokens_for(prompt, TOKENS))
    assert min(shares) >= 0.25, f"the chat instances' shares of the work: {shares}"


def test_concurrent_ensemble_streams_use_every_instance(
    stand_in: TritonServer, expected_tokens: StandInEngine, tekken_path: Path
) -> None:
    tokenizer = Tekkenizer.from_file(tekken_path)
    texts = [f"Text number {n}" for n in range(STREAMS)]
    before = stub_cpu(stand_in, "ensemble")
    with ThreadPoolExecutor(STREAMS) as pool:
        results = list(
            pool.map(
                lambda text: stream(stand_in.grpc_url, "ensemble", ensemble_inputs(text, TOKENS, stream=True)), texts
            )
        )
    shares = spread(before, stub_cpu(stand_in, "ensemble"))
    for text, result in zip(texts, results, strict=True):
        assert result.error is None, result.error
        expected = tokenizer.decode(expected_tokens.tokens_for(tokenizer.encode(text, bos=True), TOKENS))
        assert "".join(result.texts("text_output")) == expected
    assert min(shares) >= 0.25, f"the ensemble instances' shares of the work: {shares}"
