# Two commands for a fresh machine: `make run` (the whole study) and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed

# Stage commands in dvc.yaml run `python`: make it this project's.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: install run test check-params lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: install  ## the whole pipeline; reruns only what changed
	dvc repro

test: install
	python -m pytest

check-params: install  ## validate params.yaml, listing every problem
	python -m stages.config

lint: install
	ruff check stages flows tests

clean:  ## pipeline outputs only (DVC's cache in .dvc/cache stays)
	rm -rf data/raw data/prepared data/models data/eval data/report
