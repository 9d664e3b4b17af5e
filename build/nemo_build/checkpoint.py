"""``nemo-build checkpoint``: Hugging Face directory → verified checkpoint + manifest, in TensorRT-LLM's checkpoint
format (``trtllm``: the engine runtime's ``trtllm-build`` input, split into TP ranks) or ModelOpt's unified Hugging Face
export (``hf``: what the PyTorch runtime loads, sharded by the runtime at load).

Order of work: validate the source, tokenize the calibration set, hash the inputs (stop here when the
output is already built from them), load the model, take reference logits (``--verify``), calibrate,
export into a staging directory, check its config against the source, execute it with the reference
runtime (``--verify``), write the manifest, and only then move it into place.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import torch

import nemo_build
from nemo_build import manifest as mf
from nemo_build.atomic_dir import atomic_directory
from nemo_build.calibration import DEFAULT_CALIB_SEQ_LEN, DEFAULT_CALIB_SIZE, CalibrationSet, load_calibration
from nemo_build.errors import BuildError
from nemo_build.hf_export import check_export
from nemo_build.quantize import (
    Precision,
    calibrate,
    compute_with_exported_weights,
    export_checkpoint,
    export_hf,
    load_model,
    match_exported_kv_scales,
    quant_config,
    resolve_device,
)
from nemo_build.source import SourceModel, load_source
from nemo_build.trtllm_config import check_config
from nemo_build.verify import (
    VerifyCheck,
    model_logits,
    quantized_checks,
    runtime_logits,
    unquantized_checks,
    verification_samples,
)

MANIFEST_FORMAT = 1
CheckpointFormat = Literal["trtllm", "hf"]
FORMATS: tuple[CheckpointFormat, ...] = ("trtllm", "hf")


@dataclass(frozen=True)
class CheckpointOptions:
    quant: Precision = "fp8"
    kv_cache: Precision = "fp8"
    tp: int = 1
    format: CheckpointFormat = "trtllm"
    calib_data: str | Path | None = None  # None: `auto`; see nemo_build.calibration
    calib_size: int = DEFAULT_CALIB_SIZE
    calib_seq_len: int = DEFAULT_CALIB_SEQ_LEN
    device: str = "cuda"

    @property
    def quantized(self) -> bool:
        return self.quant == "fp8" or self.kv_cache == "fp8"

    @property
    def quant_algo(self) -> str | None:
        return "FP8" if self.quant == "fp8" else None

    @property
    def kv_cache_quant_algo(self) -> str | None:
        return "FP8" if self.kv_cache == "fp8" else None

    def fingerprint(self) -> dict[str, Any]:
        """The options that change the produced files (the calibration set enters by its own hash)."""
        fingerprint = {"quant": self.quant, "kv_cache": self.kv_cache, "tp": self.tp, "device": self.device}
        return fingerprint if self.format == "trtllm" else {**fingerprint, "format": self.format}


@dataclass
class CheckpointResult:
    out_dir: Path
    rebuilt: bool
    manifest: dict[str, Any]
    checks: list[VerifyCheck] = field(default_factory=list)
    warnings: tuple[str, ...] = ()


def build_checkpoint(
    model_dir: Path, out_dir: Path, options: CheckpointOptions, verify: bool = False
) -> CheckpointResult:
    source = load_source(model_dir)
    _check_tp(source, options.tp)
    if options.format not in FORMATS:
        raise BuildError(f"--format {options.format!r} is not accepted; use one of {', '.join(FORMATS)}")
    if options.format == "hf" and options.tp != 1:
        raise BuildError(
            f"--tp {options.tp} with --format hf: the Hugging Face export is not split by TP (the PyTorch runtime "
            "shards it at load, tensor_parallel_size); leave --tp at 1 and give the TP to the repository or profile"
        )
    from nemo_protocol.tekken import Tekkenizer

    tokenizer = Tekkenizer.from_file(source.tekken_path)
    calib = (
        load_calibration(tokenizer, options.calib_data, options.calib_size, options.calib_seq_len)
        if options.quantized or verify
        else None
    )
    source_files = [p.name for p in source.path.iterdir() if p.name in _source_file_names(source)]
    source_hash = mf.combined_sha256(mf.hash_files(source.path, source_files, desc="hashing source"))
    inputs = {
        "format": MANIFEST_FORMAT,
        "source_sha256": source_hash,
        "versions": _versions(),
        "options": options.fingerprint(),
        "calibration_sha256": calib.sha256 if calib is not None and options.quantized else None,
    }
    out_dir = Path(out_dir)
    if mf.is_up_to_date(out_dir, inputs):
        stored = mf.read_manifest(out_dir) or {}
        if not verify or stored.get("verification"):
            return CheckpointResult(out_dir, False, stored, warnings=source.warnings)
    return _build(source, out_dir, options, calib, inputs, verify)


def _build(
    source: SourceModel,
    out_dir: Path,
    options: CheckpointOptions,
    calib: CalibrationSet | None,
    inputs: dict[str, Any],
    verify: bool,
) -> CheckpointResult:
    device = resolve_device(options.device)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    model = load_model(source.path, device)
    timings["load_s"] = time.perf_counter() - started

    samples = verification_samples(calib.samples) if verify and calib is not None else []
    hf_reference = _float32_logits(model, samples) if verify else []

    config = quant_config(options.quant, options.kv_cache)
    fake_quant_reference: list[torch.Tensor] = []
    if config is not None:
        assert calib is not None
        started = time.perf_counter()
        model = calibrate(model, config, calib.samples)
        timings["calibration_s"] = time.perf_counter() - started

    with atomic_directory(out_dir) as staging:
        started = time.perf_counter()
        if options.format == "hf":
            export_hf(model, staging)
        else:
            export_checkpoint(model, staging, options.tp)
        timings["export_s"] = time.perf_counter() - started
        if verify and config is not None:
            # after the TensorRT-LLM export the fused layers (qkv, fc+gate) share the scales it wrote; after the
            # HF export the layers hold the FP8 codes it wrote, which the model is made to compute with
            if options.format == "hf":
                compute_with_exported_weights(model)
            fake_quant_reference = _fake_quantized_logits(model, samples)
        del model
        exported = _read_json(staging / "config.json")
        if options.format == "hf":
            check_export(staging, source.config, options.quant_algo, options.kv_cache_quant_algo)
        else:
            check_config(exported, source.config, options.tp, options.quant_algo, options.kv_cache_quant_algo)

        checks: list[VerifyCheck] = []
        if verify:
            started = time.perf_counter()
            produced = runtime_logits(staging, samples)
            checks = (
                quantized_checks(produced, fake_quant_reference, hf_reference)
                if config is not None
                else unquantized_checks(produced, hf_reference)
            )
            timings["verify_s"] = time.perf_counter() - started
            failed = [c for c in checks if not c.passed]
            if failed:
                raise BuildError(
                    "verification failed; the checkpoint was not written:\n  "
                    + "\n  ".join(c.describe() for c in checks)
                )
        files = mf.hash_files(staging, [p.name for p in staging.iterdir() if p.is_file()], desc="hashing output")
        manifest = {
            "kind": "nemo-build checkpoint",
            "inputs": inputs,
            "files": files,
            "paths": {"source": str(source.path), "calibration": calib.source if calib else None},
            "checkpoint": {
                "format": options.format,
                "tp_size": options.tp,
                "quant_algo": options.quant_algo,
                "kv_cache_quant_algo": options.kv_cache_quant_algo,
                "architecture": exported.get("architecture") or (exported.get("architectures") or [None])[0],
            },
            "calibration": None
            if calib is None or config is None
            else {
                "samples": len(calib.samples),
                "tokens": calib.num_tokens,
                "seq_len": calib.seq_len,
                "fallback_reason": calib.fallback_reason,
            },
            "timings": timings,
            "verification": [c.as_dict() for c in checks] or None,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        mf.write_manifest(staging, manifest)
    return CheckpointResult(out_dir, True, manifest, checks, source.warnings)


def _fake_quantized_logits(model: torch.nn.Module, samples: list[list[int]]) -> list[torch.Tensor]:
    """The fake-quantized model's logits, with the KV-cache scales the export writes (so it computes what was
    exported)."""
    match_exported_kv_scales(model)
    return _float32_logits(model, samples)


def _float32_logits(model: torch.nn.Module, samples: list[list[int]]) -> list[torch.Tensor]:
    """Reference logits computed in float32 (the bf16 weights upcast losslessly, then cast back)."""
    if not samples:
        return []
    model.float()
    try:
        return model_logits(model, samples)
    finally:
        model.to(torch.bfloat16)


def _check_tp(source: SourceModel, tp: int) -> None:
    heads = source.config["num_attention_heads"]
    kv_heads = source.config.get("num_key_value_heads", heads)
    if tp < 1 or heads % tp or (kv_heads % tp and tp % kv_heads):
        raise BuildError(
            f"--tp {tp} does not split {heads} query heads and {kv_heads} KV heads evenly; "
            f"use a TP size that divides {heads} (Mistral NeMo: 1, 2, 4 or 8)"
        )


def _source_file_names(source: SourceModel) -> set[str]:
    names = {"config.json", "tekken.json", "model.safetensors.index.json"}
    return names | {p.name for p in source.weight_files}


def _versions() -> dict[str, str]:
    return {
        name: version(dist) for name, dist in (("modelopt", "nvidia-modelopt"), ("transformers", "transformers"))
    } | {
        "torch": torch.__version__,
        "nemo_build": nemo_build.__version__,
    }


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def summary(result: CheckpointResult) -> str:
    """The readable end-of-run report."""
    m = result.manifest
    ckpt = m.get("checkpoint", {})
    lines = [
        f"checkpoint: {result.out_dir} ({'built' if result.rebuilt else 'up to date, nothing to do'})",
        f"  format {ckpt.get('format', 'trtllm')}, weights {ckpt.get('quant_algo') or 'bf16'}, "
        f"KV cache {ckpt.get('kv_cache_quant_algo') or 'bf16'}, TP {ckpt.get('tp_size')}, "
        f"files: {', '.join(sorted(m.get('files', {})))}",
    ]
    if m.get("calibration"):
        c = m["calibration"]
        lines.append(f"  calibration: {c['samples']} samples, {c['tokens']} tokens (max {c['seq_len']} per sample)")
        fallback = f"; Hub not used: {c['fallback_reason']}" if c.get("fallback_reason") else ""
        lines.append(f"  calibration data: {m.get('paths', {}).get('calibration')}{fallback}")
    if m.get("timings"):
        lines.append("  time: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f}s" for k, v in m["timings"].items()))
    for check in m.get("verification") or []:
        lines.append(
            f"  verify {check['name']}: relative error {check['relative_error']:.2e}, "
            f"greedy agreement {check['greedy_agreement']:.1%} over {check['positions']} positions "
            f"— {'ok' if check['passed'] else 'FAILED'}"
        )
    lines.extend(f"  warning: {w}" for w in result.warnings)
    return "\n".join(lines)
