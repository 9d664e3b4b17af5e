"""A rendered GPU `tensorrt_llm` model judged against the tensorrtllm backend's own rules (upstream data).

`tests/data/upstream/tensorrtllm_backend_parameters.json`: the parameters the backend reads without a default
(the model does not load without them), those it reads with one, and the values it accepts.
`tests/data/upstream/tensorrtllm_backend_tensors.json`: the input and output tensors it accepts, typed.
"""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.gpu_host.upstream import upstream_data

# Inputs the upstream template marks optional that a decoder-only request cannot do without
# (the backend refuses a request with neither input_ids nor encoder_input_features).
REQUIRED_FOR_DECODER_ONLY = ("input_ids",)


def _type_name(data_type: int) -> str:
    return model_config_pb2.DataType.Name(data_type)


def parameter_problems(config: model_config_pb2.ModelConfig) -> list[str]:
    rules = upstream_data("tensorrtllm_backend_parameters.json")
    params = {key: value.string_value for key, value in config.parameters.items()}
    required = {entry["key"] for entry in rules["required"]}
    known = required | {entry["key"] for entry in rules["optional"]}
    problems = [
        f"parameter {key} is missing: the backend does not load without it" for key in sorted(required - set(params))
    ]
    problems += [
        f"parameter {key} is not one the backend reads (a typo is ignored silently)"
        for key in sorted(set(params) - known)
    ]
    accepted = rules["accepted_values"]
    for key in ("gpt_model_type", "batch_scheduler_policy", "decoding_mode"):
        if key in params and params[key] not in accepted[key]:
            problems.append(f"parameter {key} is {params[key]!r}; the backend accepts {accepted[key]}")
    if params.get("guided_decoding_backend") not in ("", *accepted["guided_decoding_backend"]):
        problems.append(f"guided_decoding_backend is {params['guided_decoding_backend']!r}")
    for key, value in params.items():
        if value in ("true", "false", "True", "False") and value not in accepted["bool_values"]:
            problems.append(f"parameter {key} is {value!r}, not a boolean the backend reads")
        if "${" in value:
            problems.append(f"parameter {key} holds an unfilled placeholder {value!r}")
    engine = Path(params.get("gpt_model_path", ""))
    if not (engine / "config.json").is_file():
        problems.append(f"gpt_model_path {str(engine)!r} is not an engine directory (no config.json)")
    if params.get("guided_decoding_backend") and params.get("xgrammar_tokenizer_info_path"):
        problems += tokenizer_info_problems(Path(params["xgrammar_tokenizer_info_path"]))
    return problems


def tokenizer_info_problems(path: Path) -> list[str]:
    """What the backend would fail on in the xgrammar tokenizer info file (upstream xgrammar_tokenizer_info.json)."""
    if not path.is_file():
        return [f"xgrammar_tokenizer_info_path {str(path)!r} does not exist (the backend's TLLM_CHECK fails)"]
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        return [f"{path} is not UTF-8 JSON, which the backend's parser needs: {error}"]
    checks = {
        "array of strings": lambda value: isinstance(value, list) and all(isinstance(v, str) for v in value),
        "string": lambda value: isinstance(value, str),
        "array of integers": lambda value: isinstance(value, list) and all(type(v) is int for v in value),
    }
    problems = []
    for key, spec in upstream_data("xgrammar_tokenizer_info.json")["file"]["keys"].items():
        if key not in info or not checks[spec["json_type"]](info[key]):
            problems.append(f"{path}: {key} must be an {spec['json_type']} (the backend reads it as {spec['read_as']})")
    if not problems:
        try:
            json.loads(info["tokenizer_str"])
        except ValueError:
            problems.append(f"{path}: tokenizer_str is not a JSON document (xgrammar's check fails)")
    return problems


def tensor_problems(config: model_config_pb2.ModelConfig) -> list[str]:
    upstream = upstream_data("tensorrtllm_backend_tensors.json")
    problems = []
    for kind, declared, accepted in (
        ("input", config.input, upstream["inputs"]),
        ("output", config.output, upstream["outputs"]),
    ):
        for tensor in declared:
            spec = accepted.get(tensor.name)
            if spec is None:
                problems.append(f"{kind} {tensor.name} is not a tensor the backend knows")
                continue
            # The logits are the engine's logits dtype, float32 or float16 (filled in when the template is).
            accepted_types = ("TYPE_FP32", "TYPE_FP16") if spec["data_type"] == "${logits_datatype}" else ()
            if _type_name(tensor.data_type) != spec["data_type"] and _type_name(tensor.data_type) not in accepted_types:
                problems.append(
                    f"{kind} {tensor.name} is {_type_name(tensor.data_type)}; the backend reads {spec['data_type']}"
                )
            if list(tensor.dims) != spec["dims"]:
                problems.append(f"{kind} {tensor.name} has dims {list(tensor.dims)}; upstream declares {spec['dims']}")
    names = {tensor.name for tensor in config.input}
    needed = {name for name, spec in upstream["inputs"].items() if not spec["optional"]} | set(
        REQUIRED_FOR_DECODER_ONLY
    )
    problems += [f"input {name} is not declared: requests need it" for name in sorted(needed - names)]
    outputs = {tensor.name for tensor in config.output}
    problems += [f"output {name} is not declared" for name in ("output_ids", "sequence_length") if name not in outputs]
    return problems


def gpu_repository_problems(repository: Path) -> list[str]:
    """Everything about `repository/tensorrt_llm` that the 1.2.1 tensorrtllm backend would refuse or ignore."""
    config = text_format.Parse(
        (repository / "tensorrt_llm" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    problems = [] if config.backend == "tensorrtllm" else [f"backend is {config.backend!r}, not 'tensorrtllm'"]
    if not config.model_transaction_policy.decoupled:
        problems.append("not decoupled: the backend refuses streaming requests")
    return problems + parameter_problems(config) + tensor_problems(config)
