"""A GPU host as far as nemo-build can see one: `nvidia-smi`, `trtllm-build` and TensorRT-LLM's package metadata.

`GpuHost(root, gpu_name, compute_capability)` writes the stand-ins under `root` and gives the environment
that puts them first: `PATH` (the two commands) and `PYTHONPATH` (dist-info folders for `tensorrt_llm` 1.2.1
and `tensorrt` 10.14.1, as the NGC image has them installed). Nothing of TensorRT-LLM's code is there: only
what the preflight and the compatibility check read.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.gpu_host import trtllm_build
from tests.source_tree import PROJECT

TRTLLM_VERSION = trtllm_build.TRTLLM_VERSION
TENSORRT_VERSION = "10.14.1"
DRIVER_VERSION = "590.48.01"
# What nvidia-smi prints (name, compute capability) for the GPU a build profile names.
GPUS = {
    "H100": ("NVIDIA H100 80GB HBM3", "9.0"),
    "H200": ("NVIDIA H200", "9.0"),
    "L40S": ("NVIDIA L40S", "8.9"),
    "A100": ("NVIDIA A100-SXM4-80GB", "8.0"),
}

NVIDIA_SMI = """#!/usr/bin/env bash
# Stand-in nvidia-smi: answers the queries nemo-build and the chart scripts make.
name=${STANDIN_GPU_NAME:?} cap=${STANDIN_GPU_CC:?}
case "$*" in
  -L) echo "GPU 0: $name (UUID: GPU-00000000-0000-0000-0000-000000000000)" ;;
  *--query-gpu=*) fields=${*#*--query-gpu=}; fields=${fields%% *}; out=()
    IFS=, read -ra wanted <<<"$fields"
    for field in "${wanted[@]}"; do
      case $field in
        name) out+=("$name") ;;
        compute_cap) out+=("$cap") ;;
        driver_version) out+=("$DRIVER") ;;
        memory.total) out+=("81559 MiB") ;;
        *) echo "Field \\"$field\\" is not a valid field to query." >&2; exit 2 ;;
      esac
    done
    (IFS=,; echo "${out[*]}" | sed 's/,/, /g') ;;
  *) echo "stand-in nvidia-smi: unsupported arguments: $*" >&2; exit 2 ;;
esac
"""


def _dist_info(site: Path, name: str, version: str) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


class GpuHost:
    def __init__(self, root: Path, gpu_name: str = "NVIDIA H100 80GB HBM3", compute_capability: str = "9.0") -> None:
        self.root = root
        self.bin = root / "bin"
        self.site = root / "site"
        self.argv_log = root / "trtllm-build.argv.jsonl"
        self.bin.mkdir(parents=True)
        (self.bin / "nvidia-smi").write_text(NVIDIA_SMI.replace("$DRIVER", DRIVER_VERSION))
        (self.bin / "trtllm-build").write_text(
            f'#!/usr/bin/env bash\nexec {sys.executable} -c \'import sys; sys.path.insert(0, "{PROJECT}"); '
            'from tests.gpu_host.trtllm_build import main; sys.exit(main(sys.argv[1:]))\' "$@"\n'
        )
        for tool in ("nvidia-smi", "trtllm-build"):
            (self.bin / tool).chmod(0o755)
        _dist_info(self.site, "tensorrt_llm", TRTLLM_VERSION)
        _dist_info(self.site, "tensorrt", TENSORRT_VERSION)
        self.gpu_name = gpu_name
        self.compute_capability = compute_capability

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.bin}:{env.get('PATH', '')}"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.site), env.get("PYTHONPATH", "")) if p)
        env.update(
            STANDIN_GPU_NAME=self.gpu_name,
            STANDIN_GPU_CC=self.compute_capability,
            TRTLLM_BUILD_ARGV_LOG=str(self.argv_log),
        )
        return env

    def trtllm_build_calls(self) -> list[list[str]]:
        if not self.argv_log.exists():
            return []
        return [json.loads(line) for line in self.argv_log.read_text().splitlines()]


def python_without_this_project(root: Path) -> Path:
    """A venv whose site-packages holds everything this one has except this project: the NGC image's view.

    Returns its `bin/` (first on PATH, `python3` there is that interpreter). Entries are symlinks, so it costs
    a second to make.
    """
    import subprocess
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    ours = ("mistral_nemo_trtllm", "__editable__.mistral_nemo_trtllm", "__editable___mistral_nemo_trtllm")
    source = Path(sysconfig.get_paths()["purelib"])
    target = root / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for entry in source.iterdir():
        if not entry.name.startswith(ours):
            (target / entry.name).symlink_to(entry)
    return root / "bin"
