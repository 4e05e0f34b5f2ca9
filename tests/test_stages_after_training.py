"""evaluate, render, predict and check_metrics as a user runs them, on a small untrained-but-fixed model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.core.labels import VOC_LABELS
from pipeline.evaluation.regression import regressions
from pipeline.ingest.prepare import prepare
from pipeline.models.architectures.unet import UNetOptions
from pipeline.models.registry import build
from pipeline.models.saved import save_model
from pipeline.prepared.dataset import PreparedSplit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(voc_tree, tmp_path_factory) -> Path:
    """A working directory with prepared data, a params.yaml listing one model, and that model's files."""
    root = tmp_path_factory.mktemp("stages")
    prepare(voc_tree, root / "data/prepared", workers=1, progress=False)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["models"] = {"unet": {"architecture": "unet", "options": {"width": 4}}}
    val_ids = PreparedSplit(root / "data/prepared", "val").ids
    raw["render"] = {"ids": val_ids[:2], "worst_k": 1}
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    torch.manual_seed(0)
    model = build("unet", num_classes=21, width=4)
    save_model(root / "models/unet/model.pt", model, architecture="unet", options=UNetOptions(width=4),
               labels=VOC_LABELS)
    (root / "models/unet/mlflow_run.json").write_text(json.dumps({"run_id": None}))
    (root / "metrics/train").mkdir(parents=True)
    (root / "metrics/train/unet.csv").write_text("epoch,loss,lr,val_miou,images_per_second\n1,2.5,0.01,,10.0\n"
                                                 "2,1.5,0.005,0.125,11.0\n")  # as the train stage writes it
    return root


def stage(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    result = subprocess.run([sys.executable, "-m", *args], cwd=workdir, env=env, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
def test_evaluate_writes_metrics_predictions_and_is_deterministic(workdir):
    stage(workdir, "stages.evaluate", "--model", "unet")
    files = ["metrics/unet.json", "metrics/unet/per_class.csv", "metrics/unet/confusion.csv"]
    first = {name: (workdir / name).read_bytes() for name in files}
    metrics = json.loads(first["metrics/unet.json"])
    assert 0 <= metrics["miou"] <= 1 and set(metrics["iou"]) >= {"background", "tvmonitor"}
    confusion = (workdir / "metrics/unet/confusion.csv").read_text().splitlines()
    assert confusion[0] == "truth,prediction,pixels" and len(confusion) == 1 + 21 * 21

    val = PreparedSplit(workdir / "data/prepared", "val")
    pngs = sorted((workdir / "predictions/unet").glob("*.png"))
    assert [p.stem for p in pngs] == sorted(val.ids)
    with Image.open(pngs[0]) as png:
        assert png.mode == "P" and png.size[::-1] == val.sizes[val.ids.index(pngs[0].stem)]

    stage(workdir, "stages.evaluate", "--model", "unet")
    assert {name: (workdir / name).read_bytes() for name in files} == first

    from mlflow.tracking import MlflowClient  # the metrics also land in MLflow

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("voc-segmentation").experiment_id])
    assert runs and runs[0].data.metrics["val_miou"] == pytest.approx(metrics["miou"])

    stage(workdir, "stages.render", "--model", "unet")
    assert len(list((workdir / "renders/unet").glob("[0-9][0-9]-*.png"))) == 3  # 2 chosen + 1 worst
    for figure in ("history.png", "confusion.png"):  # from the train stage's history and evaluate's confusion rows
        with Image.open(workdir / "renders/unet" / figure) as png:
            assert png.width > 300 and np.array(png.convert("L")).std() > 0
    stage(workdir, "stages.render", "--compare")
    assert (workdir / "renders/compare.png").stat().st_size > 10_000


def test_predict_handles_odd_inputs_and_names_the_unreadable_one(workdir, tmp_path):
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(inputs / "rgb.jpg")
    Image.fromarray(rng.integers(0, 255, (40, 30, 4), dtype=np.uint8), "RGBA").save(inputs / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (33, 33), dtype=np.uint8), "L").save(inputs / "gray.png")
    Image.fromarray(rng.integers(0, 65535, (31, 45), dtype=np.uint16)).save(inputs / "deep.png")  # 16-bit
    (inputs / "broken.png").write_bytes(b"not an image")
    result = stage(workdir, "tools.predict", "--model", "Unet", str(inputs / "*"), "--out", str(tmp_path / "out"),
                   check=False)
    assert result.returncode == 2
    assert "broken.png: not a readable image" in result.stderr
    assert "4 of 5 images segmented" in result.stdout
    for name, size in {"rgb": (53, 37), "rgba": (30, 40), "gray": (33, 33), "deep": (45, 31)}.items():
        with Image.open(tmp_path / "out" / f"{name}.png") as png:
            assert png.mode == "P" and png.size == size
            assert set(np.unique(np.array(png))) <= set(range(21))
        assert (tmp_path / "out" / f"{name}_overlay.png").is_file()


