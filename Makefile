# qwen-tune: `make run` trains the default job on this box's GPUs; `make test` runs the tests.
#
# Nothing needs activating: by default every target installs into, and runs from, a project virtualenv
# (.venv) made with --system-site-packages, so a box's own torch (a CUDA build, say) is used as it is.
# PYTHON=/path/to/python uses that interpreter instead; each interpreter gets its own install stamp.
# Where Python writes no bytecode (PYTHONDONTWRITEBYTECODE, as container images set), installing also compiles
# swift's imports into qwen-tune's cache (qwen_tune/swift/bytecode.py), so the first run starts as fast as the next.
VENV ?= .venv
BASE_PYTHON ?= python3
ifeq ($(origin PYTHON),undefined)
PYTHON := $(VENV)/bin/python
OWN_VENV := $(PYTHON)
endif
QWEN_TUNE := $(PYTHON) -m qwen_tune
ARGS ?=
TINY_MODEL := build/tiny-qwen2
BOX_FREEZE ?= box-freeze.txt
WHEELHOUSE ?= wheelhouse
EXTRAS ?= gpu
SITE ?= $(CURDIR)/site
# A Linux box with the NVIDIA driver also gets qwen-tune[gpu]: deepspeed (ZeRO-3) and bitsandbytes (QLoRA).
GPU_BOX := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)
comma := ,
INSTALL_EXTRAS ?= test$(if $(GPU_BOX),$(comma)gpu)
# Where there is no torch yet: PyPI's (CUDA) build on a GPU box, else the CPU wheel from PyTorch's index
# (~200 MB, not PyPI's ~900 MB build with its CUDA libraries). Behind a mirror: TORCH_INDEX= TORCH=torch==2.13.0+cpu.
TORCH ?= torch
TORCH_INDEX ?= $(if $(GPU_BOX),,https://download.pytorch.org/whl/cpu)
STAMP := build/.installed$(subst /,_,$(abspath $(PYTHON)))-$(INSTALL_EXTRAS)

# `make` alone installs; `make help` lists the targets.
.DEFAULT_GOAL := install
.PHONY: help install run plan gpus demo test test-gpu lint export bench wheelhouse install-offline clean

$(VENV)/bin/python:
	@$(BASE_PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "qwen-tune needs Python 3.10 or newer: make BASE_PYTHON=python3.11 ..."; exit 1; }
	$(BASE_PYTHON) -m venv --system-site-packages $(VENV) || { rm -rf $(VENV); echo "no venv module: apt install python3-venv, or pass PYTHON=/path/to/python"; exit 1; }

$(STAMP): pyproject.toml $(OWN_VENV)
	@$(PYTHON) -c 'import torch' 2>/dev/null || { echo "no torch in $(PYTHON): installing $(if $(TORCH_INDEX),the CPU build,PyPI's CUDA build)"; \
		$(PYTHON) -m pip install -q '$(TORCH)' $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); }
	$(PYTHON) -m pip install -q -e '.[$(INSTALL_EXTRAS)]'
	$(PYTHON) -m qwen_tune.swift.bytecode
	@mkdir -p build && touch '$@'

install: $(STAMP)  ## install qwen-tune, ms-swift, the test tools (and on a GPU box qwen-tune[gpu]) into .venv; keeps a box's torch

run: $(STAMP)  ## the main job: Qwen2.5-7B-Instruct learns its new identity on this box's GPUs
	$(QWEN_TUNE) run $(ARGS)

plan: $(STAMP)  ## what `run` would do here (or elsewhere: make plan ARGS="--gpus 2xrtx3090")
	$(QWEN_TUNE) plan $(ARGS)

gpus: $(STAMP)  ## list this box's GPUs (NVML)
	$(QWEN_TUNE) gpus $(ARGS)

$(TINY_MODEL)/config.json: | $(STAMP)  # order-only: reinstalling must not rebuild the model
	$(PYTHON) tools/make_model.py tiny $(TINY_MODEL)

demo: $(TINY_MODEL)/config.json  ## offline demo: a tiny random Qwen2 learns the identity on the CPU (1-5 min)
	$(QWEN_TUNE) run --recipe demo-tiny-cpu --model $(TINY_MODEL) --gpus cpu $(ARGS)

test: $(STAMP)  ## unit, golden and CPU end-to-end tests (GPU tests skip without CUDA)
	$(PYTHON) -m pytest $(ARGS)

lint: $(STAMP)  ## ruff: mistakes (ruff check) and formatting (ruff format --check)
	$(PYTHON) -m ruff check qwen_tune tests tools
	$(PYTHON) -m ruff format --check qwen_tune tests tools

test-gpu: $(STAMP)  ## on a GPU box: the NVML reader and a real run on the GPU
	$(PYTHON) -m pytest -m gpu $(ARGS)

export: $(STAMP)  ## merge a run's adapter: make export RUN=runs/<run>
	$(QWEN_TUNE) export $(RUN)

bench: $(STAMP)  ## on a GPU box: every profile under its card's memory cap (tools/bench.py); results in runs/bench
	$(PYTHON) tools/bench.py run $(ARGS)
	$(PYTHON) tools/bench.py report --results runs/bench/results.jsonl

wheelhouse: $(STAMP)  ## with network: wheels for an air-gapped GPU box (BOX_FREEZE=its pip freeze); EXTRAS=gpu: what make run installs there
	$(PYTHON) tools/wheelhouse.py --freeze $(BOX_FREEZE) --out $(WHEELHOUSE) --extras '$(EXTRAS)'

install-offline: $(OWN_VENV)  ## on the air-gapped box, PYTHON=its torch python: install the wheelhouse into $(SITE)
	$(PYTHON) -m pip install --no-index --no-deps --upgrade --target $(SITE) $(WHEELHOUSE)/*.whl
	PYTHONPATH=$(SITE) $(PYTHON) -m qwen_tune.swift.bytecode
	@echo "now: export PYTHONPATH=$(SITE) PATH=$(SITE)/bin:\$$PATH HF_HUB_OFFLINE=1"

clean:  ## build outputs and install stamps (the virtualenv stays: rm -rf .venv)
	rm -rf build .pytest_cache

help:  ## this list: each target and what it does
	@awk -F':.*## ' '/^[a-z-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo '  pass options with ARGS="...", e.g. make plan ARGS="--gpus 2xrtx3090"'
