"""The engine runtime's LoRA metrics path on a real Triton: the `chat` model and the `ensemble` report their adapter
requests to the `lora_requests` model, which publishes the model server protocol's LoRA gauge and the requests per
adapter.

The `gpu` target (C++ tensorrtllm backend) renders that model and cannot run here, so this renders a CPU repository
with ``lora_metrics_from_frontends`` (the same two models, the same BLS reports, the CPU runtime behind them) and one
batch slot: a second adapter request waits for the first, as on an engine whose batch is full. The CPU runtime
publishes its own LoRA gauge from inside the engine; both must tell the same story.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from nemo_build.repository import LORA_REQUESTS_MODEL
from nemo_build.tiny.chat import example
from nemo_client import NemoClient
from nemo_ops.launcher import TritonServer
from tests.integration.conftest import serving_repository

GIE_PROTOCOL = json.loads(
    (Path(__file__).parents[1] / "data" / "upstream" / "gie_model_server_protocol.json").read_text()
)
FRANCE = list(example("fact_france").messages)
MAX_LORA = 3
LONG = {"max_tokens": 2000, "stream": True, "extra_body": {"nvext": {"ignore_eos": True}}}  # runs until closed


@pytest.fixture(scope="module")
def triton(
    tmp_path_factory: pytest.TempPathFactory, serving_checkpoint: Path, tekken_path: Path, lora_source_dir: Path
) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("lora-requests")
    for name in ("tokyo", "pirate"):
        shutil.copytree(lora_source_dir / name, root / "adapters" / name)
    repository = serving_repository(
        root / "repository", "cpu", serving_checkpoint, tekken_path,
        lora_dir=root / "adapters", lora_metrics_from_frontends=True, max_loras=MAX_LORA, max_batch_size=1,
    )  # fmt: skip
    with TritonServer(repository) as server:
        yield server


Series = list[tuple[float, dict[str, str]]]  # a model's LoRA info series: (value, labels without model and version)


def lora_metrics(triton: TritonServer) -> tuple[dict[str, Series], dict[str, float]]:
    """Each model's LoRA info series and the `lora_requests` model's requests per adapter, from Triton's /metrics."""
    with urllib.request.urlopen(f"http://{triton.host}:{triton.ports.metrics}/metrics", timeout=5) as answer:
        text = answer.read().decode("utf-8")
    infos: dict[str, Series] = {}
    requests = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            model = sample.labels.get("model", "")
            if sample.name == "vllm:lora_requests_info":
                labels = {k: v for k, v in sample.labels.items() if k not in ("model", "version")}
                infos.setdefault(model, []).append((sample.value, labels))
            elif sample.name == "nemo_runtime_lora_requests_total" and model == LORA_REQUESTS_MODEL:
                requests[sample.labels["lora_name"]] = sample.value
    return infos, requests


def latest(series: Series) -> dict[str, str]:
    """The labels of the newest series, as the endpoint picker reads the gauge (the largest value: its time)."""
    return max(series, key=lambda item: item[0])[1] if series else {}


def wait_for(
    triton: TritonServer, running: str, waiting: str, engine_agrees: bool = True
) -> tuple[dict[str, Series], dict[str, float]]:
    """The metrics once the `lora_requests` model's gauge shows these adapters, and the CPU engine's own too."""
    wanted = {"running_lora_adapters": running, "waiting_lora_adapters": waiting, "max_lora": str(MAX_LORA)}
    deadline = time.monotonic() + 15
    while True:
        infos, requests = lora_metrics(triton)
        reported, engine = latest(infos.get(LORA_REQUESTS_MODEL, [])), latest(infos.get("tensorrt_llm", []))
        engine_sees = {k: engine.get(k) for k in ("running_lora_adapters", "waiting_lora_adapters")}
        if reported == wanted and (not engine_agrees or engine_sees == {k: wanted[k] for k in engine_sees}):
            return infos, requests
        assert time.monotonic() < deadline, (wanted, infos)
        time.sleep(0.05)