def test_sixteen_bit_input_is_scaled_not_clipped(tmp_path):
    from pipeline.serving.images import read_rgb

    ramp = np.linspace(0, 65535, 64 * 4, dtype=np.uint16).reshape(4, 64)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    rgb = read_rgb(tmp_path / "ramp.png")
    assert rgb.shape == (4, 64, 3) and rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255
    assert len(np.unique(rgb)) > 200  # PIL's own conversion would clip nearly all of it to 255


def test_check_metrics_fails_on_a_planted_drop(workdir, tmp_path):
    assert regressions({"fcn": 0.70}, {"fcn": 0.70}, 0.005) == []
    assert regressions({"fcn": 0.697}, {"fcn": 0.70}, 0.005) == []
    assert regressions({"fcn": 0.69}, {"fcn": 0.70},
                       0.005) == ["fcn: mIoU fell from 0.7000 to 0.6900 (by 0.0100 > 0.005)"]
    assert regressions({"fcn": 0.71}, {"fcn": 0.70}, 0.005, exact=True)[0].startswith("fcn: mIoU 0.710000 differs")
    assert regressions({"new": 0.1}, {}, 0.005) == []

    baseline = tmp_path / "baseline"
    baseline.mkdir()
    metrics = workdir / "metrics/unet.json"
    if not metrics.exists():
        stage(workdir, "stages.evaluate", "--model", "unet")
    current = json.loads(metrics.read_text())
    (baseline / "unet.json").write_text(json.dumps({**current, "miou": current["miou"]}))
    assert "metrics check passed" in stage(workdir, "tools.check_metrics", "--baseline", str(baseline),
                                           "--exact").stdout
    (baseline / "unet.json").write_text(json.dumps({**current, "miou": current["miou"] + 0.05}))
    failed = stage(workdir, "tools.check_metrics", "--baseline", str(baseline), check=False)
    assert failed.returncode == 2 and "error: val mIoU moved: unet: mIoU fell from" in failed.stderr


def test_predict_never_overwrites_an_input_nor_writes_one_output_twice(workdir, tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("sub1", "sub2"):
        (tmp_path / folder).mkdir()
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / folder / "img001.jpg")
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "sub1" / "photo.png")
    photo = (tmp_path / "sub1" / "photo.png").read_bytes()

    into_inputs = stage(workdir, "tools.predict", "--model", "unet", str(tmp_path / "sub1" / "photo.png"),
                        "--out", str(tmp_path / "sub1"), check=False)
    assert into_inputs.returncode == 2
    assert "photo.png: is an input image and would be overwritten" in into_inputs.stderr
    assert (tmp_path / "sub1" / "photo.png").read_bytes() == photo

    same_stem = stage(workdir, "tools.predict", "--model", "unet", str(tmp_path / "sub*" / "img001.jpg"),
                      "--out", str(tmp_path / "out"), check=False)
    assert same_stem.returncode == 2
    assert "sub1/img001.jpg and" in same_stem.stderr and "sub2/img001.jpg would both be written to" in same_stem.stderr
    assert not (tmp_path / "out").exists()


def test_an_image_declaring_30000_pixels_a_side_is_skipped_by_name(tmp_path):
    from conftest import png_header_only

    from pipeline.core.errors import PipelineError
    from pipeline.serving.images import read_rgb

    (tmp_path / "bomb.png").write_bytes(png_header_only(30000, 30000))
    with pytest.raises(PipelineError, match=r"bomb.png: skipped, larger than \d+ pixels"):
        read_rgb(tmp_path / "bomb.png")


@pytest.mark.parametrize("miou", [None, "0.7", [0.7], True, float("nan")])
def test_a_metrics_file_without_a_numeric_miou_is_one_clear_error(tmp_path, miou):
    from pipeline.core.errors import PipelineError
    from pipeline.evaluation.regression import current_scores

    (tmp_path / "fcn.json").write_text(json.dumps({"miou": miou}))
    with pytest.raises(PipelineError, match=r"fcn.json: miou must be a number, got "):
        current_scores(["fcn"], tmp_path)


def test_predict_given_a_directory_says_so(tmp_path):
    from pipeline.core.errors import PipelineError
    from pipeline.serving.predict_files import expand

    with pytest.raises(PipelineError, match=r"is a directory; name image files or a pattern such as"):
        expand([str(tmp_path)])
    (tmp_path / "sub").mkdir()
    with pytest.raises(PipelineError, match=r"match only directories, no image file"):
        expand([str(tmp_path / "*")])
