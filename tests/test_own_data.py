"""A dataset that is not VOC, in the folders layout with colour masks (devtools.synthetic.write_folders_dataset):
its params, prepare's reading of every mask kind and each bad input, and the stages after it (train, evaluate,
render, predict, the served model) following its own classes and colours."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import dvc, dvc_project
from PIL import Image

from devtools.synthetic import FOLDERS_CLASSES, FOLDERS_COLORS, FOLDERS_IGNORE_COLOR, write_folders_dataset
from pipeline.core.errors import PipelineError
from pipeline.core.labels import IGNORE_INDEX, LabelSet, label_png
from pipeline.core.params.data import DatasetParams
from pipeline.core.params.whole import parse
from pipeline.ingest.layouts import dataset_layout
from pipeline.ingest.prepare import prepare
from pipeline.prepared.dataset import PreparedSplit, read_label_set

REPO = Path(__file__).resolve().parents[1]
DATASET = {"name": "plates", "layout": "folders", "images": "images", "masks": "masks",
           "splits": {"train": "splits/train.txt", "val": "splits/val.txt"},
           "classes": list(FOLDERS_CLASSES), "colors": [list(c) for c in FOLDERS_COLORS],
           "ignore_color": list(FOLDERS_IGNORE_COLOR)}


def dataset(**changes) -> DatasetParams:
    return DatasetParams(**{**DATASET, **changes})


@pytest.fixture(scope="module")
def plates(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plates") / "source"
    write_folders_dataset(root)
    return root


@pytest.fixture
def plates_copy(plates, tmp_path) -> Path:
    copy = tmp_path / "source"
    shutil.copytree(plates, copy)
    return copy


@pytest.fixture(scope="module")
def prepared(plates, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prepared") / "prepared"
    return out, prepare(plates, out, dataset=dataset(), workers=1, progress=False)


# --- params ------------------------------------------------------------------------------------------------------

def params_with(**dataset_changes) -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["prepare"]["train_set"] = "train"
    raw["dataset"] = {**DATASET, **dataset_changes}
    return raw


@pytest.mark.parametrize("changes, message", [
    ({"classes": ["background", "crack", "crack", "paint"]}, r"dataset\.classes: crack listed more than once"),
    ({"classes": ["background"], "colors": None}, r"dataset\.classes: must list 2 to 255 class names, got 1"),
    ({"colors": [[0, 0, 0], [1, 2, 3]]}, r"dataset\.colors: 2 colours for 4 classes"),
    ({"colors": [[0, 0, 0], [1, 2, 3], [1, 2, 3], [4, 5, 6]]}, r"dataset\.colors: two classes share a colour"),
    ({"colors": [[0, 0, 0], [1, 2, 3], [1, 2, 300], [4, 5, 6]]}, r"dataset\.colors\[2\]: must be \[red, green, blue\]"),
    ({"ignore_index": 2}, r"dataset\.ignore_index: 2 is the index of class 'rust'"),
    ({"ignore_color": [0, 0, 0]}, r"dataset\.ignore_color: \[0, 0, 0\] is also a class colour"),
    ({"splits": None}, r"dataset\.splits, val_fraction: the folders layout needs exactly one"),
    ({"val_fraction": 0.2}, r"dataset\.splits, val_fraction: the folders layout needs exactly one"),
    ({"splits": {"train": "a.txt", "test": "b.txt"}}, r"dataset\.splits: must name the files of train and val"),
    ({"layout": "voc"}, r"dataset\.splits, val_fraction: the voc layout reads its splits"),
    ({"layout": "kitti"}, r"dataset\.layout: unknown layout 'kitti'; must be one of ade20k, cityscapes, folders, voc"),
    ({"name": "my data"}, r"dataset\.name: must be letters, digits"),
])
def test_a_bad_dataset_section_is_one_line_naming_the_key(changes, message):
    with pytest.raises(PipelineError, match=message) as error:  # the layout checks its own keys
        dataset_layout(parse(params_with(**changes)).dataset)
    assert "\n" not in str(error.value)


def test_every_layout_module_registers_itself_and_imports_no_other():
    """A layout is one module of pipeline/ingest/layouts/, imported by name, and none imports another: what they
    share lives in shared modules (archive.py, pairing.py, splits.py)."""
    from devtools.deps import LAYOUTS, component_closure, component_files
    from pipeline.ingest.layouts import names

    files = component_files(LAYOUTS)
    assert names() == sorted(files) == ["ade20k", "cityscapes", "folders", "voc"]
    for name in names():
        assert dataset_layout(DatasetParams(layout=name, **({"val_fraction": 0.5} if name == "folders" else {}))
                              ).name == name
        assert not component_closure(LAYOUTS, name) & (set(files.values()) - {files[name]})


@pytest.mark.parametrize("path, inside", [("data/prepared/plates", "data/prepared"),
                                          ("data/source/plates", "data/source"), ("data/raw/plates", "data/raw")])
def test_a_dataset_directory_inside_a_stage_output_is_refused(path, inside):
    raw = params_with()
    raw["data"]["path"] = path
    with pytest.raises(PipelineError, match=rf"data\.path: {path} is inside {inside}, which a stage rewrites whole"):
        parse(raw)


def test_a_directory_source_needs_no_archive_and_an_archive_source_needs_its_url():
    raw = params_with()
    raw["data"] = {"urls": [], "md5": None, "size": None, "path": "data/plates"}
    data = parse(raw).data
    assert data.from_directory and data.origin == "data/plates"
    raw["data"]["path"] = "data/source"
    with pytest.raises(PipelineError, match=r"data\.md5: missing"):
        parse(raw)
    raw["data"]["md5"] = "0" * 32
    with pytest.raises(PipelineError, match=r"data\.urls: list at least one URL.* or set data\.path to a directory"):
        parse(raw)


def test_trainaug_is_voc_only_and_names_follow_the_dataset():
    raw = params_with()
    raw["prepare"]["train_set"] = "trainaug"
    with pytest.raises(PipelineError, match=r"prepare\.train_set: trainaug adds SBD's VOC labels.*set "
                                            r"prepare\.train_set: train"):
        parse(raw)
    raw = params_with()
    del raw["tracking"]
    assert parse(raw).tracking.experiment == "plates-segmentation"
    assert parse(yaml.safe_load((REPO / "params.yaml").read_text())).tracking.experiment == "voc-segmentation"


# --- prepare -----------------------------------------------------------------------------------------------------

def test_colour_masks_become_class_indices_with_the_ignore_value(prepared, plates):
    out, stats = prepared
    val = PreparedSplit(out, "val")
    assert read_label_set(out) == LabelSet.of("plates", FOLDERS_CLASSES, FOLDERS_COLORS) == val.labels
    assert val.ids == (plates / "splits/val.txt").read_text().split()
    palette = {tuple(colour): index for index, colour in enumerate(FOLDERS_COLORS)}
    palette[FOLDERS_IGNORE_COLOR] = IGNORE_INDEX
    for i, image_id in enumerate(val.ids):
        rgb = np.array(Image.open(plates / "masks" / f"{image_id}.png"))
        expected = np.vectorize(lambda r, g, b: palette[(r, g, b)])(rgb[..., 0], rgb[..., 1], rgb[..., 2])
        assert (val[i][1].numpy() == expected).all(), image_id
    assert list(stats["train"]["class_pixels"]) == list(FOLDERS_CLASSES)
    assert stats["train"]["sources"] == {"plates": len(PreparedSplit(out, "train"))}
    assert all(stats[split]["class_pixels"][name] > 0 for split in ("train", "val") for name in FOLDERS_CLASSES)


@pytest.mark.parametrize("kind", ["palette", "single-channel"])
def test_palette_and_single_channel_masks_give_the_same_arrays(prepared, plates_copy, tmp_path, kind):
    out, _ = prepared
    palette = {tuple(colour): index for index, colour in enumerate(FOLDERS_COLORS)}
    for mask in (plates_copy / "masks").glob("*.png"):
        rgb = np.array(Image.open(mask))
        index = np.full(rgb.shape[:2], 7, dtype=np.uint8)  # 7: the ignore value of these masks
        for colour, value in palette.items():
            index[(rgb == colour).all(axis=-1)] = value
        labels = LabelSet.of("plates", FOLDERS_CLASSES, FOLDERS_COLORS)
        (label_png(index, labels) if kind == "palette" else Image.fromarray(index)).save(mask)
    prepare(plates_copy, tmp_path / "p", dataset=dataset(ignore_index=7), workers=1, progress=False)
    for name in ("train/labels.npy", "val/labels.npy", "train/images.npy"):
        assert (tmp_path / "p" / name).read_bytes() == (out / name).read_bytes(), name


def plates_as_voc(plates: Path, root: Path) -> Path:
    """The plates in VOC's layout (VOCdevkit/VOC2012/...), their colour masks as palette PNGs of their own
    classes, as a dataset labelled with VOC's tools would be; returns the directory holding VOCdevkit."""
    voc2012 = root / "VOCdevkit" / "VOC2012"
    for directory in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc2012 / directory).mkdir(parents=True)
    palette = {tuple(colour): index for index, colour in enumerate(FOLDERS_COLORS)}
    labels = LabelSet.of("plates", FOLDERS_CLASSES, FOLDERS_COLORS)
    for mask in (plates / "masks").glob("*.png"):
        rgb = np.array(Image.open(mask))
        index = np.full(rgb.shape[:2], IGNORE_INDEX, dtype=np.uint8)
        for colour, value in palette.items():
            index[(rgb == colour).all(axis=-1)] = value
        label_png(index, labels).save(voc2012 / "SegmentationClass" / mask.name)
        shutil.copy(plates / "images" / f"{mask.stem}.jpg", voc2012 / "JPEGImages")
    for split in ("train", "val"):
        shutil.copy(plates / "splits" / f"{split}.txt", voc2012 / "ImageSets/Segmentation")
    return root


