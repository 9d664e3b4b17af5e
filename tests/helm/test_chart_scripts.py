"""The engine-build and wait scripts the chart ships, run for real with bash.

Most tests replace `nemo-build`, `nvidia-smi` and the Python interpreter with small scripts that record their
calls (the `nemo-build` stand-in still parses its argv with the real parser); one runs the real `nemo-build` on
the tiny model on a stand-in GPU host (`tests/gpu_host`). The script environment is the one the rendered chart
gives the build container (only the cache paths are moved into a temporary directory).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nemo_ops.launcher import ADMIN_KEY_ENV, restricted_api_arguments
from tests.gpu_host.conformance import gpu_repository_problems
from tests.gpu_host.host import GPUS, GpuHost
from tests.helm.chart_support import (
    ADMIN_KEY_PLACEHOLDER,
    CHART_DIR,
    LORA_MOUNT,
    TRITON_LAUNCHER,
    build_container,
    container,
    pod_spec,
    render,
    triton_command,
    values_from,
)
from tests.unit.build import model_configs

SCRIPTS = CHART_DIR / "files"

FAKE_NEMO_BUILD = f"""#!{sys.executable}
# Records the call, parses it with the real nemo-build parser (what nemo-build rejects fails here too, exit 2),
# and creates the --out directory with a manifest, as nemo-build does; it builds nothing.
import json, os, sys
from pathlib import Path

from nemo_build.cli import build_parser

