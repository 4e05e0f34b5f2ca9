"""Stage `prepare`'s work: the dataset's source tree, read by its layout (`pipeline.ingest.layouts`: VOC's extracted
archive, and SBD for trainaug; or a folders dataset) → packed, memory-mappable arrays per split, in the format of
`pipeline.prepared.format`, with its label set and statistics. Every pair is checked before the directory appears.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.core.atomic import atomic_dir, full_disk_reported, require_space, require_writable, write_json
from pipeline.core.errors import PipelineError
from pipeline.core.labels import IGNORE_INDEX, LabelSet
from pipeline.core.params.data import DatasetParams
from pipeline.core.progress import Progress
from pipeline.ingest import sbd
from pipeline.ingest.layouts import Pair, Sources, dataset_layout
from pipeline.ingest.masks import MaskReader
from pipeline.prepared.balance import class_weights
from pipeline.prepared.format import IMAGES, INDEX, LABEL_SET, LABELS, SPLITS

log = logging.getLogger(__name__)

CHUNK = 16  # samples per task sent to a worker process: few enough round trips, still a smooth progress bar

# (image path, label path, offset into labels.npy, height, width); the image offset is 3 × the label offset.
Sample = tuple[str, str, int, int, int]


@dataclass(frozen=True)
class Reading:
    """What every check of one dataset's files needs: how to read its masks and what to tell the user to do."""

    masks: MaskReader
    fix: str  # the advice that ends a message about a broken file


def prepare(source_root: str | os.PathLike, out_dir: str | os.PathLike, *, dataset: DatasetParams | None = None,
            workers: int = 0, train_set: str = "train", sbd_root: str | os.PathLike | None = None, seed: int = 0,
            progress: bool = True) -> dict:
    """Decode and check every image/mask pair of the train and val splits and pack them into `out_dir`, with the
    dataset's label set (`labels.json`).

    `dataset` (default: PASCAL VOC) says the layout and classes; the layout reads `source_root` (see
    `pipeline.ingest.layouts`). In the voc layout it is the directory holding `VOCdevkit/VOC2012`, or
    `VOCdevkit/VOC2012` itself, and `train_set` is `train` (VOC's 1,464) or `trainaug` (with SBD, extracted at
    `sbd_root`; see `pipeline.ingest.sbd`); in the folders layout it holds `dataset.images` and `dataset.masks`,
    split by `dataset.splits` or by `dataset.val_fraction` and `seed`.
    `workers` decoding processes (0 = one per core, 1 = none: decode in this process). `out_dir` is replaced as a
    whole, and only once every pair has been checked. Returns the per-split statistics written to
    `metrics/data.json`.
    """
    dataset = dataset or DatasetParams()
    labels = LabelSet.of(dataset.name, dataset.classes, dataset.colors)
    reader = dataset_layout(dataset)
    pairs = reader.pairs(dataset, Sources(Path(source_root), train_set, Path(sbd_root) if sbd_root else None, seed))
    fix, origins = reader.fix, reader.origins(dataset, train_set)
    ignore_color = dataset.ignore_color
    if ignore_color is None and dataset.colors is None:  # VOC's palette: void is drawn in its colour of 255
        ignore_color = labels.palette()[IGNORE_INDEX].tolist()
    value_map = dataset.value_map()
    masks = MaskReader(labels.num_classes, dataset.ignore_index, labels.colors,
                       tuple(ignore_color) if ignore_color is not None else None,
                       tuple(sorted(value_map.items())) if value_map is not None else None)
    reading = Reading(masks, fix)
    scanned = {split: _scan_split(pairs[split], reading) for split in SPLITS}
    need = sum(4 * _pixel_count(samples) for samples in scanned.values())  # 3 bytes of image + 1 of label a pixel
    out_parent = Path(out_dir).absolute().parent
    require_writable(out_parent, "make it writable or pass another --out")
    require_space(out_parent, need)
    workers = workers or os.cpu_count() or 1
    stats = {}
    with atomic_dir(out_dir) as tmp:
        pool = ProcessPoolExecutor(workers) if workers > 1 else None
        try:
            for split in SPLITS:
                ids = [pair.image_id for pair in pairs[split]]
                stats[split] = _prepare_split(split, ids, scanned[split], tmp / split, pool, progress, need, labels,
                                              reading)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        write_json(tmp / LABEL_SET, labels.to_json())
    for split in SPLITS:
        counts = Counter(pair.origin for pair in pairs[split])
        stats[split].update(set=train_set if split == "train" else split,
                            sources={origin: counts[origin] for origin in origins})
    if dataset.val_fraction is not None:  # the drawn split, so that it can be read and compared
        stats["val"].update(val_fraction=dataset.val_fraction, seed=seed,
                            ids=[pair.image_id for pair in pairs["val"]])
    return stats


