"""`make engine`, as it runs inside the NGC image, dry: a fresh source tree, the package not installed.

On a stand-in GPU host (`tests/gpu_host`: `nvidia-smi`, a `trtllm-build` that checks its command line against
upstream's flag set and writes the engine directory trtllm-build writes, TensorRT-LLM's package metadata),
`scripts/make_engine.sh` runs every step for real on the tiny model: ModelOpt FP8 calibration (on the CPU),
`nemo-build engine` (preflight, the profile's argv, the build manifest), `nemo-build repository --target gpu`
(ModelConfig validation) — what fails there would fail after a real 12B build. A pytorch profile runs the same
script to the Hugging Face FP8 export and `nemo-build repository --target pytorch`, whose LLM arguments are held to
upstream's names (the fake `tensorrt_llm` of tests/data/upstream) and whose manifest `nemo-serve` checks against
the GPU and TensorRT-LLM it is about to serve with. Nothing here ran on a GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import nemo_build
from nemo_build.engine import check_engine_compatible, check_pytorch_compatible
from nemo_build.errors import BuildError
from nemo_build.profiles import available_profiles, load_profile
from nemo_build.repository import read_repository_manifest
from nemo_runtime.llm_api import LlmSettings, llm_kwargs
from tests.gpu_host.conformance import gpu_repository_problems
from tests.gpu_host.host import GPUS, GpuHost, python_without_this_project
from tests.gpu_host.trtllm_build import given_flags
from tests.source_tree import source_tree_copy
from tests.unit.runtime.fake_trtllm import LINES, as_api, fake_line


def run_make_engine(root: Path, model_dir: Path, profile: str) -> tuple[Path, GpuHost, str]:
    clone = source_tree_copy(root / "clone")
    host = GpuHost(root / "host")
    python_bin = python_without_this_project(root / "python")
    env = host.env()
    env["PATH"] = f"{host.bin}:{python_bin}:{env['PATH']}"
    env.pop("PYTHONPATH")
    env["PYTHONPATH"] = str(host.site)
    env.update(DEVICE="cpu", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = root / "out"
    result = subprocess.run(
        ["bash", "scripts/make_engine.sh", str(model_dir), profile, str(out)],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, host, result.stdout


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, GpuHost, str]:
    return run_make_engine(tmp_path_factory.mktemp("image"), tiny_model_dir, "h100-fp8-tp1")


@pytest.fixture(scope="module")
def pytorch_image_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, GpuHost, str]:
    return run_make_engine(tmp_path_factory.mktemp("image-pytorch"), tiny_model_dir, "h100-fp8-tp1-pytorch")


def test_the_image_python_does_not_have_this_project(tmp_path: Path) -> None:
    python = python_without_this_project(tmp_path / "python") / "python3"
    probe = "import importlib.util as u, torch, modelopt; print(u.find_spec('nemo_build'), u.find_spec('nemo_client'))"
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout == "None None\n"


def test_make_engine_runs_from_a_fresh_tree_to_a_servable_repository(image_run: tuple[Path, GpuHost, str]) -> None:
    out, host, stdout = image_run
    (argv,) = host.trtllm_build_calls()
    profile = load_profile("h100-fp8-tp1")
    assert argv == profile.argv(out / "checkpoint", out / "engine")[1:]
    flags = given_flags(argv)
    assert flags["max_seq_len"] == profile.flags["max_seq_len"]

    checkpoint_manifest = json.loads((out / "checkpoint" / "manifest.json").read_text())
    assert checkpoint_manifest["inputs"]["versions"]["nemo_build"] == nemo_build.__version__
    engine_manifest = json.loads((out / "engine" / "manifest.json").read_text())
    assert engine_manifest["inputs"]["gpu"] == host.gpu_name
    assert engine_manifest["inputs"]["tensorrt_llm"] == "1.2.1"
    assert set(engine_manifest["files"]) == {"config.json", "rank0.engine"}

    config = (out / "repository" / "tensorrt_llm" / "config.pbtxt").read_text()
    assert f'string_value: "{(out / "engine").resolve()}"' in config
    assert f"make serve REPO={out}/repository" in stdout


def nemo_serve(repository: Path, host: GpuHost, *args: str) -> subprocess.CompletedProcess[str]:
    # PATH: the stand-ins and the system, so neither tritonserver nor docker is found after the check
    return subprocess.run(
        [str(Path(sys.executable).with_name("nemo-serve")), "--model-repository", str(repository), *args],
        env={**host.env(), "PATH": f"{host.bin}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_serving_checks_the_engines_against_this_gpu_and_tensorrt_llm(
    image_run: tuple[Path, GpuHost, str], tmp_path: Path
) -> None:
    out, _, _ = image_run
    same = GpuHost(tmp_path / "h100")
    result = nemo_serve(out / "repository", same, "--launcher", "local")
    assert "engines built on NVIDIA H100 80GB HBM3 with TensorRT-LLM 1.2.1: compatible" in result.stdout
    assert "no `tritonserver` on PATH" in result.stderr  # the check passed; this host has no Triton to start

    other = GpuHost(tmp_path / "l40s", "NVIDIA L40S", "8.9")
    result = nemo_serve(out / "repository", other, "--launcher", "docker")
    assert result.returncode == 2
    assert "built on NVIDIA H100 80GB HBM3, this GPU is NVIDIA L40S" in result.stderr
    assert "Rebuild them with `make engine`" in result.stderr


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[tuple[str, int], Path]:
    """The tiny model exported once per (precision, TP) that a shipped profile asks for."""
    from nemo_build.checkpoint import CheckpointOptions, build_checkpoint

    root = tmp_path_factory.mktemp("checkpoints")
    made: dict[tuple[str, int], Path] = {}
    for name in available_profiles("engine"):
        profile = load_profile(name)
        key = (profile.precision, profile.tp)
        if key not in made:
            options = CheckpointOptions(
                quant=profile.precision,
                kv_cache=profile.kv_cache,
                tp=profile.tp,
                device="cpu",
                calib_size=8,
                calib_data="shipped",
            )
            made[key] = build_checkpoint(tiny_model_dir, root / f"{key[0]}-tp{key[1]}", options).out_dir
    return made


def nemo_build_cli(host: GpuHost, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("nemo-build")), *args],
        env=host.env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("name", available_profiles("engine"))
def test_every_profile_builds_renders_and_passes_the_serving_check(
    name: str, checkpoints: dict[tuple[str, int], Path], tekken_path: Path, tmp_path: Path
) -> None:
    profile = load_profile(name)
    host = GpuHost(tmp_path / "host", *GPUS[profile.gpu])
    engine, repository = tmp_path / "engine", tmp_path / "repository"
    checkpoint = checkpoints[(profile.precision, profile.tp)]
    built = nemo_build_cli(host, "engine", "--checkpoint", str(checkpoint), "--out", str(engine), "--profile", name)
    assert built.returncode == 0, built.stdout + built.stderr
    (argv,) = host.trtllm_build_calls()
    assert given_flags(argv)["max_batch_size"] == profile.flags["max_batch_size"]
    if profile.lora:  # parsed by upstream's flag set: the LoRA plugin, its modules and the largest rank
        given = given_flags(argv)
        assert given["lora_plugin"] == "auto" and given["max_lora_rank"] == profile.lora["max_rank"]
        assert given["lora_target_modules"] == profile.lora["target_modules"]
    build_config = json.loads((engine / "config.json").read_text())["build_config"]
    for flag in ("max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens"):
        assert build_config[flag] == profile.flags[flag], flag
    assert sorted(p.name for p in engine.glob("rank*.engine")) == [f"rank{r}.engine" for r in range(profile.tp)]

    rendered = nemo_build_cli(
        host, "repository", "--target", "gpu", "--engine", str(engine), "--tokenizer", str(tekken_path),
        "--out", str(repository),
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    assert gpu_repository_problems(repository) == []
    limits = repository / "preprocessing" / "config.pbtxt"
    assert f'string_value: "{profile.flags["max_input_len"]}"' in limits.read_text()
    backend = (repository / "tensorrt_llm" / "config.pbtxt").read_text()
    for key in ("cache_optimal_adapter_size", "cache_max_adapter_size", "cache_gpu_memory_fraction"):
        if key in profile.lora:  # the backend's LoRA cache, as the profile sizes it (names checked upstream above)
            assert f'key: "lora_{key}" value: {{ string_value: "{profile.lora[key]}" }}' in backend, key
    manifest = check_engine_compatible(engine, GPUS[profile.gpu][0], "1.2.1")
    assert manifest["inputs"]["profile"]["name"] == name


def llm_problems(repository: Path) -> list[str]:
    """The upstream check of a pytorch repository: its rendered parameters read back as the model reads them, and
    the LLM arguments they make, given to every upstream line's fake `tensorrt_llm` (which refuses a name it lacks)."""
    config = (repository / "tensorrt_llm" / "config.pbtxt").read_text()
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    parsed = text_format.Parse(config, model_config_pb2.ModelConfig())
    params = {key: value.string_value for key, value in parsed.parameters.items()}
    settings = LlmSettings.from_parameters(params, lambda name: repository / params[name])
    problems = []
    for line in LINES:
        fake = fake_line(line)
        try:
            kwargs = llm_kwargs(settings, as_api(fake))
        except TypeError as error:
            problems.append(f"{line}: {error}")
            continue
        unknown = set(kwargs) - (fake.TORCH_LLM_ARGS | set(fake.INIT_PARAMS))
        problems += [f"{line}: LLM argument {name} is not upstream's" for name in sorted(unknown)]
    return problems


