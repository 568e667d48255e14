# Two commands for a fresh machine: `make run` (the whole study) and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed

# Stage commands in dvc.yaml run `python`: make it this project's.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

PREFECT_PORT ?= 4200
UI_URL := http://127.0.0.1:$(PREFECT_PORT)
# No telemetry: it fails without a network and slows the server's start.
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install run flow test check-params compare bench lint ui ui-stop clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: install  ## the whole pipeline; reruns only what changed
	dvc repro

flow: install  ## the same pipeline as one Prefect flow run (see README)
	python -m flows.pipeline

test: install
	python -m pytest

check-params: install  ## validate params.yaml, listing every problem
	python -m stages.config

compare: install  ## experiments side by side: changed params, accuracy/loss per task
	python -m tools.compare

bench: install  ## benchmarks/results.md, accuracy.md (about 35 minutes; not part of the tests)
	python -m benchmarks.run
	python -m benchmarks.accuracy task4_sgd

lint: install
	ruff check stages flows tools tests benchmarks

ui: install  ## a local Prefect server (SQLite) with its UI, in the background
	prefect server start --host 127.0.0.1 --port $(PREFECT_PORT) --background > /dev/null
	@for i in $$(seq 60); do \
	  PREFECT_API_URL=$(UI_URL)/api prefect server status > /dev/null 2>&1 && break; sleep 1; done
	@echo "Prefect UI: $(UI_URL)"
	@echo "Send flow runs to it: export PREFECT_API_URL=$(UI_URL)/api"
	@echo "Stop it: make ui-stop"

ui-stop: install
	prefect server stop

clean:  ## pipeline outputs only (DVC's cache in .dvc/cache stays)
	rm -rf data/raw data/prepared data/models data/eval data/report
