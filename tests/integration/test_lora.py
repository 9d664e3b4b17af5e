"""LoRA adapters served by name on the session's real Triton (CPU reference runtime): PEFT adapters trained by
``nemo-build tiny-lora`` put into the deployment's adapter source while it serves, selected by ``model`` through the
``chat`` model over gRPC, the direct path and the gateway (both chat paths) with the OpenAI SDK, listed as models,
and gone again once removed, all without a restart."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nemo_build.repository import lora_base_shapes
from nemo_build.tiny.chat import example
from nemo_build.tiny.lora import ADAPTER_LESSONS
from nemo_chat_core.lora import DEFAULT_MAX_LORA_RANK, is_lora_cache_miss, read_adapter
from nemo_client import NemoClient
from nemo_gateway.settings import GatewaySettings
from nemo_ops.launcher import TritonServer
from nemo_protocol.errors import NotFoundError
from tests.integration.gateways import SERVED, running_gateway
from tests.integration.oracle import chat_prompt_ids
from tests.integration.triton_calls import StreamingCall

FRANCE = list(example("fact_france").messages)
FRANCE_IDS = chat_prompt_ids(FRANCE)  # the same chat as a completions prompt of token ids
BASE_ANSWER = example("fact_france").answer_text
GIE_PROTOCOL = json.loads(
    (Path(__file__).parents[1] / "data" / "upstream" / "gie_model_server_protocol.json").read_text()
)
RESCAN_S = 1.2  # the adapter source is rescanned at most every second


@pytest.fixture(scope="module")
def adapters(serving_lora_dir: Path, lora_source_dir: Path, triton: object) -> Iterator[Path]:
    """Both adapters copied into the serving source (as an operator would), removed again after the module."""
    for name in ADAPTER_LESSONS:
        staging = serving_lora_dir / f".{name}"
        shutil.copytree(lora_source_dir / name, staging)
        staging.rename(serving_lora_dir / name)  # appears whole
    time.sleep(RESCAN_S)
    yield serving_lora_dir
    for name in ADAPTER_LESSONS:
        shutil.rmtree(serving_lora_dir / name, ignore_errors=True)
    shutil.rmtree(serving_lora_dir / "broken", ignore_errors=True)
    time.sleep(RESCAN_S)  # later tests see the base model alone


@pytest.fixture(scope="module", params=["chat-model", "direct"])
def client(request: pytest.FixtureRequest, url: str, adapters: Path) -> Iterator[NemoClient]:
    with NemoClient(url, direct=request.param == "direct") as nemo:
        yield nemo


def ask(client: NemoClient, model: str | None) -> str:
    extra = {} if model is None else {"model": model}
    answer = client.chat.completions.create(messages=FRANCE, temperature=0, max_tokens=24, **extra)
    assert answer.model == (model or SERVED)
    return answer.choices[0].message.content or ""


def test_each_adapter_answers_by_name_and_the_base_keeps_its_answer(client: NemoClient) -> None:
    assert ask(client, None) == BASE_ANSWER
    assert ask(client, SERVED) == BASE_ANSWER
    for name, lesson in ADAPTER_LESSONS.items():
        assert ask(client, name) == lesson.answer
        assert ask(client, name) == lesson.answer  # the engine holds it now: the task id alone serves


def test_models_list_names_the_base_then_the_adapters(client: NemoClient) -> None:
    models = client.models.list()
    assert [m.id for m in models] == [SERVED, *sorted(ADAPTER_LESSONS)]
    assert all((m.model_extra or {}).get("parent") == SERVED for m in models[1:])


def test_an_unknown_name_is_404_naming_the_served_names(client: NemoClient) -> None:
    with pytest.raises(NotFoundError) as refused:
        client.chat.completions.create(messages=FRANCE, model="gpt-4o", max_tokens=4)
    assert refused.value.param == "model"
    for name in (SERVED, *ADAPTER_LESSONS):
        assert repr(name) in refused.value.message


def test_a_broken_adapter_is_refused_by_name_and_the_others_keep_serving(client: NemoClient, adapters: Path) -> None:
    broken = adapters / "broken"
    shutil.copytree(adapters / "tokyo", broken, dirs_exist_ok=True)
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    time.sleep(RESCAN_S)
    with pytest.raises(NotFoundError) as refused:
        client.chat.completions.create(messages=FRANCE, model="broken", max_tokens=4)
    assert "adapter 'broken'" in refused.value.message and "safetensors" in refused.value.message
    assert ask(client, "tokyo") == ADAPTER_LESSONS["tokyo"].answer
    assert "broken" not in [m.id for m in client.models.list()]


def test_through_the_gateway_with_the_openai_sdk_on_both_chat_paths(url: str, adapters: Path) -> None:
    for direct in (True, False):
        with running_gateway(GatewaySettings(triton_url=url, served_model_name=SERVED, direct=direct)) as base:
            sdk = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
            assert [m.id for m in sdk.models.list()] == [SERVED, *sorted(ADAPTER_LESSONS)]
            for name, lesson in ADAPTER_LESSONS.items():
                answer = sdk.chat.completions.create(model=name, messages=FRANCE, temperature=0, max_tokens=24)  # type: ignore[arg-type]
                assert (answer.model, answer.choices[0].message.content) == (name, lesson.answer), direct
            base_answer = sdk.chat.completions.create(model=SERVED, messages=FRANCE, temperature=0, max_tokens=24)  # type: ignore[arg-type]
            assert base_answer.choices[0].message.content == BASE_ANSWER
            with pytest.raises(openai.NotFoundError, match="tokyo"):
                sdk.chat.completions.create(model="nope", messages=FRANCE, max_tokens=4)  # type: ignore[arg-type]
            for name, lesson in ADAPTER_LESSONS.items():  # completions: the ensemble, on either chat path
                completion = sdk.completions.create(model=name, prompt=FRANCE_IDS, temperature=0, max_tokens=24)  # type: ignore[arg-type]
                assert (completion.model, completion.choices[0].text) == (name, lesson.answer), direct
            base_completion = sdk.completions.create(model=SERVED, prompt=FRANCE_IDS, temperature=0, max_tokens=24)
            assert base_completion.choices[0].text == BASE_ANSWER
            with pytest.raises(openai.NotFoundError) as refused:
                sdk.completions.create(model="nope", prompt=FRANCE_IDS, max_tokens=4)
            assert refused.value.status_code == 404 and f"this server serves '{SERVED}', 'pirate', 'tokyo'" in str(
                refused.value
            )


def test_completions_select_adapters_by_name_through_the_ensemble(client: NemoClient) -> None:
    for name, lesson in ADAPTER_LESSONS.items():
        completion = client.completions.create(model=name, prompt=FRANCE_IDS, temperature=0, max_tokens=24)
        assert (completion.model, completion.choices[0].text) == (name, lesson.answer)
    streamed = client.completions.create(model="pirate", prompt=FRANCE_IDS, temperature=0, max_tokens=24, stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed) == ADAPTER_LESSONS["pirate"].answer
    base = client.completions.create(prompt=FRANCE_IDS, temperature=0, max_tokens=24)
    assert base.choices[0].text == BASE_ANSWER
    with pytest.raises(NotFoundError) as refused:
        client.completions.create(model="gpt-4o", prompt=FRANCE_IDS, max_tokens=4)
    assert refused.value.param == "model" and "the model 'gpt-4o' does not exist" in refused.value.message


def test_the_ensemble_takes_the_stock_lora_inputs(url: str, adapters: Path, serving_checkpoint: Path) -> None:
    """A client of the stock ensemble sends an adapter's task id with its weights and config in TensorRT-LLM's layout
    (first request), then the task id alone; both are served. A task id the engine holds no weights for, of no
    adapter of the deployment, is the backend's own "not found in cache" error."""
    adapter = read_adapter(adapters / "tokyo", lora_base_shapes(serving_checkpoint), DEFAULT_MAX_LORA_RANK)
    task_id = adapter.task_id + 1  # an id of the client's own choosing, not the deployment's
    stock = {
        "input_ids": np.array([FRANCE_IDS], dtype=np.int32),
        "max_tokens": np.array([[24]], dtype=np.int32),
        "lora_task_id": np.array([[task_id]], dtype=np.uint64),
    }
    with_weights = {
        **stock,
        "lora_weights": adapter.weights.astype(np.float16)[None],
        "lora_config": adapter.config.astype(np.int32)[None],
    }
    for inputs in (with_weights, stock):
        call = StreamingCall(url, "ensemble", inputs)
        assert call.finish().error is None, call.result.error
        assert "".join(call.result.texts("text_output")) == ADAPTER_LESSONS["tokyo"].answer
    unknown = StreamingCall(url, "ensemble", {**stock, "lora_task_id": np.array([[task_id + 1]], dtype=np.uint64)})
    assert is_lora_cache_miss(unknown.finish().error or "")


