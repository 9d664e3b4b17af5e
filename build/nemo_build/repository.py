"""`nemo-build repository`: render the Triton model repository templates of `model_repository/`.

A template directory holds one directory per model. A model whose directory has one subdirectory per
target (`tensorrt_llm`: `gpu/`, `pytorch/`, `cpu/`, `stand-in/`) takes the one of the target; `${tensors}` in its config
is filled with the model's shared `tensors.pbtxt`, so every variant exposes the same tensor contract. Every
`config.pbtxt` is filled from :class:`RepositorySettings`; other files are copied as they are.

Targets: `gpu` serves TensorRT-LLM engines (tensorrtllm backend); `pytorch` serves a Hugging Face checkpoint
(ModelOpt's unified FP8 export for FP8) with TensorRT-LLM's LLM API on its PyTorch backend, in a python model
(nemo_runtime.llm_api; the LLM arguments come from the settings: KV-cache fraction and dtype, max_num_tokens,
chunked prefill, KV block reuse, tokens per block, CUDA-graph batch sizes, TP size, and a Hugging Face tokenizer
directory for guided decoding, rendered into the repository from the Tekken file unless one is given); `cpu` runs a
TensorRT-LLM checkpoint in the reference runtime (python backend); `stand-in` serves no model at all: a python
`tensorrt_llm` with the CPU variant's tensors and batching that streams text tokens at `stand_in_tokens_per_s` per
request (nemo_runtime.stand_in), for measuring the frontend models at GPU token rates on a CPU host. `cpu` and
`stand-in` are served by the pytriton launcher of `nemo-serve`.

The frontend models (`chat`, `ensemble`, `preprocessing`, `postprocessing`; all python models, so each
instance is a stub process of its own) run `frontend_instances` instances each; `preprocessing_instances`
and `postprocessing_instances` override it for those two. `gpu` with LoRA adapters adds `lora_requests` (one
instance), to which `chat` reports its adapter requests: the C++ backend publishes no LoRA metric, so that model
publishes them (nemo_serving.lora_requests; `lora_metrics_from_frontends`).

Nothing is written unless every placeholder is filled and every rendered config parses into Triton's
`ModelConfig` protobuf under the name of its directory.

Beside the model directories the repository holds `manifest.json` (Triton loads model directories only and
ignores files at the root): what `nemo-serve` and `make gpu-check` read instead of the rendered configs —

    {"kind": "nemo-build repository", "format": 1, "nemo_build": "0.1.0",
     "target": "gpu" | "pytorch" | "cpu" | "stand-in", "model_dir": "/abs/engine-or-checkpoint-or-tekken.json",
     "served_model_name": "...",
     "models": ["chat", ...], "tokenizer_file": "preprocessing/tekken.json", "settings": {every setting},
     "runtime_environment": {"gpu": "NVIDIA H100 80GB HBM3" | null, "tensorrt_llm": "1.2.1" | null}}  # pytorch only

`runtime_environment` (pytorch repositories) is the GPU and TensorRT-LLM version of the host that rendered it (null
where none is there, e.g. a CPU host): the profile's LLM arguments (KV-cache fraction, CUDA-graph sizes) are sized
for that GPU and the checkpoint was made for that TensorRT-LLM, so `nemo-serve` compares them with the serving host.

A repository without it (rendered before manifests, or by hand) is refused with the command that re-renders it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import string
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from nemo_build import __version__
from nemo_build.atomic_dir import atomic_directory
from nemo_build.errors import BuildError
from nemo_build.manifest import read_manifest, sha256_file
from nemo_build.profiles import DEFAULT_PROFILE, Profile, load_profile
from nemo_build.xgrammar_info import write_tokenizer_info
from nemo_chat_core.lora import DEFAULT_MAX_LORA_RANK, MODULE_IDS, BaseShapes
from nemo_protocol.served_model import DEFAULT_SERVED_MODEL_NAME

TARGETS = ("gpu", "cpu", "stand-in", "pytorch")
STAND_IN = "stand-in"
PYTORCH = "pytorch"
KV_CACHE_DTYPES = ("auto", "fp8")  # pytorch: auto = the checkpoint's KV-cache precision (hf_quant_config.json)
HF_TOKENIZER_DIR = "tensorrt_llm/hf_tokenizer"  # pytorch: relative to the rendered repository
STAND_IN_DEFAULT_TOKENS_PER_S = 200.0  # per stream: a GPU's decode rate at a moderate batch
GPU_DEFAULT_FRONTEND_INSTANCES = 4  # when the engine's build profile says nothing (serving.frontend_instances)
# Package data: `templates` is the top-level model_repository/ (a link in the source tree, files in a wheel).
TEMPLATES_DIR = Path(str(resources.files("nemo_build") / "templates"))
SHARED_TENSORS_FILE = "tensors.pbtxt"
XGRAMMAR_INFO_FILE = "xgrammar_tokenizer_info.json"
TOKENIZER_FILE = "preprocessing/tekken.json"  # relative to the rendered repository
SCHEDULER_POLICIES = ("max_utilization", "guaranteed_no_evict")
LORA_REQUESTS_MODEL = "lora_requests"  # the engine runtime's LoRA metrics, reported by the frontends
MANIFEST_FILE = "manifest.json"  # at the repository root, beside the model directories
MANIFEST_KIND = "nemo-build repository"
MANIFEST_FORMAT = 1  # bump when a reader of the old format would misread the new one
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


@dataclass(frozen=True)
class RepositorySettings:
    """Every value the templates take. Booleans render as `true` / `false`."""

    target: str
    # the engine directory (gpu), the Hugging Face checkpoint (pytorch), the TensorRT-LLM checkpoint directory (cpu),
    # the Tekken file (stand-in)
    model_dir: Path
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    frontend_instances: int = 1  # instances of chat, ensemble, preprocessing and postprocessing
    preprocessing_instances: int | None = None  # None: frontend_instances
    postprocessing_instances: int | None = None  # None: frontend_instances
    kv_cache_free_gpu_mem_fraction: float = 0.9
    batch_scheduler_policy: str = "max_utilization"
    enable_chunked_context: bool = True
    enable_kv_cache_reuse: bool = True
    exclude_input_in_output: bool = True
    cancellation_check_period_ms: int = 100
    max_queue_delay_microseconds: int = 0
    served_model_name: str = DEFAULT_SERVED_MODEL_NAME
    stand_in_tokens_per_s: float = STAND_IN_DEFAULT_TOKENS_PER_S  # stand-in: tokens per second per request
    stand_in_end_after_tokens: int = 0  # stand-in: end (end_id) after this many tokens; 0: never
    # The engine returns the logits of prompt positions / generated tokens (trtllm-build gather_*_logits; the CPU
    # runtime always can): the ensemble refuses echo + logprobs / logprobs above 0 by name without them.
    context_logits: bool = True
    generation_logits: bool = True
    # pytorch: the LLM API's arguments beyond the ones above (tensorrt_llm.LLM / TorchLlmArgs, see nemo_runtime.llm_api)
    max_num_tokens: int = 8192  # tokens per forward pass (prefill chunks + decodes); pytorch and cpu
    max_tokens_in_paged_kv_cache: int = 0  # cpu: KV positions of the running requests (0: from memory)
    kv_cache_dtype: str = "auto"
    tokens_per_block: int = 32  # KV-cache block size (KvCacheConfig.tokens_per_block; upstream's default)
    cuda_graph_batch_sizes: tuple[int, ...] = ()  # empty: graphs for every batch size up to max_batch_size
    tensor_parallel_size: int = 1
    tokenizer_dir: Path | None = None  # a Hugging Face tokenizer directory; None: written from the Tekken file
    # LoRA: a directory of PEFT adapters served by name (one per subdirectory, rescanned while serving); None: none
    lora_dir: Path | None = None
    max_lora_rank: int = DEFAULT_MAX_LORA_RANK
    # gpu: the tensorrtllm backend's LoRA cache (its defaults; a profile's `lora` section sets them)
    lora_cache_optimal_adapter_size: int = 8
    lora_cache_max_adapter_size: int = 64
    lora_cache_gpu_memory_fraction: float = 0.05
    lora_cache_host_memory_bytes: int = 2**30
    # pytorch: the LLM API's LoraConfig (a profile's `lora` section sets them)
    lora_target_modules: tuple[str, ...] = tuple(MODULE_IDS)
    max_loras: int = 8  # pytorch: LoraConfig.max_loras; every target: the LoRA gauge's max_lora (adapters on the GPU)
    max_cpu_loras: int = 32
    # The `lora_requests` model, to which the chat model reports its adapter requests for the LoRA metrics (the C++
    # backend publishes none). None: on for gpu with adapters. cpu may turn it on, beside the metrics its runtime
    # publishes itself, to check the reports on a CPU host; pytorch publishes its own.
    lora_metrics_from_frontends: bool | None = None

    def __post_init__(self) -> None:
        for name in ("preprocessing_instances", "postprocessing_instances"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.frontend_instances)
        if self.lora_metrics_from_frontends is None:
            object.__setattr__(self, "lora_metrics_from_frontends", self.target == "gpu" and self.lora_dir is not None)
        problems = []
        if self.target not in TARGETS:
            problems.append(f"target {self.target!r} (accepted: {', '.join(TARGETS)})")
        for name in ("max_batch_size", "max_input_len", "max_seq_len"):
            if getattr(self, name) < 1:
                problems.append(f"{name} {getattr(self, name)} (must be >= 1)")
        # trtllm-build keeps max_input_len as given, equal to max_seq_len included (the profiles' choice: any
        # prompt length up to the sequence limit); a prompt of max_seq_len tokens is refused per request.
        if self.max_input_len > self.max_seq_len:
            problems.append(f"max_input_len {self.max_input_len} may not exceed max_seq_len {self.max_seq_len}")
        for name in ("frontend_instances", "preprocessing_instances", "postprocessing_instances"):
            if getattr(self, name) < 1:
                problems.append(f"{name} {getattr(self, name)} (must be >= 1)")
        if not 0 < self.stand_in_tokens_per_s < float("inf"):
            problems.append(f"stand_in_tokens_per_s {self.stand_in_tokens_per_s} (a positive number)")
        if self.stand_in_end_after_tokens < 0:
            problems.append(f"stand_in_end_after_tokens {self.stand_in_end_after_tokens} (>= 0; 0: never)")
        if not 0.0 < self.kv_cache_free_gpu_mem_fraction <= 1.0:
            problems.append(f"kv_cache_free_gpu_mem_fraction {self.kv_cache_free_gpu_mem_fraction} (in (0, 1])")
        if self.batch_scheduler_policy not in SCHEDULER_POLICIES:
            problems.append(
                f"batch_scheduler_policy {self.batch_scheduler_policy!r} (accepted: {', '.join(SCHEDULER_POLICIES)})"
            )
        if self.cancellation_check_period_ms < 1 or self.max_queue_delay_microseconds < 0:
            problems.append("cancellation_check_period_ms must be >= 1 and max_queue_delay_microseconds >= 0")
        if self.lora_dir is not None and self.target == STAND_IN:
            problems.append("lora_dir: the stand-in has no model to adapt (serve LoRA with gpu, pytorch or cpu)")
        if self.lora_metrics_from_frontends and (self.lora_dir is None or self.target not in ("gpu", "cpu")):
            problems.append(
                "lora_metrics_from_frontends: only with lora_dir, on gpu (the default there) or cpu (to check the "
                "frontends' reports; pytorch and cpu publish the LoRA metrics from their runtime)"
            )
        if '"' in self.served_model_name or not self.served_model_name:
            problems.append(f"served_model_name {self.served_model_name!r} (non-empty, no quotes)")
        for name in ("max_num_tokens", "tokens_per_block", "tensor_parallel_size", "max_lora_rank"):
            if getattr(self, name) < 1:
                problems.append(f"{name} {getattr(self, name)} (must be >= 1)")
        # Every request the length limits let through must fit the KV cache on its own (else it could never run):
        # the budget bounds how many run at once, and the others wait.
        if self.max_tokens_in_paged_kv_cache and self.max_tokens_in_paged_kv_cache < self.max_seq_len:
            problems.append(
                f"max_tokens_in_paged_kv_cache {self.max_tokens_in_paged_kv_cache} (0, or at least max_seq_len "
                f"{self.max_seq_len}: a request of max_seq_len positions must fit)"
            )
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            problems.append(f"kv_cache_dtype {self.kv_cache_dtype!r} (accepted: {', '.join(KV_CACHE_DTYPES)})")
        object.__setattr__(self, "cuda_graph_batch_sizes", tuple(sorted(set(self.cuda_graph_batch_sizes))))
        if any(size < 1 or size > self.max_batch_size for size in self.cuda_graph_batch_sizes):
            problems.append(f"cuda_graph_batch_sizes {list(self.cuda_graph_batch_sizes)} (each in [1, max_batch_size])")
        if problems:
            raise BuildError("invalid repository settings: " + "; ".join(problems))

    def values(self) -> dict[str, str]:
        """Placeholder name → rendered text."""
        out: dict[str, str] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool):
                out[field.name] = "true" if value else "false"
            elif isinstance(value, tuple):
                out[field.name] = ",".join(str(item) for item in value)
            else:
                out[field.name] = str(value)
        model_dir = str(self.model_dir.resolve())
        if self.target != STAND_IN:
            out["engine_dir" if self.target == "gpu" else "checkpoint_dir"] = model_dir
        del out["model_dir"]
        out["tokenizer_file"] = TOKENIZER_FILE
        out["tokenizer_dir"] = HF_TOKENIZER_DIR if self.tokenizer_dir is None else str(self.tokenizer_dir.resolve())
        out["lora_dir"] = "" if self.lora_dir is None else str(self.lora_dir.resolve())
        # what adapters must fit (read only when adapters are served: a stand-in has no model to adapt)
        out["lora_base"] = "" if self.lora_dir is None else lora_base_shapes(self.model_dir).to_text()
        out["lora_requests_model"] = LORA_REQUESTS_MODEL if self.lora_metrics_from_frontends else ""
        return out

    def renders(self, model: str) -> bool:
        """Whether the repository holds the template directory ``model`` (`lora_requests`: only where it is used)."""
        return model != LORA_REQUESTS_MODEL or bool(self.lora_metrics_from_frontends)


def lora_base_shapes(model_dir: Path) -> BaseShapes:
    """The sizes LoRA adapters must fit, from the ``config.json`` of a Hugging Face or TensorRT-LLM checkpoint or an
    engine (its ``pretrained_config``)."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
        return BaseShapes.from_config(config.get("pretrained_config") or config)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BuildError(f"cannot read the model's sizes for LoRA adapters from {path}: {exc!r}") from None


