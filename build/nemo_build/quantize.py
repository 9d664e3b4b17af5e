"""ModelOpt post-training quantization and TensorRT-LLM checkpoint export (the upstream ``quantize.py`` recipe).

FP8: ``FP8_DEFAULT_CFG`` (per-tensor FP8 E4M3 weights and activations of every linear layer except
``lm_head``), plus ``FP8_KV_CFG``'s K/V quantizers for an FP8 KV cache; max calibration over the
calibration set. bf16: no quantizers (or only the KV ones). Export: ``export_tensorrt_llm_checkpoint``
with decoder type ``llama`` (TensorRT-LLM runs Mistral as Llama) to ``tp`` ranks for the engine runtime, or
``export_hf_checkpoint`` (ModelOpt's unified Hugging Face format) for the PyTorch runtime.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from nemo_build.errors import BuildError

Precision = Literal["fp8", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp8", "bf16")


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise BuildError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu (slow for 12B)")
    if device not in ("cuda", "cpu"):
        raise BuildError(f"--device {device!r} is not accepted; use cuda or cpu")
    return torch.device(device)


def load_model(model_dir: Path, device: torch.device) -> torch.nn.Module:
    """The Hugging Face model in bf16 (transformers shows a progress bar over the shards)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.bfloat16, low_cpu_mem_usage=True)
    return model.to(device).eval()  # type: ignore[arg-type]  # transformers wraps .to untyped


def quant_config(weights: Precision, kv_cache: Precision) -> dict[str, Any] | None:
    """The ModelOpt config for the requested precisions, or None when nothing is quantized."""
    import modelopt.torch.quantization as mtq

    if weights == "bf16" and kv_cache == "bf16":
        return None
    if weights == "fp8":
        config = copy.deepcopy(mtq.FP8_DEFAULT_CFG)
    else:  # only the KV cache: every other quantizer stays off
        config = {"quant_cfg": {"*": {"enable": False}}, "algorithm": "max"}
    if kv_cache == "fp8":
        kv = {k: v for k, v in mtq.FP8_KV_CFG["quant_cfg"].items() if k != "default"}
        config["quant_cfg"].update(copy.deepcopy(kv))
    return config


def calibrate(model: torch.nn.Module, config: dict[str, Any], samples: Sequence[Sequence[int]]) -> torch.nn.Module:
    """Insert quantizers and run the calibration set through the model once (one progress step per sample)."""
    import modelopt.torch.quantization as mtq

    device = next(model.parameters()).device

    def forward_loop(m: torch.nn.Module) -> None:
        for sample in tqdm(samples, desc="calibrating", unit="sample"):
            m(torch.tensor([list(sample)], device=device))

    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return mtq.quantize(model, config, forward_loop)


def export_checkpoint(model: torch.nn.Module, out_dir: Path, tp: int) -> None:
    """Write ``config.json`` and ``rank{0..tp-1}.safetensors``; a bar follows the rank files as they land."""
    from modelopt.torch.export import export_tensorrt_llm_checkpoint

    done = threading.Event()

    def follow(bar: tqdm) -> None:
        while not done.wait(0.2):
            bar.n = len(list(out_dir.glob("rank*.safetensors")))
            bar.refresh()

    with tqdm(total=tp, desc="exporting", unit="rank") as bar:
        watcher = threading.Thread(target=follow, args=(bar,), daemon=True)
        watcher.start()
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                export_tensorrt_llm_checkpoint(
                    model, "llama", torch.bfloat16, out_dir, inference_tensor_parallel=tp, inference_pipeline_parallel=1
                )
        finally:
            done.set()
            watcher.join()
        bar.n = tp
        bar.refresh()


def export_hf(model: torch.nn.Module, out_dir: Path) -> None:
    """ModelOpt's unified Hugging Face export (what TensorRT-LLM's PyTorch backend loads): ``config.json``, the
    safetensors (FP8 ``weight`` with ``weight_scale`` / ``input_scale``, ``k_proj.k_scale`` / ``v_proj.v_scale``)
    and, when anything is quantized, ``hf_quant_config.json``. Not split by TP: the runtime shards at load."""
    from modelopt.torch.export import export_hf_checkpoint

    with tqdm(total=1, desc="exporting", unit="checkpoint") as bar:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            export_hf_checkpoint(model, export_dir=out_dir)
        bar.update(1)


def compute_with_exported_weights(model: torch.nn.Module) -> None:
    """After ``export_hf``: make the model compute with the FP8 weights the export wrote.

    ModelOpt's HF export replaces each quantized layer's weight by its FP8 codes (with a ``weight_scale`` buffer)
    and leaves the weight quantizer on, so the model no longer computes anything meaningful. Each such weight
    becomes codes x ``weight_scale`` again, in bf16 (the dtype load_model loads and the export keeps), with its
    weight quantizer off; the input and KV-cache quantizers stay as they are: the model then computes what the
    checkpoint holds, as ModelOpt's fake quantization computes it.
    """
    for module in model.modules():
        weight = module._parameters.get("weight")
        scale = getattr(module, "weight_scale", None)
        if weight is None or scale is None or weight.dtype != torch.float8_e4m3fn:
            continue
        dequantized = weight.float() * scale.float()
        module._parameters["weight"] = torch.nn.Parameter(dequantized.to(torch.bfloat16), requires_grad=False)
        quantizer: Any = module.weight_quantizer
        quantizer.disable()


def match_exported_kv_scales(model: torch.nn.Module) -> None:
    """Give the fake-quantized model the KV-cache scales the export wrote.

    ModelOpt 0.37 exports ``max(amax / 448, 1.0)`` as the FP8 KV-cache scale (its recommended default),
    so TensorRT-LLM quantizes K/V with scale 1.0 unless they exceed the FP8 range. Raising the K/V
    quantizers' amax to at least 448 makes the fake-quantized model compute exactly that.
    """
    for module in model.modules():
        for name in ("k_bmm_quantizer", "v_bmm_quantizer"):
            quantizer = getattr(module, name, None)
            if quantizer is not None and quantizer.is_enabled and quantizer.amax is not None:
                quantizer.amax = torch.clamp(quantizer.amax, min=float(quantizer.maxbound))
