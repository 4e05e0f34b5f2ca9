"""VOC 'trainaug' with SBD: the sbd archive extracted safely, and the prepared train split holding exactly
(VOC train ∪ SBD train ∪ SBD val) − VOC val, each label from its source: VOC's PNG where VOC has one, else SBD's
`.mat`, read as torchvision's SBDataset reads it."""

from __future__ import annotations

import gzip
import io
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import yaml
from conftest import offline_params
from PIL import Image
from torchvision.datasets import SBDataset

from pipeline.core.errors import PipelineError
from pipeline.ingest.archive import extract_sbd
from pipeline.ingest.prepare import prepare
from pipeline.ingest.voc import ARCHIVE_ROOT
from pipeline.prepared.dataset import PreparedSplit

REPO = Path(__file__).resolve().parents[1]
ROOT = "benchmark_RELEASE/dataset"


def ids(path) -> list[str]:
    return path.read_text().split()


@pytest.fixture(scope="module")
def trainaug(voc_tree, sbd_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("trainaug") / "prepared"
    stats = prepare(voc_tree, out, workers=1, train_set="trainaug", sbd_root=sbd_dir, progress=False)
    return out, stats


def test_trainaug_is_the_set_arithmetic_and_each_label_is_its_source(trainaug, voc_tree, sbd_dir):
    out, stats = trainaug
    voc = voc_tree / ARCHIVE_ROOT
    voc_train, voc_val = ids(voc / "ImageSets/Segmentation/train.txt"), ids(voc / "ImageSets/Segmentation/val.txt")
    sbd_train, sbd_val = ids(sbd_dir / "train.txt"), ids(sbd_dir / "val.txt")
    # The generated archives share ids both ways, so each part of the arithmetic is exercised.
    assert set(sbd_train) & set(voc_val) and set(sbd_train + sbd_val) & set(voc_train)
    assert set(sbd_train + sbd_val) - set(voc_train + voc_val)

    expected = sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))
    train = PreparedSplit(out, "train")
    assert train.ids == expected
    assert PreparedSplit(out, "val").ids == voc_val
    from_sbd = [i for i in expected if i not in voc_train]
    assert stats["train"]["set"] == "trainaug" and stats["train"]["images"] == len(expected)
    assert stats["train"]["sources"] == {"voc": len(voc_train), "sbd": len(from_sbd)}
    assert stats["val"]["sources"] == {"voc": len(voc_val), "sbd": 0}

    theirs = {}
    for image_set in ("train", "val"):
        dataset = SBDataset(str(sbd_dir), image_set=image_set, mode="segmentation", download=False)
        for path, (image, mask) in zip(dataset.images, dataset):
            theirs[path.rsplit("/", 1)[1][:-4]] = (np.array(image), np.array(mask))
    for k, image_id in enumerate(train.ids):
        image, label = (t.numpy() for t in train[k])
        if image_id in voc_train:  # VOC's PNG, void borders (255) and all
            with Image.open(voc / "SegmentationClass" / f"{image_id}.png") as png:
                np.testing.assert_array_equal(label, np.array(png))
            with Image.open(voc / "JPEGImages" / f"{image_id}.jpg") as jpg:
                np.testing.assert_array_equal(image, np.array(jpg.convert("RGB")).transpose(2, 0, 1))
        else:
            their_image, their_mask = theirs[image_id]
            np.testing.assert_array_equal(label, their_mask)
            np.testing.assert_array_equal(image, their_image.transpose(2, 0, 1))
    overlap = next(i for i in voc_train if i in sbd_train + sbd_val)
    assert (train[train.ids.index(overlap)][1] == 255).any()  # VOC's label won: SBD's has no void


def test_train_needs_no_sbd(voc_tree, tmp_path):
    stats = prepare(voc_tree, tmp_path / "prepared", workers=1, train_set="train", sbd_root=tmp_path / "absent",
                    progress=False)
    assert stats["train"]["set"] == "train" and stats["train"]["sources"]["sbd"] == 0
    with pytest.raises(PipelineError, match=r"absent/train.txt: missing; run the sbd stage"):
        prepare(voc_tree, tmp_path / "p2", workers=1, train_set="trainaug", sbd_root=tmp_path / "absent")


def test_extraction_takes_only_what_trainaug_needs(sbd_dir, sbd_tgz):
    listed = set(ids(sbd_dir / "train.txt")) | set(ids(sbd_dir / "val.txt"))
    assert sorted(p.name for p in sbd_dir.iterdir()) == ["cls", "img", "train.txt", "val.txt"]  # no inst/
    assert {p.stem for p in (sbd_dir / "img").iterdir()} == listed == {p.stem for p in (sbd_dir / "cls").iterdir()}
    with tarfile.open(sbd_tgz) as tar:
        assert any(name.startswith(f"{ROOT}/inst/") for name in tar.getnames())