# ----------------------------------------------------------------------------- limits of the model


def engine_limits(engine_dir: Path) -> dict[str, int]:
    """Batch size and lengths an engine was built with (`build_config` of its `config.json`)."""
    config_path = engine_dir / "config.json"
    if not config_path.is_file():
        raise BuildError(f"{engine_dir} is not a TensorRT-LLM engine directory: config.json is missing")
    build_config = json.loads(config_path.read_text()).get("build_config")
    if not isinstance(build_config, dict):
        raise BuildError(f"{config_path} has no build_config: was it written by trtllm-build?")
    try:
        return {key: int(build_config[key]) for key in ("max_batch_size", "max_input_len", "max_seq_len")}
    except (KeyError, TypeError, ValueError) as exc:
        raise BuildError(f"{config_path} build_config lacks a usable {exc}") from exc


def engine_logit_gathering(engine_dir: Path) -> dict[str, bool]:
    """Whether an engine returns context and generation logits (`build_config.gather_*_logits`)."""
    build_config = json.loads((engine_dir / "config.json").read_text()).get("build_config") or {}
    return {
        "context_logits": bool(build_config.get("gather_context_logits", False)),
        "generation_logits": bool(build_config.get("gather_generation_logits", False)),
    }


def hf_checkpoint_max_positions(checkpoint_dir: Path) -> int:
    """`max_position_embeddings` of a Hugging Face checkpoint (what TensorRT-LLM's PyTorch backend loads)."""
    return _max_positions(
        checkpoint_dir,
        "Hugging Face checkpoint",
        "architectures",
        "--target pytorch serves a Hugging Face checkpoint (ModelOpt's unified FP8 export for FP8), not the output "
        "of `nemo-build checkpoint` for the engine flow",
    )