def _scan_split(pairs: list[Pair], reading: Reading) -> list[Sample]:
    """Each pair's paths, size and offset, from the file headers alone (an SBD `.mat` label's size is checked when
    it is decoded: reading it means reading it whole)."""
    samples: list[Sample] = []
    offset = 0
    for pair in pairs:
        height, width = _check_headers(pair.image, pair.label, reading)
        samples.append((str(pair.image), str(pair.label), offset, height, width))
        offset += height * width
    return samples


def _pixel_count(samples: list[Sample]) -> int:
    return sum(height * width for *_, height, width in samples)


def _allocate(path: Path, size: int, need: int) -> None:
    """An .npy file of `size` uint8 whose blocks are reserved on disk now. `open_memmap` alone makes a sparse file,
    and a worker filling its pages on a full disk dies of SIGBUS ("Bus error"), far from any useful message."""
    with full_disk_reported(path.parent, need):
        np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(size,)).flush()
        with open(path, "r+b") as file:
            try:
                os.posix_fallocate(file.fileno(), 0, os.fstat(file.fileno()).st_size)
            except OSError as error:
                if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate here: require_space must do
                    raise


def _prepare_split(split: str, ids: list[str], samples: list[Sample], out: Path, pool: ProcessPoolExecutor | None,
                   progress: bool, need: int, labels: LabelSet, reading: Reading) -> dict:
    offset = _pixel_count(samples)
    # Sizes come from the headers, so both arrays can be allocated on disk now and filled in place by the
    # workers: memory stays bounded by a chunk of images, not the split (real VOC: ~1.6 GB of pixels).
    out.mkdir(parents=True)
    images_npy, labels_npy = out / IMAGES, out / LABELS
    for path, size in ((images_npy, 3 * offset), (labels_npy, offset)):
        _allocate(path, size, need)
    chunks = [samples[i:i + CHUNK] for i in range(0, len(samples), CHUNK)]
    histogram, stored = np.zeros(256, dtype=np.int64), np.zeros(256, dtype=np.int64)
    with Progress(len(samples), desc=f"prepare {split}", unit="images", enabled=progress, logger=log) as bar:
        if pool is None:
            for chunk in chunks:
                counted = _decode_chunk(str(images_npy), str(labels_npy), chunk, reading)
                histogram += counted[0]
                stored += counted[1]
                bar.update(len(chunk))
        else:
            futures = {pool.submit(_decode_chunk, str(images_npy), str(labels_npy), chunk, reading): len(chunk)
                       for chunk in chunks}
            for future in as_completed(futures):
                histogram += future.result()[0]
                stored += future.result()[1]
                bar.update(futures[future])

    heights = [s[3] for s in samples]
    widths = [s[4] for s in samples]
    class_pixels = [int(histogram[c]) for c in range(labels.num_classes)]
    write_json(out / INDEX, {
        "ids": ids, "heights": heights, "widths": widths,
        "label_offsets": [s[2] for s in samples], "image_offsets": [3 * s[2] for s in samples],
        "class_pixels": class_pixels,
    })
    void = int(histogram[IGNORE_INDEX])
    table = reading.masks.table()
    mapped_away = {} if table is None else {  # stored values the mapping ignores (Cityscapes' non-train label ids)
        str(value): int(stored[value]) for value in range(256) if table[value] == IGNORE_INDEX and stored[value]}
    return {
        "images": len(ids),
        "pixels": offset,
        "class_pixels": dict(zip(labels.classes, class_pixels)),
        # What the loss's `class_weights: auto` uses when this split is trained on (pipeline.prepared.balance)
        "class_weights_auto": dict(zip(labels.classes, (round(w, 6) for w in class_weights(class_pixels)))),
        "void_pixels": void,
        "void_fraction": void / offset,
        **({"ignored_by_label_map": {"pixels": sum(mapped_away.values()), "by_value": mapped_away}}
           if table is not None else {}),
        "height": {"min": min(heights), "max": max(heights)},
        "width": {"min": min(widths), "max": max(widths)},
        "sha256": _sha256(out / INDEX, images_npy, labels_npy),
    }


