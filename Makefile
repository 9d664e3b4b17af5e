# Mistral NeMo 12B on TensorRT-LLM + Triton. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONSTRAINTS := requirements/constraints.txt
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup postgres test test-reliability lint format bench clean demo helm image engine gpu-check serve gateway

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

setup: $(STAMP) postgres ## create .venv and install everything, pinned (CPU torch from local disk), and PostgreSQL

# The tests start a PostgreSQL server of their own (the gateways' shared response store) from Debian's binaries.
postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || { \
		echo "make setup: the tests need PostgreSQL's binaries: apt-get install postgresql (as root)" >&2; exit 1; }

# torch goes first and alone so that pip takes the CPU build of 2.13.0 instead of resolving a CUDA build.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) torch==2.13.0
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[all]'
	touch $@

test: setup lint ## lint, then run the whole test suite (unit, integration on a real Triton, chart)
	$(BIN)/python -m pytest tests --ignore=tests/bench $(PYTEST_ARGS)

test-reliability: setup ## reliability at full length (minutes-long 64-stream soak, faults, 400-example fuzz, hostile input x10) on a real CPU Triton
	NEMO_RELIABILITY=full $(BIN)/python -m pytest tests/reliability -rxX $(PYTEST_ARGS)

lint: setup ## ruff check + format check + mypy (strict on the client API and the protocol)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup ## run every benchmark side by side and regenerate docs/BENCHMARKS.md
	$(BIN)/python -m tests.bench.run

helm: setup ## render, lint and validate the Helm chart against Kubernetes 1.33 (no cluster needed)
	$(BIN)/python -m pytest tests/helm -q

image: ## build the serving image (needs docker and access to nvcr.io)
	docker build -t mistral-nemo-trtllm:0.1.0 .

# `make serve` in one shell and `make gateway` in another find each other: Triton's gRPC on 8001 and metrics on
# 8002 (its usual ports), its HTTP on 8010 so that the gateway keeps 8000.
REPO ?= artifacts/demo/repository
TRITON_GRPC_PORT ?= 8001
TRITON_HTTP_PORT ?= 8010
TRITON_METRICS_PORT ?= 8002
serve: setup ## start Triton on a rendered repository (REPO=dir from `nemo-build repository`; default: the demo's); gRPC :8001
	$(BIN)/nemo-serve --model-repository $(REPO) --grpc-port $(TRITON_GRPC_PORT) --http-port $(TRITON_HTTP_PORT) \
		--metrics-port $(TRITON_METRICS_PORT)

TRITON_URL ?= localhost:$(TRITON_GRPC_PORT)
GATEWAY_PORT ?= 8000
gateway: setup ## start the OpenAI-compatible gateway on :8000 in front of `make serve` (TRITON_URL=host:port)
	$(BIN)/nemo-gateway --triton-url $(TRITON_URL) --port $(GATEWAY_PORT)

engine: ## on a GPU host: make engine MODEL_DIR=/path/to/Mistral-NeMo [PROFILE=h100-fp8-tp1] [OUT=artifacts/engine-build]
	@test -n "$(MODEL_DIR)" || { echo "make engine: set MODEL_DIR=<Hugging Face Mistral NeMo directory>" >&2; exit 2; }
	scripts/make_engine.sh "$(MODEL_DIR)" "$(or $(PROFILE),h100-fp8-tp1)" "$(or $(OUT),artifacts/engine-build)"

gpu-check: setup ## on a GPU host: preflight, build, serve, chat+tools+stream, bench → docs/gpu/ (MODEL_DIR=... [PROFILE=a[,b]] [RUNTIMES=engine,pytorch: side by side] [OUT=] [GPU_CHECK_ARGS=])
	@test -n "$(MODEL_DIR)" || { echo "make gpu-check: set MODEL_DIR=<Hugging Face Mistral NeMo Instruct directory>" >&2; exit 2; }
	$(BIN)/python -m nemo_ops.gpu_check --model-dir "$(MODEL_DIR)" --profile "$(or $(PROFILE),h100-fp8-tp1)" --out "$(or $(OUT),artifacts/gpu-check)" \
		$(if $(RUNTIMES),--runtimes "$(RUNTIMES)") $(GPU_CHECK_ARGS)

demo: setup ## the whole stack on CPU with the tiny model: build, FP8 calibrate, serve, chat, tools, OpenAI SDK
	$(BIN)/python -m nemo_ops.demo

clean: ## remove build artifacts (keeps .venv)
	rm -rf artifacts .pytest_cache .ruff_cache .hypothesis