def checkpoint_max_positions(checkpoint_dir: Path) -> int:
    """`max_position_embeddings` of a TensorRT-LLM checkpoint (the CPU runtime's length limit)."""
    return _max_positions(
        checkpoint_dir, "TensorRT-LLM checkpoint", "architecture", "pass the output of `nemo-build checkpoint`"
    )


def _max_positions(checkpoint_dir: Path, kind: str, architecture_key: str, advice: str) -> int:
    """`max_position_embeddings` of the checkpoint's config.json, which must name ``architecture_key`` too."""
    config_path = checkpoint_dir / "config.json"
    if not config_path.is_file():
        raise BuildError(f"{checkpoint_dir} is not a {kind}: config.json is missing")
    config = json.loads(config_path.read_text())
    if architecture_key not in config or "max_position_embeddings" not in config:
        raise BuildError(
            f"{config_path} is not a {kind} config (needs '{architecture_key}' and 'max_position_embeddings'); {advice}"
        )
    return int(config["max_position_embeddings"])


# ------------------------------------------------------------------------------------------ render


def render_text(template: str, values: dict[str, str], source: str) -> str:
    """Fill `${name}` placeholders; refuse when any is left unfilled."""
    missing = sorted({name for name in _PLACEHOLDER.findall(template) if name not in values})
    if missing:
        raise BuildError(f"{source}: no value for placeholder(s) {', '.join(missing)}")
    rendered = string.Template(template).safe_substitute(values)
    left = sorted(set(_PLACEHOLDER.findall(rendered)))
    if left:
        raise BuildError(f"{source}: placeholder(s) {', '.join(left)} remain after rendering")
    return rendered