def _check_headers(image_path: Path, label_path: Path, reading: Reading) -> tuple[int, int]:
    """(height, width) of a pair, after the checks that need only the file headers."""
    image = _open(image_path, reading)
    if label_path.suffix == sbd.LABEL_SUFFIX:
        if not label_path.is_file():
            raise sbd.missing_label(label_path)
        return image.height, image.width
    label = _open(label_path, reading)
    reading.masks.check_mode(str(label_path), label.mode)
    if label.size != image.size:
        raise PipelineError(f"{label_path}: label is {label.width}×{label.height} but image {image_path.name} is "
                            f"{image.width}×{image.height}; they must match pixel for pixel, {reading.fix}")
    return image.height, image.width


def _open(path: Path, reading: Reading) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image  # the header is read; pixels are only decoded later, in `_decode_chunk`
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing, but listed in a split; {reading.fix}") from None
    except UnidentifiedImageError:
        raise PipelineError(f"{path}: not an image in a format PIL reads; {reading.fix}") from None
    except Image.DecompressionBombError as error:  # a header declaring, say, 30000×30000: refuse before decoding
        raise PipelineError(f"{path}: refused, far larger than a dataset's image should be ({error}); "
                            f"{reading.fix}") from None
    except OSError as error:
        raise PipelineError(f"{path}: cannot be read ({error.strerror or error}); {reading.fix}") from None


def _decode_chunk(images_npy: str, labels_npy: str, chunk: list[Sample], reading: Reading
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Decode, check and write one chunk of samples into the arrays; returns the histograms of the class indices
    written and of the masks' values as stored (counted only under a value mapping). Runs in a worker process, so
    it opens the arrays itself and each worker writes only its own slices."""
    images = np.load(images_npy, mmap_mode="r+")
    labels = np.load(labels_npy, mmap_mode="r+")
    histogram, stored = np.zeros(256, dtype=np.int64), np.zeros(256, dtype=np.int64)
    for image_path, label_path, offset, height, width in chunk:
        label = _label(label_path, reading, stored)
        image = _image(image_path, reading)
        if label.shape != (height, width):
            raise PipelineError(f"{label_path}: label is {label.shape[1]}×{label.shape[0]} but image "
                                f"{Path(image_path).name} is {width}×{height}; they must match pixel for pixel")
        labels[offset:offset + height * width] = label.ravel()
        images[3 * offset:3 * (offset + height * width)].reshape(3, height, width)[...] = image.transpose(2, 0, 1)
        histogram += np.bincount(label.ravel(), minlength=256)
    images.flush()
    labels.flush()
    return histogram, stored


def _label(path: str, reading: Reading, stored: np.ndarray) -> np.ndarray:
    """H×W class indices with IGNORE_INDEX for ignored pixels, from a mask (see `pipeline.ingest.masks`) or an
    SBD `.mat`'s `GTcls.Segmentation`."""
    if path.endswith(sbd.LABEL_SUFFIX):
        return reading.masks.read_values(path, sbd.read_label(path))
    try:
        with Image.open(path) as file:
            file.load()
            return reading.masks.read(path, file, stored)
    except OSError as error:  # e.g. a truncated file, whose header alone looked fine
        raise PipelineError(f"{path}: cannot be decoded ({error}); {reading.fix}") from None


def _image(path: str, reading: Reading) -> np.ndarray:
    try:
        with Image.open(path) as file:
            return np.asarray(file.convert("RGB"))
    except OSError as error:  # e.g. a truncated file, whose header alone looked fine
        raise PipelineError(f"{path}: cannot be decoded ({error}); {reading.fix}") from None


def _sha256(*paths: Path) -> str:
    """The sha256 of the files' bytes one after the other."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            hashlib.file_digest(f, lambda: digest)  # feeds `digest` itself
    return digest.hexdigest()
