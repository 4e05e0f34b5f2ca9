"""The ONNX export: every architecture's graph holds for any batch, height and width, agrees with PyTorch where the
traced example's size-dependent branches would not, fails without writing when it does not agree, and runs in
`tools.predict` and the served model's place of the network."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.core.labels import VOC_LABELS
from pipeline.core.params.export import ExportParams
from pipeline.export.onnx_export import EXAMPLE_SIZE, export_checked
from pipeline.export.onnx_model import OnnxModel
from pipeline.models.architectures.unet import UNetOptions
from pipeline.models.registry import build
from pipeline.models.saved import save_model
from pipeline.serving.package import save_served_model
from pipeline.tracking.runs import Tracker

REPO = Path(__file__).resolve().parents[1]

# Beyond each architecture's first variant, which tests/test_registered_models.py exports and checks.
CASES = {
    "fcn8s": ("fcn", {"variant": "fcn8s"}),
    "unet-transpose": ("unet", {"width": 8, "upsampling": "transpose"}),
    "deeplab-resnet18-os16": ("deeplab", {"backbone": "resnet18", "output_stride": 16}),
    "deeplab-mobilenet": ("deeplab", {"backbone": "mobilenet_v3_large"}),
}
# 333×427 is divisible by neither 16 nor 32 and large enough that every atrous rate fits in ResNet-18's maps; at
# 72×88 every rate reaches past them (the shortcut's region); the example is traced at EXAMPLE_SIZE, between them.
CHECK = ExportParams(check_sizes=[[333, 427], [72, 88]])


def exported(case: str, tmp_path: Path, params: ExportParams = CHECK) -> tuple[torch.nn.Module, Path, dict]:
    architecture, options = CASES[case]
    torch.manual_seed(0)
    model = build(architecture, num_classes=21, **options).eval()
    path = tmp_path / f"{case}.onnx"
    return model, path, export_checked(model, path, params)


@pytest.mark.parametrize("case", CASES)
def test_export_agrees_with_pytorch_at_sizes_other_than_the_example(case, tmp_path):
    _, path, report = exported(case, tmp_path)
    assert [row["size"] for row in report["sizes"]] == CHECK.check_sizes
    assert all(row["size"] != list(EXAMPLE_SIZE) for row in report["sizes"])
    assert report["agreement"] >= 0.999 and report["max_abs_logit_diff"] < 1e-3
    assert report["bytes"] == path.stat().st_size and report["opset"] == CHECK.opset

    graph = onnx.load(str(path)).graph
    (image,) = graph.input
    dims = image.type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True] and dims[1].dim_value == 3


def test_batch_is_dynamic_too(tmp_path):
    model, path, _ = exported("unet-transpose", tmp_path)
    batch = torch.randn(3, 3, 45, 61)
    with torch.no_grad():
        torch.testing.assert_close(OnnxModel(path)(batch), model(batch), atol=1e-4, rtol=1e-4)


def test_a_graph_frozen_at_the_example_size_fails_the_check_and_writes_nothing(tmp_path, monkeypatch):
    # Without its export guard, DeepLab's atrous shortcut would be traced as taken (the example's 16×20 map is
    # smaller than rate 18), and the graph would skip the outer taps at every size: wrong at 333×427.
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: False)
    with pytest.raises(PipelineError, match=r"not written: ONNX Runtime agrees with PyTorch on .* at 333×427, "
                                            r"below export.min_agreement"):
        exported("deeplab-resnet18-os16", tmp_path)
    assert list(tmp_path.iterdir()) == []


def stage(cwd: Path, *args: str, check: bool = True,
          tracking: str = "http://127.0.0.1:9") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": tracking}
    result = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_export_stage_and_predict_with_onnxruntime_give_pytorchs_masks(tmp_path, monkeypatch):
    torch.manual_seed(0)
    save_model(tmp_path / "model.pt", build("unet", num_classes=21,
                                            width=4), architecture="unet", options=UNetOptions(width=4),
               labels=VOC_LABELS)
    args = ["--model", "unet", "--params", str(REPO / "params.yaml"), "--model-file", "model.pt"]
    stage(tmp_path, "stages.export", *args, "--onnx-file", "model.onnx", "--export-report", "export.json")
    report = json.loads((tmp_path / "export.json").read_text())
    assert report["agreement"] >= 0.999 and len(report["sizes"]) == 5  # params.yaml's check_sizes

    rng = np.random.default_rng(0)
    for name, size in {"a.jpg": (375, 500), "b.png": (333, 427), "c.png": (41, 23)}.items():
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(tmp_path / name)
    images = [str(tmp_path / name) for name in ("a.jpg", "b.png", "c.png")]
    stage(tmp_path, "tools.predict", *args, *images, "--out", "torch")
    stage(tmp_path, "tools.predict", *args, "--onnx-file", "model.onnx", "--runtime", "onnxruntime", *images,
          "--out", "onnx")
    for name in ("a", "b", "c"):
        with Image.open(tmp_path / "torch" / f"{name}.png") as reference, \
                Image.open(tmp_path / "onnx" / f"{name}.png") as other:
            assert other.size == reference.size
            assert (np.array(other) == np.array(reference)).mean() >= report["min_agreement"]

    missing = stage(tmp_path, "tools.predict", *args, "--onnx-file", "none.onnx", "--runtime", "onnxruntime",
                    images[0], "--out", "onnx", check=False)
    assert missing.returncode == 2 and "none.onnx: not found; `dvc repro export@unet` writes it" in missing.stderr

    # The served model the evaluate stage logs carries the export: predict from the run, through ONNX Runtime.
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    tracker = Tracker("tests", run_name="unet")
    tracker.log_model(tmp_path / "model.pt", functools.partial(save_served_model, onnx_file=tmp_path / "model.onnx"))
    tracker.close()
    stage(tmp_path, "tools.predict", "--model-uri", f"runs:/{tracker.run_id}/model", "--runtime", "onnxruntime",
          *images, "--out", "logged", tracking=store)
    for name in ("a", "b", "c"):
        assert (tmp_path / "logged" / f"{name}.png").read_bytes() == (tmp_path / "onnx" / f"{name}.png").read_bytes()
