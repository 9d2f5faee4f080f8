# spotguard developer entry points. Every target sets up what it needs itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup host-packages demo demo-helm drill images test lint unit e2e controlplane tools bench bench-audit bench-apiserver soak fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install spotguard with its dev tools

host-packages:  ## Debian packages: hook shells, containerd, runc, CNI plugins (only if missing)
	sh testsupport/install-host-packages.sh

controlplane: setup  ## build kube-apiserver, etcd, ... from Go modules (cached)
	$(BIN)/python -m controlplane.build

tools: setup  ## build helm and promtool from Go modules (cached)
	$(BIN)/python -m tools.build

images: setup  ## pause and trainer images (OCI archives) from Debian packages (cached)
	$(BIN)/python -m controlplane.images

drill: host-packages controlplane images  ## real kubelets preempt a training Job: timelines, claims checked
	$(BIN)/python -m demos.drill

demo: controlplane  ## local demo: a real control plane, the webhook, the examples
	$(BIN)/python -m demos.demo

demo-helm: controlplane tools  ## helm install (audit), upgrade (enforce) and uninstall on a local control plane
	$(BIN)/python -m demos.demo_helm

lint: setup  ## ruff and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

#: The fast loop's tests: pure logic, no process started, no Go, no control plane.
SLOW := e2e or processes or toolchain or properties or kind

unit: setup  ## the fast loop (seconds; no Go, no control plane): pure-logic tests
	$(BIN)/pytest -q -m "not ($(SLOW))"

e2e: host-packages controlplane tools  ## the rest: real gunicorn/TLS, shells, Go-built tools, properties, control plane
	$(BIN)/pytest -m "$(SLOW)"

test: lint host-packages controlplane tools  ## everything CI runs: lint, unit, HTTP/TLS and end-to-end tests
	$(BIN)/pytest

bench: setup  ## throughput and latency over real gunicorn and TLS: new vs old design, bad clients
	$(BIN)/python -m benchmarks.bench_webhook

bench-audit: controlplane  ## cluster audit of 5,000 pods on a real kube-apiserver
	$(BIN)/python -m benchmarks.bench_audit

bench-apiserver: controlplane  ## what spotguard costs the API server per pod create, vs none and a MutatingAdmissionPolicy
	$(BIN)/python -m benchmarks.bench_apiserver

fuzz: setup  ## the property tests on 1,000,000 random cases, both cores, at most an hour
	$(BIN)/python -m tests.fuzz --cases 1000000 --jobs 2 --max-seconds 3600

soak: setup  ## 10 minutes of load while certificates, policy and workers change (not in CI)
	$(BIN)/python -m benchmarks.soak --minutes 10

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
