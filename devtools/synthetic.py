"""A generated stand-in for the VOC 2012 archive: the real tar's layout and label conventions, learnable content.

It lets every stage (download → extract → prepare → train → evaluate) run in minutes on a CPU, in CI and in the
demo, without the 2 GB download. What the pipeline relies on is the same as in the real archive:
`VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation,Annotations}`, RGB JPEGs of varying,
non-square sizes, 8-bit palette PNGs whose index is the class id, a 2–3 px void (255) band along every object
outline, and files that are in the archive but in no segmentation split (so extraction has to select).

Each of the 20 classes has its own hue, texture and shape family (`class_look`), so a small network can learn
them from appearance alone; sizes, positions, colours and brightness are jittered so that it is not trivial.
"""

from __future__ import annotations

import colorsys
import gzip
import io
import math
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from pipeline.core.atomic import atomic_file
from pipeline.core.errors import PipelineError
from pipeline.core.labels import IGNORE_INDEX, NUM_CLASSES, VOC_LABELS, label_png
from pipeline.ingest.download import md5_of
from pipeline.ingest.sbd import SBD_ROOT
from pipeline.ingest.voc import ARCHIVE_ROOT

# Not a VOC year (those are 2007–2012), so a generated id can never be mistaken for a real one.
ID_PREFIX = "2000"
# The real archive's date. Every tar header field is fixed so that the same arguments give the same bytes,
# and therefore the same md5, which the download stage checks like the real archive's.
MTIME = 1336694400
JPEG_QUALITY = 90
MIN_SIZE = 32  # below this the 2–3 px void band would swallow the smaller objects
UNLISTED = 2  # JPEGs in no split list, like the real archive's 17,125 JPEGs for 2,913 segmentation ids
MAX_OBJECTS = 3

SHAPES = ("ellipse", "rectangle", "triangle", "diamond")
TEXTURES = ("stripes", "checker", "dots", "rings", "noise")


@dataclass(frozen=True)
class Look:
    """How objects of one class are drawn."""

    hue: float  # 0..1
    shape: str
    texture: str
    period: float  # texture period in pixels
    angle: float  # texture orientation in radians


def class_look(class_id: int) -> Look:
    """Class 1..20 → its look. Hues are evenly spaced, and (shape, texture) = (k mod 4, k mod 5) is a different
    pair for every class, with both differing between neighbouring hues, the pairs most easily confused by colour."""
    k = class_id - 1
    return Look(
        hue=k / (NUM_CLASSES - 1),
        shape=SHAPES[k % len(SHAPES)],
        texture=TEXTURES[k % len(TEXTURES)],
        period=5.0 + 2.0 * (class_id % 3),
        angle=math.radians((class_id * 47) % 180),
    )