def test_the_voc_layout_with_its_own_classes_from_a_tar_prepares_as_the_folders_do(prepared, plates, tmp_path):
    from pipeline.ingest.layouts import extract_source

    tree = plates_as_voc(plates, tmp_path / "tree")
    with tarfile.open(tmp_path / "plates-voc.tar", "w") as tar:
        tar.add(tree / "VOCdevkit", "VOCdevkit")
    voc_layout = DatasetParams(name="plates", classes=list(FOLDERS_CLASSES), colors=[list(c) for c in FOLDERS_COLORS])
    extract_source(tmp_path / "plates-voc.tar", tmp_path / "source", voc_layout, progress=False)
    stats = prepare(tmp_path / "source", tmp_path / "p", dataset=voc_layout, workers=1, progress=False)
    assert stats["val"]["sources"] == {"voc": 16, "sbd": 0}
    assert list(stats["val"]["class_pixels"]) == list(FOLDERS_CLASSES)
    assert read_label_set(tmp_path / "p").classes == FOLDERS_CLASSES
    out, _ = prepared
    for name in ("train/labels.npy", "val/labels.npy", "train/images.npy", "val/images.npy"):
        assert (tmp_path / "p" / name).read_bytes() == (out / name).read_bytes(), name

    # A value that is not one of its four classes is named with its file, as in the folders layout.
    mask = sorted((tmp_path / "source/VOC2012/SegmentationClass").glob("*.png"))[0]
    with Image.open(mask) as image:
        broken = np.array(image)
    broken[0, :3] = 9
    label_png(broken, LabelSet.of("plates", FOLDERS_CLASSES, FOLDERS_COLORS)).save(mask)
    with pytest.raises(PipelineError, match=rf"{mask.name}: .*9"):
        prepare(tmp_path / "source", tmp_path / "q", dataset=voc_layout, workers=1, progress=False)
    assert not (tmp_path / "q").exists()


