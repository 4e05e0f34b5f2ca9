"""Slide-mode inference (`inference.mode: slide`): mmsegmentation's window grid, each pixel's logits averaged over
the windows covering it, computed row by row in bounded memory; a window covering the image is whole mode; the
evaluate stage's metrics are its prediction PNGs' recount; tools.predict, the served model and ONNX Runtime predict
full-size photos with it. Memory and speed at 12 and 48 MP: `make bench`."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.core.labels import VOC_LABELS, LabelSet
from pipeline.core.params.inference import InferenceParams
from pipeline.core.runtime import resolve
from pipeline.evaluation.evaluate import evaluate_split
from pipeline.evaluation.metrics import scores_from_confusion
from pipeline.evaluation.predict import predict, slide_mask, window_starts
from pipeline.models.registry import build
from pipeline.prepared.dataset import PreparedSplit
from pipeline.prepared.transforms import normalize
from pipeline.reporting.draw import overlay

CPU = resolve("cpu")
torch.set_num_threads(1)


def small_unet(classes: int = 21) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("unet", num_classes=classes, width=4).eval()


def photo(height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 16 + 2, width // 16 + 2, generator=generator) * 255
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return smooth[0].round().to(torch.uint8)


def test_the_window_grid_is_mmsegmentations():
    assert window_starts(500, 512, 341) == [0]  # one window, clipped to the side
    assert window_starts(1024, 512, 341) == [0, 341, 512]  # the last flush with the end
    assert window_starts(2048, 769, 513) == [0, 513, 1026, 1279]  # its Cityscapes setting: 3 × 4 windows on 1024 × 2048
    assert window_starts(1024, 769, 513) == [0, 255]


@pytest.mark.parametrize("size", [(97, 131), (64, 64)])
def test_a_window_covering_the_image_is_whole_mode_exactly(size):
    model, image = small_unet(), photo(*size)
    for crop in ([128, 160], list(size)):
        slide = InferenceParams(mode="slide", crop_size=crop, stride=[crop[0] // 2, crop[1] // 2])
        assert torch.equal(predict(model, image, CPU, slide), predict(model, image, CPU))


def dense_reference(model, image, crop, stride) -> torch.Tensor:
    """The same average with a full-size logit buffer (what slide mode must never allocate for a large photo)."""
    height, width = image.shape[-2:]
    total, count = torch.zeros(21, height, width), torch.zeros(height, width)
    for top in window_starts(height, crop[0], stride[0]):
        for left in window_starts(width, crop[1], stride[1]):
            window = image[:, top:top + crop[0], left:left + crop[1]]
            with torch.no_grad():
                total[:, top:top + crop[0], left:left + crop[1]] += model(normalize(window[None]))[0]
            count[top:top + crop[0], left:left + crop[1]] += 1
    return (total / count).argmax(0)


def test_overlapping_windows_average_their_logits_row_by_row():
    model, image = small_unet(), photo(150, 230, seed=1)
    slide = InferenceParams(mode="slide", crop_size=[64, 96], stride=[40, 50])
    assert len(window_starts(150, 64, 40)) == 4 and len(window_starts(230, 96, 50)) == 4
    mask = slide_mask(model, image, CPU, slide)
    assert mask.dtype == torch.uint8 and mask.shape == (150, 230)
    reference = dense_reference(model, image, [64, 96], [40, 50])
    assert (mask.long() != reference).float().mean() < 1e-3  # the same sums; the order of the batches' rounding


def test_test_time_augmentation_runs_in_slide_mode_per_window():
    model, image = small_unet(), photo(90, 120, seed=2)
    tta = InferenceParams(mode="slide", crop_size=[64, 64], stride=[32, 32], flip=True, scales=[0.75, 1.0])
    mask = predict(model, image, CPU, tta)
    assert mask.shape == (90, 120) and mask.dtype == torch.long
    assert (mask == predict(model, image, CPU, InferenceParams(flip=True, scales=[0.75, 1.0]))).float().mean() > 0.5


def test_evaluate_in_slide_mode_matches_a_recount_of_its_predictions(voc_prepared, tmp_path):
    val = PreparedSplit(voc_prepared, "val")
    slide = InferenceParams(mode="slide", crop_size=[48, 64], stride=[32, 40])
    result = evaluate_split(small_unet(), val, CPU, tmp_path / "predictions", inference=slide)
    assert result.metrics["inference"] == {"mode": "slide", "crop_size": [48, 64], "stride": [32, 40], "flip": False,
                                           "scales": [1.0]}
    confusion = np.zeros((21, 21), dtype=np.int64)
    for i, image_id in enumerate(val.ids):
        with Image.open(tmp_path / "predictions" / f"{image_id}.png") as png:
            prediction = np.array(png).astype(np.int64)
        truth = val[i][1].numpy().astype(np.int64)
        kept = truth != 255
        confusion += np.bincount(truth[kept] * 21 + prediction[kept], minlength=441).reshape(21, 21)
    assert scores_from_confusion(confusion, VOC_LABELS.classes)["miou"] == pytest.approx(result.metrics["miou"],
                                                                                          abs=1e-6)


def jpeg(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo(height, width).permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_predict_the_served_model_and_onnx_runtime_slide_over_a_full_size_photo(tmp_path):
    """A 900 × 1400 JPEG under max_pixels: decoded at full size, predicted by 256 × 256 windows, its mask the
    photo's size; the served model (carrying the inference settings) answers the same PNG, and ONNX Runtime's
    windows give the same classes."""
    import mlflow

    from pipeline.core.params.export import ExportParams
    from pipeline.export.onnx_export import export_checked
    from pipeline.export.onnx_model import OnnxModel
    from pipeline.models.architectures.unet import UNetOptions
    from pipeline.models.saved import save_model
    from pipeline.serving.package import save_served_model
    from pipeline.serving.predict_files import segment_files

    (tmp_path / "photo.jpg").write_bytes(jpeg(900, 1400))
    model = small_unet()
    slide = InferenceParams(mode="slide", crop_size=[256, 256], stride=[192, 192])
    assert segment_files(model, [tmp_path / "photo.jpg"], tmp_path / "out", CPU, labels=VOC_LABELS,
                         max_pixels=2_000_000, inference=slide) == []
    written = (tmp_path / "out/photo.png").read_bytes()
    with Image.open(io.BytesIO(written)) as mask:
        assert mask.size == (1400, 900)
        classes = np.array(mask)
    with Image.open(tmp_path / "out/photo_overlay.png") as drawn:
        assert drawn.size == (1400, 900)

    save_model(tmp_path / "model.pt", model, architecture="unet", options=UNetOptions(width=4), labels=VOC_LABELS)
    save_served_model(tmp_path / "model.pt", tmp_path / "served", inference=slide)
    served = mlflow.pyfunc.load_model(str(tmp_path / "served"))
    assert served.unwrap_python_model().inference == slide
    import pandas as pd

    answer = served.predict(pd.DataFrame({"image": [base64.b64encode((tmp_path / "photo.jpg").read_bytes())
                                                    .decode()]}))
    assert base64.b64decode(answer["mask_png"][0]) == written

    export_checked(model, tmp_path / "model.onnx", ExportParams(check_sizes=[[72, 88]]))
    image = torch.from_numpy(np.array(Image.open(tmp_path / "photo.jpg").convert("RGB"))).permute(2, 0, 1)
    onnx_classes = slide_mask(OnnxModel(tmp_path / "model.onnx", torch.device("cpu")), image, CPU, slide).numpy()
    assert (onnx_classes == classes).mean() > 0.999


def test_the_overlay_drawn_in_bands_is_the_whole_blend():
    generator = np.random.default_rng(0)
    image = generator.integers(0, 256, (1100, 70, 3), dtype=np.uint8)
    label = generator.integers(0, 6, (1100, 70), dtype=np.uint8)
    label[::7] = 255
    labels = LabelSet.of("shapes", ["background", "a", "b", "c", "d", "e"])
    colours = labels.palette()
    objects = (label != 255) & colours[label].any(axis=-1)
    whole = image.astype(np.float64)
    whole[objects] = 0.5 * whole[objects] + 0.5 * colours[label[objects]]
    assert np.array_equal(overlay(image, label, labels=labels), np.rint(whole).astype(np.uint8))


def test_the_metrics_file_records_the_inference_settings(voc_prepared, tmp_path):
    val = PreparedSplit(voc_prepared, "val")
    result = evaluate_split(small_unet(), val, CPU, tmp_path / "predictions")
    assert json.loads(json.dumps(result.metrics))["inference"]["mode"] == "whole"
