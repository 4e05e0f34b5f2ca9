"""The benchmarks as presets (`dataset.preset: cityscapes | ade20k | voc`) and the label mappings they use inside,
open to any dataset (`dataset.label_map`, `dataset.reduce_zero_label`): Cityscapes- and ADE20K-shaped directories
(devtools.synthetic) prepare the labels their benchmarks define; `dataset: {preset: cityscapes}` plus `data.path`
is the whole change in params.yaml for `dvc repro`."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from devtools.synthetic import (
    CITYSCAPES_IGNORED_IDS,
    write_ade20k_tree,
    write_cityscapes_tree,
    write_folders_dataset,
)
from pipeline.core.errors import PipelineError
from pipeline.core.params import whole
from pipeline.core.params.data import DatasetParams
from pipeline.core.presets import CITYSCAPES
from pipeline.ingest.layouts import extract_source
from pipeline.ingest.prepare import prepare
from pipeline.prepared.dataset import PreparedSplit, read_label_set
from tests.conftest import dvc, dvc_project

REPO = Path(__file__).resolve().parents[1]
TRAIN_ID = {label_id: train_id for train_id, (_, label_id, _) in enumerate(CITYSCAPES)}


def prepared_labels(root: Path, split: str) -> dict[str, np.ndarray]:
    data = PreparedSplit(root, split)
    return {image_id: data[i][1].numpy() for i, image_id in enumerate(data.ids)}


def test_cityscapes_label_ids_become_the_19_train_ids_and_the_rest_is_ignored_and_counted(tmp_path):
    written = write_cityscapes_tree(tmp_path / "cityscapes")
    stats = prepare(tmp_path / "cityscapes", tmp_path / "prepared", dataset=DatasetParams(preset="cityscapes"),
                    workers=1, train_set="train")
    labels = read_label_set(tmp_path / "prepared")
    assert labels.classes[:3] == ("road", "sidewalk", "building") and labels.num_classes == 19
    assert labels.colors[13] == (0, 0, 142)  # car
    ignored = 0
    for split, cities in (("train", ("aachen", "bremen")), ("val", ("frankfurt",))):
        got = prepared_labels(tmp_path / "prepared", split)
        assert sorted(got) == sorted(image_id for image_id in written if image_id.startswith(cities))
        for image_id, label in got.items():
            expected = np.vectorize(lambda value: TRAIN_ID.get(int(value), 255))(written[image_id])
            assert np.array_equal(label, expected.astype(np.uint8)), image_id
        split_ignored = sum(int(np.isin(written[i], CITYSCAPES_IGNORED_IDS).sum()) for i in got)
        assert stats[split]["ignored_by_label_map"]["pixels"] == split_ignored == stats[split]["void_pixels"]
        assert set(stats[split]["ignored_by_label_map"]["by_value"]) <= {str(v) for v in CITYSCAPES_IGNORED_IDS}
        ignored += split_ignored
    assert ignored > 0


def test_ade20k_values_shift_down_with_zero_ignored_from_its_zip(tmp_path):
    written = write_ade20k_tree(tmp_path / "tree")
    archive = tmp_path / "ADEChallengeData2016.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted((tmp_path / "tree").rglob("*")):
            zipped.write(path, path.relative_to(tmp_path / "tree"))
    dataset = DatasetParams(preset="ade20k")
    extract_source(archive, tmp_path / "source", dataset, progress=False)
    prepare(tmp_path / "source", tmp_path / "prepared", dataset=dataset, workers=1, train_set="train")
    assert read_label_set(tmp_path / "prepared").num_classes == 150
    for split, prefix in (("train", "ADE_train"), ("val", "ADE_val")):
        for image_id, label in prepared_labels(tmp_path / "prepared", split).items():
            assert image_id.startswith(prefix)
            stored = written[image_id]
            assert np.array_equal(label, np.where(stored == 0, 255, stored.astype(np.int64) - 1).astype(np.uint8))


@pytest.mark.parametrize(("preset", "breakage", "message"), [
    ("cityscapes", "gtFine", "the cityscapes preset expects leftImg8bit/ and gtFine/ in this directory (data.path) or "
                             "in its cityscapes/; point data.path at the directory that holds them"),
    ("cityscapes", "label", "aachen_000000_000019_leftImg8bit.png: no mask aachen_000000_000019_gtFine_labelIds.png; "
                            "every image needs its mask"),
    ("ade20k", "annotations", "the ade20k preset expects images/ and annotations/ in this directory (data.path) or "
                              "in its ADEChallengeData2016/"),
    ("ade20k", "label", "ADE_train_00000001.jpg: no mask ADE_train_00000001.png; every image needs its mask"),
])
def test_a_tree_missing_a_folder_or_a_pair_is_one_line_naming_it(tmp_path, preset, breakage, message):
    import shutil

    if preset == "cityscapes":
        write_cityscapes_tree(tmp_path)
        victim = {"gtFine": tmp_path / "gtFine",
                  "label": tmp_path / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"}[breakage]
    else:
        write_ade20k_tree(tmp_path)
        root = tmp_path / "ADEChallengeData2016"
        victim = {"annotations": root / "annotations",
                  "label": root / "annotations/training/ADE_train_00000001.png"}[breakage]
    shutil.rmtree(victim) if victim.is_dir() else victim.unlink()
    with pytest.raises(PipelineError) as error:
        prepare(tmp_path, tmp_path / "prepared", dataset=DatasetParams(preset=preset), workers=1, train_set="train")
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "prepared").exists()


def test_label_map_and_reduce_zero_label_serve_any_dataset(tmp_path):
    """The folders layout with single-channel masks storing 10, 20, 30 for its classes: label_map says so."""
    from PIL import Image

    write_folders_dataset(tmp_path, n_images=6)
    for mask in (tmp_path / "masks").glob("*.png"):
        with Image.open(mask) as colour:
            rgb = np.asarray(colour.convert("RGB"))
        stored = np.full(rgb.shape[:2], 99, dtype=np.uint8)  # 99: not listed, so ignored
        for value, colour_ in zip((10, 20, 30, 40), ((0, 0, 0), (255, 200, 0), (0, 160, 255), (200, 0, 200))):
            stored[(rgb == colour_).all(axis=-1)] = value
        Image.fromarray(stored).save(mask)
    dataset = DatasetParams(name="plates", layout="folders", val_fraction=0.5,
                            classes=["background", "crack", "rust", "paint"],
                            label_map={"10": 0, "20": 1, "30": 2, "40": 3})
    stats = prepare(tmp_path, tmp_path / "prepared", dataset=dataset, workers=1, train_set="train")
    values = np.concatenate([label.ravel() for label in prepared_labels(tmp_path / "prepared", "train").values()])
    assert set(np.unique(values)) <= {0, 1, 2, 3, 255} and stats["train"]["ignored_by_label_map"]["by_value"]

    with pytest.raises(PipelineError, match="label_map.20: 7 is not a class index 0..3"):
        DatasetParams(classes=["a", "b", "c", "d"], label_map={"20": 7})
    with pytest.raises(PipelineError, match="label_map, reduce_zero_label: give one"):
        DatasetParams(label_map={"1": 0}, reduce_zero_label=True)
    assert DatasetParams(classes=["a", "b"], reduce_zero_label=True).value_map() == {1: 0, 2: 1}


def test_a_preset_fills_its_keys_and_refuses_others_given():
    cityscapes = whole.parse(with_dataset({"preset": "cityscapes"})).dataset
    assert (cityscapes.name, cityscapes.layout, len(cityscapes.classes)) == ("cityscapes", "cityscapes", 19)
    # The committed params.yaml with only its preset line changed: its VOC values are the defaults, so they yield.
    committed = yaml.safe_load((REPO / "params.yaml").read_text())
    committed["dataset"]["preset"] = "ade20k"
    assert whole.parse(committed).dataset.name == "ade20k"
    assert whole.parse(committed).file.dataset_name() == "ade20k"
    with pytest.raises(PipelineError, match=r"^params.yaml: dataset.classes: preset ade20k sets it; remove it"):
        whole.parse(with_dataset({"preset": "ade20k", "classes": ["a", "b"]}))
    named = whole.parse(with_dataset({"preset": "cityscapes", "name": "cs-fine"}))
    assert named.dataset.name == named.file.dataset_name() == "cs-fine"


def with_dataset(dataset: dict) -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["dataset"] = dataset
    raw["data"] = {"urls": [], "md5": None, "size": None, "path": "data/benchmark"}
    return raw


@pytest.mark.slow
def test_dvc_repro_prepares_a_preset_from_its_directory_with_nothing_else_changed(tmp_path):
    """`dataset: {preset: cityscapes}` and `data.path`: no stage misses a `dataset.*` param, SBD is not fetched
    (the preset's own train split), and metrics/data.json counts the ignored label ids. About 20 s: the real DVC."""
    raw = with_dataset({"preset": "cityscapes"})
    raw["prepare"]["workers"] = 1
    root = dvc_project(tmp_path / "project", raw)
    write_cityscapes_tree(root / "data/benchmark")
    out = dvc(root, "repro", "prepare")
    assert "Running stage 'prepare'" in out
    stats = json.loads((root / "metrics/data.json").read_text())
    assert stats["train"]["set"] == "train" and stats["train"]["sources"] == {"cityscapes": 4}
    assert stats["val"]["ignored_by_label_map"]["pixels"] > 0
    assert read_label_set(root / "data/prepared").name == "cityscapes"
    assert not any((root / "data/SBD").iterdir())
