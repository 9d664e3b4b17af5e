# syntax=docker/dockerfile:1
# The serving image: NVIDIA's Triton + TensorRT-LLM container with this project on top. One image runs
# the engine build (`nemo-build`), Triton (`tritonserver`, under `mpirun` for tensor parallelism) and the
# HTTP gateway (`nemo-gateway`), so an engine is always built by the TensorRT-LLM that serves it.
#
#   docker build -t mistral-nemo-trtllm:0.1.0 .            (the Helm chart's default image and tag)
#
# Base: Triton 26.07 with TensorRT-LLM 1.2.1 and TensorRT 10.14.1, the last line that builds and serves
# `trtllm-build` engines (ARCHITECTURE.md, "Versions"): both runtimes, `engine` and `pytorch`. Bumping it changes
# the TensorRT-LLM version: set the chart's engine.trtllmVersion to match, which gives engines a new cache key.
#
# A newer Triton without TensorRT-LLM, the pytorch runtime only (no tensorrtllm backend, no trtllm-build):
#   docker build --build-arg BASE_IMAGE=nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \
#                --build-arg TENSORRT_LLM_VERSION=<x.y.z> -t mistral-nemo-trtllm:0.1.0-pytorch .
# installs the pinned `tensorrt-llm` wheel (scripts/image_tensorrt_llm.sh); /opt/mistral-nemo/runtimes says which
# runtimes the image serves. Set the chart's engine.runtime=pytorch and engine.trtllmVersion to the pin.
ARG BASE_IMAGE=nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3
FROM ${BASE_IMAGE}
# empty: the base's TensorRT-LLM (the trtllm images); a version: the tensorrt-llm wheel for a plain -py3 base
ARG TENSORRT_LLM_VERSION=""

# A fixed non-root user; the chart's podSecurityContext runs every container as this uid/gid.
ARG APP_UID=10001
ARG APP_GID=10001

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --gid "${APP_GID}" nemo \
 && useradd --uid "${APP_UID}" --gid "${APP_GID}" --create-home --home-dir /home/nemo --shell /bin/bash nemo

WORKDIR /opt/mistral-nemo
COPY pyproject.toml README.md ./
COPY build/ build/
COPY client/ client/
COPY model_repository/ model_repository/
# make_engine.sh and the pip constraints: nemo_ops ships them as package data (links into these folders)
COPY scripts/ scripts/
COPY requirements/ requirements/

# Install the project without touching what the base image ships.
# - Every package already in the image is pinned to its installed version (a constraints file made from
#   `pip list`), so no resolve can replace TensorRT-LLM's torch (<=2.10), transformers 4.57.3,
#   nvidia-modelopt 0.37 or tensorrt 10.14: a CUDA torch from PyPI on top of the image's would be a
#   second, mismatched CUDA stack, and an upgraded transformers breaks the ModelOpt export.
# - The `build` extra is not installed: it pins the CPU torch 2.13 that the development machines use.
#   Its other requirements are TensorRT-LLM's own dependencies, already here; they are named below only
#   so that the install fails loudly if the base image ever stops shipping them.
# - The templates (model_repository/) and the build profiles ship inside the wheel as nemo_build package data;
#   scripts/make_engine.sh and requirements/constraints.txt as nemo_ops package data (what gpu-check builds with).
# - PIP_BREAK_SYSTEM_PACKAGES: the image's packages live in the system Python, which a base may mark
#   externally managed (PEP 668); this image is that environment, so pip must install into it.
RUN TENSORRT_LLM_VERSION="${TENSORRT_LLM_VERSION}" bash scripts/image_tensorrt_llm.sh \
 && python3 -m pip list --format=freeze > /tmp/image-constraints.txt \
 && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -c /tmp/image-constraints.txt \
      '.[client,gateway]' \
      nvidia-modelopt transformers safetensors pyyaml tqdm datasets \
 && rm -f /tmp/image-constraints.txt \
 && python3 -c "import importlib.metadata as m; print('TensorRT-LLM', m.version('tensorrt_llm'))" \
 && python3 -c "import nemo_build, nemo_chat_core, nemo_client, nemo_gateway, nemo_ops, nemo_protocol, nemo_serving" \
 && nemo-build --help > /dev/null

USER ${APP_UID}:${APP_GID}
ENV HOME=/home/nemo
WORKDIR /home/nemo

# Triton HTTP, gRPC, metrics (the gateway also listens on 8000, in its own pod).
EXPOSE 8000 8001 8002
# The base image's ENTRYPOINT (/opt/nvidia/nvidia_entrypoint.sh: CUDA forward-compatibility setup, then
# exec "$@") stays; the chart passes each container's command as its args.
