"""`make gpu-check` with either runtime, or both side by side: which profiles it runs, what its preflight asks of
each runtime, the steps it plans, and the side-by-side report.

The preflight cases run the real command in-process on the stand-in GPU host of tests/gpu_host (`nvidia-smi`,
`trtllm-build`, TensorRT-LLM's package metadata), with a `python3` that has every package of this venv but this
project (as the NGC image's) and no docker or tritonserver on PATH, so each case ends at preflight with the problems
it names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nemo_build.profiles import load_profile
from nemo_ops.gpu_check.accuracy import model_kind
from nemo_ops.gpu_check.cli import STEP_NAMES, main
from nemo_ops.gpu_check.compare import comparison, render_comparison
from nemo_ops.gpu_check.plan import PlanError, build_title, planned_steps, profile_runs
from nemo_ops.gpu_check.report import write_comparison
from tests.gpu_host.host import GpuHost, python_without_this_project
from tests.unit.ops.repositories import manifest_only_repository

# --------------------------------------------------------------------------- which profiles run


def test_runtimes_runs_the_profile_and_its_twin_in_the_order_given(tmp_path: Path) -> None:
    runs = profile_runs("h100-fp8-tp1", tmp_path, runtimes="engine,pytorch")
    assert [run.profile for run in runs] == ["h100-fp8-tp1", "h100-fp8-tp1-pytorch"]
    assert [run.out for run in runs] == [tmp_path / "h100-fp8-tp1", tmp_path / "h100-fp8-tp1-pytorch"]
    assert all(run.repository is None for run in runs)  # both are built
    backwards = profile_runs("h100-fp8-tp1-pytorch", tmp_path, runtimes="pytorch,engine")
    assert [run.profile for run in backwards] == ["h100-fp8-tp1-pytorch", "h100-fp8-tp1"]
    assert [run.profile for run in profile_runs("h100-fp8-tp1", tmp_path, runtimes="pytorch")] == [
        "h100-fp8-tp1-pytorch"
    ]


def test_one_profile_keeps_out_as_given(tmp_path: Path) -> None:
    [run] = profile_runs("h100-fp8-tp1", tmp_path, skip_build=True)
    assert run.out == tmp_path and run.repository == tmp_path / "repository"


def test_two_named_profiles_each_get_their_own_out(tmp_path: Path) -> None:
    runs = profile_runs("h100-fp8-tp1-pytorch, h100-fp8-tp1", tmp_path, skip_build=True)
    assert [run.repository for run in runs] == [
        tmp_path / "h100-fp8-tp1-pytorch" / "repository",
        tmp_path / "h100-fp8-tp1" / "repository",
    ]


def test_repositories_pair_with_the_profiles(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    runs = profile_runs("h100-fp8-tp1", tmp_path, repositories=(first, second))
    assert [(run.profile, run.repository, run.out) for run in runs] == [
        ("h100-fp8-tp1", first, tmp_path),
        ("h100-fp8-tp1", second, tmp_path),
    ]
    with pytest.raises(PlanError, match="names 3 repositories for 2 profiles: one each"):
        profile_runs("h100-fp8-tp1,h200-fp8-tp1", tmp_path, repositories=(first, second, tmp_path))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--runtimes", "engine,gpu"], "--runtimes is 'engine,gpu': comma-separated, each once, from engine, pytorch"),
        (["--runtimes", "engine,engine"], "each once"),
        (
            ["--profile", "a100-bf16-tp2", "--runtimes", "engine,pytorch"],
            "profile a100-bf16-tp2 has none for the pytorch runtime with the same GPU, precision, KV cache, TP and "
            "limits",
        ),
        (["--profile", "h100-fp8-tp1,h200-fp8-tp1", "--runtimes", "engine"], "--runtimes takes one --profile"),
        (["--profile", "h100-fp8-tp1,h100-fp8-tp1"], "names a profile twice"),
        (["--profile", "h900", "--runtimes", "engine"], "no build profile 'h900'"),
    ],
)
def test_a_plan_that_cannot_run_is_a_usage_error(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-dir", str(tmp_path), "--out", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the steps planned


def test_the_steps_planned_for_one_and_for_two_profiles(tmp_path: Path) -> None:
    [one] = profile_runs("h100-fp8-tp1-pytorch", tmp_path)
    assert planned_steps([one]) == list(STEP_NAMES)
    both = profile_runs("h100-fp8-tp1", tmp_path, runtimes="engine,pytorch")
    assert planned_steps(both) == [
        "preflight",
        *(f"{step} h100-fp8-tp1" for step in ("build", "serve", "gateway", "smoke", "bench")),
        *(f"{step} h100-fp8-tp1-pytorch" for step in ("build", "serve", "gateway", "smoke", "bench")),
        "compare",
        "report",
    ]


def test_the_build_step_says_what_each_runtime_builds() -> None:
    assert build_title(load_profile("h100-fp8-tp1")) == (
        "scripts/make_engine.sh: FP8 checkpoint → trtllm-build engines → repository"
    )
    assert build_title(load_profile("h100-fp8-tp1-pytorch")) == (
        "scripts/make_engine.sh: Hugging Face FP8 checkpoint → repository (LLM API, no engines)"
    )
    assert build_title(load_profile("a100-bf16-tp2")).startswith("scripts/make_engine.sh: bf16 checkpoint")


# --------------------------------------------------------------------------- preflight per runtime


@pytest.fixture(scope="module")
def image_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A python3 with this venv's packages but not this project, as the NGC image has one."""
    return python_without_this_project(tmp_path_factory.mktemp("python"))


