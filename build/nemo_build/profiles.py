"""Engine build profiles (``nemo_build/profiles/*.yaml``) and the ``trtllm-build`` command line they make.

A profile names the GPU it targets, the checkpoint precision and TP size it expects, and under
``trtllm_build`` the exact ``trtllm-build`` flags (name → value) with comments on why. An optional
``serving`` section holds what `nemo-build repository --target gpu` takes as defaults for engines built with
the profile (``frontend_instances``: instances of each python frontend model). It is not part of the build:
:meth:`Profile.as_dict` (what the engine build manifest records and compares) leaves it out, so changing it
never rebuilds engines.
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
SERVING_KEYS = ("frontend_instances",)  # the keys a profile's `serving` section may set (positive integers)


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

    @property
    def frontend_instances(self) -> int | None:
        """Instances of each frontend model (chat, ensemble, pre/postprocessing) to serve these engines with."""
        return self.serving.get("frontend_instances")

    def argv(self, checkpoint_dir: Path, output_dir: Path) -> list[str]:
        """The ``trtllm-build`` command for this profile."""
        args = ["trtllm-build", "--checkpoint_dir", str(checkpoint_dir), "--output_dir", str(output_dir)]
        for flag, value in self.flags.items():
            if flag in SWITCH_FLAGS:
                args += [f"--{flag}"] if value else []
            else:
                args += [f"--{flag}", _flag_value(value)]
        return args

    def with_flags(self, overrides: dict[str, Any]) -> Profile:
        """This profile with some `trtllm_build` flags replaced, validated as a profile file would be."""
        raw = self.as_dict()
        raw["trtllm_build"] = {**self.flags, **overrides}
        return replace(_parse(raw, self.path), serving=dict(self.serving))

    def as_dict(self) -> dict[str, Any]:
        """The build side of the profile (without `serving`): what the engine build manifest records."""
        return {
            "name": self.name,
            "description": self.description,
            "gpu": self.gpu,
            "precision": self.precision,
            "kv_cache": self.kv_cache,
            "tp": self.tp,
            "trtllm_build": dict(self.flags),
        }


SWITCH_FLAGS = frozenset({"gather_context_logits", "gather_generation_logits", "gather_all_token_logits"})
"""trtllm-build flags that take no value (argparse ``store_true``): a profile gives them ``true`` or ``false``.
``gather_context_logits`` lets the engine return the logits of every prompt position (``/v1/completions`` with
``echo`` and ``logprobs``), ``gather_generation_logits`` those of each generated token (``logprobs`` above 0);
both cost GPU memory per token in flight."""


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


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


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
    missing = [k for k in ("name", "gpu", "precision", "kv_cache", "tp", "trtllm_build") if k not in raw]
    if missing:
        raise BuildError(f"build profile {path} lacks {', '.join(missing)}")
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
    serving = raw.get("serving") or {}
    if not isinstance(serving, dict):
        problems.append("serving must map setting names to values")
        serving = {}
    for key, value in serving.items():
        if key not in SERVING_KEYS:
            problems.append(f"serving.{key} is not a setting (accepted: {', '.join(SERVING_KEYS)})")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"serving.{key} is {value!r} (a positive integer)")
    if problems:
        raise BuildError(f"build profile {path} is invalid:\n  - " + "\n  - ".join(problems))
    return Profile(
        name=str(raw["name"]),
        description=str(raw.get("description", "")),
        gpu=str(raw["gpu"]),
        precision=raw["precision"],
        kv_cache=raw["kv_cache"],
        tp=raw["tp"],
        flags=dict(flags),
        path=path,
        serving=dict(serving),
    )