with open(os.environ["CALLS"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
with open(os.environ["CALLS"] + ".argv", "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
args = build_parser().parse_args(sys.argv[1:])
if os.environ.get("FAIL_STEP") == args.command:
    print(f"nemo-build {{args.command}} failed", file=sys.stderr)
    sys.exit(3)
Path(args.out).mkdir(parents=True, exist_ok=True)
(Path(args.out) / "manifest.json").write_text("{{}}")
"""

FAKE_NVIDIA_SMI = """#!/usr/bin/env bash
echo "$FAKE_GPU"
"""

FAKE_PYTHON = r"""#!/usr/bin/env bash
# `-c ...` asks for the TensorRT-LLM version; `-` reads the download program from stdin.
if [[ $1 == -c ]]; then echo "$FAKE_TRTLLM_VERSION"; exit 0; fi
cat > /dev/null
echo "download $HF_MODEL_NAME@$HF_MODEL_REVISION" >> "$CALLS"
mkdir -p "$MODEL_DIR" && echo '{}' > "$MODEL_DIR/config.json" && echo '{}' > "$MODEL_DIR/tekken.json"
"""


def _write_tool(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


class Sandbox:
    """A temporary cache volume, the stand-in tools and the build container's environment."""

    def __init__(self, root: Path, values: dict[str, Any]) -> None:
        self.root = root
        self.calls = root / "calls.log"
        tools = root / "bin"
        tools.mkdir()
        _write_tool(tools / "nemo-build", FAKE_NEMO_BUILD)
        _write_tool(tools / "nvidia-smi", FAKE_NVIDIA_SMI)
        _write_tool(tools / "fake-python", FAKE_PYTHON)
        self.stand_ins = {
            "PATH": f"{tools}:{os.environ['PATH']}",
            "PYTHON": str(tools / "fake-python"),
            "CALLS": str(self.calls),
            "FAKE_GPU": "NVIDIA H100 80GB HBM3",
            "FAKE_TRTLLM_VERSION": "1.2.1",
            "POLL_SECONDS": "1",
        }
        self.upgrade(values)

    def upgrade(self, values: dict[str, Any]) -> None:
        """The build container of the release upgraded to `values` (`helm upgrade`), on the same cache volume."""
        self.env = self.chart_env(values) | self.stand_ins

    def chart_env(self, values: dict[str, Any]) -> dict[str, str]:
        """The rendered build container's plain env, with the chart's mount paths moved under the sandbox."""
        return {
            item["name"]: self.relocated(str(item["value"]))
            for item in build_container(render(values))["env"]
            if "value" in item
        }

    def relocated(self, path: str) -> str:
        """Where the sandbox keeps what the chart mounts at `path` (the cache, the model claim, the adapters)."""
        for mount in ("/cache", "/model", LORA_MOUNT):
            if path == mount or path.startswith(mount + "/"):
                return str(self.root) + path
        return path

    @property
    def engine_dir(self) -> Path:
        return Path(self.env["ENGINE_DIR"])

    def run(self, script: str, timeout: float = 30, **overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPTS / script)],
            env={**self.env, **overrides},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def run_real_nemo_build(self, host: GpuHost, **overrides: str) -> subprocess.CompletedProcess[str]:
        """build-engine.sh with the real nemo-build, calibrating on the CPU, on the stand-in GPU `host`."""
        environment = host.env(self.env) | {
            "NEMO_BUILD": str(Path(sys.executable).with_name("nemo-build")),
            "PYTHON": sys.executable,
            "CALIBRATION_DEVICE": "cpu",
            "HF_HUB_OFFLINE": "1",  # the default calibration mix falls back to the shipped set at once
            **overrides,
        }
        return subprocess.run(
            ["bash", str(SCRIPTS / "build-engine.sh")],
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def steps(self) -> list[str]:
        if not self.calls.exists():
            return []
        return [line.split()[0] for line in self.calls.read_text().splitlines()]


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path, values_from(**{"engine.checkpointArgs": ["--calib-data", "/data/calib set"]}))


def test_build_downloads_runs_the_three_steps_and_marks_the_engine_complete(sandbox: Sandbox) -> None:
    result = sandbox.run("build-engine.sh")
    assert result.returncode == 0, result.stderr
    assert sandbox.steps() == ["download", "checkpoint", "engine", "repository"]
    calls = sandbox.calls.read_text().splitlines()
    engine, model = sandbox.engine_dir, sandbox.env["MODEL_DIR"]
    assert calls[1].startswith(
        f"checkpoint --model-dir {model} --out {engine}/checkpoint --quant fp8 --kv-cache fp8 --tp 1 --device cuda"
    )
    assert calls[2] == f"engine --checkpoint {engine}/checkpoint --out {engine}/engine --profile h100-fp8-tp1"
    assert calls[3] == (
        f"repository --target gpu --engine {engine}/engine --tokenizer {model}/tekken.json "
        f"--out {engine}/repository --replace --served-model-name mistralai/mistral-nemo-12b-instruct"
    )
    assert (engine / "BUILD_COMPLETE").read_text() == sandbox.env["BUILD_SPEC"]
    left = sorted(p.name for p in engine.iterdir())
    assert left == [".build.lock", "BUILD_COMPLETE", "checkpoint", "engine", "repository"]


def test_extra_arguments_reach_nemo_build_one_argument_per_item(sandbox: Sandbox) -> None:
    assert sandbox.run("build-engine.sh").returncode == 0
    argvs = [json.loads(line) for line in (sandbox.root / "calls.log.argv").read_text().splitlines()]
    checkpoint = next(argv for argv in argvs if argv[0] == "checkpoint")
    assert checkpoint[-3:] == ["cuda", "--calib-data", "/data/calib set"]


def test_arguments_nemo_build_rejects_fail_the_build(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path, values_from(**{"engine.checkpointArgs": ["--calib-dataset", "/data/calib"]}))
    result = sandbox.run("build-engine.sh")
    assert result.returncode == 2
    assert "unrecognized arguments: --calib-dataset" in result.stderr
    assert sandbox.steps() == ["download", "checkpoint"]
    assert not (sandbox.engine_dir / "BUILD_COMPLETE").exists()


def test_a_second_run_finds_the_engine_and_skips_all_work(sandbox: Sandbox) -> None:
    assert sandbox.run("build-engine.sh").returncode == 0
    before = sandbox.steps()
    result = sandbox.run("build-engine.sh")
    assert result.returncode == 0
    assert sandbox.steps() == before
    assert "nothing to build" in result.stderr


def test_a_changed_build_spec_runs_the_steps_again(sandbox: Sandbox, tmp_path: Path) -> None:
    assert sandbox.run("build-engine.sh").returncode == 0
    changed = sandbox.chart_env(values_from(**{"engine.engineArgs": ["--set", "max_batch_size=128"]}))
    assert changed["ENGINE_DIR"] == sandbox.env["ENGINE_DIR"], "engine args are not part of the cache key"
    result = sandbox.run("build-engine.sh", BUILD_SPEC=changed["BUILD_SPEC"], ENGINE_ARGS=changed["ENGINE_ARGS"])
    assert result.returncode == 0, result.stderr
    assert sandbox.steps()[-3:] == ["checkpoint", "engine", "repository"]
    assert sandbox.calls.read_text().splitlines()[-2].endswith("--set max_batch_size=128")
    # The repository was rendered anew and swapped in: nothing is left beside it.
    assert (sandbox.engine_dir / "repository" / "manifest.json").is_file()
    assert not (sandbox.engine_dir / "repository.new").exists()
    assert not (sandbox.engine_dir / "repository.old").exists()
    assert (sandbox.engine_dir / "BUILD_COMPLETE").read_text() == changed["BUILD_SPEC"]


def test_build_refuses_an_image_with_another_tensorrt_llm_version(sandbox: Sandbox) -> None:
    result = sandbox.run("build-engine.sh", FAKE_TRTLLM_VERSION="1.3.0")
    assert result.returncode != 0
    assert "engine.trtllmVersion=1.3.0" in result.stderr
    assert sandbox.steps() == []
    assert not (sandbox.engine_dir / "BUILD_COMPLETE").exists()


def test_build_refuses_to_file_an_engine_under_another_gpu(sandbox: Sandbox) -> None:
    result = sandbox.run("build-engine.sh", FAKE_GPU="NVIDIA L40S")
    assert result.returncode != 0
    assert "NVIDIA-H100-80GB-HBM3" in result.stderr
    assert sandbox.steps() == []


def test_a_failed_step_leaves_no_completion_marker(sandbox: Sandbox) -> None:
    result = sandbox.run("build-engine.sh", FAIL_STEP="engine")
    assert result.returncode == 3
    assert sandbox.steps() == ["download", "checkpoint", "engine"]
    assert not (sandbox.engine_dir / "BUILD_COMPLETE").exists()


def test_model_from_a_claim_is_used_in_place(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path, values_from(**{"model.source": "pvc", "model.pvc.existingClaim": "models"}))
    model_dir = Path(sandbox.env["MODEL_DIR"])
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text("{}")
    (model_dir / "tekken.json").write_text("{}")
    result = sandbox.run("build-engine.sh")
    assert result.returncode == 0, result.stderr
    assert sandbox.steps() == ["checkpoint", "engine", "repository"]


def test_a_model_directory_without_the_tokenizer_is_refused(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path, values_from(**{"model.source": "pvc", "model.pvc.existingClaim": "models"}))
    model_dir = Path(sandbox.env["MODEL_DIR"])
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text("{}")
    result = sandbox.run("build-engine.sh")
    assert result.returncode != 0
    assert "tokenizer tekken.json not found" in result.stderr


def test_triton_waits_until_the_engine_of_its_spec_is_complete(sandbox: Sandbox) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        sandbox.run("wait-for-engine.sh", timeout=2.5)
    assert sandbox.run("build-engine.sh").returncode == 0
    result = sandbox.run("wait-for-engine.sh", timeout=10)
    assert result.returncode == 0
    assert "engine ready" in result.stderr
    # An engine complete for another spec does not count.
    with pytest.raises(subprocess.TimeoutExpired):
        sandbox.run("wait-for-engine.sh", timeout=2.5, BUILD_SPEC='{"other": true}')


FAKE_SERVER = f"""#!{sys.executable}
# Stands in for tritonserver and mpirun: records how the launcher started it.
import json, os, sys

with open(os.environ["STARTED"], "w") as out:
    json.dump({{"argv": sys.argv[1:], "environment": sorted(os.environ)}}, out)
"""


def _start_triton(
    tmp_path: Path, key: str | None, values: dict[str, Any] | None = None, args: list[str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    """Runs triton-start.sh with the rendered Triton container's args (or `args`), stand-ins on PATH."""
    triton = container(pod_spec(render(values).component("Deployment", "triton")), "triton")
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    for name in ("tritonserver", "mpirun"):
        _write_tool(tools / name, FAKE_SERVER)
    started = tmp_path / "started.json"
    started.unlink(missing_ok=True)
    environment = {"PATH": f"{tools}:{os.environ['PATH']}", "STARTED": str(started)}
    if key is not None:
        environment[ADMIN_KEY_ENV] = key
    assert TRITON_LAUNCHER[1] == "/opt/nemo/scripts/triton-start.sh"
    command = ["bash", str(SCRIPTS / "triton-start.sh"), *(triton_command(triton) if args is None else args)]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=30, check=False)
    return result, (json.loads(started.read_text()) if started.exists() else None)


@pytest.mark.parametrize("profile", ["h100-fp8-tp1", "h100-fp8-tp2-128k"])
def test_triton_starts_with_the_admin_key_from_the_environment_in_its_flags(tmp_path: Path, profile: str) -> None:
    key = "Kube-secret_admin.key~0123456789"
    values = values_from(**{"engine.profile": profile})
    result, started = _start_triton(tmp_path, key, values)
    assert result.returncode == 0, result.stderr
    assert started is not None
    rendered = triton_command(container(pod_spec(render(values).component("Deployment", "triton")), "triton"))
    assert started["argv"] == [a.replace(ADMIN_KEY_PLACEHOLDER, key) for a in rendered[1:]]
    # Exactly nemo-serve's flags, for rank 0.
    flags = [a for a in started["argv"] if key in a]
    assert flags == restricted_api_arguments(key)
    # Triton, its ranks and its models do not inherit the key.
    assert ADMIN_KEY_ENV not in started["environment"]


def test_a_key_file_with_a_trailing_newline_is_meant_without_it(tmp_path: Path) -> None:
    key = "0123456789abcdefXYZ"
    result, started = _start_triton(tmp_path, key + "\n")
    assert result.returncode == 0, result.stderr
    assert started is not None
    assert [a for a in started["argv"] if key in a] == restricted_api_arguments(key)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (None, "NEMO_TRITON_ADMIN_KEY is empty"),
        ("", "NEMO_TRITON_ADMIN_KEY is empty"),
        ("short-key", "16 to 256 characters from A-Z a-z 0-9 . _ ~ - (got 9 characters)"),
        ("k" * 257, "(got 257 characters)"),
        ("admin:key=0123456789", "16 to 256 characters"),
        ("admin key 0123456789", "16 to 256 characters"),
    ],
    ids=["unset", "empty", "short", "long", "flag-separators", "space"],
)
def test_triton_does_not_start_with_a_key_nemo_serve_would_refuse(tmp_path: Path, key: str | None, reason: str) -> None:
    result, started = _start_triton(tmp_path, key)
    assert result.returncode == 2
    assert reason in result.stderr
    assert started is None


def test_triton_does_not_start_without_the_restriction_flags(tmp_path: Path) -> None:
    result, started = _start_triton(tmp_path, "0123456789abcdefXYZ", args=["tritonserver", "--model-repository=/r"])
    assert result.returncode == 2
    assert "refusing to start Triton with open admin APIs" in result.stderr
    assert started is None


def test_scripts_parse_and_ship_unchanged_in_the_config_map() -> None:
    (config_map,) = render().of_kind("ConfigMap")
    for script in sorted(path.name for path in SCRIPTS.glob("*.sh")):  # every script the chart ships
        subprocess.run(["bash", "-n", str(SCRIPTS / script)], check=True)
        assert config_map["data"][script].rstrip("\n") == (SCRIPTS / script).read_text().rstrip("\n")


def _chat_parameters(repository: Path) -> dict[str, str]:
    """The `chat` model's parameters in a rendered repository, read back with Triton's own schema."""
    config = model_configs.load(repository / "chat" / "config.pbtxt")
    return {key: value.string_value for key, value in config.parameters.items()}


def test_the_build_script_runs_the_real_nemo_build_to_a_servable_repository_then_lora_serves_the_mounted_adapters(
    tmp_path: Path, tiny_model_dir: Path, lora_source_dir: Path
) -> None:
    """The chart's build container, dry: the real nemo-build on the tiny model, a stand-in GPU host; then the release
    upgraded to lora.source=pvc with lora.maxRank, which renders the repository again beside the same engine."""
    from nemo_client.direct import lora_adapters

    model = {"model.source": "pvc", "model.pvc.existingClaim": "models"}
    sandbox = Sandbox(tmp_path, values_from(**model))
    shutil.copytree(tiny_model_dir, sandbox.env["MODEL_DIR"])
    host = GpuHost(tmp_path / "host", *GPUS["H100"])
    run = sandbox.run_real_nemo_build(host)
    assert run.returncode == 0, run.stderr[-4000:]
    engine = sandbox.engine_dir
    assert len(host.trtllm_build_calls()) == 1
    assert gpu_repository_problems(engine / "repository") == []
    assert (engine / "BUILD_COMPLETE").read_text() == sandbox.env["BUILD_SPEC"]
    served = json.loads((engine / "engine" / "manifest.json").read_text())["inputs"]
    assert (served["gpu"], served["tensorrt_llm"]) == (GPUS["H100"][0], "1.2.1")
    chat = _chat_parameters(engine / "repository")
    assert chat["lora_dir"] == "" and lora_adapters(chat) is None  # without lora.source no adapter is served

    # `helm upgrade --set lora.source=pvc ...`: the same engine; the chat model (and the gateway's direct path, which
    # reads its parameters) serves the adapters of the directory Triton mounts, up to the chart's rank.
    lora = {"lora.source": "pvc", "lora.pvc.existingClaim": "adapters", "lora.maxRank": 16}
    sandbox.upgrade(values_from(**model, **lora))
    assert sandbox.engine_dir == engine and sandbox.env["LORA_DIR"]
    run = sandbox.run_real_nemo_build(host)
    assert run.returncode == 0, run.stderr[-4000:]
    assert len(host.trtllm_build_calls()) == 1
    assert gpu_repository_problems(engine / "repository") == []
    assert (engine / "BUILD_COMPLETE").read_text() == sandbox.env["BUILD_SPEC"]
    triton = container(pod_spec(render(values_from(**model, **lora)).component("Deployment", "triton")), "triton")
    (mount,) = [m for m in triton["volumeMounts"] if m["name"] == "lora-adapters"]
    adapters = Path(sandbox.relocated(mount["mountPath"]))
    chat = _chat_parameters(engine / "repository")
    assert (chat["lora_dir"], chat["max_lora_rank"]) == (str(adapters), "16")
    shutil.copytree(lora_source_dir, adapters)
    registry = lora_adapters(chat)
    assert registry is not None
    assert (registry.names(), registry.refused(), registry.max_rank) == (["pirate", "tokyo"], {}, 16)


def test_the_pytorch_runtime_builds_the_hf_checkpoint_and_a_pytorch_repository_without_an_engine(
    tmp_path: Path,
) -> None:
    sandbox = Sandbox(tmp_path, values_from(**{"engine.runtime": "pytorch", "engine.profile": "h100-fp8-tp1-pytorch"}))
    result = sandbox.run("build-engine.sh")
    assert result.returncode == 0, result.stderr
    assert sandbox.steps() == ["download", "checkpoint", "repository"]
    calls = sandbox.calls.read_text().splitlines()
    engine, model = sandbox.engine_dir, sandbox.env["MODEL_DIR"]
    assert calls[1] == (
        f"checkpoint --model-dir {model} --out {engine}/checkpoint --format hf --quant fp8 --kv-cache fp8 --device cuda"
    )
    assert calls[2] == (
        f"repository --target pytorch --checkpoint {engine}/checkpoint --profile h100-fp8-tp1-pytorch "
        f"--tensor-parallel-size 1 --tokenizer {model}/tekken.json --out {engine}/repository --replace "
        "--served-model-name mistralai/mistral-nemo-12b-instruct"
    )
    assert (engine / "BUILD_COMPLETE").read_text() == sandbox.env["BUILD_SPEC"]
    assert sorted(p.name for p in engine.iterdir()) == [".build.lock", "BUILD_COMPLETE", "checkpoint", "repository"]


def test_the_build_script_refuses_a_runtime_it_does_not_know(sandbox: Sandbox) -> None:
    result = sandbox.run("build-engine.sh", RUNTIME="onnx")
    assert result.returncode == 1
    assert "RUNTIME is 'onnx' (engine or pytorch)" in result.stderr
    assert sandbox.steps() == []


def test_the_build_script_runs_the_real_nemo_build_to_a_pytorch_repository(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """engine.runtime=pytorch, dry: the real nemo-build on the tiny model, a stand-in GPU host."""
    from nemo_build.repository import read_repository_manifest
    from tests.unit.build.test_engine_dry_run import llm_problems

    values = values_from(
        **{"model.source": "pvc", "model.pvc.existingClaim": "models", "engine.runtime": "pytorch",
           "engine.profile": "h100-fp8-tp1-pytorch"}
    )  # fmt: skip
    sandbox = Sandbox(tmp_path, values)
    shutil.copytree(tiny_model_dir, sandbox.env["MODEL_DIR"])
    host = GpuHost(tmp_path / "host", *GPUS["H100"])
    run = sandbox.run_real_nemo_build(host)
    assert run.returncode == 0, run.stderr[-4000:]
    engine = sandbox.engine_dir
    assert host.trtllm_build_calls() == [] and not (engine / "engine").exists()
    manifest = read_repository_manifest(engine / "repository")
    assert manifest.target == "pytorch"
    assert manifest.runtime_environment == {"gpu": GPUS["H100"][0], "tensorrt_llm": "1.2.1"}
    assert llm_problems(engine / "repository") == []
    assert (engine / "BUILD_COMPLETE").read_text() == sandbox.env["BUILD_SPEC"]