def rewrite_tgz(source, target, change):
    """A copy of the generated tgz with `change(members) -> members` applied to its (TarInfo, bytes) list."""
    with tarfile.open(source) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    with gzip.open(target, "wb") as packed, tarfile.open(fileobj=packed, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in change(members):
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return target


def member(name, data=b"", kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


HOSTILE = {
    "dotdot": member(f"{ROOT}/img/../../../evil.jpg", b"x"),
    "absolute": member("/tmp/evil.jpg", b"x"),
    "symlink": member(f"{ROOT}/img/link.jpg", kind=tarfile.SYMTYPE, linkname="/etc/passwd"),
    "device": member(f"{ROOT}/cls/null.mat", kind=tarfile.CHRTYPE),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_sbd_archive_is_refused_and_nothing_is_written(sbd_tgz, tmp_path, case):
    tgz = rewrite_tgz(sbd_tgz, tmp_path / "benchmark.tgz", lambda members: [HOSTILE[case], *members])
    with pytest.raises(PipelineError, match=r"refusing to extract member .*this is not SBD's benchmark.tgz"):
        extract_sbd(tgz, tmp_path / "SBD", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmark.tgz"]


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_a_truncated_sbd_archive_is_refused(sbd_tgz, tmp_path, keep):
    data = sbd_tgz.read_bytes()
    (tmp_path / "benchmark.tgz").write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(PipelineError, match=r"benchmark.tgz is truncated or corrupt .*rerun the sbd stage"):
        extract_sbd(tmp_path / "benchmark.tgz", tmp_path / "SBD", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmark.tgz"]


def test_a_listed_id_without_its_label_is_named(sbd_tgz, tmp_path):
    first = None

    def drop_first_label(members):
        nonlocal first
        first = next(info.name for info, _ in members if info.name.startswith(f"{ROOT}/cls/"))
        return [(info, data) for info, data in members if info.name != first]

    tgz = rewrite_tgz(sbd_tgz, tmp_path / "benchmark.tgz", drop_first_label)
    with pytest.raises(PipelineError, match=rf"{first}.*is listed but missing"):
        extract_sbd(tgz, tmp_path / "SBD", progress=False)


@pytest.fixture
def broken_sbd(sbd_dir, voc_tree, tmp_path):
    """A private copy of the extracted SBD and the `.mat` of its first SBD-only id."""
    copy = tmp_path / "SBD"
    shutil.copytree(sbd_dir, copy)
    voc_ids = set(ids(voc_tree / ARCHIVE_ROOT / "ImageSets/Segmentation/trainval.txt"))
    sbd_only = next(i for i in ids(copy / "train.txt") if i not in voc_ids)
    return copy, copy / "cls" / f"{sbd_only}.mat"


def save_mat(path, segmentation):
    scipy.io.savemat(path, {"GTcls": {"Segmentation": segmentation}})


BAD_MAT = {
    "not a MAT file": (lambda path: path.write_bytes(b"not a mat file"), r"not an SBD label"),
    "no GTcls": (lambda path: scipy.io.savemat(path, {"other": np.zeros(3)}), r"not an SBD label"),
    "class 30": (lambda path: save_mat(path, np.full(scipy.io.loadmat(path)["GTcls"][0]["Segmentation"][0].shape, 30,
                                                     np.uint8)), r"mask values 30 \(\d+ pixels\) are neither a class"),
    "wrong size": (lambda path: save_mat(path, np.zeros((7, 9), np.uint8)), r"label is 9×7 but image"),
    "missing": (lambda path: path.unlink(), r"missing, but listed in SBD's"),
}


@pytest.mark.parametrize("case", BAD_MAT)
def test_a_bad_mat_label_is_named_and_nothing_is_written(voc_tree, broken_sbd, tmp_path, case):
    sbd_copy, mat = broken_sbd
    damage, message = BAD_MAT[case]
    damage(mat)
    with pytest.raises(PipelineError, match=message) as error:
        prepare(voc_tree, tmp_path / "prepared", workers=1, train_set="trainaug", sbd_root=sbd_copy, progress=False)
    assert mat.name in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "prepared").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_the_generated_sbd_archive_is_reproducible(voc_tar, sbd_tgz, tmp_path):
    from conftest import SYNTHETIC_SBD

    from devtools.synthetic import write_sbd_tgz

    write_sbd_tgz(tmp_path / "again.tgz", voc_tar, **SYNTHETIC_SBD)
    assert (tmp_path / "again.tgz").read_bytes() == sbd_tgz.read_bytes()


def test_sbd_unreachable_names_its_own_key_and_the_voc_only_way_out(voc_tar, sbd_tgz, tmp_path):
    """With the real VOC tar and no SBD (no internet, or SBD's host down), the message points at `sbd.urls`, not at
    `data.urls`, and says that `prepare.train_set: train` needs no SBD at all."""
    raw = offline_params(voc_tar, sbd_tgz)
    with socket.socket() as unused:  # a port that nobody listens on once closed
        unused.bind(("127.0.0.1", 0))
        raw["sbd"]["urls"] = [f"http://127.0.0.1:{unused.getsockname()[1]}/benchmark.tgz"]
    raw["sbd"]["retries"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "stages.sbd", "--params", str(tmp_path / "params.yaml"),
                             "--tgz", str(tmp_path / "benchmark.tgz"), "--out", str(tmp_path / "SBD")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: could not get benchmark.tgz from any source")
    assert "into sbd.urls in params.yaml" in message and "data.urls" not in message
    assert "prepare.train_set: train to train on VOC alone, without SBD" in message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]
