"""prepare → packed arrays that read back exactly as torchvision's VOCSegmentation reads the extracted tree."""

from __future__ import annotations

import pickle
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import VOCSegmentation

from pipeline.core.errors import PipelineError
from pipeline.core.labels import CLASSES
from pipeline.ingest.prepare import prepare
from pipeline.ingest.voc import ARCHIVE_ROOT, SPLITS
from pipeline.prepared.dataset import PreparedSplit


@pytest.fixture(scope="module")
def prepared(voc_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "prepared"
    stats = prepare(voc_tree, out, workers=1, progress=False)
    return out, stats


@pytest.fixture
def broken_tree(voc_tree, tmp_path):
    """A private copy of the extracted tree, its first train id, and the copy's VOC2012 directory."""
    root = tmp_path / "data"
    shutil.copytree(voc_tree, root)
    voc = root / ARCHIVE_ROOT
    first_id = (voc / "ImageSets/Segmentation/train.txt").read_text().split()[0]
    return root, voc, first_id


@pytest.mark.parametrize("split", SPLITS)
def test_samples_equal_torchvision_voc_segmentation(prepared, voc_tree, split):
    out, _ = prepared
    ours = PreparedSplit(out, split)
    theirs = VOCSegmentation(root=str(voc_tree), year="2012", image_set=split, download=False)
    assert len(ours) == len(theirs) > 0
    assert ours.ids == [p.rsplit("/", 1)[1][:-4] for p in theirs.images]
    for i in range(len(ours)):
        image, label = ours[i]
        their_image, their_label = theirs[i]
        assert image.is_contiguous() and label.is_contiguous()
        assert image.shape == (3, *ours.sizes[i]) and label.shape == ours.sizes[i]
        np.testing.assert_array_equal(image.numpy(), np.array(their_image).transpose(2, 0, 1))
        np.testing.assert_array_equal(label.numpy(), np.array(their_label))


def test_dataset_returns_writable_copies_and_pickles_without_the_arrays(prepared):
    out, _ = prepared
    ds = PreparedSplit(out, "train")
    image, label = ds[-1]
    image += 1  # would raise on a view of the read-only mapping
    assert not np.array_equal(image.numpy(), ds[-1][0].numpy())
    assert len(pickle.dumps(ds)) < 10_000
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[0][1].numpy(), ds[0][1].numpy())
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_unprepared_directory_says_to_run_prepare(tmp_path):
    with pytest.raises(PipelineError, match=r"index\.json: missing; run the prepare stage"):
        PreparedSplit(tmp_path, "train")


def test_stats_match_a_direct_count(prepared, voc_tree):
    _, stats = prepared
    voc = voc_tree / ARCHIVE_ROOT
    for split in SPLITS:
        ids = (voc / f"ImageSets/Segmentation/{split}.txt").read_text().split()
        labels = [np.array(Image.open(voc / f"SegmentationClass/{i}.png")) for i in ids]
        values = np.concatenate([label.ravel() for label in labels])
        s = stats[split]
        assert s["images"] == len(ids)
        assert s["pixels"] == values.size == sum(s["class_pixels"].values()) + s["void_pixels"]
        assert s["class_pixels"] == {name: int((values == c).sum()) for c, name in enumerate(CLASSES)}
        assert s["void_fraction"] == pytest.approx((values == 255).sum() / values.size)
        assert 0 < s["void_fraction"] < 0.5
        heights, widths = [label.shape[0] for label in labels], [label.shape[1] for label in labels]
        assert s["height"] == {"min": min(heights), "max": max(heights)}
        assert s["width"] == {"min": min(widths), "max": max(widths)}
        assert len(s["sha256"]) == 64


def test_two_workers_give_the_same_arrays_as_one(prepared, voc_tree, tmp_path):
    out, stats = prepared
    parallel = tmp_path / "parallel"
    assert prepare(voc_tree, parallel, workers=2, progress=False) == stats
    for split in SPLITS:
        for name in ("images.npy", "labels.npy", "index.json"):
            assert (parallel / split / name).read_bytes() == (out / split / name).read_bytes()


