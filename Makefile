# Two commands to start: `make demo` (the whole pipeline offline on generated data, CPU, about 5 min) and
# `make test`. Both create .venv on first use; later runs reuse it until pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup test lint deps demo repro ui bench bench-page check-metrics clean-checkpoints clean-demo server promote serve sweep \
	rehearse update-plot-libs

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

# dvc.yaml's code deps from the stages' imports and its plot lines from params.yaml's models (devtools/deps.py):
# after adding a module, an import, an architecture or a model. `make test` fails until dvc.yaml is what it writes.
deps: $(STAMP)
	$(BIN)/python -m tools.deps

# Every model's unfinished runs' checkpoints (checkpoints/<model>/<params hash>/), listed as they are removed.
# `python -m tools.checkpoints` lists them without removing anything.
clean-checkpoints: $(STAMP)
	$(BIN)/python -m tools.checkpoints --remove

demo: $(STAMP)
	$(BIN)/python -m tools.demo

# The real thing: PASCAL VOC 2012 with params.yaml as committed (2 GB download, a GPU recommended).
repro: $(STAMP)
	$(BIN)/dvc repro

# Prints the link to the runs compared by val mIoU, then serves the local store (mlflow.db) on 127.0.0.1:5000.
ui: $(STAMP)
	$(BIN)/python -m tools.ui --host 127.0.0.1 --port 5000

# Speed and memory with targets (DEVICE=cuda on a GPU; auto picks it when there is one). `make bench-page` then puts
# that run's results on docs/performance.md, generated, with the device and date.
DEVICE ?= auto
bench: $(STAMP)
	$(BIN)/python -m tools.bench --device $(DEVICE)

bench-page: $(STAMP)
	$(BIN)/python -m tools.bench_page --results bench/results.json

# Force the evaluation stages again and fail if any model's mIoU differs from what is in metrics/ now.
check-metrics: $(STAMP)
	rm -rf .demo/baseline && mkdir -p .demo/baseline && cp metrics/*.json .demo/baseline/
	$(BIN)/dvc repro --force --single-item --glob 'evaluate@*'
	$(BIN)/python -m tools.check_metrics --baseline .demo/baseline --exact

# A shared MLflow tracking server (SQLite + artefacts under SERVER_DIR); point stages at it with
# `export MLFLOW_TRACKING_URI=http://127.0.0.1:$(SERVER_PORT)`.
SERVER_PORT ?= 5050
SERVER_DIR ?= .mlflow-server
server: $(STAMP)
	$(BIN)/python -m tools.server --host 127.0.0.1 --port $(SERVER_PORT) --dir $(SERVER_DIR)

# The registry: the best evaluated version of $(DATASET)-$(MODEL) becomes $(DATASET)-$(MODEL)@champion, which
# `make serve` serves over HTTP (POST /invocations; see the README). Both use MLFLOW_TRACKING_URI, else the local
# store. DATASET is params.yaml's dataset.name.
MODEL ?= deeplab
DATASET ?= voc
SERVE_PORT ?= 5001
TRACKING_URI = $(or $(MLFLOW_TRACKING_URI),sqlite:///$(abspath mlflow.db))
promote: $(STAMP)
	$(BIN)/python -m tools.promote --model $(MODEL)

serve: $(STAMP)
	MLFLOW_TRACKING_URI=$(TRACKING_URI) $(BIN)/mlflow models serve -m models:/$(DATASET)-$(MODEL)@champion \
		--env-manager local -h 127.0.0.1 -p $(SERVE_PORT)

# What a real run costs: the real train and evaluate stages on a generated VOC-shaped dataset (1,464 / 1,449 images
# of VOC's sizes), two epochs of params.yaml's recipe per model; meant for a GPU (see tools/rehearse.py).
rehearse: $(STAMP)
	$(BIN)/python -m tools.rehearse

# Rebuild plots/page.html (vega, vega-lite, vega-embed inlined for offline `dvc plots show`) from the npm registry
# after changing LIBRARIES in plots/offline_page.py. Needs npm and the network; the plots themselves need neither.
update-plot-libs: $(STAMP)
	$(BIN)/python -m plots.offline_page update

# A learning-rate sweep of the demo's FCN (models.fcn.train.lr 0.001, 0.002, 0.004) as queued DVC experiments on
# the demo's data, after `make demo`; one MLflow run each. Compare with `dvc exp show` or `make ui`.
# Other grids: `python -m tools.sweep --set 'models.unet.train.lr=[0.002, 0.005]'` (see tools/sweep.py).
sweep: $(STAMP)
	$(BIN)/python -m tools.sweep