def test_make_engine_with_a_pytorch_profile_exports_the_hf_checkpoint_and_renders_the_repository(
    pytorch_image_run: tuple[Path, GpuHost, str],
) -> None:
    out, host, stdout = pytorch_image_run
    assert host.trtllm_build_calls() == []  # no engines
    assert not (out / "engine").exists()
    assert (out / "checkpoint" / "hf_quant_config.json").is_file()  # ModelOpt's unified HF FP8 export
    manifest = read_repository_manifest(out / "repository")
    assert manifest.target == "pytorch" and manifest.model_dir == (out / "checkpoint").resolve()
    assert manifest.runtime_environment == {"gpu": host.gpu_name, "tensorrt_llm": "1.2.1"}
    profile = load_profile("h100-fp8-tp1-pytorch")
    assert manifest.settings["cuda_graph_batch_sizes"] == profile.llm["cuda_graph_config"]["batch_sizes"]
    assert llm_problems(out / "repository") == []
    assert f"make serve REPO={out}/repository" in stdout


def test_serving_checks_a_pytorch_repository_against_this_gpu_and_tensorrt_llm(
    pytorch_image_run: tuple[Path, GpuHost, str], tmp_path: Path
) -> None:
    out, _, _ = pytorch_image_run
    same = GpuHost(tmp_path / "h100")
    result = nemo_serve(out / "repository", same, "--launcher", "local")
    assert "pytorch repository rendered on NVIDIA H100 80GB HBM3 for TensorRT-LLM 1.2.1: compatible" in result.stdout
    assert "no `tritonserver` on PATH" in result.stderr  # the check passed; this host has no Triton to start

    other = GpuHost(tmp_path / "l40s", "NVIDIA L40S", "8.9")
    result = nemo_serve(out / "repository", other, "--launcher", "docker")
    assert result.returncode == 2
    assert "rendered on NVIDIA H100 80GB HBM3, this GPU is NVIDIA L40S" in result.stderr
    assert "Re-render it with `make engine PROFILE=<a pytorch profile>`" in result.stderr

    # a newer Triton image with a pinned tensorrt-llm wheel (the Dockerfile's TENSORRT_LLM_VERSION): taken, its
    # TensorRT-LLM version is not known from the name, so only the GPU is checked
    newer = "nvcr.io/nvidia/tritonserver:26.10-py3"
    result = nemo_serve(out / "repository", same, "--launcher", "docker", "--image", newer)
    assert "rendered on NVIDIA H100 80GB HBM3 for TensorRT-LLM 1.2.1: not checked: the TensorRT-LLM version" in (
        result.stdout
    )
    assert f"TensorRT-LLM version of {newer} unknown: only the GPU model was checked" in result.stdout


