import numpy as np
import pytest
from PIL import Image

from pipeline.core.atomic import write_png
from pipeline.core.labels import IGNORE_INDEX, VOC_LABELS, label_png
from pipeline.reporting import draw, figures

V = IGNORE_INDEX


def scene(height=36, width=48, seed=0):
    """A photo, a ground truth with a void band around a person box, and a prediction shifted by a few pixels."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    truth = np.zeros((height, width), dtype=np.uint8)
    truth[8:28, 10:30] = V
    truth[10:26, 12:28] = 15
    prediction = np.zeros((height, width), dtype=np.uint8)
    prediction[12:30, 14:32] = 15
    prediction[0:4, 0:8] = 7
    return image, truth, prediction


def test_label_png_round_trip_keeps_indices_and_voc_palette(tmp_path):
    label = np.array([list(range(21)) + [V]] * 3, dtype=np.uint8)
    path = tmp_path / "labels" / "2007_000033.png"
    write_png(path, label_png(label, VOC_LABELS))
    reopened = Image.open(path)
    assert reopened.mode == "P"
    assert np.array_equal(np.array(reopened), label)
    colours = reopened.getpalette()
    assert [tuple(colours[3 * i:3 * i + 3]) for i in (0, 1, 15, 255)] == [
        (0, 0, 0), (128, 0, 0), (192, 128, 128), (224, 224, 192)
    ]
    assert list(tmp_path.joinpath("labels").iterdir()) == [path]  # no temporary file left behind


def test_colorize_and_overlay():
    image, truth, _ = scene()
    colours = draw.colorize(truth, VOC_LABELS)
    assert colours.shape == (*truth.shape, 3) and colours.dtype == np.uint8
    assert tuple(colours[15, 15]) == (192, 128, 128)

    blended = draw.overlay(image, truth, labels=VOC_LABELS, alpha=0.5)
    assert blended.shape == image.shape and blended.dtype == np.uint8
    kept = (truth == 0) | (truth == V)
    assert np.array_equal(blended[kept], image[kept])
    expected = np.rint(0.5 * image[15, 15].astype(float) + 0.5 * np.array([192, 128, 128])).astype(np.uint8)
    assert np.array_equal(blended[15, 15], expected)
    assert np.array_equal(draw.overlay(image, truth, labels=VOC_LABELS, alpha=0.0), image)


def png_bytes(image, path):
    write_png(path, image)
    return path.read_bytes()


def test_panel_layout_and_determinism(tmp_path):
    image, truth, prediction = scene()
    titled = draw.panel(image, truth, prediction, title="2007_000033 · fcn", labels=VOC_LABELS)
    plain = draw.panel(image, truth, prediction, labels=VOC_LABELS)
    assert titled.mode == "RGB"
    assert titled.width >= 4 * image.shape[1] and titled.height > plain.height > image.shape[0]
    pixels = np.array(titled).reshape(-1, 3)
    colours = {tuple(p) for p in pixels}
    # person (truth and prediction), car (prediction only), void, and the red of wrong pixels all appear
    assert {(192, 128, 128), (128, 128, 128), (224, 224, 192), draw.ERROR_RGB} <= colours
    assert png_bytes(titled, tmp_path / "a.png") == png_bytes(
        draw.panel(image, truth, prediction, title="2007_000033 · fcn", labels=VOC_LABELS), tmp_path / "b.png"
    )
    assert Image.open(tmp_path / "a.png").info.keys() <= {"dpi"}  # no text chunks, no timestamps


def grid_inputs(models, rows=2):
    scenes = [scene(36 + 12 * r, 48, seed=r) for r in range(rows)]
    images, truths, predictions = ([s[i] for s in scenes] for i in range(3))
    return images, truths, {model: predictions for model in models}, [f"2007_00003{r}" for r in range(rows)]


def test_compare_grid_grows_with_models_and_rows_and_is_deterministic(tmp_path):
    one = draw.compare_grid(*grid_inputs(["fcn"]), tile_size=64, labels=VOC_LABELS)
    three = draw.compare_grid(*grid_inputs(["fcn", "unet", "deeplab"]), tile_size=64, labels=VOC_LABELS)
    assert three.width - one.width == 2 * (64 + draw.GAP)
    assert draw.compare_grid(*grid_inputs(["fcn"], rows=3), tile_size=64, labels=VOC_LABELS).height > one.height
    assert np.array(three).std() > 0

    images, truths, predictions, ids = grid_inputs(["fcn", "unet"])
    scores = {"fcn": [0.5, 0.25], "unet": [0.75, 1.0]}
    first = draw.compare_grid(images, truths, predictions, ids, scores=scores, labels=VOC_LABELS)
    again = draw.compare_grid(images, truths, predictions, ids, scores=scores, labels=VOC_LABELS)
    assert png_bytes(first, tmp_path / "a.png") == png_bytes(again, tmp_path / "b.png")


def test_compare_grid_refuses_mismatched_rows():
    images, truths, predictions, ids = grid_inputs(["fcn"])
    with pytest.raises(ValueError, match="fcn"):
        draw.compare_grid(images, truths, {"fcn": predictions["fcn"][:1]}, ids, labels=VOC_LABELS)


def test_training_figures_render():
    matrix = np.arange(9).reshape(3, 3)
    matrix[2] = 0  # a class without ground truth: its row is blank, not a division by zero
    confusion = figures.confusion_figure(matrix, ["a", "b", "c"])
    rows = [{"epoch": e, "loss": 1.0 / (e + 1), "lr": 0.01, "val_miou": None if e % 2 else 0.1 * e} for e in range(5)]
    history = figures.history_figure(rows)
    for figure in (confusion, history):
        assert figure.mode == "RGB" and np.array(figure).std() > 0