def validate_config(text: str, expected_name: str, source: str) -> Any:
    """Parse a rendered config into Triton's `ModelConfig`; return the message."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise BuildError(f"{source} is not a valid Triton model config: {exc}") from exc
    if config.name != expected_name:
        raise BuildError(f"{source} names the model {config.name!r}; its directory is {expected_name!r}")
    return config


def _model_source(model_dir: Path, target: str) -> Path:
    variant = model_dir / target
    if any((model_dir / name).is_dir() for name in TARGETS):
        if not variant.is_dir():
            raise BuildError(f"{model_dir} has target variants but none for {target!r}")
        return variant
    return model_dir


def render_repository(
    templates: Path, settings: RepositorySettings, tokenizer: Path, out: Path, replace: bool = False
) -> list[str]:
    """Render `templates` into `out`. Returns the model names.

    `out` must not exist or be empty, unless `replace`: then the new repository is written beside it and
    swapped in only when complete, so a server reading it never sees half of one.
    """
    if not templates.is_dir():
        raise BuildError(f"template directory {templates} does not exist")
    if not tokenizer.is_file():
        raise BuildError(f"tokenizer file {tokenizer} does not exist (pass the model's tekken.json)")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not replace)):
        raise BuildError(f"{out} already exists and is not empty; pass --replace, remove it or pass another --out")
    # the tensorrtllm backend reads the tokenizer info by absolute path: where the repository will stand
    info_path = out.resolve() / "tensorrt_llm" / XGRAMMAR_INFO_FILE
    values = {
        **settings.values(),
        "tokenizer_sha256": sha256_file(tokenizer),
        "xgrammar_tokenizer_info_path": str(info_path),
    }
    model_dirs = sorted(path for path in templates.iterdir() if path.is_dir() and settings.renders(path.name))
    if not model_dirs:
        raise BuildError(f"{templates} holds no model templates")

    models = [path.name for path in model_dirs]
    with atomic_directory(out) as staging:
        for model_dir in model_dirs:
            _render_model(model_dir, settings.target, values, staging / model_dir.name)
        shutil.copy2(tokenizer, staging / TOKENIZER_FILE)
        if settings.target == "gpu":  # guided decoding in the tensorrtllm backend (xgrammar)
            write_tokenizer_info(tokenizer, staging / "tensorrt_llm" / XGRAMMAR_INFO_FILE)
        if settings.target == PYTORCH:  # guided decoding in the LLM API (xgrammar) needs a tokenizer
            _place_hf_tokenizer(settings.tokenizer_dir, tokenizer, staging / HF_TOKENIZER_DIR)
        write_repository_manifest(staging, settings, models, probe_runtime_environment(settings))
    return models


def probe_runtime_environment(settings: RepositorySettings) -> dict[str, str | None] | None:
    """pytorch: the GPU (first one nvidia-smi lists) and TensorRT-LLM version of this host; None for other targets."""
    if settings.target != PYTORCH:
        return None
    from nemo_build.preflight import installed_trtllm_version, probe_gpus

    gpus = probe_gpus()
    return {"gpu": gpus[0].name if gpus else None, "tensorrt_llm": installed_trtllm_version()}


def _place_hf_tokenizer(given: Path | None, tekken: Path, dest: Path) -> None:
    """A given Hugging Face tokenizer directory is named by the config as it is; otherwise one is written from the
    Tekken file into the repository (nemo_build.hf_tokenizer: ids equal the Tekken file's)."""
    if given is not None:
        if not (given / "tokenizer.json").is_file():
            raise BuildError(f"{given} is not a Hugging Face tokenizer directory: tokenizer.json is missing")
        return
    from nemo_build.hf_tokenizer import write_hf_tokenizer

    write_hf_tokenizer(tekken, dest)


def _render_model(model_dir: Path, target: str, values: dict[str, str], dest: Path) -> None:
    source = _model_source(model_dir, target)
    model_values = dict(values)
    shared = model_dir / SHARED_TENSORS_FILE
    if shared.is_file():
        model_values["tensors"] = shared.read_text()
    config_template = source / "config.pbtxt"
    if not config_template.is_file():
        raise BuildError(f"{source} has no config.pbtxt")
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("config.pbtxt", "__pycache__", "*.pyc"))
    (dest / "1").mkdir(exist_ok=True)  # Triton needs a version directory even when it is empty
    rendered = render_text(config_template.read_text(), model_values, str(config_template))
    validate_config(rendered, model_dir.name, str(config_template))
    (dest / "config.pbtxt").write_text(rendered)


# -------------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class RepositoryManifest:
    """What `manifest.json` says about a rendered repository."""

    path: Path  # the manifest file
    target: str  # "gpu" (tensorrtllm backend, engines), "pytorch" (LLM API, a Hugging Face checkpoint), "cpu"
    # (python reference runtime, a TensorRT-LLM checkpoint), "stand-in"
    model_dir: Path  # the engine directory, the Hugging Face or TensorRT-LLM checkpoint, the Tekken file (stand-in)
    served_model_name: str
    models: tuple[str, ...]
    settings: dict[str, Any]
    nemo_build_version: str  # the nemo_build that rendered it
    # pytorch: {"gpu": name | None, "tensorrt_llm": version | None} of the host that rendered it; None otherwise
    runtime_environment: dict[str, str | None] | None = None

    @property
    def repository(self) -> Path:
        return self.path.parent


def manifest_data(
    settings: RepositorySettings, models: list[str], runtime_environment: dict[str, str | None] | None = None
) -> dict[str, Any]:
    """The JSON object `manifest.json` holds for a repository rendered from `settings`."""
    model_dir = str(settings.model_dir.resolve())  # the path the configs name
    extra = {} if runtime_environment is None else {"runtime_environment": dict(runtime_environment)}
    return {
        **extra,
        "kind": MANIFEST_KIND,
        "format": MANIFEST_FORMAT,
        "nemo_build": __version__,
        "target": settings.target,
        "model_dir": model_dir,
        "served_model_name": settings.served_model_name,
        "models": list(models),
        "tokenizer_file": TOKENIZER_FILE,
        "settings": {
            **{key: str(value) if isinstance(value, Path) else value for key, value in asdict(settings).items()},
            "model_dir": model_dir,
        },
    }


