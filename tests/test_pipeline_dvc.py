"""The real DVC data stages on the generated archives: `dvc repro` succeeds, and a second one runs nothing; with
prepare.train_set: train, SBD is never fetched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import dvc, dvc_project, offline_params

from pipeline.prepared.dataset import PreparedSplit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, voc_tar, sbd_tgz) -> Path:
    """A copy of the pipeline definition and code in a fresh git + DVC repository, with params pointing at the
    generated tar and tgz through file:// URLs."""
    return dvc_project(tmp_path, offline_params(voc_tar, sbd_tgz))


@pytest.mark.slow
def test_data_stages_run_once_then_are_up_to_date(project, voc_tree):
    first = dvc(project, "repro", "prepare")
    for stage in ("download", "extract", "sbd", "prepare"):
        assert f"Running stage '{stage}'" in first
    stats = json.loads((project / "metrics/data.json").read_text())
    assert stats["train"]["set"] == "trainaug" and stats["train"]["sources"]["sbd"] > 0
    val_ids = (voc_tree / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").read_text().split()
    assert len(PreparedSplit(project / "data/prepared", "val")) == len(val_ids)

    second = dvc(project, "repro", "prepare")
    assert "Running stage" not in second
    assert "Data and pipelines are up to date." in second

    # Adding a mirror says nothing about the archive itself: nothing reruns.
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["data"]["urls"].insert(0, "http://127.0.0.1:9/VOCtrainval_11-May-2012.tar")
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    assert "Running stage" not in dvc(project, "repro", "prepare")


@pytest.mark.slow
def test_train_set_train_never_fetches_sbd(project, voc_tree):
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["prepare"]["train_set"] = "train"
    raw["sbd"]["urls"] = ["http://127.0.0.1:9/benchmark.tgz"]  # nothing answers there
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    dvc(project, "repro", "prepare")
    assert list((project / "data/SBD").iterdir()) == []
    assert not (project / "data/raw/benchmark.tgz").exists()
    stats = json.loads((project / "metrics/data.json").read_text())
    voc_train = (voc_tree / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt").read_text().split()
    assert stats["train"]["set"] == "train" and stats["train"]["sources"] == {"voc": len(voc_train), "sbd": 0}
