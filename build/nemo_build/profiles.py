"""Engine build profiles (``nemo_build/profiles/*.yaml``) and the ``trtllm-build`` command line they make.

A profile names the GPU it targets, the checkpoint precision and TP size it expects, and under
``trtllm_build`` the exact ``trtllm-build`` flags (name → value) with comments on why. An optional
``serving`` section holds what `nemo-build repository --target gpu` takes as defaults for engines built with
the profile (``frontend_instances``: instances of each python frontend model). It is not part of the build:
:meth:`Profile.as_dict` (what the engine build manifest records and compares) leaves it out, so changing it
never rebuilds engines.

``runtime`` names what serves the build: ``engine`` (the default: ``trtllm-build`` engines in the C++ tensorrtllm
backend, the ``trtllm_build`` section) or ``pytorch`` (TensorRT-LLM's LLM API on its PyTorch backend serving the
Hugging Face FP8 checkpoint, `nemo-build repository --target pytorch`). A ``pytorch`` profile has no
``trtllm_build`` section but an ``llm`` one: the ``tensorrt_llm.LLM`` arguments, under upstream's names
(``TorchLlmArgs``, and ``kv_cache_config`` / ``cuda_graph_config`` for ``KvCacheConfig`` / ``CudaGraphConfig``;
``tests/unit/build/test_profiles.py`` holds them to ``tests/data/upstream/tensorrt_llm_llm_api.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from nemo_build.errors import BuildError

# Package data: the profiles ship in the wheel and the image with the code that reads them.
PROFILES_DIR = Path(str(resources.files("nemo_build") / "profiles"))
DEFAULT_PROFILE = "h100-fp8-tp1"
# Flags every profile must fix: they decide what the engine can serve and how it uses memory.
REQUIRED_FLAGS = (
    "max_batch_size",
    "max_input_len",
    "max_seq_len",
    "max_num_tokens",
    "kv_cache_type",
    "gemm_plugin",
    "gpt_attention_plugin",
    "remove_input_padding",
    "context_fmha",
    "use_paged_context_fmha",
)
# The command owns these: the profile may not set them.
RESERVED_FLAGS = ("checkpoint_dir", "output_dir", "model_config", "build_config")
PRECISIONS = ("fp8", "bf16")
RUNTIMES = ("engine", "pytorch")
DEFAULT_RUNTIME = "engine"  # until a GPU run shows the pytorch runtime at least as fast
# `llm` section of a pytorch profile: TorchLlmArgs names → the type each takes. The limits are required.
LLM_REQUIRED = ("max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens")
LLM_KEYS: dict[str, type] = {
    "max_batch_size": int,
    "max_input_len": int,
    "max_seq_len": int,
    "max_num_tokens": int,
    "enable_chunked_prefill": bool,
    "gather_generation_logits": bool,
    "kv_cache_config": dict,
    "cuda_graph_config": dict,
}
LLM_KV_CACHE_KEYS: dict[str, type] = {  # KvCacheConfig names
    "free_gpu_memory_fraction": float,
    "enable_block_reuse": bool,
    "tokens_per_block": int,
}
LLM_CUDA_GRAPH_KEYS: dict[str, type] = {"batch_sizes": list}  # CudaGraphConfig names
SERVING_KEYS = ("frontend_instances",)
# `lora` section of any profile: LoRA adapters served by name. Engine runtime: trtllm-build --lora_plugin auto
# --lora_target_modules ... --max_lora_rank, and the backend's LoRA cache parameters (lora_cache_*); pytorch
# runtime: the LLM API's LoraConfig (max_lora_rank, max_loras, max_cpu_loras, lora_target_modules).
LORA_KEYS: dict[str, type] = {
    "target_modules": list,  # TensorRT-LLM module names (nemo_chat_core.lora.MODULE_IDS)
    "max_rank": int,
    "max_loras": int,  # adapters on the GPU at once (pytorch: max_loras)
    "max_cpu_loras": int,  # adapters cached in host memory (pytorch: max_cpu_loras)
    "cache_optimal_adapter_size": int,  # engine: lora_cache_optimal_adapter_size
    "cache_max_adapter_size": int,  # engine: lora_cache_max_adapter_size
    "cache_gpu_memory_fraction": float,  # engine: lora_cache_gpu_memory_fraction
    "cache_host_memory_bytes": int,  # engine: lora_cache_host_memory_bytes
}
LORA_REQUIRED = ("target_modules", "max_rank")  # the keys a profile's `serving` section may set (positive integers)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    gpu: str
    precision: str
    kv_cache: str
    tp: int
    flags: dict[str, Any]
    path: Path
    serving: dict[str, int] = field(default_factory=dict)
    runtime: str = DEFAULT_RUNTIME
    llm: dict[str, Any] = field(default_factory=dict)  # pytorch: the LLM arguments (upstream names)
    lora: dict[str, Any] = field(default_factory=dict)  # LoRA serving (LORA_KEYS); empty: no adapters

    @property
    def frontend_instances(self) -> int | None:
        """Instances of each frontend model (chat, ensemble, pre/postprocessing) to serve these engines with."""
        return self.serving.get("frontend_instances")

    def argv(self, checkpoint_dir: Path, output_dir: Path) -> list[str]:
        """The ``trtllm-build`` command for this profile."""
        if self.runtime != "engine":
            raise BuildError(
                f"profile {self.name} is for the {self.runtime} runtime: it builds no engines (no trtllm-build); "
                "`make engine` exports the Hugging Face checkpoint and renders `nemo-build repository --target pytorch`"
            )
        args = ["trtllm-build", "--checkpoint_dir", str(checkpoint_dir), "--output_dir", str(output_dir)]
        for flag, value in self.flags.items():
            if flag in SWITCH_FLAGS:
                args += [f"--{flag}"] if value else []
            else:
                args += [f"--{flag}", _flag_value(value)]
        if self.lora:  # the engine takes per-request adapters (lora_task_id, lora_weights, lora_config)
            args += ["--lora_plugin", "auto", "--lora_target_modules", *self.lora["target_modules"]]
            args += ["--max_lora_rank", str(self.lora["max_rank"])]
        return args

    def with_flags(self, overrides: dict[str, Any]) -> Profile:
        """This profile with some `trtllm_build` flags replaced, validated as a profile file would be."""
        if not overrides:
            return self
        raw = self.as_dict()
        if self.runtime != "engine":
            raise BuildError(f"profile {self.name} is for the {self.runtime} runtime: it has no trtllm_build flags")
        raw["trtllm_build"] = {**self.flags, **overrides}
        return replace(_parse(raw, self.path), serving=dict(self.serving))

    def as_dict(self) -> dict[str, Any]:
        """The build side of the profile (without `serving`): what the engine build manifest records."""
        if self.runtime != "engine":
            return {
                "name": self.name,
                "description": self.description,
                "runtime": self.runtime,
                "gpu": self.gpu,
                "precision": self.precision,
                "kv_cache": self.kv_cache,
                "tp": self.tp,
                "llm": _copy(self.llm),
                **({"lora": _copy(self.lora)} if self.lora else {}),
            }
        return {
            "name": self.name,
            "description": self.description,
            "gpu": self.gpu,
            "precision": self.precision,
            "kv_cache": self.kv_cache,
            "tp": self.tp,
            "trtllm_build": dict(self.flags),
            **({"lora": _copy(self.lora)} if self.lora else {}),
        }


SWITCH_FLAGS = frozenset({"gather_context_logits", "gather_generation_logits", "gather_all_token_logits"})
"""trtllm-build flags that take no value (argparse ``store_true``): a profile gives them ``true`` or ``false``.
``gather_context_logits`` lets the engine return the logits of every prompt position (``/v1/completions`` with
``echo`` and ``logprobs``), ``gather_generation_logits`` those of each generated token (``logprobs`` above 0);
both cost GPU memory per token in flight."""


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    return list(value) if isinstance(value, list) else value


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "enable" if value else "disable"
    return str(value)


def parse_flag_overrides(assignments: list[str]) -> dict[str, Any]:
    """`FLAG=VALUE` strings (values read as YAML scalars, as in a profile file) → flag name → value."""
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        flag, sep, text = assignment.partition("=")
        if not sep or not flag or flag.startswith("-"):
            raise BuildError(
                f"--set {assignment!r}: write FLAG=VALUE with a trtllm-build flag name, e.g. max_batch_size=128"
            )
        overrides[flag] = yaml.safe_load(text) if text else ""
    return overrides


def available_profiles(runtime: str | None = None) -> list[str]:
    """The shipped profiles' names; with `runtime` (engine, pytorch) only those for that runtime."""
    names = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
    if runtime is None:
        return names
    return [name for name in names if load_profile(name).runtime == runtime]