def _on_gpu_host(
    root: Path, monkeypatch: pytest.MonkeyPatch, image_python: Path, *, trtllm: str | None = "1.2.1"
) -> GpuHost:
    """The stand-in H100 host, python3 with TensorRT-LLM ``trtllm`` (None: without it); no docker, no tritonserver."""
    host = GpuHost(root / "host")
    env = host.env({"PATH": f"{image_python}{os.pathsep}/usr/bin{os.pathsep}/bin"})
    if trtllm is None:
        env["PYTHONPATH"] = ""
    elif trtllm != "1.2.1":
        site = root / "other-site" / f"tensorrt_llm-{trtllm}.dist-info"
        site.mkdir(parents=True)
        (site / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tensorrt_llm\nVersion: {trtllm}\n")
        env["PYTHONPATH"] = str(site.parent)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if trtllm is None:
        (host.bin / "trtllm-build").unlink()
    return host


def _model(root: Path) -> Path:
    model = root / "model"
    model.mkdir(exist_ok=True)
    for name in ("config.json", "tekken.json"):
        (model / name).write_text("{}")
    return model  # no *.safetensors: every case ends at preflight, whatever else passes


def _preflight(capsys: pytest.CaptureFixture[str], root: Path, *argv: str) -> tuple[str, str]:
    status = main(["--model-dir", str(_model(root)), "--out", str(root / "out"), *argv])
    captured = capsys.readouterr()
    assert status == 1 and "gpu-check: step 1 (preflight) failed:" in captured.err
    assert "step 2/" not in captured.out
    return captured.out, captured.err


def test_pytorch_preflight_builds_with_the_local_llm_api_and_needs_no_trtllm_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image_python: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = _on_gpu_host(tmp_path, monkeypatch, image_python)
    (host.bin / "trtllm-build").unlink()  # the pytorch runtime never runs it
    out, err = _preflight(capsys, tmp_path, "--profile", "h100-fp8-tp1-pytorch")
    assert "profile: h100-fp8-tp1-pytorch (pytorch runtime, H100, fp8, KV fp8, TP 1)" in out
    assert "has no *.safetensors" in err
    assert "trtllm-build" not in err and "tensorrt_llm Python package" not in err
    # python3 builds; only serving needs docker here (no local tritonserver)
    assert "docker is not installed; without tensorrt_llm (python3) and tritonserver here" in err
    assert "to serve: install docker" in err


def test_pytorch_preflight_without_tensorrt_llm_builds_and_serves_in_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image_python: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _on_gpu_host(tmp_path, monkeypatch, image_python, trtllm=None)
    _, err = _preflight(capsys, tmp_path, "--profile", "h100-fp8-tp1-pytorch")
    assert "docker is what runs nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3 to build and serve" in err
    assert "trtllm-build" not in err


def test_pytorch_preflight_refuses_a_tensorrt_llm_older_than_the_llm_api_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image_python: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _on_gpu_host(tmp_path, monkeypatch, image_python, trtllm="1.1.0")
    _, err = _preflight(capsys, tmp_path, "--profile", "h100-fp8-tp1-pytorch")
    assert "TensorRT-LLM 1.1.0 is installed; the pytorch runtime uses the LLM API as TensorRT-LLM 1.2 and newer" in err


def test_engine_preflight_still_holds_trtllm_build_to_the_pinned_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image_python: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _on_gpu_host(tmp_path, monkeypatch, image_python, trtllm="1.3.0")
    _, err = _preflight(capsys, tmp_path, "--profile", "h100-fp8-tp1")
    assert "TensorRT-LLM 1.3.0 is installed but this project pins 1.2.1" in err
    assert "LLM API" not in err


def test_both_runtimes_are_judged_at_once_each_by_its_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image_python: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _on_gpu_host(tmp_path, monkeypatch, image_python, trtllm="1.3.0")
    out, err = _preflight(capsys, tmp_path, "--runtimes", "engine,pytorch")
    assert "profile: h100-fp8-tp1 (engine runtime" in out and "profile: h100-fp8-tp1-pytorch (pytorch runtime" in out
    assert "- h100-fp8-tp1: TensorRT-LLM 1.3.0 is installed but this project pins 1.2.1" in err
    assert "h100-fp8-tp1-pytorch: TensorRT-LLM" not in err  # 1.3 has the LLM API
    assert "- h100-fp8-tp1-pytorch: docker is not installed" in err


def test_a_repository_of_the_other_runtime_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image_python: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _on_gpu_host(tmp_path, monkeypatch, image_python)
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    repository = manifest_only_repository(tmp_path / "repository", "pytorch", checkpoint)
    _, err = _preflight(capsys, tmp_path, "--profile", "h100-fp8-tp1", "--repository", str(repository))
    assert f"{repository} is a --target pytorch repository, not the engine runtime's (--target gpu)" in err
    _, err = _preflight(capsys, tmp_path, "--profile", "h100-fp8-tp1-pytorch", "--repository", str(repository))
    assert "is a --target" not in err and "does not exist on this machine" not in err
    (checkpoint / "config.json").unlink()
    _, err = _preflight(capsys, tmp_path, "--profile", "h100-fp8-tp1-pytorch", "--repository", str(repository))
    assert f"serves the Hugging Face checkpoint {checkpoint}, which does not exist on this machine" in err


# --------------------------------------------------------------------------- the side-by-side report


def _recorded_run(profile: str, runtime: str, levels: list[tuple[int, float, float, float]]) -> dict[str, object]:
    """A run's results.json as the report step writes it, with the bench figures the comparison reads."""
    return {
        "profile": {"name": profile},
        "runtime": runtime,
        "bench": {
            "settings": {"workload": {"input_tokens": 128, "output_tokens": 128}},
            "levels": [
                {"concurrency": c, "output_token_throughput": tps, "ttft_p50_ms": ttft, "itl_p50_ms": itl}
                for c, tps, ttft, itl in levels
            ],
        },
    }


def test_the_side_by_side_puts_each_level_next_to_the_other_with_ratios(tmp_path: Path) -> None:
    engine = _recorded_run(
        "h100-fp8-tp1", "engine", [(1, 100.0, 20.0, 10.0), (8, 800.0, 40.0, 10.0), (32, 2000.0, 80.0, 16.0)]
    )
    pytorch = _recorded_run("h100-fp8-tp1-pytorch", "pytorch", [(1, 90.0, 25.0, 11.0), (8, 1000.0, 30.0, 8.0)])
    doc = comparison([engine, pytorch], ["1-h100-fp8-tp1", "2-h100-fp8-tp1-pytorch"])
    assert doc["ratio_of"] == "h100-fp8-tp1-pytorch / h100-fp8-tp1"
    assert [level["concurrency"] for level in doc["levels"]] == [1, 8]  # 32 ran for one profile only
    one, eight = doc["levels"]
    assert one["output_token_throughput"] == [100.0, 90.0] and one["ratio"]["output_token_throughput"] == 0.9
    assert eight["ratio"] == {"output_token_throughput": 1.25, "ttft_p50_ms": 0.75, "itl_p50_ms": 0.8}

    text = render_comparison(doc)
    assert "## Side by side: h100-fp8-tp1 (engine) vs h100-fp8-tp1-pytorch (pytorch)" in text
    assert "ISL 128 / OSL 128" in text and "ratio = h100-fp8-tp1-pytorch / h100-fp8-tp1" in text
    header = next(line for line in text.splitlines() if line.startswith("| concurrency"))
    assert header.count("|") - 1 == 1 + 3 * 3  # a column per profile and a ratio, for each figure
    assert "| 8 | 800.0 | 1000.0 | 1.25 | 40.0 | 30.0 | 0.75 | 10.0 | 8.0 | 0.80 |" in text
    assert "- concurrency 1: h100-fp8-tp1 gives 1.11x the output tokens/s" in text
    assert "- concurrency 8: h100-fp8-tp1-pytorch gives 1.25x the output tokens/s" in text
    assert "[h100-fp8-tp1-pytorch](2-h100-fp8-tp1-pytorch/README.md)" in text

    write_comparison(tmp_path, doc, [])
    assert json.loads((tmp_path / "comparison.json").read_text()) == doc
    assert (tmp_path / "README.md").read_text().startswith("# gpu-check: h100-fp8-tp1 vs h100-fp8-tp1-pytorch\n")


def test_a_failed_figure_shows_as_a_dash_not_a_ratio() -> None:
    engine = _recorded_run("a", "engine", [(1, 0.0, 20.0, 10.0)])
    pytorch = _recorded_run("b", "pytorch", [(1, 50.0, 20.0, 10.0)])
    pytorch["bench"]["levels"][0]["itl_p50_ms"] = None  # type: ignore[index]
    doc = comparison([engine, pytorch], ["1-a", "2-b"])
    assert doc["levels"][0]["ratio"]["output_token_throughput"] is None
    assert "| 1 | 0.0 | 50.0 | – | 20.0 | 20.0 | 1.00 | 10.0 | – | – |" in render_comparison(doc)


# --------------------------------------------------------------------------- the accuracy step


def test_accuracy_needs_profiles_that_return_prompt_log_probabilities(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image_python: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _on_gpu_host(tmp_path, monkeypatch, image_python)
    _, err = _preflight(capsys, tmp_path, "--runtimes", "engine,pytorch", "--accuracy")
    assert "- h100-fp8-tp1: --accuracy: the multiple-choice tasks score the prompt's log probabilities" in err
    assert "its engines are built without gather_context_logits" in err
    # The PyTorch executor gathers a request's context logits when it asks: no build switch to forget.
    assert "h100-fp8-tp1-pytorch: --accuracy" not in err
    assert "use a profile that can (h100-bf16-tp1-eval, h100-fp8-tp1-eval, h100-fp8-tp1-pytorch)" in err

    _, err = _preflight(capsys, tmp_path, "--profile", "h100-fp8-tp1-eval,h100-bf16-tp1-eval", "--accuracy")
    assert "--accuracy" not in err


def test_the_eval_profiles_render_repositories_that_return_prompt_log_probabilities() -> None:
    from nemo_build.repository import profile_llm_settings

    for name in ("h100-fp8-tp1-eval", "h100-bf16-tp1-eval"):
        assert profile_llm_settings(load_profile(name))["context_logits"] is True
    assert profile_llm_settings(load_profile("h100-fp8-tp1"))["context_logits"] is False
    assert profile_llm_settings(load_profile("h100-fp8-tp1-pytorch"))["context_logits"] is True


def test_accuracy_runs_after_each_profiles_bench(tmp_path: Path) -> None:
    both = profile_runs("h100-fp8-tp1-eval,h100-bf16-tp1-eval", tmp_path)
    steps = planned_steps(both, ("accuracy",))
    assert steps.index("bench h100-fp8-tp1-eval") + 1 == steps.index("accuracy h100-fp8-tp1-eval")
    assert steps[-3:] == ["accuracy h100-bf16-tp1-eval", "compare", "report"]


@pytest.mark.parametrize(
    ("name", "hidden", "kind"),
    [
        ("Mistral-Nemo-Base-2407", 5120, "base"),
        ("Mistral-Nemo-Instruct-2407", 5120, "instruct"),
        ("nemo", 5120, "instruct"),
        ("Mistral-Nemo-Base-2407", 128, "tiny"),
    ],
)
def test_the_measured_model_is_named_base_instruct_or_tiny(tmp_path: Path, name: str, hidden: int, kind: str) -> None:
    model = tmp_path / name
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"hidden_size": hidden}))
    assert model_kind(model) == kind


