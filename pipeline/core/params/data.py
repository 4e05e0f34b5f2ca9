"""The data stages' sections: `data` (the dataset's source), `sbd` (SBD's archive, for trainaug), `dataset` (what
the data is) and `prepare`. The download, extract, sbd and prepare stages read these and no other, so an edit of
the training or model schema never makes them stale."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.core import layout
from pipeline.core.errors import PipelineError
from pipeline.core.params.schema import ParamsFile, check_name, limits, source_origin
from pipeline.core.presets import PRESETS
from pipeline.core.voc_classes import CLASSES as VOC_CLASSES

MAX_CLASSES = 255  # prepared data marks ignored pixels 255 (pipeline.core.labels.IGNORE_INDEX)
_MD5 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class DataParams:
    """Where an archive (the dataset's, in `data`; SBD's, in `sbd`) comes from and what it must be. Only `md5` and
    `size` say *what* is downloaded; `urls`, `timeout_s` and `retries` only say how, so no stage depends on them."""

    urls: list[str] = field(default_factory=list)
    md5: str | None = None
    size: int | None = field(default=None, metadata=limits(1))
    timeout_s: float = field(default=30.0, metadata=limits(0, low_open=True))
    retries: int = field(default=3, metadata=limits(0))

    def check_archive(self, section: str, otherwise: str) -> None:
        """An archive to download needs its md5 and at least one place to get it from."""
        if self.md5 is None:
            raise PipelineError(f"{section}.md5: missing (required)")
        if not _MD5.fullmatch(self.md5):
            raise PipelineError(f"{section}.md5: must be 32 lowercase hex digits, got {self.md5!r}")
        if not self.urls:
            raise PipelineError(f"{section}.urls: list at least one URL, file:// URL or local path of {otherwise}")


# Stage outputs a dataset directory must not live in: each is rewritten whole when its stage reruns.
_REWRITTEN = (layout.SOURCE, layout.PREPARED, layout.SOURCE_ARCHIVE.parent)


@dataclass(frozen=True)
class SourceParams(DataParams):
    """`data`: the dataset's source. By default the archive at `urls`, which download fetches and extract unpacks
    into `path` (data/source); a `path` naming another directory (yours, in the repository or absolute) is read by
    prepare as it is, as the stage's DVC dependency, and download and extract then leave placeholders."""

    path: str = layout.SOURCE.as_posix()

    def __post_init__(self) -> None:
        path = Path(self.path)
        if not self.path or path == Path("."):
            raise PipelineError("path: must name the dataset's directory (default data/source, the extracted "
                                "archive)")
        inside = next((out for out in _REWRITTEN if path != layout.SOURCE and not path.is_absolute()
                       and path.parts[:len(out.parts)] == out.parts), None)
        if inside is not None:
            raise PipelineError(f"path: {self.path} is inside {inside.as_posix()}, which a stage rewrites whole; "
                                "keep your dataset in its own directory (for instance data/<name>)")

    @property
    def from_directory(self) -> bool:
        """True when `path` is the user's own directory, not the archive's extraction."""
        return Path(self.path) != layout.SOURCE

    @property
    def origin(self) -> str:
        """Where the data came from, as a run's dataset source: the directory, or the archive's first URL."""
        return source_origin(self.path, self.urls)


@dataclass(frozen=True)
class PrepareParams:
    workers: int = field(default=0, metadata={**limits(0), "doc": "0 = one per core"})
    # trainaug: VOC train ∪ SBD train ∪ SBD val − VOC val (10,582 ids), the set every published VOC number trains
    # on; train: the dataset's own train split alone (VOC's 1,464, with no SBD download).
    train_set: Literal["trainaug", "train"] = "trainaug"
    # Splits a folders dataset listed with dataset.val_fraction: the same seed and ids give the same split.
    seed: int = field(default=0, metadata=limits(0))


def _check_color(value: list[int], key: str) -> tuple[int, int, int]:
    if len(value) != 3 or not all(0 <= channel <= 255 for channel in value):
        raise PipelineError(f"{key}: must be [red, green, blue] of integers 0..255, got {value}")
    return tuple(value)