def write_voc_tar(path: str | Path, *, seed: int = 0, n_train: int = 200, n_val: int = 100,
                  min_size: int = 96, max_size: int = 160, voc_shaped: bool = False) -> str:
    """Write a VOC-2012-layout tar of generated images to `path` (atomically) and return its md5 hex digest.

    Width and height of each image are drawn independently in [min_size, max_size]; with `voc_shaped`, as in VOC,
    the long side is max_size and the short one is drawn in [min_size, max_size], landscape 7 times in 10. Every
    class (background and the 20 objects) appears in both splits whenever a split has at least 7 images (3 objects
    each ≥ 20). The same arguments always give a byte-identical tar.
    """
    if n_train < 1 or n_val < 1:
        raise PipelineError(f"synthetic dataset: need at least 1 train and 1 val image, got {n_train} and {n_val}")
    if not MIN_SIZE <= min_size <= max_size:
        raise PipelineError(f"synthetic dataset: sizes must satisfy {MIN_SIZE} <= min_size <= max_size, "
                            f"got min_size {min_size} and max_size {max_size}")
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    ids = [f"{ID_PREFIX}_{i:06d}" for i in range(1, n + UNLISTED + 1)]
    # Like VOC, the two splits interleave in id order rather than train ids coming first.
    in_train = np.zeros(n, dtype=bool)
    in_train[rng.permutation(n)[:n_train]] = True
    splits = {"train": [ids[i] for i in range(n) if in_train[i]], "val": [ids[i] for i in range(n) if not in_train[i]]}
    classes = {split: _object_classes(rng, len(split_ids)) for split, split_ids in splits.items()}
    classes["unlisted"] = [[int(rng.integers(1, NUM_CLASSES))] for _ in range(UNLISTED)]
    queue = {name: iter(per_image) for name, per_image in classes.items()}

    jpegs: dict[str, bytes] = {}
    pngs: dict[str, bytes] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for i, image_id in enumerate(ids):
        group = "unlisted" if i >= n else "train" if in_train[i] else "val"
        if voc_shaped:
            short = int(rng.integers(min_size, max_size + 1))
            height, width = (short, max_size) if rng.random() < 0.7 else (max_size, short)
        else:
            height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
        image, label = _sample(rng, height, width, next(queue[group]))
        jpegs[image_id] = _encode_jpeg(image)
        if group != "unlisted":
            pngs[image_id] = _encode_png(label)
        sizes[image_id] = (height, width)

    root = ARCHIVE_ROOT
    members: list[tuple[str, bytes | None]] = [(d, None) for d in (
        "VOCdevkit", root, f"{root}/Annotations", f"{root}/ImageSets", f"{root}/ImageSets/Segmentation",
        f"{root}/JPEGImages", f"{root}/SegmentationClass")]
    members += [(f"{root}/Annotations/{i}.xml", _annotation(i, *sizes[i])) for i in ids[:2]]
    for split in ("train", "trainval", "val"):
        listed = splits["train"] + splits["val"] if split == "trainval" else splits[split]
        members.append((f"{root}/ImageSets/Segmentation/{split}.txt",
                        "".join(f"{i}\n" for i in sorted(listed)).encode()))
    members += [(f"{root}/JPEGImages/{i}.jpg", data) for i, data in jpegs.items()]
    members += [(f"{root}/SegmentationClass/{i}.png", data) for i, data in pngs.items()]

    with atomic_file(path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
            for name, data in members:
                _add(tar, name, data)
        return md5_of(tmp)


# A small dataset that is not VOC: 4 classes (background and three of VOC's looks), colour masks.
FOLDERS_CLASSES = ("background", "crack", "rust", "paint")
FOLDERS_COLORS = ((0, 0, 0), (255, 200, 0), (0, 160, 255), (200, 0, 200))
FOLDERS_IGNORE_COLOR = (255, 255, 255)
_FOLDERS_LOOKS = (None, 1, 8, 15)  # the VOC class whose look each object class borrows


def write_folders_dataset(root: str | Path, *, seed: int = 2, n_images: int = 48, min_size: int = 64,
                          max_size: int = 112, rare_every: int = 0, n_classes: int = 4) -> dict[str, list[str]]:
    """Write a dataset in the folders layout to `root`: `images/<id>.jpg`, `masks/<id>.png` as RGB colour masks
    (FOLDERS_COLORS per class, FOLDERS_IGNORE_COLOR along object outlines) and `splits/{train,val}.txt` (one
    third val). `n_classes` (2 to 4) keeps the first classes of FOLDERS_CLASSES. `rare_every` > 0 makes the last
    class rare: it appears only in every `rare_every`-th image, the objects of the others drawn as the other
    classes. Returns the split ids. The same arguments always give the same files."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = [f"plate-{i:03d}" for i in range(1, n_images + 1)]
    val = set(rng.permutation(n_images)[:n_images // 3].tolist())
    splits = {"train": [image_id for i, image_id in enumerate(ids) if i not in val],
              "val": [image_id for i, image_id in enumerate(ids) if i in val]}
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:len(FOLDERS_COLORS)] = FOLDERS_COLORS
    palette[IGNORE_INDEX] = FOLDERS_IGNORE_COLOR
    for directory in ("images", "masks", "splits"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    for i, image_id in enumerate(ids):
        height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
        objects = [1 + (i + k) % (n_classes - 1) for k in range(int(rng.integers(1, 3)))]
        if rare_every:  # the last class in every rare_every-th image only, and there always
            rare = n_classes - 1
            objects = [rare] if i % rare_every == 0 else [1 + (i + k) % (rare - 1) for k in range(len(objects))]
        image, label = _sample(rng, height, width, [_FOLDERS_LOOKS[c] for c in objects])
        ours = np.zeros_like(label)
        for c in range(1, n_classes):
            ours[label == _FOLDERS_LOOKS[c]] = c
        ours[label == IGNORE_INDEX] = IGNORE_INDEX
        (root / "images" / f"{image_id}.jpg").write_bytes(_encode_jpeg(image))
        buffer = io.BytesIO()
        Image.fromarray(palette[ours]).save(buffer, format="PNG")
        (root / "masks" / f"{image_id}.png").write_bytes(buffer.getvalue())
    for split, split_ids in splits.items():
        (root / "splits" / f"{split}.txt").write_text("".join(f"{image_id}\n" for image_id in split_ids))
    return splits


# Cityscapes' label ids that are no train id, as its masks hold them: unlabeled, ego vehicle, static, ground,
# guard rail, polegroup, caravan, license plate (stored as 255).
CITYSCAPES_IGNORED_IDS = (0, 1, 4, 6, 14, 18, 29, 255)


def write_cityscapes_tree(root: str | Path, *, seed: int = 5, cities: dict[str, tuple[str, ...]] | None = None,
                          per_city: int = 2, size: tuple[int, int] = (64, 128)) -> dict[str, np.ndarray]:
    """Write a Cityscapes-shaped directory to `root`: `leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit
    .png` and, beside each in `gtFine/`, `_gtFine_labelIds.png` (random label ids, train ids' and others'), plus
    the `_gtFine_color.png` and `_gtFine_instanceIds.png` a real download has (which must be skipped). Returns each
    image id's label ids, to compare with what prepare makes of them."""
    from pipeline.core.presets import CITYSCAPES

    root, rng = Path(root), np.random.default_rng(seed)
    cities = cities or {"train": ("aachen", "bremen"), "val": ("frankfurt",)}
    label_ids = np.array([label_id for _, label_id, _ in CITYSCAPES] + list(CITYSCAPES_IGNORED_IDS), dtype=np.uint8)
    written = {}
    for split, names in cities.items():
        for city in names:
            for frame in range(per_city):
                image_id = f"{city}_{frame:06d}_{19 + frame:06d}"
                blocks = rng.choice(label_ids, size=(size[0] // 16, size[1] // 16))
                labels = blocks.repeat(16, axis=0).repeat(16, axis=1)
                image = (rng.random((*size, 3)) * 255).astype(np.uint8)
                for folder, suffix, pixels in (("leftImg8bit", "_leftImg8bit.png", image),
                                               ("gtFine", "_gtFine_labelIds.png", labels),
                                               ("gtFine", "_gtFine_instanceIds.png", (labels.astype(np.uint16) * 100)),
                                               ("gtFine", "_gtFine_color.png", image)):
                    directory = root / folder / split / city
                    directory.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(pixels).save(directory / f"{image_id}{suffix}")
                written[image_id] = labels
    return written


def write_ade20k_tree(root: str | Path, *, seed: int = 6, n_train: int = 4, n_val: int = 2,
                      size: tuple[int, int] = (48, 80)) -> dict[str, np.ndarray]:
    """Write an ADE20K-shaped directory to `root`: `ADEChallengeData2016/images/{training,validation}/ADE_*.jpg`
    and `annotations/.../ADE_*.png` (single channel, 0 "other" and the classes 1..150), with `objectInfo150.txt`.
    Returns each image id's stored values."""
    root, rng = Path(root) / "ADEChallengeData2016", np.random.default_rng(seed)
    written = {}
    for folder, prefix, count in (("training", "ADE_train", n_train), ("validation", "ADE_val", n_val)):
        for directory in ("images", "annotations"):
            (root / directory / folder).mkdir(parents=True, exist_ok=True)
        for i in range(1, count + 1):
            image_id = f"{prefix}_{i:08d}"
            values = rng.integers(0, 151, size=(size[0] // 8, size[1] // 8)).astype(np.uint8)
            values = values.repeat(8, axis=0).repeat(8, axis=1)
            (root / "images" / folder / f"{image_id}.jpg").write_bytes(
                _encode_jpeg((rng.random((*size, 3)) * 255).astype(np.uint8)))
            Image.fromarray(values).save(root / "annotations" / folder / f"{image_id}.png")
            written[image_id] = values
    (root / "objectInfo150.txt").write_text("Idx\tRatio\tTrain\tVal\tName\n1\t0.1576\t11664\t1172\twall\n")
    return written


def write_sbd_tgz(path: str | Path, voc_tar: str | Path, *, seed: int = 1, n_train: int = 40, n_val: int = 20,
                  overlap: int = 4, min_size: int = 96, max_size: int = 160) -> str:
    """Write an SBD-layout `benchmark.tgz` that goes with the generated VOC tar `voc_tar`, atomically, and return its
    md5. Like the real one, it shares ids with VOC: SBD train lists `overlap` VOC train ids and `overlap` VOC val
    ids (which trainaug must leave out), SBD val another `overlap` VOC train ids, each with VOC's JPEG and its
    label without the void band (SBD has none); plus `n_train` and `n_val` new ids. Labels are `cls/<id>.mat`
    files holding the real structure (`GTcls.Segmentation`), written by scipy; `inst/` and an unlisted image are
    there too, for extraction to skip. The same arguments give a byte-identical archive.
    """
    if n_train < 0 or n_val < 0 or overlap < 0:
        raise PipelineError("synthetic SBD: n_train, n_val and overlap must be >= 0")
    voc = _read_voc_tar(voc_tar)
    if len(voc["train"]) < 2 * overlap or len(voc["val"]) < overlap:
        raise PipelineError(f"synthetic SBD: overlap {overlap} needs {2 * overlap} VOC train and {overlap} VOC val "
                            "ids")
    rng = np.random.default_rng(seed)
    new_ids = [f"{ID_PREFIX}_{500001 + k:06d}" for k in range(n_train + n_val + 1)]  # the last one is unlisted
    lists = {"train": voc["train"][:overlap] + voc["val"][:overlap] + new_ids[:n_train],
             "val": voc["train"][overlap:2 * overlap] + new_ids[n_train:n_train + n_val]}
    jpegs, labels = {}, {}
    for image_id in voc["train"][:2 * overlap] + voc["val"][:overlap]:
        jpegs[image_id] = voc["jpegs"][image_id]
        labels[image_id] = np.where(voc["labels"][image_id] == IGNORE_INDEX, 0, voc["labels"][image_id])
    for image_id, classes in zip(new_ids, _object_classes(rng, len(new_ids))):
        height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
        image, label = _sample(rng, height, width, classes)
        jpegs[image_id] = _encode_jpeg(image)
        labels[image_id] = np.where(label == IGNORE_INDEX, 0, label).astype(np.uint8)

    root = SBD_ROOT
    members: list[tuple[str, bytes | None]] = [(d, None) for d in (
        SBD_ROOT.split("/")[0], root, f"{root}/img", f"{root}/cls", f"{root}/inst")]
    members += [(f"{root}/{name}.txt", "".join(f"{i}\n" for i in ids).encode()) for name, ids in lists.items()]
    members += [(f"{root}/img/{i}.jpg", jpegs[i]) for i in sorted(jpegs)]
    members += [(f"{root}/cls/{i}.mat", _encode_mat(labels[i])) for i in sorted(labels)]
    members += [(f"{root}/inst/{i}.mat", _encode_mat(labels[i])) for i in sorted(labels)[:2]]
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as file, gzip.GzipFile(fileobj=file, mode="wb", mtime=MTIME, filename="") as packed:
            with tarfile.open(fileobj=packed, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for name, data in members:
                    _add(tar, name, data)
        return md5_of(tmp)


def _read_voc_tar(voc_tar: str | Path) -> dict:
    """The split lists, JPEG bytes and label arrays of a generated VOC tar."""
    found: dict = {"jpegs": {}, "labels": {}}
    with tarfile.open(voc_tar) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            name = PurePosixPath(member.name)
            data = tar.extractfile(member).read()
            if name.parent.name == "Segmentation" and name.stem in ("train", "val"):
                found[name.stem] = data.decode().split()
            elif name.parent.name == "JPEGImages":
                found["jpegs"][name.stem] = data
            elif name.parent.name == "SegmentationClass":
                with Image.open(io.BytesIO(data)) as label:
                    found["labels"][name.stem] = np.array(label)
    return found


def _encode_mat(label: np.ndarray) -> bytes:
    """`GTcls` as SBD stores it (Segmentation, Boundaries, CategoriesPresent), with the header's creation date
    fixed so that the bytes depend on the label alone."""
    import scipy.io

    buffer = io.BytesIO()
    present = np.unique(label[label > 0]).astype(np.uint8).reshape(-1, 1)
    boundaries = np.empty((NUM_CLASSES - 1, 1), dtype=object)
    for k in range(NUM_CLASSES - 1):
        boundaries[k, 0] = np.zeros((0, 0), dtype=np.uint8)
    scipy.io.savemat(buffer, {"GTcls": {"Segmentation": label.astype(np.uint8), "Boundaries": boundaries,
                                        "CategoriesPresent": present}})
    data = bytearray(buffer.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, generated by devtools.synthetic".ljust(116)
    return bytes(data)


def _object_classes(rng: np.random.Generator, n_images: int) -> list[list[int]]:
    """Classes of the objects in each image of a split: 1–3 objects each, classes dealt from shuffled decks of
    1..20, with object counts topped up (when the split is large enough) until the first deck is dealt in full,
    so that every class is present in the split."""
    counts = rng.integers(1, MAX_OBJECTS + 1, size=n_images)
    while counts.sum() < NUM_CLASSES - 1 and (counts < MAX_OBJECTS).any():
        counts[rng.choice(np.flatnonzero(counts < MAX_OBJECTS))] += 1
    decks = -(-int(counts.sum()) // (NUM_CLASSES - 1))
    dealt = np.concatenate([rng.permutation(np.arange(1, NUM_CLASSES)) for _ in range(decks)]).tolist()
    starts = np.concatenate([[0], np.cumsum(counts)])
    return [dealt[starts[k]:starts[k + 1]] for k in range(n_images)]


def _sample(rng: np.random.Generator, height: int, width: int, classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """One image (H×W×3 uint8) and its label (H×W uint8, 255 = void) with one object per entry of `classes`."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # A layout is redrawn until every object keeps a fifth of its area outside occluders and the void band: an
    # object that vanished would silently drop its class from a split that was promised to contain it.
    while True:
        objects = [_place(rng, height, width) for _ in classes]
        owner = np.zeros((height, width), dtype=np.uint8)  # 0 = background, k = k-th object
        areas = []
        for k, (cy, cx, a, b, theta) in enumerate(objects, start=1):
            mask = _shape_mask(class_look(classes[k - 1]).shape, yy - cy, xx - cx, a, b, theta)
            owner[mask] = k
            areas.append(int(mask.sum()))
        void = np.zeros((height, width), dtype=bool)
        inner = int(rng.integers(1, 3))  # band = 1 px outside + 1 or 2 px inside the outline
        for k in range(1, len(classes) + 1):
            visible = owner == k
            void |= _dilate(visible, 1) & ~_erode(visible, inner)
        if all(area > 0 and ((owner == k) & ~void).sum() >= 0.2 * area for k, area in enumerate(areas, start=1)):
            break

    image = _background(rng, height, width)
    label = np.zeros((height, width), dtype=np.uint8)
    for k, (class_id, (cy, cx, _, _, _)) in enumerate(zip(classes, objects), start=1):
        mask = owner == k
        look = class_look(class_id)
        hue = (look.hue + rng.uniform(-0.008, 0.008)) % 1.0
        colour = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0)), np.float32) * 255
        shade = 0.5 + 0.5 * _texture(rng, look, yy - cy, xx - cx)
        image[mask] = shade[mask, None] * colour
        label[mask] = class_id
    label[void] = IGNORE_INDEX
    image *= rng.uniform(0.85, 1.15)
    image += rng.normal(0.0, 4.0, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255).round().astype(np.uint8), label


def _place(rng: np.random.Generator, height: int, width: int) -> tuple[float, float, float, float, float]:
    """Centre (y, x), half-extents (a along the object's own x axis, b along its y) and rotation of one object.
    Centres may lie near the border, so objects are sometimes cut off, as in photographs."""
    side = min(height, width)
    a, b = rng.uniform(0.18, 0.35, size=2) * side
    cy = rng.uniform(0.15, 0.85) * height
    cx = rng.uniform(0.15, 0.85) * width
    return cy, cx, a, b, rng.uniform(0, math.pi)


def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, a: float, b: float, theta: float) -> np.ndarray:
    u = dx * math.cos(theta) + dy * math.sin(theta)
    v = -dx * math.sin(theta) + dy * math.cos(theta)
    if shape == "ellipse":
        return (u / a) ** 2 + (v / b) ** 2 <= 1
    if shape == "rectangle":
        return (np.abs(u) <= a) & (np.abs(v) <= b)
    if shape == "triangle":  # apex at v = -b, base of width 2a at v = +b
        return (np.abs(v) <= b) & (np.abs(u) <= a * (v + b) / (2 * b))
    if shape == "diamond":
        return np.abs(u) / a + np.abs(v) / b <= 1
    raise ValueError(shape)


def _texture(rng: np.random.Generator, look: Look, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """A 0..1 pattern over the whole image, in coordinates relative to the object's centre."""
    period = look.period * rng.uniform(0.85, 1.15)
    angle = look.angle + rng.uniform(-0.17, 0.17)
    phase = rng.uniform(0, 2 * math.pi)
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    if look.texture == "stripes":
        return 0.5 + 0.5 * np.sin(2 * math.pi * u / period + phase)
    if look.texture == "checker":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if look.texture == "dots":
        cu = (u / period) % 1 - 0.5
        cv = (v / period) % 1 - 0.5
        return (cu ** 2 + cv ** 2 > 0.09).astype(np.float32)
    if look.texture == "rings":
        return 0.5 + 0.5 * np.sin(2 * math.pi * np.hypot(dx, dy) / period + phase)
    if look.texture == "noise":
        block = max(1, round(period / 3))
        h, w = dy.shape
        cells = rng.random((h // block + 1, w // block + 1), dtype=np.float32)
        return np.repeat(np.repeat(cells, block, axis=0), block, axis=1)[:h, :w]
    raise ValueError(look.texture)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A dull (low-saturation) colour under smooth light/dark blotches: unlike any object, but not flat."""
    colour = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.2), rng.uniform(0.3, 0.8)), np.float32)
    grid = rng.uniform(0.7, 1.3, size=(int(rng.integers(2, 6)), int(rng.integers(2, 6)))).astype(np.float32)
    light = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BILINEAR))
    return light[:, :, None] * colour * 255


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation with a (2r+1)² square; outside the image counts as False."""
    h, w = mask.shape
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    # Outside the image counts as inside the object, so an object cut by the image edge gets no band there (VOC
    # draws the void band along object outlines, not along the frame).
    return ~_dilate(~mask, radius)


def _encode_jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _encode_png(label: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    label_png(label, VOC_LABELS).save(buffer, format="PNG")
    return buffer.getvalue()


def _annotation(image_id: str, height: int, width: int) -> bytes:
    return (f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename>"
            f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
            f"<segmented>1</segmented></annotation>\n").encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes | None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "", ""
    if data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    else:
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
