"""`nemo-build checkpoint`: validation, FP8/bf16 export, verification figures, manifest and no-op re-runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nemo_build import manifest as mf
from nemo_build.cli import main
from nemo_build.errors import BuildError
from nemo_build.source import load_source
from nemo_build.trtllm_config import check_config


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["checkpoint", *args, "--device", "cpu"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fp8_tp2_verify_manifest_and_no_op_rerun(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fp8-tp2"
    args = ["--model-dir", str(tiny_model_dir), "--out", str(out), "--tp", "2", "--verify"]
    code, stdout, _ = run(capsys, *args)
    assert code == 0, stdout
    assert "(built)" in stdout and "weights FP8, KV cache FP8, TP 2" in stdout
    assert "verify checkpoint vs ModelOpt fake-quantized model" in stdout and "FAILED" not in stdout

    config = json.loads((out / "config.json").read_text())
    assert config["mapping"]["tp_size"] == 2 and config["rotary_base"] == 1_000_000.0
    assert config["quantization"]["quant_algo"] == "FP8" and config["quantization"]["kv_cache_quant_algo"] == "FP8"
    manifest = mf.read_manifest(out)
    assert manifest is not None
    assert set(manifest["files"]) >= {"config.json", "rank0.safetensors", "rank1.safetensors"}
    assert manifest["files"]["rank1.safetensors"] == mf.sha256_file(out / "rank1.safetensors")
    inputs = manifest["inputs"]
    assert inputs["options"] == {"quant": "fp8", "kv_cache": "fp8", "tp": 2, "device": "cpu"}
    assert set(inputs["versions"]) == {"modelopt", "transformers", "torch", "nemo_build"}
    assert len(inputs["source_sha256"]) == 64 and len(inputs["calibration_sha256"]) == 64
    fake, vs_bf16 = manifest["verification"]
    assert fake["passed"] and fake["greedy_agreement"] >= 0.95 and fake["relative_error"] < 0.05
    assert vs_bf16["passed"] and vs_bf16["greedy_agreement"] >= 0.8
    assert {"load_s", "calibration_s", "export_s", "verify_s"} <= set(manifest["timings"])
    stamp = (out / "rank0.safetensors").stat().st_mtime_ns

    code, stdout, _ = run(capsys, *args)
    assert code == 0 and "up to date, nothing to do" in stdout and "verify checkpoint vs" in stdout
    assert (out / "rank0.safetensors").stat().st_mtime_ns == stamp

    code, stdout, _ = run(capsys, *args, "--calib-seq-len", "64")  # other calibration input: rebuild
    assert code == 0 and "(built)" in stdout
    assert mf.read_manifest(out)["inputs"]["calibration_sha256"] != inputs["calibration_sha256"]

    (out / "rank1.safetensors").write_bytes(b"corrupted")  # damaged output: rebuild
    code, stdout, _ = run(capsys, *args, "--calib-seq-len", "64")
    assert code == 0 and "(built)" in stdout


def test_bf16_export_reproduces_the_hf_model(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bf16"
    code, stdout, _ = run(capsys, "--model-dir", str(tiny_model_dir), "--out", str(out), "--quant", "bf16", "--verify")
    assert code == 0, stdout
    (check,) = mf.read_manifest(out)["verification"]
    assert check["name"] == "checkpoint vs Hugging Face model"
    assert check["relative_error"] < 1e-5 and check["greedy_agreement"] == 1.0
    assert mf.read_manifest(out)["inputs"]["calibration_sha256"] is None
    assert json.loads((out / "config.json").read_text())["quantization"]["quant_algo"] is None


def test_the_fp8_fixture_passed_verification(fp8_checkpoint_dir: Path) -> None:
    checks = mf.read_manifest(fp8_checkpoint_dir)["verification"]
    assert [c["passed"] for c in checks] == [True, True]


def test_source_validation_errors(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    code, _, err = run(capsys, "--model-dir", str(tmp_path / "missing"), "--out", out)
    assert code == 2 and "does not exist" in err

    code, _, err = run(capsys, "--model-dir", str(tmp_path), "--out", out)
    assert code == 2 and "not a Hugging Face model directory (no config.json)" in err

    foreign = tmp_path / "gpt2"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "vocab_size": 50257}))
    code, _, err = run(capsys, "--model-dir", str(foreign), "--out", out)
    assert code == 2 and "GPT2LMHeadModel" in err and "accepted: MistralForCausalLM" in err

    no_tokenizer = tmp_path / "no-tekken"
    shutil.copytree(tiny_model_dir, no_tokenizer)
    (no_tokenizer / "tekken.json").unlink()
    code, _, err = run(capsys, "--model-dir", str(no_tokenizer), "--out", out)
    assert code == 2 and "has no tekken.json" in err

    config = json.loads((tiny_model_dir / "config.json").read_text())
    (no_tokenizer / "tekken.json").write_text("{}")
    (no_tokenizer / "config.json").write_text(json.dumps({**config, "vocab_size": 32000}))
    code, _, err = run(capsys, "--model-dir", str(no_tokenizer), "--out", out)
    assert code == 2 and "vocab_size is 32000" in err

    code, _, err = run(capsys, "--model-dir", str(tiny_model_dir), "--out", out, "--tp", "3")
    assert code == 2 and "--tp 3 does not split 8 query heads and 2 KV heads evenly" in err
    assert not Path(out).exists()


def test_other_mistral_sizes_only_warn(tiny_model_dir: Path) -> None:
    (warning,) = load_source(tiny_model_dir).warnings
    assert "not Mistral NeMo 12B dimensions" in warning and "hidden_size=64 (NeMo 12B: 5120)" in warning


def test_exported_config_is_checked_field_by_field(fp8_checkpoint_dir: Path, trained_model_dir: Path) -> None:
    exported = json.loads((fp8_checkpoint_dir / "config.json").read_text())
    hf = json.loads((trained_model_dir / "config.json").read_text())
    check_config(exported, hf, 1, "FP8", "FP8")

    like_transformers_5 = {k: v for k, v in exported.items() if k != "rotary_base"}
    wrong = {**exported, "head_size": 8, "norm_epsilon": 1e-6}
    with pytest.raises(BuildError, match="rotary_base is missing"):
        check_config(like_transformers_5, hf, 1, "FP8", "FP8")
    with pytest.raises(BuildError) as err:
        check_config(wrong, hf, 2, None, "FP8")
    for expected in ("head_size is 8", "norm_epsilon is 1e-06", "mapping.tp_size is 1, requested 2", "quant_algo"):
        assert expected in str(err.value)


@pytest.mark.parametrize("command", ["tiny-model", "checkpoint", "engine", "hf-tokenizer"])
def test_help_describes_each_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: nemo-build " + command in capsys.readouterr().out