def write_repository_manifest(
    repository: Path,
    settings: RepositorySettings,
    models: list[str],
    runtime_environment: dict[str, str | None] | None = None,
) -> Path:
    """Write `manifest.json` into `repository` (a directory being rendered, or one made by hand in tests)."""
    path = repository / MANIFEST_FILE
    data = manifest_data(settings, models, runtime_environment)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def read_repository_manifest(repository: Path) -> RepositoryManifest:
    """The manifest of a repository rendered by `nemo-build repository`; BuildError saying what to do otherwise."""
    rerender = (
        "re-render it: `nemo-build repository --target gpu|cpu|stand-in|pytorch --engine DIR|--checkpoint DIR "
        f"--tokenizer tekken.json --out {repository} --replace`"
    )
    if not repository.is_dir():
        raise BuildError(f"{repository} is not a rendered model repository: no such directory; {rerender}")
    path = repository / MANIFEST_FILE
    if not path.is_file():
        raise BuildError(
            f"{repository} is not a rendered model repository: it has no {MANIFEST_FILE} (not rendered by "
            f"`nemo-build repository`, or by a version before {MANIFEST_FILE}); {rerender}"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BuildError(f"{path} is not readable JSON ({exc}); {rerender}") from exc
    if not isinstance(data, dict) or data.get("kind") != MANIFEST_KIND:
        raise BuildError(f"{path} is not a `nemo-build repository` manifest (kind {MANIFEST_KIND!r}); {rerender}")
    written_by = data.get("nemo_build", "an unknown version")
    if data.get("format") != MANIFEST_FORMAT:
        raise BuildError(
            f"{path} has format {data.get('format')!r} (nemo_build {written_by}); this nemo_build {__version__} "
            f"reads format {MANIFEST_FORMAT}: {rerender}"
        )
    problems = []
    if data.get("target") not in TARGETS:
        problems.append(f"target {data.get('target')!r} (accepted: {', '.join(TARGETS)})")
    for key in ("model_dir", "served_model_name", "nemo_build"):
        if not isinstance(data.get(key), str) or not data[key]:
            problems.append(f"{key} {data.get(key)!r} (a non-empty string)")
    models, settings = data.get("models"), data.get("settings")
    if not isinstance(models, list) or not models or not all(isinstance(name, str) and name for name in models):
        problems.append(f"models {models!r} (a non-empty list of model names)")
    if not isinstance(settings, dict):
        problems.append(f"settings {settings!r} (an object)")
    environment = data.get("runtime_environment")
    if environment is not None and not (
        isinstance(environment, dict)
        and all(isinstance(environment.get(key), (str, type(None))) for key in ("gpu", "tensorrt_llm"))
    ):
        problems.append(f"runtime_environment {environment!r} (an object with gpu and tensorrt_llm: strings or null)")
    if problems or not isinstance(models, list) or not isinstance(settings, dict):
        raise BuildError(f"{path} is damaged: {'; '.join(problems)}; {rerender}")
    missing = [name for name in models if not (repository / name / "config.pbtxt").is_file()]
    if missing:
        raise BuildError(f"{path} lists model(s) {', '.join(missing)} that {repository} lacks; {rerender}")
    return RepositoryManifest(
        path=path,
        target=data["target"],
        model_dir=Path(data["model_dir"]),
        served_model_name=data["served_model_name"],
        models=tuple(models),
        settings=settings,
        nemo_build_version=data["nemo_build"],
        runtime_environment=environment,
    )


# --------------------------------------------------------------------------------------------- CLI


def add_repository_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `repository` on the `nemo-build` subparsers; the handler is `run_repository`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "repository",
        help="render the Triton model repository (GPU engines, the LLM API's PyTorch backend, the CPU reference "
        "runtime, or the stand-in engine)",
        description=(
            "Render model_repository/ templates into a servable Triton model repository. "
            "--target gpu serves TensorRT-LLM engines with the tensorrtllm backend (batch size and "
            "lengths default to the engine's build_config); --target pytorch serves a Hugging Face checkpoint "
            "(ModelOpt's unified FP8 export for FP8) with TensorRT-LLM's LLM API on its PyTorch backend (limits and "
            "LLM arguments default to --profile's, lengths capped by the checkpoint's max_position_embeddings; a "
            "Hugging Face tokenizer directory for guided decoding is written into the repository from --tokenizer "
            "unless --hf-tokenizer names one); --target cpu serves a TensorRT-LLM "
            "checkpoint with the reference runtime in a python model (lengths default to the "
            "checkpoint's max_position_embeddings); --target stand-in serves no model: a python "
            "tensorrt_llm with the CPU model's tensors and in-flight batching that streams ordinary text "
            "tokens at --stand-in-tokens-per-s per request, one engine step every 1/rate s for all running "
            "requests (so the engine produces rate x running streams tokens/s), to measure the frontend "
            "models at GPU token rates on a CPU host; it needs only --tokenizer (limits default to the "
            f"{DEFAULT_PROFILE} profile's). Every config.pbtxt is validated against Triton's ModelConfig "
            "before anything is written."
        ),
    )
    parser.add_argument(
        "--target",
        choices=TARGETS,
        required=True,
        help="gpu (engines), pytorch (Hugging Face checkpoint, LLM API), cpu (checkpoint) or stand-in (no model)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--engine", type=Path, help="engine directory from `nemo-build engine` (gpu)")
    source.add_argument(
        "--checkpoint",
        type=Path,
        help="checkpoint directory: from `nemo-build checkpoint` (cpu); a Hugging Face checkpoint (pytorch)",
    )
    parser.add_argument("--tokenizer", type=Path, required=True, help="the model's tekken.json")
    parser.add_argument("--out", type=Path, required=True, help="where to write the repository (new or empty)")
    parser.add_argument(
        "--replace", action="store_true", help="replace an existing --out (the new one is swapped in when complete)"
    )
    parser.add_argument("--templates", type=Path, default=TEMPLATES_DIR, help="template dir (%(default)s)")
    parser.add_argument(
        "--max-batch-size",
        type=int,
        help=f"concurrent sequences (gpu: engine's; cpu: 16; pytorch: --profile's; stand-in: {DEFAULT_PROFILE}'s)",
    )
    parser.add_argument("--max-input-len", type=int, help="longest prompt in tokens (gpu: engine's)")
    parser.add_argument("--max-seq-len", type=int, help="prompt + generated tokens (gpu: engine's)")
    parser.add_argument(
        "--frontend-instances",
        type=int,
        help="instances of each frontend model: chat, ensemble, preprocessing, postprocessing (gpu: the engine's "
        f"build profile's serving.frontend_instances, else {GPU_DEFAULT_FRONTEND_INSTANCES}; cpu, stand-in: 1)",
    )
    parser.add_argument("--preprocessing-instances", type=int, help="override (default: --frontend-instances)")
    parser.add_argument("--postprocessing-instances", type=int, help="override (default: --frontend-instances)")
    parser.add_argument(
        "--kv-cache-free-gpu-mem-fraction",
        type=float,
        help="gpu, pytorch (default 0.9; pytorch: the profile's llm.kv_cache_config.free_gpu_memory_fraction)",
    )
    parser.add_argument("--batch-scheduler-policy", choices=SCHEDULER_POLICIES, default="max_utilization", help="gpu")
    parser.add_argument("--no-chunked-context", action="store_true", help="gpu, pytorch: disable chunked context")
    parser.add_argument("--no-kv-cache-reuse", action="store_true", help="gpu, pytorch: disable KV cache reuse")
    parser.add_argument(
        "--cancellation-check-period-ms",
        type=int,
        default=100,
        help="gpu, pytorch, stand-in: how often client cancellation is checked (default %(default)s)",
    )
    parser.add_argument("--max-queue-delay-us", type=int, default=0, help="gpu dynamic batching queue delay")
    parser.add_argument("--served-model-name", default=DEFAULT_SERVED_MODEL_NAME, help="model name in responses")
    parser.add_argument(
        "--lora-dir",
        type=Path,
        help="directory of Hugging Face PEFT LoRA adapters, one per subdirectory, served under the subdirectory's "
        "name (rescanned while serving: adapters added or removed need no restart)",
    )
    parser.add_argument(
        "--max-lora-rank",
        type=int,
        help=f"largest LoRA rank served; adapters above it are refused (default: the profile's lora.max_rank, else "
        f"{DEFAULT_MAX_LORA_RANK})",
    )
    pytorch = parser.add_argument_group("pytorch (TensorRT-LLM LLM API) arguments")
    pytorch.add_argument(
        "--profile",
        help=f"build profile whose limits and LLM arguments are the defaults (default {DEFAULT_PROFILE}): "
        "max_batch_size, max_input_len, max_seq_len, max_num_tokens, tokens_per_block, TP size, gathered logits, "
        "serving.frontend_instances",
    )
    pytorch.add_argument(
        "--max-num-tokens",
        type=int,
        help="pytorch, cpu: tokens per forward pass, prefill chunks and decodes together; long prompts are prefilled "
        "in chunks of it (default: the profile's; cpu: 8192)",
    )
    parser.add_argument(
        "--max-tokens-in-paged-kv-cache",
        type=int,
        help="cpu: KV-cache positions the running requests may fill together, at least --max-seq-len; a request waits "
        "until its prompt + max tokens fits beside theirs (default: max batch size x max sequence length, or what 90%% "
        "of the host's available memory holds if less)",
    )
    pytorch.add_argument(
        "--kv-cache-dtype",
        choices=KV_CACHE_DTYPES,
        help="KV-cache precision: auto (default: the checkpoint's hf_quant_config.json) or fp8",
    )
    pytorch.add_argument("--tokens-per-block", type=int, help="KV-cache block size (default: the profile's)")
    pytorch.add_argument(
        "--cuda-graph-batch-sizes",
        help="comma-separated batch sizes to capture CUDA graphs for (default: every size up to max_batch_size)",
    )
    pytorch.add_argument("--tensor-parallel-size", type=int, help="GPUs per model (default: the profile's tp)")
    pytorch.add_argument(
        "--hf-tokenizer",
        type=Path,
        help="a Hugging Face tokenizer directory for guided decoding (default: one written from --tokenizer into "
        f"the repository, {HF_TOKENIZER_DIR})",
    )
    parser.add_argument(
        "--stand-in-tokens-per-s",
        type=float,
        help=f"stand-in: tokens per second per request (default {STAND_IN_DEFAULT_TOKENS_PER_S:g})",
    )
    parser.add_argument(
        "--stand-in-end-after-tokens",
        type=int,
        help="stand-in: end a request that has an end_id after this many tokens (default 0: never, every "
        "request streams exactly its max_tokens)",
    )
    return parser


