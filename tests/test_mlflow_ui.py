"""`make ui` leads straight to the project's runs compared by val mIoU: the link `tools.ui` prints opens, in a real
headless Chromium against the real `mlflow ui`, the experiment's runs table in MLflow's "Model training" navigation,
sorted by val mIoU (best first) with a val mIoU column, and each run named so that a list tells them apart."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_plots_offline import CHROMIUM, needs_chromium
from test_team_mlflow import free_port, stop

from pipeline.tracking import runs

REPO = Path(__file__).resolve().parents[1]
# Headless as root in a container, nothing started in the background; the page talks to the UI on loopback only.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,900", "--virtual-time-budget=20000"]

SCORES = {"fcn · fcn32s · 1111111": 0.61, "unet · width8-bilinear · 2222222": 0.83,
          "deeplab · resnet18-os16 · 3333333": 0.72}


def test_run_names_tell_models_commits_and_experiments_apart():
    provenance = {"git_commit": "a76e7b3" + "0" * 33, "git_dirty": "false"}
    assert runs.run_name("fcn", "fcn32s", provenance) == "fcn · fcn32s · a76e7b3"
    assert runs.run_name("fcn", "fcn32s", {**provenance, "git_dirty": "true"}) == "fcn · fcn32s · a76e7b3+"
    assert runs.run_name("unet", "width8-bilinear", {**provenance, "dvc_experiment": "lucid-lamb"}) == \
        "unet · width8-bilinear · lucid-lamb"


@pytest.mark.slow
@needs_chromium
def test_the_printed_link_opens_the_runs_sorted_by_val_miou(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name, score in SCORES.items():
        tracker = runs.Tracker("voc-segmentation", run_name=name)
        tracker.log_metrics({"val_miou": score, "val_pixel_accuracy": 0.9})
        tracker.close()

    port = free_port()
    log = tmp_path / "ui.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "tools.ui", "--port", str(port), "--params",
                                    str(REPO / "params.yaml")], cwd=tmp_path, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        link = re.search(r"by val mIoU: (\S+)", log.read_text()).group(1)
        assert link.startswith(f"http://127.0.0.1:{port}/#/experiments/")

        for _ in range(3):  # the page loads its data after the first paint; a slow machine may need another look
            page = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}",
                                   "--dump-dom", link],
                                  capture_output=True, text=True, timeout=120).stdout
            if all(name in page for name in SCORES):
                break
        assert all(name in page for name in SCORES), page[-3000:]
        order = sorted((page.index(name), name) for name in SCORES)
        assert [name for _, name in order] == sorted(SCORES, key=SCORES.get, reverse=True)
        assert "Sort: val_miou" in page and ">val_miou<" in page
        assert "Model training" in page and "Traces" in page  # not the GenAI overview
    finally:
        stop(process)
