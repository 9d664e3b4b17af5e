"""The Dockerfile's base-image choice and scripts/image_tensorrt_llm.sh, without docker (none here).

The Dockerfile is parsed for its build arguments; the script runs for real with bash against a stand-in python
(`-c` answers the installed TensorRT-LLM version, `-m pip install` records its arguments and installs it).
Nothing here built an image.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from nemo_build.preflight import NGC_IMAGE, PINNED_TRTLLM
from tests.source_tree import PROJECT

SCRIPT = PROJECT / "scripts" / "image_tensorrt_llm.sh"
FAKE_PYTHON = r"""#!/usr/bin/env bash
# -c: the installed tensorrt_llm version (none: exit 1, as importlib.metadata would); -m pip install: record, install
state=$(dirname "$0")/installed
if [[ $1 == -c ]]; then [[ -s $state ]] || exit 1; cat "$state"; exit 0; fi
echo "$*" >> "$(dirname "$0")/pip.log"
echo "${@: -1}" | sed 's/^tensorrt-llm==//' > "$state"
"""


def instructions() -> list[tuple[str, str]]:
    text = (PROJECT / "Dockerfile").read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_the_default_base_is_the_26_07_trtllm_image_and_a_wheel_pin_is_a_build_argument() -> None:
    steps = instructions()
    words = [word for word, _ in steps]
    args = {rest.partition("=")[0]: rest.partition("=")[2] for word, rest in steps if word == "ARG"}
    assert args["BASE_IMAGE"] == NGC_IMAGE
    assert args["TENSORRT_LLM_VERSION"] == '""'  # empty: the base's TensorRT-LLM
    # declared after FROM, so the RUN steps see it; the script is copied before it runs
    from_at = words.index("FROM")
    pin_at = next(i for i, (word, rest) in enumerate(steps) if word == "ARG" and rest.startswith("TENSORRT_LLM_"))
    run_at = next(i for i, (word, rest) in enumerate(steps) if word == "RUN" and "image_tensorrt_llm.sh" in rest)
    copy_at = next(i for i, (word, rest) in enumerate(steps) if word == "COPY" and rest.startswith("scripts/"))
    assert from_at < pin_at < run_at and copy_at < run_at
    assert re.search(
        r'TENSORRT_LLM_VERSION="\$\{TENSORRT_LLM_VERSION\}" bash scripts/image_tensorrt_llm.sh', steps[run_at][1]
    )


def run_script(tmp_path: Path, installed: str | None, pin: str, backend: bool) -> subprocess.CompletedProcess[str]:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "python").write_text(FAKE_PYTHON)
    (tools / "python").chmod(0o755)
    if installed:
        (tools / "installed").write_text(installed + "\n")
    backends = tmp_path / "backends"
    (backends / ("tensorrtllm" if backend else "python")).mkdir(parents=True)
    env = {
        **os.environ,
        "TENSORRT_LLM_VERSION": pin,
        "PYTHON": str(tools / "python"),
        "TRITON_BACKENDS": str(backends),
        "RUNTIMES_FILE": str(tmp_path / "opt" / "runtimes"),
    }
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30, check=False)


def test_the_trtllm_image_serves_both_runtimes(tmp_path: Path) -> None:
    result = run_script(tmp_path, PINNED_TRTLLM, "", backend=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "opt" / "runtimes").read_text() == "engine pytorch\n"
    assert not (tmp_path / "tools" / "pip.log").exists()


def test_a_plain_triton_base_installs_the_pinned_wheel_and_serves_the_pytorch_runtime_only(tmp_path: Path) -> None:
    result = run_script(tmp_path, None, "1.3.0", backend=False)
    assert result.returncode == 0, result.stderr
    pip = (tmp_path / "tools" / "pip.log").read_text()
    assert pip == "-m pip install --extra-index-url https://pypi.nvidia.com tensorrt-llm==1.3.0\n"
    assert (tmp_path / "opt" / "runtimes").read_text() == "pytorch\n"
    assert "TensorRT-LLM 1.3.0; runtimes: pytorch" in result.stdout


@pytest.mark.parametrize(
    ("installed", "pin", "phrase"),
    [
        (None, "", "the base image has no TensorRT-LLM; pass --build-arg TENSORRT_LLM_VERSION"),
        (PINNED_TRTLLM, "1.3.0", f"ships TensorRT-LLM {PINNED_TRTLLM} but TENSORRT_LLM_VERSION is 1.3.0"),
    ],
)
def test_a_missing_or_contradicting_pin_fails_the_build(
    tmp_path: Path, installed: str | None, pin: str, phrase: str
) -> None:
    result = run_script(tmp_path, installed, pin, backend=installed is not None)
    assert result.returncode == 2
    assert phrase in result.stderr
    assert not (tmp_path / "opt" / "runtimes").exists()