def test_val_fraction_draws_the_same_split_from_the_same_seed(plates, tmp_path):
    by_fraction = dataset(splits=None, val_fraction=0.25)
    first = prepare(plates, tmp_path / "a", dataset=by_fraction, workers=1, seed=3, progress=False)
    again = prepare(plates, tmp_path / "b", dataset=by_fraction, workers=1, seed=3, progress=False)
    other = prepare(plates, tmp_path / "c", dataset=by_fraction, workers=1, seed=4, progress=False)
    assert first == again and first["val"]["ids"] != other["val"]["ids"]
    assert first["val"]["images"] == 12 and first["train"]["images"] == 36
    assert first["val"]["ids"] == PreparedSplit(tmp_path / "a", "val").ids == sorted(first["val"]["ids"])
    assert not set(first["val"]["ids"]) & set(PreparedSplit(tmp_path / "a", "train").ids)


def _first_val(root: Path) -> str:
    return (root / "splits/val.txt").read_text().split()[0]


def _unknown_colour(root):
    path = root / "masks" / f"{_first_val(root)}.png"
    rgb = np.array(Image.open(path))
    rgb[0, :4] = (9, 9, 9)
    Image.fromarray(rgb).save(path)
    return path, r"colours \(9, 9, 9\) \(4 pixels\) are not in dataset.colors"


