# spotguard developer entry points. Every target sets up what it needs itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo demo-helm test lint unit e2e controlplane tools bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install spotguard with its dev tools

controlplane: setup  ## build kube-apiserver, etcd, ... from Go modules (cached)
	$(BIN)/python -m controlplane.build

tools: setup  ## build helm and promtool from Go modules (cached)
	$(BIN)/python -m tools.build

demo: controlplane  ## local demo: a real control plane, the webhook, the examples
	$(BIN)/python -m devtools.demo

demo-helm: controlplane tools  ## helm install (audit), upgrade (enforce) and uninstall on a local control plane
	$(BIN)/python -m devtools.demo_helm

lint: setup  ## ruff and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint controlplane tools  ## everything CI runs: lint, unit, HTTP/TLS and end-to-end tests
	$(BIN)/pytest

bench: setup  ## webhook throughput and latency over real gunicorn and TLS
	$(BIN)/python -m benchmarks.bench_webhook

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