def load_profile(name_or_path: str | Path) -> Profile:
    """A profile by name (``h100-fp8-tp1``) or by YAML file path."""
    candidate = Path(name_or_path)
    path = candidate if candidate.suffix in (".yaml", ".yml") else PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise BuildError(
            f"no build profile {name_or_path!r}; available: {', '.join(available_profiles())} "
            "(or a path to a .yaml file)"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise BuildError(f"build profile {path} is not valid YAML: {exc}") from exc
    return _parse(raw, path)


def _parse(raw: Any, path: Path) -> Profile:
    if not isinstance(raw, dict):
        raise BuildError(f"build profile {path} must be a mapping")
    runtime = raw.get("runtime", DEFAULT_RUNTIME)
    if runtime not in RUNTIMES:
        raise BuildError(f"build profile {path}: runtime is {runtime!r} (accepted: {', '.join(RUNTIMES)})")
    section = "trtllm_build" if runtime == "engine" else "llm"
    other = "llm" if runtime == "engine" else "trtllm_build"
    if other in raw:
        raise BuildError(
            f"build profile {path}: {'an engine' if runtime == 'engine' else 'a pytorch'} profile has no {other} "
            "section (runtime: "
            f"{'pytorch' if runtime == 'engine' else 'engine'} takes {other}); its settings go under {section}"
        )
    missing = [k for k in ("name", "gpu", "precision", "kv_cache", "tp", section) if k not in raw]
    if missing:
        raise BuildError(f"build profile {path} lacks {', '.join(missing)}")
    if runtime == "pytorch":
        return _parse_pytorch(raw, path)
    flags = raw["trtllm_build"]
    if not isinstance(flags, dict):
        raise BuildError(f"build profile {path}: trtllm_build must map flag names to values")
    problems = []
    for key in ("precision", "kv_cache"):
        if raw[key] not in PRECISIONS:
            problems.append(f"{key} is {raw[key]!r} (accepted: {', '.join(PRECISIONS)})")
    if not isinstance(raw["tp"], int) or raw["tp"] < 1:
        problems.append(f"tp is {raw['tp']!r} (a positive integer)")
    problems += [f"trtllm_build lacks {flag}" for flag in REQUIRED_FLAGS if flag not in flags]
    problems += [f"trtllm_build may not set {flag} (nemo-build passes it)" for flag in RESERVED_FLAGS if flag in flags]
    problems += [f"{flag} is {flags[flag]!r} (true or false)" for flag in SWITCH_FLAGS & set(flags)
                 if not isinstance(flags[flag], bool)]  # fmt: skip
    input_len, seq_len = flags.get("max_input_len"), flags.get("max_seq_len")
    if isinstance(input_len, int) and isinstance(seq_len, int) and input_len > seq_len:
        problems.append("max_input_len is larger than max_seq_len")
    if flags.get("use_fp8_context_fmha") in ("enable", True) and raw["kv_cache"] != "fp8":
        problems.append("use_fp8_context_fmha needs an FP8 KV cache (kv_cache: fp8)")
    return _checked_profile(raw, path, problems, flags=dict(flags))


def _checked_profile(raw: dict[str, Any], path: Path, problems: list[str], **runtime_fields: Any) -> Profile:
    """The profile, once its `serving` and `lora` sections are checked too; every problem found, at once, as one
    BuildError."""
    serving = _serving(raw, problems)
    lora = _lora(raw, problems)
    if problems:
        raise BuildError(f"build profile {path} is invalid:\n  - " + "\n  - ".join(problems))
    return Profile(
        name=str(raw["name"]),
        description=str(raw.get("description", "")),
        gpu=str(raw["gpu"]),
        precision=raw["precision"],
        kv_cache=raw["kv_cache"],
        tp=raw["tp"],
        path=path,
        serving=dict(serving),
        lora=lora,
        **runtime_fields,
    )


def _lora(raw: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    from nemo_chat_core.lora import MODULE_IDS

    lora = raw.get("lora") or {}
    if not isinstance(lora, dict):
        problems.append("lora must map setting names to values")
        return {}
    if not lora:
        return {}
    problems += [f"lora lacks {key}" for key in LORA_REQUIRED if key not in lora]
    _typed("lora.", lora, LORA_KEYS, problems)
    modules = lora.get("target_modules")
    if isinstance(modules, list):
        unknown = [m for m in modules if m not in MODULE_IDS]
        if unknown or not modules:
            problems.append(f"lora.target_modules {modules!r} (accepted: a list of {', '.join(MODULE_IDS)})")
    fraction = lora.get("cache_gpu_memory_fraction")
    if isinstance(fraction, (int, float)) and not 0 < fraction < 1:
        problems.append(f"lora.cache_gpu_memory_fraction is {fraction!r} (in (0, 1))")
    return _copy(lora)


def _serving(raw: dict[str, Any], problems: list[str]) -> dict[str, int]:
    serving = raw.get("serving") or {}
    if not isinstance(serving, dict):
        problems.append("serving must map setting names to values")
        return {}
    for key, value in serving.items():
        if key not in SERVING_KEYS:
            problems.append(f"serving.{key} is not a setting (accepted: {', '.join(SERVING_KEYS)})")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"serving.{key} is {value!r} (a positive integer)")
    return dict(serving)


def _typed(prefix: str, values: dict[str, Any], accepted: dict[str, type], problems: list[str]) -> None:
    for key, value in values.items():
        kind = accepted.get(key)
        if kind is None:
            what = "LoRA setting" if prefix == "lora." else "LLM argument"
            problems.append(f"{prefix}{key} is not an accepted {what} (accepted: {', '.join(accepted)})")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"{prefix}{key} is {value!r} (a number)")
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{prefix}{key} is {value!r} (a positive integer)")
        elif not isinstance(value, kind):
            problems.append(f"{prefix}{key} is {value!r} (a {kind.__name__})")