def _value_not_a_class(root):
    path = root / "masks" / f"{_first_val(root)}.png"
    values = np.zeros(Image.open(path).size[::-1], dtype=np.uint8)
    values[:2, :3] = 9
    Image.fromarray(values).save(path)
    return path, r"mask values 9 \(6 pixels\) are neither a class \(0..3\) nor the ignore value 255"


def _mask_without_image(root):
    path = root / "images" / f"{_first_val(root)}.jpg"
    path.unlink()
    return root / "masks" / path.with_suffix(".png").name, r"no image plate-\d+\.jpg, \.jpeg or \.png in"


def _image_without_mask(root):
    path = root / "masks" / f"{_first_val(root)}.png"
    path.unlink()
    return root / "images" / path.with_suffix(".jpg").name, r"no mask .*\.png; every image needs its mask"


def _sizes_differ(root):
    path = root / "masks" / f"{_first_val(root)}.png"
    mask = Image.open(path)
    mask.crop((0, 0, mask.width - 2, mask.height)).save(path)
    return path, r"label is \d+×\d+ but image plate-\d+\.jpg is \d+×\d+"


def _in_both_splits(root):
    train = root / "splits/train.txt"
    train.write_text(train.read_text() + _first_val(root) + "\n")
    return "train.txt and val.txt", r"both list plate-\d+; the splits must be disjoint"


def _empty_split(root):
    path = root / "splits/val.txt"
    path.write_text("\n")
    return path, r"lists no ids"


def _unknown_id(root):
    path = root / "splits/val.txt"
    path.write_text(path.read_text() + "plate-999\n")
    return path, r"lists plate-999, with no image in"


@pytest.mark.parametrize("breakage", [_unknown_colour, _value_not_a_class, _mask_without_image, _image_without_mask,
                                      _sizes_differ, _in_both_splits, _empty_split, _unknown_id])
def test_each_bad_input_is_one_line_naming_the_file_and_writes_nothing(plates_copy, tmp_path, breakage):
    where, problem = breakage(plates_copy)
    with pytest.raises(PipelineError) as error:
        prepare(plates_copy, tmp_path / "out", dataset=dataset(), workers=1, progress=False)
    message = str(error.value)
    assert message.startswith(f"{where}") and "\n" not in message, message
    assert re.search(problem, message), message
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name != "source"]


