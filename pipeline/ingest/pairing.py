"""Pairing a benchmark's images with their masks by file name, inside split directories (Cityscapes' city folders,
ADE20K's flat ones): what the cityscapes and ade20k layouts share."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.params.data import DatasetParams
from pipeline.ingest.layouts import Pair


def files_by_id(directory: Path, suffix: str, what: str) -> dict[str, Path]:
    """The files under `directory` (at any depth) whose name ends with `suffix`, by that name without it."""
    if not directory.is_dir():
        raise PipelineError(f"{directory}: no such directory of {what}")
    found: dict[str, Path] = {}
    for path in sorted(directory.rglob(f"*{suffix}")):
        if path.is_file():
            image_id = path.name[:-len(suffix)]
            if image_id in found:
                raise PipelineError(f"{path}: {found[image_id]} has the same id {image_id!r}; keep one file per id")
            found[image_id] = path
    if not found:
        raise PipelineError(f"{directory}: holds no *{suffix} files of {what}")
    return found


def matched(images: dict[str, Path], masks: dict[str, Path], mask_name: str) -> list[tuple[str, Path, Path]]:
    """(id, image, mask) in id order; an image without its mask, or a mask without its image, is one line naming
    the file (`mask_name` says what the missing mask would be called)."""
    for image_id in sorted(images.keys() - masks.keys()):
        raise PipelineError(f"{images[image_id]}: no mask {image_id}{mask_name}; every image needs its mask (or "
                            "remove the image)")
    for image_id in sorted(masks.keys() - images.keys()):
        raise PipelineError(f"{masks[image_id]}: no image for it ({image_id}); every mask needs its image (or "
                            "remove the mask)")
    return [(image_id, images[image_id], masks[image_id]) for image_id in sorted(images)]


def benchmark_root(root: Path, inner: str, expected: tuple[str, ...], preset: str) -> Path:
    """`root`, or its `inner` folder (the archive's top folder), whichever holds the `expected` directories; one line
    saying which it expected otherwise."""
    for candidate in (root, root / inner):
        if all((candidate / name).is_dir() for name in expected):
            return candidate
    wanted = " and ".join(f"{name}/" for name in expected)
    raise PipelineError(f"{root}: the {preset} preset expects {wanted} in this directory (data.path) or in its "
                        f"{inner}/; point data.path at the directory that holds them")


def check_no_split_keys(dataset: DatasetParams, splits_are: str) -> None:
    """A benchmark's splits are its folders (`splits_are` says which): the folders layout's split keys are refused."""
    if dataset.splits is not None or dataset.val_fraction is not None:
        raise PipelineError(f"dataset.splits, val_fraction: {splits_are}; remove them")


def folder_pairs(root: Path, dataset: DatasetParams, images: str, masks: str, folders: dict[str, str],
                 suffixes: tuple[str, str]) -> dict[str, list[Pair]]:
    """The pairs of each split (`folders`: split → its folder under `images` and `masks`), by the files' names
    less their `suffixes` (image's, mask's)."""
    image_suffix, mask_suffix = suffixes
    return {split: [Pair(image_id, dataset.name, image, mask) for image_id, image, mask in matched(
        files_by_id(root / images / folder, image_suffix, f"{folder} images"),
        files_by_id(root / masks / folder, mask_suffix, f"{folder} masks"), mask_suffix)]
        for split, folder in folders.items()}
