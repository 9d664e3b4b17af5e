"""`make gpu-check` stops at the first failed step, names it and starts nothing after it.

Runs the real command in-process. On this GPU-less machine preflight fails for real; the GPU cases put a
stand-in `nvidia-smi` (a shell script printing what the real one prints) first on PATH, so the real
preflight judges an A100 or an H200.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from nemo_build.preflight import Gpu, probe_gpus
from nemo_ops.gpu_check.cli import main
from nemo_ops.gpu_check.report import default_results_dir

needs_no_gpu = pytest.mark.skipif(bool(probe_gpus()), reason="this machine has an NVIDIA GPU")


def _model_dir(root: Path, *files: str) -> Path:
    model = root / "model"
    model.mkdir()
    for name in files:
        (model / name).write_text("{}")
    return model


def _check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _fake_nvidia_smi(directory: Path, monkeypatch: pytest.MonkeyPatch, name: str, cap: str) -> None:
    directory.mkdir()
    script = directory / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f'  *name,compute_cap*) echo "{name}, {cap}" ;;\n'
        '  *driver_version*) echo "580.65.06, 81559 MiB" ;;\n'
        f'  *) echo "GPU 0: {name} (UUID: GPU-0)" ;;\n'
        "esac\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")


@needs_no_gpu
def test_without_a_gpu_it_stops_at_preflight_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model_dir(tmp_path, "config.json", "tekken.json", "model.safetensors")
    out, results = tmp_path / "out", tmp_path / "results"
    status, stdout, stderr = _check(capsys, "--model-dir", str(model), "--out", str(out), "--results-dir", str(results))
    assert status == 1
    assert "gpu-check: step 1 (preflight) failed:" in stderr
    assert "no NVIDIA GPU found" in stderr and "make demo" in stderr
    assert "step 2/7" not in stdout and "step 3/7" not in stdout
    assert not out.exists() and not results.exists()  # no build, no server (their logs go to OUT), no report


@pytest.mark.parametrize(
    ("present", "named"),
    [
        (("config.json",), ["no tekken.json"]),
        (("tekken.json",), ["no config.json"]),
        ((), ["no config.json", "no tekken.json", "no *.safetensors"]),
    ],
)
def test_preflight_names_what_model_dir_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], present: tuple[str, ...], named: list[str]
) -> None:
    model = _model_dir(tmp_path, *present)
    status, _, stderr = _check(capsys, "--model-dir", str(model), "--out", str(tmp_path / "out"))
    assert status == 1 and "gpu-check: step 1 (preflight) failed:" in stderr
    for what in named:
        assert f"MODEL_DIR {model} has {what}" in stderr


def test_preflight_names_an_unknown_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _model_dir(tmp_path, "config.json", "tekken.json")
    status, _, stderr = _check(capsys, "--model-dir", str(model), "--profile", "h900-fp4", "--out", str(tmp_path))
    assert status == 1 and "step 1 (preflight) failed" in stderr
    assert "no build profile 'h900-fp4'; available: " in stderr and "h100-fp8-tp1" in stderr


def test_fp8_profile_on_an_a100_is_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_nvidia_smi(tmp_path / "bin", monkeypatch, "NVIDIA A100-SXM4-80GB", "8.0")
    model = _model_dir(tmp_path, "config.json", "tekken.json", "model.safetensors")
    status, stdout, stderr = _check(
        capsys, "--model-dir", str(model), "--profile", "h100-fp8-tp1", "--out", str(tmp_path / "out")
    )
    assert status == 1 and "step 1 (preflight) failed" in stderr
    assert "GPU: NVIDIA A100-SXM4-80GB, compute capability 8.0, driver 580.65.06" in stdout
    assert "profile h100-fp8-tp1 targets H100 but this machine has NVIDIA A100-SXM4-80GB" in stderr
    assert "compute capability 8.0; FP8 needs 8.9 or newer" in stderr
    assert "no NVIDIA GPU" not in stderr and "make demo" not in stderr


def test_a_matching_gpu_passes_the_gpu_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_nvidia_smi(tmp_path / "bin", monkeypatch, "NVIDIA H100 80GB HBM3", "9.0")
    model = _model_dir(tmp_path, "config.json")
    status, _, stderr = _check(capsys, "--model-dir", str(model), "--out", str(tmp_path / "out"))
    assert status == 1 and "step 1 (preflight) failed" in stderr
    assert "targets H100" not in stderr and "FP8 needs" not in stderr
    assert f"MODEL_DIR {model} has no tekken.json" in stderr


def test_skip_build_needs_a_rendered_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _model_dir(tmp_path, "config.json", "tekken.json")
    status, _, stderr = _check(capsys, "--model-dir", str(model), "--out", str(tmp_path / "out"), "--skip-build")
    assert status == 1 and "step 1 (preflight) failed" in stderr
    assert f"{tmp_path / 'out' / 'repository'} is not a rendered model repository" in stderr


def test_a_failing_later_step_is_named_and_nothing_after_it_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model_dir(tmp_path, "config.json", "tekken.json")
    not_a_repository = tmp_path / "empty"
    not_a_repository.mkdir()
    status, stdout, stderr = _check(
        capsys, "--model-dir", str(model), "--skip-preflight", "--repository", str(not_a_repository),
        "--out", str(tmp_path / "out"), "--results-dir", str(tmp_path / "results"),
    )  # fmt: skip
    assert status == 1
    assert "gpu-check: step 3 (serve) failed:" in stderr and "is not a rendered model repository" in stderr
    assert "step 4/7" not in stdout and not (tmp_path / "results").exists()


def test_help_says_what_it_does_needs_and_writes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for expected in ("preflight", "nemo-bench", "make gpu-check MODEL_DIR=", "docs/gpu/<UTC date>-<gpu>-<profile>",
                     "NVIDIA container toolkit", "--skip-preflight", "--repository", "--ready-timeout",
                     "--results-root", "--bench-concurrency", "Exit status"):  # fmt: skip
        assert expected in text


def test_results_folder_is_dated_and_named_after_gpu_and_profile(tmp_path: Path) -> None:
    day = dt.date(2026, 7, 1)
    gpus = (Gpu("NVIDIA H100 80GB HBM3", (9, 0)),)
    first = default_results_dir(day, gpus, "h100-fp8-tp1", tmp_path)
    assert first.name == "2026-07-01-h100-80gb-hbm3-h100-fp8-tp1"
    first.mkdir()
    assert default_results_dir(day, gpus, "h100-fp8-tp1", tmp_path).name == f"{first.name}-2"
    assert default_results_dir(day, (), "cpu", tmp_path).name == "2026-07-01-no-gpu-cpu"


def test_bench_concurrency_must_be_positive_integers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-dir", "x", "--bench-concurrency", "1,0"])
    assert exit_info.value.code == 2
    assert "--bench-concurrency" in capsys.readouterr().err
