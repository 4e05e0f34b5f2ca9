"""The `voc` layout: PASCAL VOC's `VOCdevkit/VOC2012/{JPEGImages/<id>.jpg, SegmentationClass/<id>.png,
ImageSets/Segmentation/{train,val}.txt}`, whose split files decide the splits; with VOC's own classes, trainaug adds
SBD's labels (`pipeline.ingest.sbd`). Its archive is an uncompressed tar, extracted selectively (the segmentation
files alone) by `pipeline.ingest.archive.extract_segmentation`."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.params.data import DatasetParams
from pipeline.ingest import sbd, splits, voc
from pipeline.ingest.archive import compressed_kind, extract_segmentation
from pipeline.ingest.layouts import Layout, Pair, Sources, register_layout


def check(dataset: DatasetParams) -> None:
    if dataset.splits is not None or dataset.val_fraction is not None:
        raise PipelineError("dataset.splits, val_fraction: the voc layout reads its splits from "
                            "ImageSets/Segmentation/{train,val}.txt; remove them or use layout: folders")


def voc_dir(voc_root: str | os.PathLike) -> Path:
    """The `VOC2012` directory, given it, the `VOCdevkit` holding it, or the directory holding `VOCdevkit`."""
    root = Path(voc_root)
    for candidate in (root / voc.ARCHIVE_ROOT, root / Path(voc.ARCHIVE_ROOT).name, root):
        if (candidate / voc.SPLIT_DIR).is_dir():
            return candidate
    raise PipelineError(f"{root}: no {voc.ARCHIVE_ROOT}/{voc.SPLIT_DIR} in it; "
                        f"extract the VOC archive there first (run the extract stage)")


def pairs(dataset: DatasetParams, sources: Sources) -> dict[str, list[Pair]]:
    source = voc_dir(sources.root)
    split_ids = _read_splits(source)
    return {"train": train_pairs(source, split_ids, sources.train_set, sources.sbd_root),
            "val": [_voc_pair(source, image_id) for image_id in split_ids["val"]]}


def train_pairs(source: Path, split_ids: dict[str, list[str]], train_set: str,
                sbd_root: str | os.PathLike | None) -> list[Pair]:
    """The training samples, in id order for trainaug (VOC train's own order for train). trainaug = (VOC train ∪
    SBD train ∪ SBD val) − VOC val, VOC's PNG wherever VOC has one."""
    voc_train = split_ids["train"]
    if train_set == "train":
        return [_voc_pair(source, image_id) for image_id in voc_train]
    if train_set != "trainaug":
        raise PipelineError(f"prepare.train_set: must be trainaug or train, got {train_set!r}")
    if sbd_root is None:
        raise PipelineError("prepare.train_set is trainaug but no SBD directory was given; run the sbd stage "
                            "(dvc repro sbd) or set prepare.train_set: train")
    sbd_ids = {image_id for name in sbd.LISTS for image_id in sbd.read_list(sbd_root, name)}
    in_voc = set(voc_train)
    return [_voc_pair(source, image_id) if image_id in in_voc
            else Pair(image_id, "sbd", sbd.image_path(sbd_root, image_id), sbd.label_path(sbd_root, image_id))
            for image_id in sorted((in_voc | sbd_ids) - set(split_ids["val"]))]


def _voc_pair(source: Path, image_id: str) -> Pair:
    return Pair(image_id, "voc", source / voc.IMAGE_DIR / f"{image_id}{voc.IMAGE_SUFFIX}",
                source / voc.LABEL_DIR / f"{image_id}{voc.LABEL_SUFFIX}")


def _read_splits(source: Path) -> dict[str, list[str]]:
    """The ids of each split file, refusing an id listed twice in one split or in more than one split."""
    files = {split: source / voc.SPLIT_DIR / f"{split}.txt" for split in voc.SPLITS}
    split_ids = {split: splits.read_ids(files[split], "the extracted archive is incomplete or damaged, run the "
                                        "extract stage again") for split in voc.SPLITS}
    splits.check_splits(split_ids, files, "restore the official split files")
    return split_ids


def extract(archive: Path, out_dir: Path, dataset: DatasetParams, progress: bool) -> dict:
    kind = compressed_kind(archive)
    if kind is not None:
        raise PipelineError(f"{archive}: a {kind} archive; the voc layout is read from an uncompressed tar like "
                            "VOC's own: repack it as a .tar, or unpack it and set data.path to its directory")
    return extract_segmentation(archive, out_dir, progress=progress)


register_layout(Layout("voc", check, pairs, extract, fix="re-extract the archive",
                       origins=lambda dataset, train_set: ("voc", "sbd")))