CPU_DEFAULT_MAX_BATCH_SIZE = 16
CPU_DEFAULT_MAX_SEQ_LEN = 4096


def engine_profile(engine_dir: Path) -> Profile | None:
    """The shipped profile the engines were built with (their build manifest names it); None when not known."""
    manifest = read_manifest(engine_dir) or {}
    inputs = manifest.get("inputs")
    profile = inputs.get("profile") if isinstance(inputs, dict) else None
    name = profile.get("name") if isinstance(profile, dict) else None
    if isinstance(name, str) and name:
        try:
            return load_profile(name)
        except BuildError:
            return None
    return None


def profile_lora_settings(profile: Profile | None) -> dict[str, Any]:
    """The repository settings a profile's `lora` section implies: the largest rank and the backend's LoRA cache."""
    lora = profile.lora if profile is not None else {}
    names = {
        "max_rank": "max_lora_rank",
        "cache_optimal_adapter_size": "lora_cache_optimal_adapter_size",
        "cache_max_adapter_size": "lora_cache_max_adapter_size",
        "cache_gpu_memory_fraction": "lora_cache_gpu_memory_fraction",
        "cache_host_memory_bytes": "lora_cache_host_memory_bytes",
        "max_loras": "max_loras",
        "max_cpu_loras": "max_cpu_loras",
    }
    chosen = {setting: lora[key] for key, setting in names.items() if key in lora}
    if "target_modules" in lora:
        chosen["lora_target_modules"] = tuple(lora["target_modules"])
    return chosen