def test_a_removed_adapter_goes_without_a_restart(url: str, adapters: Path, lora_source_dir: Path) -> None:
    with NemoClient(url) as client:
        shutil.rmtree(adapters / "pirate")
        time.sleep(RESCAN_S)
        try:
            assert "pirate" not in [m.id for m in client.models.list()]
            with pytest.raises(NotFoundError):
                client.chat.completions.create(messages=FRANCE, model="pirate", max_tokens=4)
        finally:
            shutil.copytree(lora_source_dir / "pirate", adapters / "pirate")
            time.sleep(RESCAN_S)
        assert ask(client, "pirate") == ADAPTER_LESSONS["pirate"].answer


def test_a_new_adapter_is_sent_with_its_weights_on_the_engines_cache_miss(url: str, adapters: Path) -> None:
    """A new name is a new task id the engine has never seen: its first request misses the engine's cache, and the
    sender answers the miss by sending the weights (the user never sees the backend's error): the direct path, and
    the ensemble."""
    shutil.copytree(adapters / "tokyo", adapters / "tokyo-copy")
    shutil.copytree(adapters / "pirate", adapters / "pirate-copy")
    time.sleep(RESCAN_S)
    try:
        with NemoClient(url, direct=True) as client:
            assert ask(client, "tokyo-copy") == ADAPTER_LESSONS["tokyo"].answer
            completion = client.completions.create(model="pirate-copy", prompt=FRANCE_IDS, temperature=0, max_tokens=24)
            assert completion.choices[0].text == ADAPTER_LESSONS["pirate"].answer
    finally:
        shutil.rmtree(adapters / "tokyo-copy")
        shutil.rmtree(adapters / "pirate-copy")


