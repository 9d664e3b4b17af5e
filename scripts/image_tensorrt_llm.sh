#!/usr/bin/env bash
# Run by the Dockerfile: makes sure the image has TensorRT-LLM and writes which runtimes it serves.
#
# On nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3 (the default base) TensorRT-LLM 1.2.1 is there with the
# C++ tensorrtllm Triton backend: both runtimes (`engine`, `pytorch`). On a plain `tritonserver:<yy.mm>-py3` base
# TENSORRT_LLM_VERSION (a build argument) pins the `tensorrt-llm` wheel installed on top: the LLM API only, so
# the `pytorch` runtime only (upstream stopped shipping the engine flow in July 2026; a wheel has no Triton
# backend). A version the base already has must match a given pin.
# Environment: TENSORRT_LLM_VERSION (may be empty), PYTHON (python3), TRITON_BACKENDS (/opt/tritonserver/backends),
# RUNTIMES_FILE (/opt/mistral-nemo/runtimes), PIP_INDEX_ARGS (--extra-index-url https://pypi.nvidia.com).
set -euo pipefail

want=${TENSORRT_LLM_VERSION:-}
python=${PYTHON:-python3}
backends=${TRITON_BACKENDS:-/opt/tritonserver/backends}
runtimes_file=${RUNTIMES_FILE:-/opt/mistral-nemo/runtimes}
installed() { "$python" -c 'import importlib.metadata as m; print(m.version("tensorrt_llm"))' 2>/dev/null || true; }

have=$(installed)
if [ -z "$have" ]; then
  if [ -z "$want" ]; then
    echo "image: the base image has no TensorRT-LLM; pass --build-arg TENSORRT_LLM_VERSION=<x.y.z> (the pinned" \
      "tensorrt-llm wheel, pytorch runtime only) or build on the 26.07 trtllm image (both runtimes)" >&2
    exit 2
  fi
  # shellcheck disable=SC2086 # one word per argument
  PIP_BREAK_SYSTEM_PACKAGES=1 "$python" -m pip install ${PIP_INDEX_ARGS---extra-index-url https://pypi.nvidia.com} \
    "tensorrt-llm==$want"
  have=$(installed)
  [ "$have" = "$want" ] || { echo "image: installed tensorrt-llm is '$have', not $want" >&2; exit 2; }
elif [ -n "$want" ] && [ "$want" != "$have" ]; then
  echo "image: the base image ships TensorRT-LLM $have but TENSORRT_LLM_VERSION is $want: drop the build" \
    "argument, or build on a plain tritonserver:<yy.mm>-py3 base" >&2
  exit 2
fi

if [ -d "$backends/tensorrtllm" ]; then runtimes="engine pytorch"; else runtimes="pytorch"; fi
mkdir -p "$(dirname "$runtimes_file")"
printf '%s\n' "$runtimes" >"$runtimes_file"
echo "image: TensorRT-LLM $have; runtimes: $runtimes"