def profile_frontend_instances(engine_dir: Path) -> int:
    """`serving.frontend_instances` of the profile the engines were built with (their build manifest names it),
    GPU_DEFAULT_FRONTEND_INSTANCES when that profile is not a shipped one or the engines have no manifest."""
    profile = engine_profile(engine_dir)
    found = profile.frontend_instances if profile is not None else None
    return GPU_DEFAULT_FRONTEND_INSTANCES if found is None else found


def lora_settings(args: argparse.Namespace, profile: Profile | None) -> dict[str, Any]:
    """The LoRA repository settings: ``--lora-dir``, and ``--max-lora-rank`` over the profile's `lora` section."""
    chosen = profile_lora_settings(profile)
    if args.max_lora_rank is not None:
        chosen["max_lora_rank"] = args.max_lora_rank
    return {"lora_dir": args.lora_dir, **chosen}


def profile_llm_settings(profile: Profile) -> dict[str, Any]:
    """The `pytorch` repository settings a build profile implies (RepositorySettings keyword arguments): its limits,
    ``max_num_tokens``, ``tokens_per_block``, TP size, gathered logits and frontend instances. A pytorch profile
    (``runtime: pytorch``) gives them under upstream's LLM argument names (``llm``), with the KV-cache fraction,
    chunked prefill, block reuse and CUDA-graph batch sizes; an engine profile's ``trtllm_build`` flags stand in."""
    limits = ("max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens")
    settings: dict[str, Any]
    if profile.runtime == PYTORCH:
        llm = profile.llm
        kv = llm.get("kv_cache_config") or {}
        graphs = llm.get("cuda_graph_config") or {}
        settings = {key: int(llm[key]) for key in limits}
        settings["tokens_per_block"] = int(kv.get("tokens_per_block", 32))
        settings["generation_logits"] = bool(llm.get("gather_generation_logits", False))
        # No build switch: the PyTorch executor gathers a context chunk's logits for the requests that ask
        # (SamplingParams.return_context_logits; tensorrt_llm/_torch/pyexecutor/py_executor.py), so echo + logprobs
        # costs only the requests that send it.
        settings["context_logits"] = True
        for key, name in (("free_gpu_memory_fraction", "kv_cache_free_gpu_mem_fraction"),
                          ("enable_block_reuse", "enable_kv_cache_reuse")):  # fmt: skip
            if key in kv:
                settings[name] = kv[key]
        if "enable_chunked_prefill" in llm:
            settings["enable_chunked_context"] = bool(llm["enable_chunked_prefill"])
        if graphs.get("batch_sizes"):
            settings["cuda_graph_batch_sizes"] = tuple(int(size) for size in graphs["batch_sizes"])
    else:
        flags = profile.flags
        settings = {key: int(flags[key]) for key in limits}
        settings["tokens_per_block"] = int(flags.get("tokens_per_block", 32))
        settings["context_logits"] = bool(flags.get("gather_context_logits", False))
        settings["generation_logits"] = bool(flags.get("gather_generation_logits", False))
    settings["tensor_parallel_size"] = profile.tp
    if profile.frontend_instances is not None:
        settings["frontend_instances"] = profile.frontend_instances
    return settings


PYTORCH_FLAGS = (
    "profile", "kv_cache_dtype", "tokens_per_block", "cuda_graph_batch_sizes",
    "tensor_parallel_size", "hf_tokenizer",
)  # fmt: skip


def _graph_sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(size) for size in text.replace(" ", "").split(",") if size)
    except ValueError:
        raise BuildError(f"--cuda-graph-batch-sizes {text!r}: integers separated by ','") from None


def pytorch_settings_from_args(args: argparse.Namespace) -> RepositorySettings:
    """`--target pytorch`: flags over the profile's settings, lengths capped by the checkpoint's."""
    if args.checkpoint is None:
        raise BuildError("--target pytorch serves a Hugging Face checkpoint: pass --checkpoint DIR (not --engine)")
    positions = hf_checkpoint_max_positions(args.checkpoint)
    profile = load_profile(args.profile or DEFAULT_PROFILE)
    implied = profile_llm_settings(profile)
    implied["max_seq_len"] = min(implied["max_seq_len"], positions)
    implied["max_input_len"] = min(implied["max_input_len"], implied["max_seq_len"])
    flags = {
        "max_batch_size": args.max_batch_size,
        "max_input_len": args.max_input_len,
        "max_seq_len": args.max_seq_len,
        "max_num_tokens": args.max_num_tokens,
        "tokens_per_block": args.tokens_per_block,
        "tensor_parallel_size": args.tensor_parallel_size,
        "frontend_instances": args.frontend_instances,
        "kv_cache_dtype": args.kv_cache_dtype,
    }
    chosen = {**implied, **{key: value for key, value in flags.items() if value is not None}}
    if args.cuda_graph_batch_sizes is not None:
        chosen["cuda_graph_batch_sizes"] = _graph_sizes(args.cuda_graph_batch_sizes)
    if args.kv_cache_free_gpu_mem_fraction is not None:
        chosen["kv_cache_free_gpu_mem_fraction"] = args.kv_cache_free_gpu_mem_fraction
    if args.no_chunked_context:
        chosen["enable_chunked_context"] = False
    if args.no_kv_cache_reuse:
        chosen["enable_kv_cache_reuse"] = False
    return RepositorySettings(
        target=PYTORCH,
        model_dir=args.checkpoint,
        preprocessing_instances=args.preprocessing_instances,
        postprocessing_instances=args.postprocessing_instances,
        cancellation_check_period_ms=args.cancellation_check_period_ms,
        max_queue_delay_microseconds=args.max_queue_delay_us,
        served_model_name=args.served_model_name,
        tokenizer_dir=args.hf_tokenizer,
        **lora_settings(args, profile),
        **chosen,
    )


