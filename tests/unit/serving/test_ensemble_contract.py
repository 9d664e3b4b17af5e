"""The `ensemble` model against the stock tensorrtllm_backend ensemble (tests/data/upstream/
tensorrtllm_ensemble_tensors.json): every stock input is declared with the stock type, or left out because it
serves a feature this deployment does not have (Triton then refuses it naming it: "unexpected inference input");
the stock outputs it returns have the stock types."""

from __future__ import annotations

import json
import re
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

ROOT = Path(__file__).parents[3]
UPSTREAM = json.loads((ROOT / "tests/data/upstream/tensorrtllm_ensemble_tensors.json").read_text())
NOT_DECLARED = {
    "decoder_text_input": "encoder-decoder models only",
    "prompt_embedding_table": "prompt tuning (p-tuning tables)",
    "prompt_table_extra_id": "prompt tuning",
    "prompt_vocab_size": "prompt tuning",
    "guided_decoding_guide_type": "guided decoding (the chat model's response_format and nvext guides)",
    "guided_decoding_guide": "guided decoding",
}
PERF_METRICS = {
    name
    for name in UPSTREAM["outputs"]
    if name.endswith(("_ns", "_blocks", "draft_tokens")) or name == "acceptance_rate"
}
NOT_RETURNED = {"context_logits", "generation_logits"} | PERF_METRICS  # their return_* inputs are refused


def ensemble_config() -> model_config_pb2.ModelConfig:
    text = (ROOT / "model_repository/ensemble/config.pbtxt").read_text()
    text = re.sub(r"\$\{\w+\}", "1", text)
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_every_stock_input_is_declared_with_its_type_or_belongs_to_a_feature_not_served() -> None:
    declared = {tensor.name: tensor for tensor in ensemble_config().input}
    for name, spec in UPSTREAM["inputs"].items():
        if name in NOT_DECLARED:
            assert name not in declared
            continue
        assert name in declared, f"stock input {name} is not declared"
        assert model_config_pb2.DataType.Name(declared[name].data_type) == spec["data_type"], name
        assert list(declared[name].dims) == spec["dims"], name
    additions = {"input_ids", "logprobs", "lora_name"}  # this ensemble's own inputs
    assert set(declared) - set(UPSTREAM["inputs"]) == additions


def test_the_stock_outputs_it_returns_have_the_stock_types() -> None:
    declared = {tensor.name: tensor for tensor in ensemble_config().output}
    for name, spec in UPSTREAM["outputs"].items():
        if name in NOT_RETURNED:
            continue
        assert name in declared, f"stock output {name} is not declared"
        assert model_config_pb2.DataType.Name(declared[name].data_type) == spec["data_type"], name
    assert set(declared) - set(UPSTREAM["outputs"]) == {"finish_reason", "logprobs"}