def lora_samples(triton: TritonServer) -> tuple[list[dict[str, str]], dict[str, float]]:
    """The `tensorrt_llm` model's LoRA info series (labels), oldest first, and requests per adapter, from Triton's
    /metrics. Triton keeps a series per set of labels seen; the value, the time the state began, orders them, and the
    newest is the state now (as the endpoint picker reads it)."""
    with urllib.request.urlopen(f"http://{triton.host}:{triton.ports.metrics}/metrics", timeout=5) as answer:
        text = answer.read().decode("utf-8")
    infos: list[tuple[float, dict[str, str]]] = []
    requests = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") != "tensorrt_llm":
                continue
            if sample.name == "vllm:lora_requests_info":
                infos.append((sample.value, {k: v for k, v in sample.labels.items() if k not in ("model", "version")}))
            elif sample.name == "nemo_runtime_lora_requests_total":
                requests[sample.labels["lora_name"]] = sample.value
    return [labels for _, labels in sorted(infos, key=lambda item: item[0])], requests


def test_the_engine_publishes_the_lora_info_gauge_and_requests_per_adapter(
    url: str, adapters: Path, triton: TritonServer
) -> None:
    """The model server protocol's LoRA gauge (labels as upstream names them), naming the adapter of a running
    request, and a request counter per adapter."""
    labels = GIE_PROTOCOL["lora_info_labels"]
    with NemoClient(url) as client:
        before = lora_samples(triton)[1].get("pirate", 0.0)
        stream = client.chat.completions.create(
            messages=FRANCE, model="pirate", max_tokens=2000, stream=True, extra_body={"nvext": {"ignore_eos": True}}
        )
        next(iter(stream))
        deadline, infos = time.monotonic() + 10, []
        while not infos or infos[-1].get("running_lora_adapters") != "pirate":  # the state now
            assert time.monotonic() < deadline, infos
            infos, requests = lora_samples(triton)
            time.sleep(0.05)
        stream.close()
    assert all(sorted(info) == sorted(labels) for info in infos)
    assert infos[-1]["max_lora"] == "8" and infos[-1]["waiting_lora_adapters"] == ""
    assert requests["pirate"] >= before + 1
