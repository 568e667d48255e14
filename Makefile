# Two commands for a fresh machine: `make run` (the whole study) and `make test`.
# Paths that make itself handles (targets, prerequisites) are relative to the
# project folder, and recipes quote absolute ones: the folder's name may hold
# spaces or other letters make and the shell would split.
PYTHON ?= python3.11
VENV   ?= .venv
STAMP  := $(VENV)/.installed
# uv installs uv.lock. It is pinned itself, by version and by the hash of its
# Linux x86-64 wheel, and pip puts it beside the environment (.venv/bin/uv).
UV_VERSION := 0.13.9
UV_SHA256  := d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19
UV_HOME    := $(VENV)/uv-$(UV_VERSION)
UV         := $(UV_HOME)/bin/uv
# The interpreter that makes .venv, looked up before .venv/bin joins PATH below.
PYTHON_BIN := $(shell command -v $(PYTHON))

# Stage commands in dvc.yaml run `python`: make it this project's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

PREFECT_PORT ?= 4200
UI_URL := http://127.0.0.1:$(PREFECT_PORT)

.PHONY: help install run flow test check-params push pull compare bench bench-cache lint ui serve ui-stop clean

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' Makefile | sed -E 's/^([a-z-]+):.*## /\1\t/' | expand -t 14

install: $(STAMP)  ## .venv exactly as uv.lock pins it (every other target runs it first)

# Exactly what uv.lock lists (anything else is removed), this project editable.
# Stops if uv.lock is stale against pyproject.toml.
$(STAMP): pyproject.toml uv.lock $(UV)
	@$(UV) lock --check --offline --quiet 2>/dev/null || { echo "uv.lock does not match \
	pyproject.toml: run 'make lock', then commit uv.lock ('$(VENV)/bin/uv lock --check' says why)" >&2; exit 1; }
	UV_PROJECT_ENVIRONMENT="$(CURDIR)/$(VENV)" $(UV) sync --locked --extra dev --compile-bytecode --quiet
	touch $@

$(UV):
	@test -n "$(PYTHON_BIN)" || { echo "$(PYTHON) not found: make needs Python 3.11" >&2; exit 1; }
	test -f $(VENV)/pyvenv.cfg || "$(PYTHON_BIN)" -m venv --without-pip $(VENV)
	echo 'uv==$(UV_VERSION) --hash=sha256:$(UV_SHA256)' | PIP_ROOT_USER_ACTION=ignore \
	  "$(PYTHON_BIN)" -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
	  --target $(UV_HOME) -r /dev/stdin
	ln -sf ../uv-$(UV_VERSION)/bin/uv $(VENV)/bin/uv

.PHONY: lock
lock: $(UV)  ## re-resolve uv.lock after editing pyproject.toml (other pins stay as they are)
	$(UV) lock

run: install  ## the whole pipeline; reruns only what changed (dvc repro, see tools/dvc.py)
	python -m tools.dvc repro

flow: install  ## the same pipeline as one Prefect flow run (see README)
	python -m flows.pipeline

test: install  ## the test suite (real DVC, Prefect and Keras on a small subset)
	python -m pytest

check-params: install  ## validate params.yaml, listing every problem
	python -m mnist_cnn.cli.checks

push: install  ## send results and the run-cache (with its outputs) to the DVC remote
	python -m tools.share push

pull: install  ## fetch them: then dvc repro / the flow train nothing that was pushed
	python -m tools.share pull

compare: install  ## experiments side by side: changed params, accuracy/loss per task
	python -m tools.compare

bench: install  ## benchmarks/results.md, accuracy.md (an hour or more on 2 cores; not part of the tests)
	python -m benchmarks.run
	python -m benchmarks.accuracy task4_sgd

bench-cache: install  ## cache timings on this built project: make bench-cache FULL_RUN_SECONDS=<make run's time>
	python -m benchmarks.cache --project . $(if $(FULL_RUN_SECONDS),--full-run-seconds $(FULL_RUN_SECONDS))

lint: install  ## ruff over the code and tests
	ruff check mnist_cnn stages flows tools tests benchmarks .dvc/plots/build_template.py

ui: install  ## a local Prefect server (SQLite) with its UI, in the background; idempotent
	python -m tools.prefect_server start --port $(PREFECT_PORT)
	@echo "Send flow runs to it: export PREFECT_API_URL=$(UI_URL)/api"
	@echo "Start runs from it: make serve. Stop it: make ui-stop"

serve: ui  ## serve the flow as a deployment: the UI's Run button starts the study
	PREFECT_API_URL=$(UI_URL)/api python -m flows.serve $(SERVE_ARGS)

ui-stop: install  ## stop the server of make ui
	python -m tools.prefect_server stop

clean:  ## pipeline outputs only (DVC's cache in .dvc/cache stays)
	rm -rf data/raw data/prepared data/models data/eval data/report
