"""Engine build: preflight judgements, the refusal on this GPU-less machine, engine manifest compatibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_build import manifest as mf
from nemo_build.cli import main
from nemo_build.engine import build_inputs, check_engine_compatible
from nemo_build.errors import BuildError
from nemo_build.preflight import Gpu, Machine, preflight_problems
from nemo_build.profiles import load_profile

H100 = Gpu("NVIDIA H100 80GB HBM3", (9, 0))
FP8_TP1 = {"mapping": {"tp_size": 1}, "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"}}


def machine(**changes: object) -> Machine:
    fields = {
        "gpus": (H100,),
        "trtllm_version": "1.2.1",
        "tensorrt_version": "10.14.1",
        "trtllm_build_on_path": True,
        "free_disk_bytes": 500 << 30,
    }
    fields.update(changes)
    return Machine(**fields)  # type: ignore[arg-type]


def problems(m: Machine, profile: str = "h100-fp8-tp1", config: dict | None = None) -> str:
    return "\n".join(preflight_problems(m, load_profile(profile), config or FP8_TP1, 13 << 30))


def test_a_ready_h100_passes() -> None:
    assert problems(machine()) == ""


@pytest.mark.parametrize(
    ("m", "profile", "config", "expected"),
    [
        (machine(gpus=()), "h100-fp8-tp1", None, "no NVIDIA GPU found"),
        (machine(gpus=(Gpu("NVIDIA A100-SXM4-80GB", (8, 0)),)), "h100-fp8-tp1", None, "FP8 needs 8.9"),
        (machine(gpus=(Gpu("NVIDIA L40S", (8, 9)),)), "h100-fp8-tp1", None, "targets H100 but this machine has"),
        (machine(trtllm_version=None, trtllm_build_on_path=False), "h100-fp8-tp1", None, "run inside nvcr.io"),
        (machine(trtllm_version="1.3.0"), "h100-fp8-tp1", None, "pins 1.2.1"),
        (machine(), "h100-fp8-tp2-128k", None, "re-export with `nemo-build checkpoint --tp 2`"),
        (machine(), "h100-fp8-tp1", {"mapping": {"tp_size": 1}, "quantization": {}}, "--quant fp8 --kv-cache fp8"),
        (machine(free_disk_bytes=1 << 30), "h100-fp8-tp1", None, "GiB free where the engines go"),
    ],
)
def test_each_preflight_failure_says_what_to_do(m: Machine, profile: str, config: dict | None, expected: str) -> None:
    assert expected in problems(m, profile, config)


def test_a100_builds_bf16_profiles() -> None:
    a100 = machine(gpus=(Gpu("NVIDIA A100-SXM4-80GB", (8, 0)),))
    bf16_tp2 = {"mapping": {"tp_size": 2}, "quantization": {"quant_algo": None, "kv_cache_quant_algo": None}}
    assert problems(a100, "a100-bf16-tp2", bf16_tp2) == ""


def test_engine_command_stops_early_on_this_machine(
    fp8_checkpoint_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["engine", "--checkpoint", str(fp8_checkpoint_dir), "--out", str(tmp_path / "engine")])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot build engines here" in err and "TensorRT-LLM is not installed here" in err
    assert not (tmp_path / "engine").exists()


def test_engine_command_needs_a_built_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["engine", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "e")]) == 2
    assert "not a TensorRT-LLM checkpoint" in capsys.readouterr().err


def test_serving_refuses_engines_from_another_gpu_or_version(fp8_checkpoint_dir: Path, tmp_path: Path) -> None:
    checkpoint_manifest = mf.read_manifest(fp8_checkpoint_dir)
    assert checkpoint_manifest is not None
    engine_dir = tmp_path / "engine"
    engine_dir.mkdir()
    (engine_dir / "rank0.engine").write_bytes(b"engine")
    inputs = build_inputs(checkpoint_manifest, load_profile("h100-fp8-tp1"), machine())
    mf.write_manifest(engine_dir, {"kind": "nemo-build engine", "inputs": inputs, "files": {}})
    stored = json.loads((engine_dir / "manifest.json").read_text())
    assert stored["inputs"]["gpu"] == H100.name and stored["inputs"]["profile"]["name"] == "h100-fp8-tp1"
    assert stored["inputs"]["checkpoint_inputs"]["calibration_sha256"]

    assert check_engine_compatible(engine_dir, H100.name, "1.2.1")["inputs"] == inputs
    with pytest.raises(BuildError, match="built on NVIDIA H100 80GB HBM3, this GPU is NVIDIA L40S"):
        check_engine_compatible(engine_dir, "NVIDIA L40S", "1.2.1")
    with pytest.raises(BuildError, match=r"TensorRT-LLM 1\.2\.1, this is 1\.3\.0"):
        check_engine_compatible(engine_dir, H100.name, "1.3.0")
    with pytest.raises(BuildError, match="no engine build manifest"):
        check_engine_compatible(tmp_path, H100.name, "1.2.1")