def test_a_truncated_prepared_array_is_one_line_saying_to_rerun_prepare(prepared, tmp_path):
    out, _ = prepared
    copy = tmp_path / "prepared"
    shutil.copytree(out, copy)
    labels = copy / "val/labels.npy"
    labels.write_bytes(labels.read_bytes()[:-100])  # a full disk or an interrupted copy
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(labels))}: \d+ of its \d+ bytes of data are on disk "
                                            r"\(truncated.*rerun the prepare stage \(dvc repro prepare\)$"):
        PreparedSplit(copy, "val")


# --- the stages after prepare ----------------------------------------------------------------------------------

def small_recipe(raw: dict) -> dict:
    """`raw` with a three-epoch FCN-32s recipe that a CPU runs in seconds on the plates; `render` as committed, as a
    user following docs/own-data.md leaves it."""
    raw["train"].update({"epochs": 3, "batch_size": 4, "optimizer": "adam", "lr": 0.003, "weight_decay": 0.0,
                         "lr_schedule": "cosine", "crop_size": [64, 64], "scale_range": [0.75, 1.25], "workers": 0,
                         "device": "cpu", "amp": False, "val_every": 3})
    raw["models"] = {"fcn": {"architecture": "fcn", "options": {"variant": "fcn32s"}}}
    raw["export"] = {"check_sizes": [[72, 88], [64, 96], [57, 75]]}
    raw["prepare"]["workers"] = 1
    return raw