def settings_from_args(args: argparse.Namespace) -> RepositorySettings:
    """Flags over the engine's build limits (gpu), the profile's (pytorch), the checkpoint's (cpu) or the default
    profile's (stand-in)."""
    if args.target != PYTORCH:
        given = [f"--{key.replace('_', '-')}" for key in PYTORCH_FLAGS if getattr(args, key, None) is not None]
        if given:
            raise BuildError(f"{', '.join(given)} only apply to --target pytorch")
        cpu_only = {
            "max_tokens_in_paged_kv_cache": args.max_tokens_in_paged_kv_cache,
            "max_num_tokens": args.max_num_tokens,
        }
        given = [f"--{key.replace('_', '-')}" for key, value in cpu_only.items() if value is not None]
        if given and args.target != "cpu":
            raise BuildError(f"{', '.join(given)} only apply to --target cpu (--max-num-tokens: and pytorch)")
    elif args.stand_in_tokens_per_s is not None or args.stand_in_end_after_tokens is not None:
        raise BuildError("--stand-in-tokens-per-s, --stand-in-end-after-tokens only apply to --target stand-in")
    else:
        return pytorch_settings_from_args(args)
    frontend_default = 1
    lora_profile: Profile | None = None  # cpu and stand-in: no profile decides the LoRA settings
    if args.target == "gpu":
        if args.engine is None:
            raise BuildError("--target gpu serves engines: pass --engine DIR (not --checkpoint)")
        model_dir: Path = args.engine
        limits = engine_limits(model_dir)
        frontend_default = profile_frontend_instances(model_dir)
        lora_profile = engine_profile(model_dir)
        logits = engine_logit_gathering(model_dir)
    elif args.target == "cpu":
        if args.checkpoint is None:
            raise BuildError("--target cpu runs a checkpoint: pass --checkpoint DIR (not --engine)")
        model_dir = args.checkpoint
        max_seq = min(checkpoint_max_positions(model_dir), CPU_DEFAULT_MAX_SEQ_LEN)
        limits = {"max_batch_size": CPU_DEFAULT_MAX_BATCH_SIZE, "max_input_len": max_seq // 2, "max_seq_len": max_seq}
        logits = {"context_logits": True, "generation_logits": True}
    else:
        if args.engine is not None or args.checkpoint is not None:
            raise BuildError("--target stand-in serves no model: pass neither --engine nor --checkpoint")
        model_dir = args.tokenizer
        flags = load_profile(DEFAULT_PROFILE).flags
        limits = {key: int(flags[key]) for key in ("max_batch_size", "max_input_len", "max_seq_len")}
        logits = {"context_logits": False, "generation_logits": False}  # it has no model
    stand_in = {
        "stand_in_tokens_per_s": args.stand_in_tokens_per_s,
        "stand_in_end_after_tokens": args.stand_in_end_after_tokens,
    }
    if args.target != STAND_IN:
        given = [f"--{key.replace('_', '-')}" for key, value in stand_in.items() if value is not None]
        if given:
            raise BuildError(f"{', '.join(given)} only apply to --target stand-in")
    chosen = {key: getattr(args, key) if getattr(args, key) is not None else value for key, value in limits.items()}
    frontend = args.frontend_instances if args.frontend_instances is not None else frontend_default
    settings = RepositorySettings(
        max_batch_size=chosen["max_batch_size"],
        max_input_len=chosen["max_input_len"],
        max_seq_len=chosen["max_seq_len"],
        target=args.target,
        model_dir=model_dir,
        frontend_instances=frontend,
        preprocessing_instances=args.preprocessing_instances,
        postprocessing_instances=args.postprocessing_instances,
        kv_cache_free_gpu_mem_fraction=(
            args.kv_cache_free_gpu_mem_fraction if args.kv_cache_free_gpu_mem_fraction is not None else 0.9
        ),
        batch_scheduler_policy=args.batch_scheduler_policy,
        enable_chunked_context=not args.no_chunked_context,
        enable_kv_cache_reuse=not args.no_kv_cache_reuse,
        cancellation_check_period_ms=args.cancellation_check_period_ms,
        max_queue_delay_microseconds=args.max_queue_delay_us,
        served_model_name=args.served_model_name,
        context_logits=logits["context_logits"],
        **lora_settings(args, lora_profile),
        generation_logits=logits["generation_logits"],
        **{key: value for key, value in stand_in.items() if value is not None},
        **{
            key: getattr(args, key)
            for key in ("max_num_tokens", "max_tokens_in_paged_kv_cache")
            if getattr(args, key) is not None
        },
    )
    if settings.target == "gpu" and settings.lora_dir is not None:
        check_engine_applies_lora(model_dir, settings.max_lora_rank)
    return settings


def check_engine_applies_lora(engine_dir: Path, max_lora_rank: int) -> None:
    """Refuse to serve adapters to engines that cannot apply them: engines built (by `nemo-build engine`, whose
    manifest records the profile) without a `lora` section have no LoRA plugin, and the plugin takes ranks up to the
    ``max_lora_rank`` it was built with. Engines without a build manifest are not known here, and not checked."""
    inputs = (read_manifest(engine_dir) or {}).get("inputs")
    built = inputs.get("profile") if isinstance(inputs, dict) else None
    if not isinstance(built, dict):
        return
    name, lora = built.get("name"), built.get("lora") or {}
    if not lora:
        raise BuildError(
            f"--lora-dir: the engines in {engine_dir} were built with profile {name!r}, which has no lora section: "
            "they have no LoRA plugin (trtllm-build --lora_plugin) and cannot apply adapters; build them with a "
            "profile that has one (h100-fp8-tp1 does), or serve them without --lora-dir"
        )
    if max_lora_rank > lora["max_rank"]:
        raise BuildError(
            f"--max-lora-rank {max_lora_rank} is above the max_lora_rank {lora['max_rank']} the engines in "
            f"{engine_dir} were built with (profile {name!r}): they cannot apply adapters of a higher rank; "
            f"use at most {lora['max_rank']}"
        )


def run_repository(args: argparse.Namespace) -> int:
    """Handler of `nemo-build repository`."""
    settings = settings_from_args(args)
    models = render_repository(args.templates, settings, args.tokenizer, args.out, replace=args.replace)
    summary = {key: value for key, value in asdict(settings).items() if key != "model_dir"}
    print(f"wrote {args.out} ({', '.join(models)}) with {json.dumps(summary, default=str)}")
    return 0
