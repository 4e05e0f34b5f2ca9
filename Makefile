# Two commands to start: `make demo` (the whole pipeline offline on generated data, CPU, ~10 min) and
# `make test`. Both create .venv on first use; later runs reuse it until pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup test lint demo repro ui bench check-metrics clean-demo

setup: $(STAMP)

# The stamp depends on the dependency spec: editing pyproject.toml reinstalls, nothing else does.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

test: lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

demo: $(STAMP)
	$(BIN)/python -m tools.demo

# The real thing: PASCAL VOC 2012 with params.yaml as committed (2 GB download, a GPU recommended).
repro: $(STAMP)
	$(BIN)/dvc repro

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath mlflow.db) --host 127.0.0.1 --port 5000

bench: $(STAMP)
	$(BIN)/python -m tools.bench

# Force the evaluation stages again and fail if any model's mIoU differs from what is in metrics/ now.
check-metrics: $(STAMP)
	rm -rf .demo/baseline && mkdir -p .demo/baseline && cp metrics/*.json .demo/baseline/
	$(BIN)/dvc repro --force --single-item --glob 'evaluate@*'
	$(BIN)/python -m tools.check_metrics --baseline .demo/baseline --exact