@pytest.fixture(scope="module")
def plates_zip_url(plates, tmp_path_factory):
    """The plates as a zip with one top-level folder (how people share a dataset), served over HTTP by a real
    server process on 127.0.0.1; its URL and file."""
    served = tmp_path_factory.mktemp("served")
    with zipfile.ZipFile(served / "plates.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(plates.rglob("*")):
            archive.write(path, Path("plates") / path.relative_to(plates))
    server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory",
                               str(served)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = re.search(r"port (\d+)", server.stdout.readline()).group(1)
        yield f"http://127.0.0.1:{port}/plates.zip", served / "plates.zip"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def project(plates_zip_url, tmp_path_factory) -> Path:
    """The pipeline run by `dvc repro` from the plates' zip: download over HTTP, extract, prepare, then a small FCN
    trained, exported, evaluated and rendered by the real stages."""
    url, archive = plates_zip_url
    raw = small_recipe(params_with())
    raw["data"] = {"urls": [url], "md5": hashlib.md5(archive.read_bytes()).hexdigest(),
                   "size": archive.stat().st_size, "path": "data/source"}
    root = dvc_project(tmp_path_factory.mktemp("own-data"), raw)
    out = dvc(root, "repro", env={"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"})
    for stage in ("download", "extract", "prepare", "train@fcn", "export@fcn", "evaluate@fcn", "render@fcn"):
        assert f"Running stage '{stage}'" in out
    return root


def run(root: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    result = subprocess.run([sys.executable, "-m", *args], cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def palette_colours(png: Path) -> dict[int, tuple[int, int, int]]:
    with Image.open(png) as image:
        assert image.mode == "P"
        palette = image.getpalette()
        return {int(i): tuple(palette[3 * i:3 * i + 3]) for i in np.unique(np.array(image))}


@pytest.mark.slow
def test_dvc_repro_from_a_zip_trains_evaluates_renders_predicts_and_serves_in_the_datasets_classes(
        project, prepared, plates, tmp_path):
    import torch
    from mlflow.tracking import MlflowClient

    # The prepared arrays are those of prepare run on the directory itself: the zip round trip changed no byte.
    assert PreparedSplit(project / "data/prepared", "val").ids == PreparedSplit(prepared[0], "val").ids
    for name in ("images.npy", "labels.npy"):
        assert (project / "data/prepared/train" / name).read_bytes() == (prepared[0] / "train" / name).read_bytes()

    state = torch.load(project / "models/fcn/model.pt", weights_only=True)
    assert state["num_classes"] == 4 and state["labels"]["classes"] == list(FOLDERS_CLASSES)
    assert state["state_dict"]["score.weight"].shape[0] == 4

    metrics = json.loads((project / "metrics/fcn.json").read_text())
    # Three epochs on 32 images: the objects are barely learned, but the scores are the dataset's four classes.
    assert sorted(metrics["iou"]) == sorted(FOLDERS_CLASSES) and metrics["iou"]["background"] > 0.5, metrics
    per_class = (project / "metrics/fcn/per_class.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in per_class[1:]] == list(FOLDERS_CLASSES)
    for png in sorted((project / "predictions/fcn").glob("*.png"))[:5]:
        assert all(FOLDERS_COLORS[i] == colour for i, colour in palette_colours(png).items())
    # `render` untouched (ids: []): the dataset's first four val ids, then its worst_k (4) worst, never VOC's ids.
    val_ids = PreparedSplit(project / "data/prepared", "val").ids
    panels = sorted((project / "renders/fcn").glob("0*.png"))
    assert [panel.stem.split("-", 1)[1] for panel in panels[:4]] == val_ids[:4]
    assert len(panels) == min(len(val_ids), 8) and (project / "renders/fcn/confusion.png").is_file()

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("plates-segmentation")
    run_ = client.search_runs([experiment.experiment_id])[0]
    (logged,) = run_.inputs.dataset_inputs
    assert logged.dataset.name == "plates" and logged.dataset.digest
    assert client.get_registered_model("plates-fcn").name == "plates-fcn"

    photo = sorted((plates / "images").glob("*.jpg"))[0]
    run(project, "tools.predict", "--model", "fcn", str(photo), "--out", str(tmp_path / "out"))
    mask = tmp_path / "out" / f"{photo.stem}.png"
    assert all(FOLDERS_COLORS[i] == colour for i, colour in palette_colours(mask).items())

    import base64

    from pipeline.serving.service import load_service_model, segment_encoded

    model, policy, labels = load_service_model(project / "models/fcn/model.pt")
    (encoded,) = segment_encoded(model, policy, [base64.b64encode(photo.read_bytes()).decode()], labels=labels)
    served = tmp_path / "served.png"
    served.write_bytes(base64.b64decode(encoded))
    assert served.read_bytes() == mask.read_bytes()


@pytest.mark.slow
def test_a_directory_source_is_prepares_dependency_and_nothing_is_downloaded(plates, prepared, tmp_path):
    raw = params_with()
    raw["data"] = {"urls": [], "md5": None, "size": None, "path": "data/plates"}
    raw["prepare"]["workers"] = 1
    root = dvc_project(tmp_path / "project", raw)
    shutil.copytree(plates, root / "data/plates")
    first = dvc(root, "repro", "prepare")
    assert "Running stage 'prepare'" in first and "Running stage 'download'" not in first  # not upstream now
    # A whole `dvc repro` still runs download and extract: they leave placeholders and fetch nothing.
    placeholders = dvc(root, "repro", "extract")
    assert "nothing to download" in placeholders and "nothing to extract" in placeholders
    assert (root / "data/raw/source.archive").stat().st_size == 0 and list((root / "data/source").iterdir()) == []
    for name in ("images.npy", "labels.npy"):
        assert (root / "data/prepared/val" / name).read_bytes() == (prepared[0] / "val" / name).read_bytes()
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert "data/plates" in [dep["path"] for dep in lock["stages"]["prepare"]["deps"]]

    # One edited mask makes prepare stale, and not the stages of the archive.
    mask = sorted((root / "data/plates/masks").glob("*.png"))[0]
    pixels = np.array(Image.open(mask).convert("RGB"))
    pixels[0, 0] = FOLDERS_COLORS[1]
    Image.fromarray(pixels).save(mask)
    assert "data/plates" in dvc(root, "status", "prepare")
    assert "Data and pipelines are up to date." in dvc(root, "status", "extract")
    assert "Running stage 'prepare'" in dvc(root, "repro", "prepare")