def _section(llm: dict[str, Any], key: str) -> dict[str, Any]:
    value = llm.get(key)
    return value if isinstance(value, dict) else {}


def _parse_pytorch(raw: dict[str, Any], path: Path) -> Profile:
    llm = raw["llm"]
    if not isinstance(llm, dict):
        raise BuildError(f"build profile {path}: llm must map LLM argument names to values")
    problems: list[str] = []
    for key in ("precision", "kv_cache"):
        if raw[key] not in PRECISIONS:
            problems.append(f"{key} is {raw[key]!r} (accepted: {', '.join(PRECISIONS)})")
    if not isinstance(raw["tp"], int) or raw["tp"] < 1:
        problems.append(f"tp is {raw['tp']!r} (a positive integer)")
    problems += [f"llm lacks {key}" for key in LLM_REQUIRED if key not in llm]
    _typed("llm.", llm, LLM_KEYS, problems)
    kv = _section(llm, "kv_cache_config")
    _typed("llm.kv_cache_config.", kv, LLM_KV_CACHE_KEYS, problems)
    fraction = kv.get("free_gpu_memory_fraction")
    if isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and not 0 < fraction <= 1:
        problems.append(f"llm.kv_cache_config.free_gpu_memory_fraction is {fraction!r} (in (0, 1])")
    graphs = _section(llm, "cuda_graph_config")
    _typed("llm.cuda_graph_config.", graphs, LLM_CUDA_GRAPH_KEYS, problems)
    sizes = graphs.get("batch_sizes")
    batch = llm.get("max_batch_size")
    if (
        isinstance(sizes, list)
        and isinstance(batch, int)
        and not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= batch for n in sizes)
    ):
        problems.append(f"llm.cuda_graph_config.batch_sizes is {sizes!r} (integers in [1, max_batch_size])")
    input_len, seq_len = llm.get("max_input_len"), llm.get("max_seq_len")
    if isinstance(input_len, int) and isinstance(seq_len, int) and input_len > seq_len:
        problems.append("llm.max_input_len is larger than llm.max_seq_len")
    return _checked_profile(raw, path, problems, flags={}, runtime="pytorch", llm=_copy(llm))
