"""The FP8 checkpoint judged against its source model, not against figures it wrote about itself.

* the stored tensors are what TensorRT-LLM's FP8 loader reads: `float8_e4m3fn` weights with float32 scales,
  KV-cache scales per layer, a bf16 `lm_head`;
* dequantized weights are the Hugging Face weights (gate_proj in `mlp.fc`, up_proj in `mlp.gate`) to FP8
  precision;
* the verifier fails a checkpoint whose weights are wired wrong, so its passing on the real one means something.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from nemo_build.errors import BuildError
from nemo_build.verify import quantized_checks, runtime_logits

FP8_LINEARS = ("attention.qkv", "attention.dense", "mlp.fc", "mlp.gate", "mlp.proj")
# e4m3 keeps 3 mantissa bits: each element is within 2^-4 of its value, the norm of the error far less.
FP8_MAX_RELATIVE_WEIGHT_ERROR = 0.05


def checkpoint_tensors(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(checkpoint_dir / "rank0.safetensors"), "pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (safe_open is no dict)


def hf_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(model_dir.glob("model-*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


def layer_count(checkpoint_dir: Path) -> int:
    return int(json.loads((checkpoint_dir / "config.json").read_text())["num_hidden_layers"])


def test_fp8_weights_are_stored_as_e4m3_with_float32_scales(fp8_checkpoint_dir: Path) -> None:
    tensors = checkpoint_tensors(fp8_checkpoint_dir)
    for layer in range(layer_count(fp8_checkpoint_dir)):
        prefix = f"transformer.layers.{layer}."
        for linear in FP8_LINEARS:
            assert tensors[f"{prefix}{linear}.weight"].dtype == torch.float8_e4m3fn, linear
            for scale in ("weights_scaling_factor", "activation_scaling_factor"):
                value = tensors[f"{prefix}{linear}.{scale}"]
                assert value.dtype == torch.float32 and value.shape == (1,) and float(value) > 0, (linear, scale)
        kv_scale = tensors[f"{prefix}attention.kv_cache_scaling_factor"]
        assert kv_scale.dtype == torch.float32 and float(kv_scale) > 0
    assert tensors["lm_head.weight"].dtype == torch.bfloat16  # exclude_modules: lm_head
    assert tensors["transformer.vocab_embedding.weight"].dtype == torch.bfloat16
    quantization = json.loads((fp8_checkpoint_dir / "config.json").read_text())["quantization"]
    assert (quantization["quant_algo"], quantization["kv_cache_quant_algo"]) == ("FP8", "FP8")


def test_dequantized_weights_are_the_source_weights(fp8_checkpoint_dir: Path, trained_model_dir: Path) -> None:
    exported, source = checkpoint_tensors(fp8_checkpoint_dir), hf_tensors(trained_model_dir)
    for layer in range(layer_count(fp8_checkpoint_dir)):
        hf = f"model.layers.{layer}."
        expected = {
            "attention.qkv": torch.cat([source[f"{hf}self_attn.{p}_proj.weight"] for p in "qkv"]),
            "attention.dense": source[f"{hf}self_attn.o_proj.weight"],
            "mlp.fc": source[f"{hf}mlp.gate_proj.weight"],  # the SiLU branch
            "mlp.gate": source[f"{hf}mlp.up_proj.weight"],
            "mlp.proj": source[f"{hf}mlp.down_proj.weight"],
        }
        for linear, reference in expected.items():
            name = f"transformer.layers.{layer}.{linear}"
            weight = exported[f"{name}.weight"].float() * exported[f"{name}.weights_scaling_factor"]
            error = float((weight - reference.float()).norm() / reference.float().norm())
            assert error < FP8_MAX_RELATIVE_WEIGHT_ERROR, (name, error)
    assert torch.equal(exported["lm_head.weight"], source["lm_head.weight"])


def test_verification_passes_the_real_checkpoint_against_the_source_model(
    fp8_checkpoint_dir: Path, verification_set: tuple[list[list[int]], list[torch.Tensor]]
) -> None:
    samples, hf_logits = verification_set
    produced = runtime_logits(fp8_checkpoint_dir, samples)
    _, vs_source = quantized_checks(produced, hf_logits, hf_logits)
    assert vs_source.passed, vs_source.describe()


def swap_mlp_branches(checkpoint_dir: Path) -> None:
    """Wire gate_proj and up_proj the wrong way round: a plausible export bug with every shape still right."""
    tensors = checkpoint_tensors(checkpoint_dir)
    for layer in range(layer_count(checkpoint_dir)):
        prefix = f"transformer.layers.{layer}.mlp."
        for suffix in ("weight", "weights_scaling_factor", "activation_scaling_factor"):
            tensors[f"{prefix}fc.{suffix}"], tensors[f"{prefix}gate.{suffix}"] = (
                tensors[f"{prefix}gate.{suffix}"],
                tensors[f"{prefix}fc.{suffix}"],
            )
    save_file(tensors, str(checkpoint_dir / "rank0.safetensors"))


def test_verification_fails_a_checkpoint_with_swapped_mlp_branches(
    fp8_checkpoint_dir: Path, tmp_path: Path, verification_set: tuple[list[list[int]], list[torch.Tensor]]
) -> None:
    broken = tmp_path / "swapped"
    shutil.copytree(fp8_checkpoint_dir, broken)
    swap_mlp_branches(broken)
    samples, hf_logits = verification_set
    checks = quantized_checks(runtime_logits(broken, samples), hf_logits, hf_logits)
    assert not any(check.passed for check in checks), [check.describe() for check in checks]


def test_checkpoint_verify_refuses_a_broken_export(
    trained_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nemo_build import checkpoint

    real_export = checkpoint.export_checkpoint

    def export_then_break(model: torch.nn.Module, out: Path, tp: int) -> None:
        real_export(model, out, tp)
        swap_mlp_branches(out)

    monkeypatch.setattr(checkpoint, "export_checkpoint", export_then_break)
    out = tmp_path / "ckpt"
    options = checkpoint.CheckpointOptions(
        quant="fp8", kv_cache="fp8", device="cpu", calib_size=16, calib_data="shipped"
    )
    with pytest.raises(BuildError, match="verification failed") as failure:
        checkpoint.build_checkpoint(trained_model_dir, out, options, verify=True)
    assert "FAILED" in str(failure.value)
    assert not out.exists()
