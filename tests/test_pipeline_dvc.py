"""The real DVC data stages on the generated archive: `dvc repro` succeeds, and a second one runs nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.data import VOCPrepared

REPO = Path(__file__).resolve().parents[1]


def dvc(project: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.fixture
def project(tmp_path, voc_tar) -> Path:
    """A copy of the pipeline definition and code in a fresh git + DVC repository, with params pointing at the
    generated tar through a file:// URL."""
    for name in ("pipeline", "stages"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(urls=[voc_tar.as_uri()], md5=hashlib.md5(voc_tar.read_bytes()).hexdigest(),
                       size=voc_tar.stat().st_size)
    raw["prepare"]["workers"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc(tmp_path, "init", "-q")
    return tmp_path


@pytest.mark.slow
def test_data_stages_run_once_then_are_up_to_date(project, voc_tree):
    first = dvc(project, "repro", "prepare")
    for stage in ("download", "extract", "prepare"):
        assert f"Running stage '{stage}'" in first
    assert (project / "metrics/data.json").is_file()
    val_ids = (voc_tree / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").read_text().split()
    assert len(VOCPrepared(project / "data/prepared", "val")) == len(val_ids)

    second = dvc(project, "repro", "prepare")
    assert "Running stage" not in second
    assert "Data and pipelines are up to date." in second

    # Adding a mirror says nothing about the archive itself: nothing reruns.
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["data"]["urls"].insert(0, "http://127.0.0.1:9/VOCtrainval_11-May-2012.tar")
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    assert "Running stage" not in dvc(project, "repro", "prepare")
