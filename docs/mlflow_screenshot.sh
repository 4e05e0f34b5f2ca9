#!/usr/bin/env bash
# Regenerates docs/mlflow-compare.png: the MLflow comparison of the newest run of each model, as the README
# shows it. Needs Debian's chromium (apt-get install chromium) and the demo's runs in mlflow.db.
set -euo pipefail
cd "$(dirname "$0")/.."
port=5077
.venv/bin/mlflow ui --backend-store-uri "sqlite:///$PWD/mlflow.db" --host 127.0.0.1 --port $port >/tmp/mlflow-ui.log 2>&1 &
ui=$!
trap 'kill $ui' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
query=$(.venv/bin/python - <<'PY'
import json, urllib.parse
from mlflow.tracking import MlflowClient
client = MlflowClient(tracking_uri="sqlite:///mlflow.db")
experiment = client.get_experiment_by_name("voc-segmentation")
newest = {}
for run in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"]):
    newest.setdefault(run.data.tags.get("model"), run.info.run_id)
print(f"runs={urllib.parse.quote(json.dumps(list(newest.values())))}&experiments={urllib.parse.quote(json.dumps([experiment.experiment_id]))}")
PY
)
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --hide-scrollbars \
  --window-size=1500,2300 --virtual-time-budget=15000 \
  --screenshot=docs/mlflow-compare.png "http://127.0.0.1:$port/#/compare-runs?$query"