@pytest.fixture(scope="module")
def hf_checkpoints(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    """The tiny model in ModelOpt's unified HF export once per (precision, KV cache) a pytorch profile asks for."""
    from nemo_build.checkpoint import CheckpointOptions, build_checkpoint

    root = tmp_path_factory.mktemp("hf-checkpoints")
    made: dict[str, Path] = {}
    for name in available_profiles("pytorch"):
        profile = load_profile(name)
        key = f"{profile.precision}-{profile.kv_cache}"
        if key not in made:
            options = CheckpointOptions(
                quant=profile.precision,
                kv_cache=profile.kv_cache,
                device="cpu",
                calib_size=8,
                calib_data="shipped",
                format="hf",
            )
            made[key] = build_checkpoint(tiny_model_dir, root / key, options).out_dir
    return made


@pytest.mark.parametrize("name", available_profiles("pytorch"))
def test_every_pytorch_profile_renders_passes_the_upstream_checks_and_the_serving_check(
    name: str, hf_checkpoints: dict[str, Path], tekken_path: Path, tmp_path: Path
) -> None:
    profile = load_profile(name)
    gpu_name = GPUS[profile.gpu][0]
    host = GpuHost(tmp_path / "host", *GPUS[profile.gpu])
    repository = tmp_path / "repository"
    checkpoint = hf_checkpoints[f"{profile.precision}-{profile.kv_cache}"]
    rendered = nemo_build_cli(
        host, "repository", "--target", "pytorch", "--checkpoint", str(checkpoint), "--profile", name,
        "--tokenizer", str(tekken_path), "--out", str(repository),
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    assert llm_problems(repository) == []
    manifest = read_repository_manifest(repository)
    assert manifest.settings["max_batch_size"] == profile.llm["max_batch_size"]
    assert manifest.settings["tensor_parallel_size"] == profile.tp
    assert check_pytorch_compatible(manifest.runtime_environment, repository, gpu_name, "1.2.1").endswith(
        ": compatible"
    )
    with pytest.raises(BuildError, match=r"for TensorRT-LLM 1\.2\.1, this is 1\.3\.0"):
        check_pytorch_compatible(manifest.runtime_environment, repository, gpu_name, "1.3.0")
