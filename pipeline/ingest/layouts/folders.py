"""The `folders` layout of a dataset: `<root>/<images>/<id>.jpg|.jpeg|.png` and `<root>/<masks>/<id>.png` with
matching stems, split by id-list files (`dataset.splits`) or by `dataset.val_fraction`; its archive is a tar,
tar.gz or zip unpacked whole."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.params.data import DatasetParams
from pipeline.ingest import splits
from pipeline.ingest.archive import extract_folders
from pipeline.ingest.layouts import Layout, Pair, Sources, register_layout

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIX = ".png"


def _files(directory: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    if not directory.is_dir():
        raise PipelineError(f"{directory}: no such directory of {what}; check dataset.{what} and the data source")
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            if path.stem in found:
                raise PipelineError(f"{path}: {found[path.stem].name} has the same id {path.stem!r}; keep one file "
                                    "per id")
            found[path.stem] = path
    if not found:
        raise PipelineError(f"{directory}: holds no {' or '.join(suffixes)} files; check dataset.{what}")
    return found


def check(dataset: DatasetParams) -> None:
    if (dataset.splits is None) == (dataset.val_fraction is None):
        raise PipelineError("dataset.splits, val_fraction: the folders layout needs exactly one: splits: {train: "
                            "<file>, val: <file>} (id lists) or val_fraction: <0..1> (a seeded split by id)")
    if dataset.splits is not None and sorted(dataset.splits) != ["train", "val"]:
        raise PipelineError(f"dataset.splits: must name the files of train and val, got {', '.join(dataset.splits)}")


def pairs(dataset: DatasetParams, sources: Sources) -> dict[str, list[Pair]]:
    """The pairs of each split, in its list's order (id order for val_fraction); train_set must be train."""
    if sources.train_set != "train":
        raise PipelineError(f"prepare.train_set: {sources.train_set} is VOC's alone; set prepare.train_set: train")
    return {split: [Pair(image_id, dataset.name, image, mask) for image_id, image, mask in listed]
            for split, listed in split_pairs(sources.root, dataset, sources.seed).items()}


def split_pairs(root: Path, dataset: DatasetParams, seed: int) -> dict[str, list[tuple[str, Path, Path]]]:
    """(id, image, mask) per split, each split in its list's order (id order for val_fraction)."""
    images = _files(root / dataset.images, IMAGE_SUFFIXES, "images")
    masks = _files(root / dataset.masks, (MASK_SUFFIX,), "masks")
    for image_id in sorted(images.keys() - masks.keys()):
        raise PipelineError(f"{images[image_id]}: no mask {root / dataset.masks / (image_id + MASK_SUFFIX)}; every "
                            "image needs its mask (or remove the image)")
    for image_id in sorted(masks.keys() - images.keys()):
        raise PipelineError(f"{masks[image_id]}: no image {image_id}.jpg, .jpeg or .png in {root / dataset.images}; "
                            "every mask needs its image (or remove the mask)")
    if dataset.splits is None:
        split_ids = splits.seeded_split(list(images), dataset.val_fraction, seed, root / dataset.images)
    else:
        files = {split: root / name for split, name in dataset.splits.items()}
        fix = "fix the split files named by dataset.splits"
        split_ids = {split: splits.read_ids(files[split], fix) for split in ("train", "val")}
        splits.check_splits(split_ids, files, fix)
        for split, ids in split_ids.items():
            unknown = [image_id for image_id in ids if image_id not in images]
            if unknown:
                raise PipelineError(f"{files[split]}: lists {splits.some(unknown)}, with no image in "
                                    f"{root / dataset.images}; {fix}")
    return {split: [(image_id, images[image_id], masks[image_id]) for image_id in ids]
            for split, ids in split_ids.items()}


register_layout(Layout(
    "folders", check, pairs,
    extract=lambda archive, out, dataset, progress: extract_folders(archive, out, images=dataset.images,
                                                                    masks=dataset.masks, progress=progress),
    fix="fix or remove the file", origins=lambda dataset, train_set: (dataset.name,)))
