"""The generated archive: reproducible bytes, the real VOC layout, and labels as VOC draws them."""

from __future__ import annotations

import hashlib
import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from devtools.synthetic import ID_PREFIX, UNLISTED, write_voc_tar
from pipeline.core.errors import PipelineError
from pipeline.core.labels import NUM_CLASSES, VOC_LABELS, flat_palette
from pipeline.ingest.voc import ARCHIVE_ROOT

# The smallest splits for which every class is promised in both (7 images × 3 objects ≥ 20 classes).
SYNTHETIC = {"seed": 3, "n_train": 9, "n_val": 7, "min_size": 40, "max_size": 100}
SPLIT_DIR = f"{ARCHIVE_ROOT}/ImageSets/Segmentation"


def _ids(tar: tarfile.TarFile, split: str) -> list[str]:
    return tar.extractfile(f"{SPLIT_DIR}/{split}.txt").read().decode().split()


def _label(tar: tarfile.TarFile, image_id: str) -> Image.Image:
    return Image.open(io.BytesIO(tar.extractfile(f"{ARCHIVE_ROOT}/SegmentationClass/{image_id}.png").read()))


@pytest.fixture(scope="module")
def small_tar(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic") / "voc.tar"
    write_voc_tar(path, **SYNTHETIC)
    return path


def test_same_arguments_give_the_same_bytes_and_md5(small_tar, tmp_path):
    md5 = write_voc_tar(tmp_path / "again.tar", **SYNTHETIC)
    assert md5 == hashlib.md5(small_tar.read_bytes()).hexdigest()
    assert (tmp_path / "again.tar").read_bytes() == small_tar.read_bytes()
    assert write_voc_tar(tmp_path / "other.tar", **{**SYNTHETIC, "seed": 1}) != md5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.tar", "other.tar"]  # no temporary files left


def test_layout_is_the_real_archive_layout(small_tar):
    with tarfile.open(small_tar) as tar:
        members = tar.getmembers()
        dirs = {m.name for m in members if m.isdir()}
        files = {m.name for m in members if m.isfile()}
        train, val, trainval = _ids(tar, "train"), _ids(tar, "val"), _ids(tar, "trainval")
    assert dirs == {"VOCdevkit", ARCHIVE_ROOT} | {f"{ARCHIVE_ROOT}/{d}" for d in (
        "Annotations", "ImageSets", "ImageSets/Segmentation", "JPEGImages", "SegmentationClass")}
    assert all((m.mtime, m.uid, m.gid, m.uname, m.gname) == (members[0].mtime, 0, 0, "", "") for m in members)

    assert (len(train), len(val)) == (SYNTHETIC["n_train"], SYNTHETIC["n_val"])
    assert sorted(trainval) == sorted(train + val) and not set(train) & set(val)
    assert all(i.startswith(f"{ID_PREFIX}_") and len(i) == 11 for i in trainval)
    jpegs = {n.rsplit("/", 1)[1][:-4] for n in files if n.startswith(f"{ARCHIVE_ROOT}/JPEGImages/")}
    pngs = {n.rsplit("/", 1)[1][:-4] for n in files if n.startswith(f"{ARCHIVE_ROOT}/SegmentationClass/")}
    assert pngs == set(trainval)
    assert jpegs > pngs and len(jpegs - pngs) == UNLISTED  # JPEGs in no split, so extraction must select
    assert any(n.startswith(f"{ARCHIVE_ROOT}/Annotations/") and n.endswith(".xml") for n in files)
    assert all(n.endswith((".jpg", ".png", ".txt", ".xml")) for n in files)


def test_labels_are_voc_palette_pngs_with_every_class_in_both_splits(small_tar):
    with tarfile.open(small_tar) as tar:
        for split in ("train", "val"):
            present = set()
            void = 0
            for image_id in _ids(tar, split):
                label = _label(tar, image_id)
                assert label.mode == "P"
                assert label.getpalette() == flat_palette(VOC_LABELS)
                values = np.array(label)
                present |= set(np.unique(values).tolist())
                void += int((values == 255).sum())
            assert present == set(range(NUM_CLASSES)) | {255}, split
            assert void > 0


def test_images_are_rgb_jpegs_of_varying_sizes_matching_their_labels(small_tar):
    sizes = []
    with tarfile.open(small_tar) as tar:
        for image_id in _ids(tar, "trainval"):
            image = Image.open(io.BytesIO(tar.extractfile(f"{ARCHIVE_ROOT}/JPEGImages/{image_id}.jpg").read()))
            assert (image.format, image.mode) == ("JPEG", "RGB")
            assert image.size == _label(tar, image_id).size
            sizes.append(image.size)
    widths, heights = zip(*sizes)
    lo, hi = SYNTHETIC["min_size"], SYNTHETIC["max_size"]
    assert lo <= min(widths + heights) and max(widths + heights) <= hi
    assert len(set(widths)) > 5 and len(set(heights)) > 5 and any(w != h for w, h in sizes)


def test_void_band_separates_every_object_from_the_background(small_tar):
    # As in VOC, no object pixel touches a background pixel (4-neighbour): the void band lies between them.
    with tarfile.open(small_tar) as tar:
        for image_id in _ids(tar, "trainval"):
            label = np.array(_label(tar, image_id))
            objects = (label != 0) & (label != 255)
            background = label == 0
            assert not (objects[1:] & background[:-1]).any() and not (objects[:-1] & background[1:]).any()
            assert not (objects[:, 1:] & background[:, :-1]).any() and not (objects[:, :-1] & background[:, 1:]).any()


@pytest.mark.parametrize("arguments, message", [
    ({"n_val": 0}, "at least 1 train and 1 val"),
    ({"min_size": 200, "max_size": 100}, "min_size <= max_size"),
    ({"min_size": 8, "max_size": 100}, "32 <= min_size"),
])
def test_bad_arguments_are_pipeline_errors(tmp_path, arguments, message):
    with pytest.raises(PipelineError, match=message):
        write_voc_tar(tmp_path / "x.tar", **arguments)
    assert not list(tmp_path.iterdir())


def test_large_images_like_real_voc(tmp_path):
    write_voc_tar(tmp_path / "big.tar", n_train=1, n_val=1, min_size=480, max_size=500)
    with tarfile.open(tmp_path / "big.tar") as tar:
        (image_id,) = _ids(tar, "val")
        assert 480 <= min(_label(tar, image_id).size) <= max(_label(tar, image_id).size) <= 500