def test_a_bad_accuracy_task_list_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-dir", str(tmp_path), "--accuracy", "--accuracy-tasks", "hellaswag"])
    assert exit_info.value.code == 2
    assert "--accuracy-tasks: --tasks: 'hellaswag' is not TASK:SHOTS:METRIC" in capsys.readouterr().err


# --------------------------------------------------------------------------- the long-context step


def test_long_context_runs_after_bench_and_before_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    [one] = profile_runs("h100-fp8-tp1-128k", tmp_path)
    assert planned_steps([one], ("long-context", "accuracy")) == [
        "preflight", "build", "serve", "gateway", "smoke", "bench", "long-context", "accuracy", "report",
    ]  # fmt: skip
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--long-context" in capsys.readouterr().out


def test_long_context_preflight_names_the_128k_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image_python: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _on_gpu_host(tmp_path, monkeypatch, image_python)
    _, err = _preflight(capsys, tmp_path, "--profile", "h100-fp8-tp1-eval", "--long-context")
    assert "--long-context: profile h100-fp8-tp1-eval serves no haystack" in err and "use h100-fp8-tp1-128k" in err
    _, err = _preflight(capsys, tmp_path, "--profile", "h100-fp8-tp1-128k", "--long-context")
    assert "--long-context" not in err


def test_the_report_lists_each_haystack_with_its_ttft() -> None:
    from nemo_ops.gpu_check.report import render_long_context

    recorded = {
        "depths": [0.5],
        "results": [
            {
                "prompt_tokens": 15990,
                "needle_depth": 0.5,
                "found": True,
                "ttft_s": 1.234,
                "e2e_s": 1.5,
                "answer": "amber-falcon-731",
                "passphrase": "amber-falcon-731",
                "usage_prompt_tokens": 15990,
            },
        ],
        "skipped": {"64000": "the profile serves max_input_len 16384, max_seq_len 16384"},
    }
    text = "\n".join(render_long_context(recorded))
    assert "| 15990 | 0.50 | yes | 1.23 | 1.50 | amber-falcon-731 |" in text
    assert "- 64000 tokens: skipped (the profile serves max_input_len 16384, max_seq_len 16384)" in text
    assert render_long_context({}) == []
