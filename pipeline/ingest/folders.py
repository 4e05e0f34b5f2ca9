"""The `folders` layout of a dataset: `<root>/<images>/<id>.jpg|.jpeg|.png` and `<root>/<masks>/<id>.png` with
matching stems, split by id-list files (`dataset.splits`) or by `dataset.val_fraction`."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.params.data import DatasetParams
from pipeline.ingest import splits

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