def test_the_chat_models_reports_publish_waiting_then_running_adapters_and_requests_per_adapter(
    triton: TritonServer,
) -> None:
    """pirate runs in the one batch slot while tokyo waits (sent, no token yet); pirate ends and tokyo runs; then
    neither. The gauge carries upstream's label names, and each adapter counts one request."""
    infos, requests = wait_for(triton, running="", waiting="")  # published at start, before any request
    assert sorted(latest(infos[LORA_REQUESTS_MODEL])) == sorted(GIE_PROTOCOL["lora_info_labels"])
    assert requests == {}
    with NemoClient(triton.grpc_url) as client:
        pirate = client.chat.completions.create(messages=FRANCE, model="pirate", **LONG)
        next(iter(pirate))
        wait_for(triton, running="pirate", waiting="")
        tokyo = client.chat.completions.create(messages=FRANCE, model="tokyo", **LONG)  # no slot: no token
        wait_for(triton, running="pirate", waiting="tokyo")
        pirate.close()  # cancelled: its slot goes to tokyo
        wait_for(triton, running="tokyo", waiting="")
        tokyo.close()
    infos, requests = wait_for(triton, running="", waiting="")
    assert requests == {"pirate": 1, "tokyo": 1}
    # Triton keeps a series per set of labels seen, as vLLM does; the newest tells the state now
    seen = [tuple(sorted(labels.items())) for _, labels in infos[LORA_REQUESTS_MODEL]]
    assert len(seen) == len(set(seen)) >= 4


def test_the_ensembles_adapter_requests_are_reported_too(triton: TritonServer) -> None:
    """Completions (the `ensemble`) naming an adapter report it as the chat model does."""
    before = lora_metrics(triton)[1].get("tokyo", 0.0)
    with NemoClient(triton.grpc_url) as client:
        stream = client.completions.create(
            model="tokyo", prompt="The capital of France is", max_tokens=2000, stream=True, ignore_eos=True
        )
        next(iter(stream))
        wait_for(triton, running="tokyo", waiting="")
        stream.close()
    _, requests = wait_for(triton, running="", waiting="")
    assert requests["tokyo"] == before + 1


def test_the_direct_path_sends_adapter_requests_through_the_chat_model_so_they_are_counted(
    triton: TritonServer,
) -> None:
    """The direct path cannot tell which pod its balanced transport sent a request to, so where the deployment counts
    adapter requests it leaves those to the `chat` model (base-model requests stay direct)."""
    before = lora_metrics(triton)[1].get("pirate", 0.0)
    with NemoClient(triton.grpc_url, direct=True) as client:
        stream = client.chat.completions.create(messages=FRANCE, model="pirate", **LONG)
        next(iter(stream))
        wait_for(triton, running="pirate", waiting="")
        stream.close()
        assert client.chat.completions.create(messages=FRANCE, temperature=0, max_tokens=24).choices[0].message.content
    _, requests = wait_for(triton, running="", waiting="")
    assert requests["pirate"] == before + 1


def test_a_base_model_request_is_not_reported(triton: TritonServer) -> None:
    before = lora_metrics(triton)
    with NemoClient(triton.grpc_url) as client:
        assert client.chat.completions.create(messages=FRANCE, max_tokens=4).choices[0].message.content
    time.sleep(0.2)  # what a report would take to be published
    assert lora_metrics(triton) == before


def report(**columns: list[str]) -> list[grpcclient.InferInput]:
    inputs = []
    for name, values in columns.items():
        tensor = grpcclient.InferInput(name, [len(values)], "BYTES")
        tensor.set_data_from_numpy(np.array([value.encode() for value in values], dtype=object))
        inputs.append(tensor)
    return inputs


def test_a_bad_report_is_refused_by_name_and_the_model_keeps_recording(triton: TritonServer) -> None:
    """The model answers gRPC like any other (as the reporters' BLS calls reach it): a report it cannot take is an
    error naming what is wrong, and the next good one is recorded."""
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    call = client.infer
    refused = r"'queued' is not a state \(accepted: waiting, running, ended\)"
    with pytest.raises(InferenceServerException, match=refused):
        call(LORA_REQUESTS_MODEL, report(request_id=["r1"], lora_name=["tokyo"], state=["queued"]))
    with pytest.raises(InferenceServerException, match="request_id"):
        call(LORA_REQUESTS_MODEL, report(lora_name=["tokyo"], state=["waiting"]))
    answer = call(LORA_REQUESTS_MODEL, report(request_id=["r2", "r2"], lora_name=["side"] * 2, state=["waiting"] * 2))
    assert answer.as_numpy("recorded").tolist() == [2]
    wait_for(triton, running="", waiting="side", engine_agrees=False)  # no engine request behind it
    call(LORA_REQUESTS_MODEL, report(request_id=["r2"], lora_name=["side"], state=["ended"]))
    wait_for(triton, running="", waiting="", engine_agrees=False)
    client.close()
