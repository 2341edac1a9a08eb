# qwen-tune: `make run` trains the default job on this box's GPUs; `make test` runs the tests.
PYTHON ?= python3
ARGS ?=
TINY_MODEL := build/tiny-qwen2
BOX_FREEZE ?= box-freeze.txt
WHEELHOUSE ?= wheelhouse
EXTRAS ?= deepspeed,bitsandbytes
SITE ?= $(CURDIR)/site
STAMP := build/.installed

# `make` alone installs; `make help` lists the targets.
.PHONY: help install run plan gpus demo test test-gpu lint export bench wheelhouse install-offline clean

$(STAMP): pyproject.toml
	$(PYTHON) -m pip install -q -e '.[test]'
	@mkdir -p build && touch $@

install: $(STAMP)  ## install qwen-tune, ms-swift and the test tools (keeps an installed torch)

run: $(STAMP)  ## the main job: Qwen2.5-7B-Instruct learns its new identity on this box's GPUs
	qwen-tune run $(ARGS)

plan: $(STAMP)  ## what `run` would do here (or elsewhere: make plan ARGS="--gpus 2xrtx3090")
	qwen-tune plan $(ARGS)

gpus: $(STAMP)  ## list this box's GPUs (NVML)
	qwen-tune gpus $(ARGS)

$(TINY_MODEL)/config.json: | $(STAMP)  # order-only: reinstalling must not rebuild the model
	$(PYTHON) tools/make_model.py tiny $(TINY_MODEL)

demo: $(TINY_MODEL)/config.json  ## offline demo: a tiny random Qwen2 learns the identity on the CPU (~1 min)
	qwen-tune run --recipe demo-tiny-cpu --model $(TINY_MODEL) --gpus cpu $(ARGS)

test: $(STAMP)  ## unit, golden and CPU end-to-end tests (GPU tests skip without CUDA)
	$(PYTHON) -m pytest $(ARGS)

lint: $(STAMP)  ## ruff: mistakes (ruff check) and formatting (ruff format --check)
	$(PYTHON) -m ruff check qwen_tune tests tools
	$(PYTHON) -m ruff format --check qwen_tune tests tools

test-gpu: $(STAMP)  ## on a GPU box: the NVML reader and a real run on the GPU
	$(PYTHON) -m pytest -m gpu $(ARGS)

export: $(STAMP)  ## merge a run's adapter: make export RUN=runs/<run>
	qwen-tune export $(RUN)

bench: $(STAMP)  ## on a GPU box: every profile under its card's memory cap (tools/bench.py); results in runs/bench
	$(PYTHON) tools/bench.py run $(ARGS)
	$(PYTHON) tools/bench.py report --results runs/bench/results.jsonl

wheelhouse:  ## with network: wheels for an air-gapped GPU box (BOX_FREEZE=its pip freeze)
	$(PYTHON) tools/wheelhouse.py --freeze $(BOX_FREEZE) --out $(WHEELHOUSE) --extras $(EXTRAS)

install-offline:  ## on the air-gapped box, PYTHON=its torch python: install the wheelhouse into $(SITE)
	$(PYTHON) -m pip install --no-index --no-deps --upgrade --target $(SITE) $(WHEELHOUSE)/*.whl
	@echo "now: export PYTHONPATH=$(SITE) PATH=$(SITE)/bin:\$$PATH HF_HUB_OFFLINE=1"

clean:  ## remove build/ (the tiny model, the install stamp)
	rm -rf build .pytest_cache

help:  ## this list: each target and what it does
	@awk -F':.*## ' '/^[a-z-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo '  pass options with ARGS="...", e.g. make plan ARGS="--gpus 2xrtx3090"'