def test_accepts_the_voc2012_directory_itself(prepared, voc_tree, tmp_path):
    _, stats = prepared
    assert prepare(voc_tree / ARCHIVE_ROOT, tmp_path / "p", workers=1, progress=False) == stats


def _unknown_colour(voc, i):
    path = voc / f"SegmentationClass/{i}.png"
    rgb = np.array(Image.open(path).convert("RGB"))
    rgb[:2, :3] = (1, 2, 3)
    Image.fromarray(rgb).save(path)
    return path, r"colours \(1, 2, 3\) \(6 pixels\) are not in dataset.colors"


def _sixteen_bit_label(voc, i):
    path = voc / f"SegmentationClass/{i}.png"
    Image.fromarray(np.array(Image.open(path)).astype(np.uint16)).save(path)
    return path, "mask mode is 'I;16'; a mask must be a palette PNG"


def _value_37(voc, i):
    path = voc / f"SegmentationClass/{i}.png"
    label = Image.open(path)
    values = np.array(label)
    values[0, 0] = 37
    broken = Image.fromarray(values).convert("P")  # 'L' → 'P' keeps the values as indices
    broken.putpalette(label.getpalette())
    broken.save(path)
    return path, r"mask values 37 \(1 pixels\) are neither a class \(0..20\) nor the ignore value 255"


def _size_mismatch(voc, i):
    path = voc / f"SegmentationClass/{i}.png"
    label = Image.open(path)
    label.crop((0, 0, label.width - 1, label.height)).save(path)
    return path, rf"label is {label.width - 1}×{label.height} but image {i}.jpg is {label.width}×{label.height}"


def _missing_label(voc, i):
    path = voc / f"SegmentationClass/{i}.png"
    path.unlink()
    return path, "missing"


def _missing_image(voc, i):
    path = voc / f"JPEGImages/{i}.jpg"
    path.unlink()
    return path, "missing"


def _truncated_image(voc, i):
    path = voc / f"JPEGImages/{i}.jpg"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 3 // 4])  # the header still reads; decoding the pixels fails
    return path, r"cannot be decoded \(image file is truncated"


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("breakage", [_unknown_colour, _sixteen_bit_label, _value_37, _size_mismatch,
                                      _missing_label, _missing_image, _truncated_image])
def test_bad_pairs_are_errors_naming_the_file_and_leave_the_output_untouched(broken_tree, tmp_path, breakage, workers):
    root, voc, first_id = broken_tree
    out = tmp_path / "prepared"
    prepare(root, out, workers=1, progress=False)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    path, problem = breakage(voc, first_id)
    with pytest.raises(PipelineError) as error:
        prepare(root, out, workers=workers, progress=False)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert re.search(problem, message), message
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "prepared"]  # no temporary directory left


def test_missing_voc_tree_is_an_error(tmp_path):
    with pytest.raises(PipelineError, match="no VOCdevkit/VOC2012/ImageSets/Segmentation"):
        prepare(tmp_path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_repeated_id_or_one_in_both_splits_is_refused_by_name(broken_tree, tmp_path):
    root, voc, first_id = broken_tree
    splits = voc / "ImageSets/Segmentation"
    val = (splits / "val.txt").read_text()
    (splits / "val.txt").write_text(val + val.split()[0] + "\n")
    with pytest.raises(PipelineError, match=rf"val.txt: {val.split()[0]} listed more than once"):
        prepare(root, tmp_path / "out", workers=1, progress=False)
    (splits / "val.txt").write_text(val + f"{first_id}\n")  # a train image in val would inflate every metric
    with pytest.raises(PipelineError, match=rf"train.txt and val.txt both list {first_id}; the splits must be"):
        prepare(root, tmp_path / "out", workers=1, progress=False)
    assert not (tmp_path / "out").exists()


def test_an_image_declaring_30000_pixels_a_side_is_refused_by_name(broken_tree, tmp_path):
    from conftest import png_header_only

    root, voc, first_id = broken_tree
    image = voc / f"JPEGImages/{first_id}.jpg"
    image.write_bytes(png_header_only(30000, 30000))
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(image))}: refused, far larger than a dataset's image"):
        prepare(root, tmp_path / "out", workers=1, progress=False)