@dataclass(frozen=True)
class DatasetParams:
    """What the data is: its name, layout, splits and classes (`dataset` in params.yaml); PASCAL VOC 2012 by
    default. See docs/own-data.md. The layout's own keys (splits, val_fraction, images, masks) are checked by the
    layout (`pipeline.ingest.layouts`), when the extract and prepare stages start."""

    # voc, cityscapes or ade20k: fills layout, classes, colors, ignore_index and the label mapping, and the name
    # unless it is given (pipeline/core/presets.py); null: the keys below as they are
    preset: Literal["voc", "cityscapes", "ade20k"] | None = None
    name: str = "voc"  # names the MLflow experiment (<name>-segmentation) and registered models (<name>-<key>)
    layout: str = "voc"  # a module of pipeline/ingest/layouts/, which checks the keys it reads (voc, folders)
    images: str = "images"  # folders: the directories of images and masks under the source root
    masks: str = "masks"
    splits: dict[str, str] | None = None  # folders: {train: <id list>, val: <id list>}, files under the root
    val_fraction: float | None = field(default=None, metadata=limits(0, 1, low_open=True, high_open=True))
    classes: list[str] = field(default_factory=lambda: list(VOC_CLASSES))
    colors: list[list[int]] | None = None  # RGB per class; null: VOC's palette for the first N indices
    ignore_index: int = field(default=255, metadata=limits(0, 255))  # the masks' value for ignored pixels
    ignore_color: list[int] | None = None  # colour masks: the RGB of ignored pixels
    # {mask value: class index} for masks that store other values than the class indices (Cityscapes' label
    # ids); every value not listed is ignored. Keys are mask values 0..255.
    label_map: dict[str, int] | None = None
    reduce_zero_label: bool = False  # ADE20K's convention: 0 is ignored, every other value v is class v - 1

    def __post_init__(self) -> None:
        if self.preset is not None:
            self._apply_preset()
        check_name(self.name, "name")
        if not 2 <= len(self.classes) <= MAX_CLASSES:
            raise PipelineError(f"classes: must list 2 to {MAX_CLASSES} class names, got {len(self.classes)}")
        repeated = sorted({name for name in self.classes if self.classes.count(name) > 1})
        if repeated:
            raise PipelineError(f"classes: {', '.join(repeated)} listed more than once; each class once, in index "
                                "order")
        if self.colors is not None:
            if len(self.colors) != len(self.classes):
                raise PipelineError(f"colors: {len(self.colors)} colours for {len(self.classes)} classes; give one "
                                    "[red, green, blue] per class, in the order of classes")
            colors = [_check_color(color, f"colors[{i}]") for i, color in enumerate(self.colors)]
            if len(set(colors)) != len(colors):
                raise PipelineError("colors: two classes share a colour; colour masks need one colour per class")
        if self.ignore_index < len(self.classes):
            raise PipelineError(f"ignore_index: {self.ignore_index} is the index of class "
                                f"{self.classes[self.ignore_index]!r}; use a value from {len(self.classes)} to 255")
        if self.label_map is not None:
            if self.reduce_zero_label:
                raise PipelineError("label_map, reduce_zero_label: give one (reduce_zero_label is the map v → v - 1 "
                                    "with 0 ignored)")
            for value, index in self.label_map.items():
                if not (value.isdigit() and int(value) <= 255):
                    raise PipelineError(f"label_map: key {value!r} is not a mask value 0..255")
                if not 0 <= index < len(self.classes):
                    raise PipelineError(f"label_map.{value}: {index} is not a class index 0..{len(self.classes) - 1}")
        if self.reduce_zero_label and len(self.classes) > 255:
            raise PipelineError("reduce_zero_label: mask values 1..255 hold at most 255 classes")
        if self.ignore_color is not None:
            color = _check_color(self.ignore_color, "ignore_color")
            if self.colors is not None and list(color) in self.colors:
                raise PipelineError(f"ignore_color: {list(color)} is also a class colour in colors")

    def _apply_preset(self) -> None:
        """Fill the keys the preset sets; a key given another value than the preset's is refused, since the
        preset's masks would not mean what it says. A key at its default counts as not given."""
        defaults = {f.name: (f.default if f.default_factory is dataclasses.MISSING else f.default_factory())
                    for f in dataclasses.fields(self)}
        for key, value in PRESETS[self.preset].items():
            given = getattr(self, key)
            if given == defaults[key] or given == value:
                object.__setattr__(self, key, value)
            elif key != "name":
                raise PipelineError(f"{key}: preset {self.preset} sets it; remove it, or set preset: null and give "
                                    "every key yourself")

    def value_map(self) -> dict[int, int] | None:
        """The mask value → class index map that `label_map` and `reduce_zero_label` say, or None when the masks
        store class indices."""
        if self.label_map is not None:
            return {int(value): index for value, index in self.label_map.items()}
        if self.reduce_zero_label:
            return {value: value - 1 for value in range(1, len(self.classes) + 1)}
        return None

    @property
    def is_voc(self) -> bool:
        """PASCAL VOC's classes in VOC's layout: what SBD's trainaug labels can be merged into."""
        return self.layout == "voc" and tuple(self.classes) == VOC_CLASSES


@dataclass(frozen=True)
class DataSections:
    """Everything the data stages read, checked together: the archive (or directory), SBD, what the data is, and
    how it is prepared."""

    data: SourceParams
    dataset: DatasetParams
    prepare: PrepareParams
    sbd: DataParams | None = None

    def __post_init__(self) -> None:
        if not self.data.from_directory:
            self.data.check_archive("data", "the dataset's archive, or set data.path to a directory that holds the "
                                            "dataset")
        if self.train_set == "trainaug":
            if not self.dataset.is_voc:
                raise PipelineError("prepare.train_set: trainaug adds SBD's VOC labels, so it needs VOC's classes in "
                                    "the voc layout; set prepare.train_set: train for another dataset")
            if self.sbd is None:
                raise PipelineError("sbd: needed by prepare.train_set: trainaug (urls, md5 and size of SBD's "
                                    "benchmark.tgz); add the section or set prepare.train_set: train")
            self.sbd.check_archive("sbd", "benchmark.tgz")


    @property
    def train_set(self) -> str:
        """The training set prepare builds: `prepare.train_set`, except that trainaug (VOC's with SBD, the default)
        means a benchmark preset's own train split, so that `preset` alone switches dataset."""
        if self.prepare.train_set == "trainaug" and self.dataset.preset not in (None, "voc"):
            return "train"
        return self.prepare.train_set


def data_sections(params: ParamsFile) -> DataSections:
    """The data stages' sections of `params`, checked together."""
    raw = params.raw
    if "data" not in raw:
        with params.naming_errors():
            raise PipelineError("data: missing (required): the dataset's archive (urls, md5, size) or its directory "
                                "(path)")
    sections = {"data": params.section("data", SourceParams), "dataset": params.section("dataset", DatasetParams),
                "prepare": params.section("prepare", PrepareParams)}
    if raw.get("sbd") is not None:
        sections["sbd"] = params.section("sbd", DataParams)
    with params.naming_errors():
        return DataSections(**sections)
