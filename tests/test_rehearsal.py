"""`tools.rehearse` at toy sizes: the real extract, prepare, train and evaluate stages on a generated VOC-shaped set,
and a cost report built from what they measured. The timings themselves are not checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from devtools import rehearsal
from pipeline.core.errors import PipelineError
from pipeline.prepared.dataset import PreparedSplit
from tools import rehearse

REPO = Path(__file__).resolve().parents[1]


def tiny_params() -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"].update(batch_size=4, crop_size=[32, 32], workers=0, device="cpu", epochs=30, val_every=5)
    raw["models"] = {"unet": {"architecture": "unet", "options": {"width": 4}},
                     "fcn": {"architecture": "fcn", "options": {"variant": "fcn32s", "pretrained": "imagenet"}}}
    return raw


def test_rehearsal_params_keep_the_recipe_and_never_download():
    params = rehearsal.rehearsal_params(tiny_params(), ["fcn"], epochs=1)
    assert list(params["models"]) == ["fcn"] and params["models"]["fcn"]["options"]["pretrained"] == "none"
    assert params["train"]["epochs"] == 1 and params["train"]["crop_size"] == [32, 32]
    assert params["prepare"]["train_set"] == "train"  # no SBD
    with pytest.raises(PipelineError, match="no model resnet"):
        rehearsal.rehearsal_params(tiny_params(), ["resnet"], epochs=1)


def test_the_full_run_estimate_counts_epochs_validations_and_the_final_evaluation():
    estimate = rehearsal.estimate_full_run({"epochs": 30, "val_every": 4}, train_img_s=100.0, eval_img_s=50.0)
    validations = len([4, 8, 12, 16, 20, 24, 28, 30])
    assert estimate["validations"] == validations
    expected = 30 * rehearsal.TRAINAUG / 100.0 + (validations + 1) * rehearsal.VOC_VAL / 50.0
    assert estimate["hours"] == pytest.approx(expected / 3600)
    with_compiling = rehearsal.estimate_full_run({"epochs": 30, "val_every": 4}, 100.0, 50.0, one_off_s=60.0)
    assert with_compiling["hours"] == pytest.approx((expected + 60.0) / 3600)


@pytest.mark.slow
def test_rehearse_runs_the_real_stages_on_voc_shaped_data(tmp_path, capsys):
    params_file = tmp_path / "tiny.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params()))
    out = tmp_path / "results.json"
    rehearse.main(["--params", str(params_file), "--models", "unet", "--train", "8", "--val", "6",
                   "--sizes", "40", "64", "--device", "cpu", "--workdir", str(tmp_path / "work"), "--out", str(out)])
    results = json.loads(out.read_text())
    assert results["data"]["train_images"] == 8 and results["data"]["val_images"] == 6
    row = results["models"]["unet"]
    assert row["device"] == "cpu" and row["train_images_per_second"] > 0 and row["evaluate_images_per_second"] > 0
    assert row["seconds_per_epoch"] == pytest.approx(8 / row["train_images_per_second"])
    # two epochs by default: the first one's extra time is the one-off cost, the last one's pace the estimate's
    assert row["one_off_seconds"] == pytest.approx(max(0.0, row["first_epoch_seconds"] - row["seconds_per_epoch"]))
    assert row["train_peak_memory_mb"] > 0 and row["evaluate_peak_memory_mb"] > 0
    assert row["full_run_estimate"]["epochs"] == 30 and row["full_run_estimate"]["validations"] == 6
    assert "| unet | cpu |" in capsys.readouterr().out

    work = tmp_path / "work"
    for split, count in (("train", 8), ("val", 6)):  # VOC's shape: 64 px on the long side, 40–64 on the short
        sizes = PreparedSplit(work / "data/prepared", split).sizes
        assert len(sizes) == count and all(max(size) == 64 and 40 <= min(size) <= 64 for size in sizes)
    assert json.loads((work / "metrics/train/unet.json").read_text())["epochs"] == 2
    assert not (work / "mlflow.db").exists() and not (work / "mlruns").exists()  # tracking was off
