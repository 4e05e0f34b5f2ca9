"""params.yaml → one validated, typed `Params` object. Every check happens here, before any work starts.

A mistake (unknown key, wrong type, value out of range, unknown model) is a `PipelineError` naming the key
and what is allowed, e.g. ``params.yaml: train.lr: must be > 0, got -1``. Model options are typed per
architecture (`FCNOptions`, `UNetOptions`, `DeepLabOptions`) and checked here too; this module imports no model
code, so the data stages load params without torchvision.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.core import layout
from pipeline.core.errors import PipelineError
from pipeline.core.voc_classes import CLASSES as VOC_CLASSES


def _range(low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False):
    return {"low": low, "high": high, "low_open": low_open, "high_open": high_open}


@dataclass(frozen=True)
class DataParams:
    """Where an archive (VOC's, in `data`; SBD's, in `sbd`) comes from and what it must be. Only `md5` and `size`
    say *what* is downloaded; `urls`, `timeout_s` and `retries` only say how, so no stage depends on them."""

    urls: list[str] = field(default_factory=list)
    md5: str | None = None
    size: int | None = field(default=None, metadata=_range(1))
    timeout_s: float = field(default=30.0, metadata=_range(0, low_open=True))
    retries: int = field(default=3, metadata=_range(0))


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
        return self.path if self.from_directory else self.urls[0]


@dataclass(frozen=True)
class PrepareParams:
    workers: int = field(default=0, metadata={**_range(0), "doc": "0 = one per core"})
    # trainaug: VOC train ∪ SBD train ∪ SBD val − VOC val (10,582 ids), the set every published VOC number trains
    # on; train: VOC's 1,464 alone, with no SBD download.
    train_set: Literal["trainaug", "train"] = "train"
    # Splits a folders dataset listed with dataset.val_fraction: the same seed and ids give the same split.
    seed: int = field(default=0, metadata=_range(0))


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_CLASSES = 255  # prepared data marks ignored pixels 255 (pipeline.core.labels.IGNORE_INDEX)


def _check_color(value: list[int], key: str) -> tuple[int, int, int]:
    if len(value) != 3 or not all(0 <= channel <= 255 for channel in value):
        raise PipelineError(f"{key}: must be [red, green, blue] of integers 0..255, got {value}")
    return tuple(value)


@dataclass(frozen=True)
class DatasetParams:
    """What the data is: its name, layout, splits and classes (`dataset` in params.yaml); PASCAL VOC 2012 by
    default. See docs/own-data.md."""

    name: str = "voc"  # names the MLflow experiment (<name>-segmentation) and registered models (<name>-<key>)
    layout: Literal["voc", "folders"] = "voc"
    images: str = "images"  # folders: the directories of images and masks under the source root
    masks: str = "masks"
    splits: dict[str, str] | None = None  # folders: {train: <id list>, val: <id list>}, files under the root
    val_fraction: float | None = field(default=None, metadata=_range(0, 1, low_open=True, high_open=True))
    classes: list[str] = field(default_factory=lambda: list(VOC_CLASSES))
    colors: list[list[int]] | None = None  # RGB per class; null: VOC's palette for the first N indices
    ignore_index: int = field(default=255, metadata=_range(0, 255))  # the masks' value for ignored pixels
    ignore_color: list[int] | None = None  # colour masks: the RGB of ignored pixels

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise PipelineError(f"name: must be letters, digits, '_', '.' or '-' (it names the MLflow experiment "
                                f"and registered models), got {self.name!r}")
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
        if self.ignore_color is not None:
            color = _check_color(self.ignore_color, "ignore_color")
            if self.colors is not None and list(color) in self.colors:
                raise PipelineError(f"ignore_color: {list(color)} is also a class colour in colors")
        if self.layout == "voc":
            if self.splits is not None or self.val_fraction is not None:
                raise PipelineError("splits, val_fraction: the voc layout reads its splits from "
                                    "ImageSets/Segmentation/{train,val}.txt; remove them or use layout: folders")
        elif (self.splits is None) == (self.val_fraction is None):
            raise PipelineError("splits, val_fraction: the folders layout needs exactly one: splits: {train: <file>, "
                                "val: <file>} (id lists) or val_fraction: <0..1> (a seeded split by id)")
        elif self.splits is not None and sorted(self.splits) != ["train", "val"]:
            raise PipelineError(f"splits: must name the files of train and val, got {', '.join(self.splits)}")

    @property
    def is_voc(self) -> bool:
        """PASCAL VOC's classes in VOC's layout: what SBD's trainaug labels can be merged into."""
        return self.layout == "voc" and tuple(self.classes) == VOC_CLASSES


@dataclass(frozen=True)
class TrainParams:
    """Shared training defaults (the `train` section); each model may override any of them."""

    epochs: int = field(default=30, metadata=_range(1))
    batch_size: int = field(default=8, metadata=_range(1))
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = field(default=0.01, metadata=_range(0, low_open=True))
    momentum: float = field(default=0.9, metadata=_range(0, 1, high_open=True))
    weight_decay: float = field(default=1e-4, metadata=_range(0))
    lr_schedule: Literal["poly", "cosine", "constant"] = "poly"
    poly_power: float = field(default=0.9, metadata=_range(0, low_open=True))
    warmup_epochs: int = field(default=0, metadata=_range(0))
    crop_size: list[int] = field(default_factory=lambda: [480, 480])
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    hflip: bool = True
    aux_weight: float = field(default=0.5, metadata=_range(0))
    bn_momentum: float | None = field(default=None, metadata=_range(0, 1, low_open=True))
    workers: int = field(default=4, metadata=_range(0))
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    seed: int = field(default=0, metadata=_range(0))
    val_every: int = field(default=1, metadata=_range(1))

    def __post_init__(self) -> None:
        # Messages name the field only: `_build` prefixes the section (`train.` or `models.<name>.train.`).
        if len(self.crop_size) != 2 or min(self.crop_size) < 1:
            raise PipelineError(f"crop_size: must be [height, width] of positive ints, got {self.crop_size}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise PipelineError(f"scale_range: must be [low, high] with 0 < low <= high, got {self.scale_range}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise PipelineError(f"device: must be one of auto, cpu, cuda, cuda:N, got {self.device!r}")


def _check_weights_source(pretrained: str, weights_sha256: str | None) -> None:
    """`pretrained`: imagenet | none | a local file, which must come with its sha256 (checked when it is loaded)."""
    if pretrained in ("imagenet", "none"):
        if weights_sha256 is not None:
            raise PipelineError(f"weights_sha256: only used with a local weights file, not with pretrained: "
                                f"{pretrained}; remove it")
    elif weights_sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", weights_sha256):
        raise PipelineError(f"weights_sha256: must be 64 hexadecimal digits, got {weights_sha256!r}")


@dataclass(frozen=True)
class FCNOptions:
    """`models.<name>.options` of an FCN: fcn32s (d2l's ResNet-18) or fcn8s (ResNet-34 with the paper's skips)."""

    variant: Literal["fcn32s", "fcn8s"] = "fcn32s"
    pretrained: str = field(default="none", metadata={"doc": "imagenet, none or the path of a weights file"})
    weights_sha256: str | None = None

    def __post_init__(self) -> None:
        _check_weights_source(self.pretrained, self.weights_sha256)

    @property
    def summary(self) -> str:
        """What tells this network apart from other FCNs, for run names: `fcn32s`."""
        return self.variant


@dataclass(frozen=True)
class UNetOptions:
    """`models.<name>.options` of a U-Net: base width (64 in the paper) and how the decoder upsamples."""

    width: int = field(default=64, metadata=_range(1))
    upsampling: Literal["bilinear", "transpose"] = "bilinear"
    pretrained: str = "none"

    def __post_init__(self) -> None:
        if self.pretrained != "none":
            raise PipelineError(f"pretrained: must be none (U-Net has no pretrained backbone; it is trained from "
                                f"scratch), got {self.pretrained!r}")

    @property
    def summary(self) -> str:
        """For run names: `width64-bilinear`."""
        return f"width{self.width}-{self.upsampling}"


@dataclass(frozen=True)
class DeepLabOptions:
    """`models.<name>.options` of a DeepLabV3. `aux_loss` defaults to on, except for resnet18, which has no head:
    torchvision's segmentation reference trains its three DeepLabV3 models with the auxiliary loss.
    `output_stride` is resnet18's alone (8 unless set); torchvision builds the others at a fixed stride."""

    backbone: Literal["resnet50", "resnet101", "mobilenet_v3_large", "resnet18"] = "resnet50"
    aux_loss: bool | None = None
    output_stride: Literal[8, 16] | None = field(default=None, metadata={"doc": "resnet18 only: 8 or 16"})
    pretrained: str = field(default="none", metadata={"doc": "imagenet, none or the path of a weights file"})
    weights_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.aux_loss is None:
            object.__setattr__(self, "aux_loss", self.backbone != "resnet18")
        if self.output_stride is not None and self.backbone != "resnet18":
            raise PipelineError(f"output_stride: only the resnet18 backbone takes it (torchvision builds "
                                f"{self.backbone} at a fixed stride); remove it")
        if self.backbone == "resnet18" and self.output_stride is None:
            object.__setattr__(self, "output_stride", 8)
        if self.aux_loss and self.backbone == "resnet18":
            raise PipelineError("aux_loss: backbone resnet18 has no auxiliary head; set aux_loss: false or remove it")
        _check_weights_source(self.pretrained, self.weights_sha256)

    @property
    def summary(self) -> str:
        """For run names: `resnet50`, `resnet18-os16`."""
        return self.backbone + (f"-os{self.output_stride}" if self.output_stride else "")


@dataclass(frozen=True)
class DeepLabV3PlusOptions:
    """`models.<name>.options` of a DeepLabV3+: a dilated ResNet, ASPP and the stride-4 decoder. `aux_loss` (an
    FCN head on layer3, weight 0.4) defaults to on for resnet50 and resnet101, as in mmsegmentation's recipe."""

    backbone: Literal["resnet50", "resnet101", "resnet18"] = "resnet50"
    output_stride: Literal[8, 16] = 16
    aux_loss: bool | None = None
    pretrained: str = field(default="none", metadata={"doc": "imagenet, none or the path of a weights file"})
    weights_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.aux_loss is None:
            object.__setattr__(self, "aux_loss", self.backbone != "resnet18")
        _check_weights_source(self.pretrained, self.weights_sha256)

    @property
    def summary(self) -> str:
        """For run names: `resnet50-os16`."""
        return f"{self.backbone}-os{self.output_stride}"


ModelOptions = FCNOptions | UNetOptions | DeepLabOptions | DeepLabV3PlusOptions
OPTIONS_BY_ARCHITECTURE: dict[str, type] = {"fcn": FCNOptions, "unet": UNetOptions, "deeplab": DeepLabOptions,
                                            "deeplabv3plus": DeepLabV3PlusOptions}


def model_options(architecture: str, raw: Any, where: str = "options") -> ModelOptions:
    """The typed options of `architecture` (case-insensitive: the tutorial's FCN, Unet, Deeplab) from a mapping;
    `where` prefixes messages, e.g. ``options.variant: must be one of fcn32s, fcn8s, got 'x'``."""
    cls = OPTIONS_BY_ARCHITECTURE.get(architecture.lower() if isinstance(architecture, str) else architecture)
    if cls is None:
        raise PipelineError(f"unknown model {architecture!r}: must be one of {', '.join(OPTIONS_BY_ARCHITECTURE)}")
    return _build(cls, raw, where)


@dataclass(frozen=True)
class ModelParams:
    """One entry of `models`: which architecture, its typed constructor options, and its training overrides."""

    architecture: Literal["fcn", "unet", "deeplab", "deeplabv3plus"]
    options: ModelOptions | dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.options, dict):
            object.__setattr__(self, "options", model_options(self.architecture, self.options))


@dataclass(frozen=True)
class EvaluateParams:
    flip: bool = False
    scales: list[float] = field(default_factory=lambda: [1.0])
    max_miou_drop: float = field(default=0.005, metadata=_range(0))
    # >1: same-size images predicted together; faster on a GPU, not always the same pixels (evaluation/evaluate.py)
    batch_size: int = field(default=1, metadata=_range(1))

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) <= 0:
            raise PipelineError(f"scales: must be a non-empty list of positive numbers, got {self.scales}")


@dataclass(frozen=True)
class RenderParams:
    ids: list[str] = field(default_factory=list)
    worst_k: int = field(default=4, metadata=_range(0))


@dataclass(frozen=True)
class ExportParams:
    opset: int = field(default=20, metadata=_range(18))
    # [height, width] of the generated images each ONNX file is checked on against PyTorch
    check_sizes: list[list[int]] = field(
        default_factory=lambda: [[375, 500], [500, 333], [281, 500], [333, 427], [72, 88]])
    min_agreement: float = field(default=0.999, metadata=_range(0, 1))

    def __post_init__(self) -> None:
        if not self.check_sizes or any(len(size) != 2 or min(size) < 16 for size in self.check_sizes):
            raise PipelineError(f"export.check_sizes: must be a non-empty list of [height, width] pairs of at "
                                f"least 16 pixels, got {self.check_sizes}")


@dataclass(frozen=True)
class ServingParams:
    """Limits of the served model (carried in it) and of `tools.predict`."""

    # Above it a JPEG is predicted on a downscaled copy (mask scaled back), any other image refused.
    max_pixels: int = field(default=4_000_000, metadata=_range(1))
    max_rows: int = field(default=16, metadata=_range(1))  # images per request


@dataclass(frozen=True)
class TrackingParams:
    experiment: str | None = None  # null: <dataset.name>-segmentation (voc-segmentation for VOC)


@dataclass(frozen=True)
class Params:
    data: SourceParams
    models: dict[str, ModelParams]
    dataset: DatasetParams = field(default_factory=DatasetParams)
    sbd: DataParams | None = None
    prepare: PrepareParams = field(default_factory=PrepareParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    render: RenderParams = field(default_factory=RenderParams)
    export: ExportParams = field(default_factory=ExportParams)
    serving: ServingParams = field(default_factory=ServingParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)

    def __post_init__(self) -> None:
        if not self.models:
            raise PipelineError("models: at least one model must be listed (e.g. fcn, unet, deeplab, deeplabv3plus)")
        if not self.data.from_directory:
            if self.data.md5 is None:
                raise PipelineError("data.md5: missing (required)")
            if not re.fullmatch(r"[0-9a-f]{32}", self.data.md5):
                raise PipelineError(f"data.md5: must be 32 lowercase hex digits, got {self.data.md5!r}")
            if not self.data.urls:
                raise PipelineError("data.urls: list at least one URL, file:// URL or local path of the dataset's "
                                    "archive, or set data.path to a directory that holds the dataset")
        if self.tracking.experiment is None:
            object.__setattr__(self, "tracking", TrackingParams(f"{self.dataset.name}-segmentation"))
        if self.prepare.train_set == "trainaug":
            if not self.dataset.is_voc:
                raise PipelineError("prepare.train_set: trainaug adds SBD's VOC labels, so it needs VOC's classes in "
                                    "the voc layout; set prepare.train_set: train for another dataset")
            if self.sbd is None:
                raise PipelineError("sbd: needed by prepare.train_set: trainaug (urls, md5 and size of SBD's "
                                    "benchmark.tgz); add the section or set prepare.train_set: train")
            if not re.fullmatch(r"[0-9a-f]{32}", self.sbd.md5 or ""):
                raise PipelineError(f"sbd.md5: must be 32 lowercase hex digits, got {self.sbd.md5!r}")
            if not self.sbd.urls:
                raise PipelineError("sbd.urls: list at least one URL, file:// URL or local path of benchmark.tgz")
        for name in self.models:
            self.train_for(name)  # check every model's overrides now, not when its stage runs

    def model_key(self, name: str) -> str:
        """The `models` key for `name`, matched case-insensitively so that the tutorial's `-m FCN` works."""
        for key in self.models:
            if key.lower() == name.lower():
                return key
        raise PipelineError(f"unknown model {name!r}: params.yaml lists {', '.join(self.models)}")

    def model(self, name: str) -> ModelParams:
        return self.models[self.model_key(name)]

    def train_for(self, name: str) -> TrainParams:
        """The shared `train` defaults with the model's own `train` overrides applied."""
        overrides = self.model(name).train
        merged = {**dataclasses.asdict(self.train), **overrides}
        return _build(TrainParams, merged, f"models.{self.model_key(name)}.train")


def load(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found; run from the repository root or pass --params") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise PipelineError(f"{where}: not valid YAML: {problem}") from None
    return parse(raw, source=str(path))


def parse(raw: Any, source: str = "params.yaml") -> Params:
    try:
        return _build(Params, raw, "")
    except PipelineError as error:
        raise PipelineError(f"{source}: {error}") from None


def as_flat_dict(obj: Any, prefix: str = "") -> dict[str, Any]:
    """`{"train.lr": 0.01, ...}`: the form MLflow logs params in."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(as_flat_dict(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# --- the small validator behind `parse` -----------------------------------------------------------------

def _build(cls: type, raw: Any, where: str) -> Any:
    label = where or "top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PipelineError(f"{label}: must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise PipelineError(f"{key}: unknown key; allowed keys here: {', '.join(fields)}")
    values = {}
    for name, spec in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in raw:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise PipelineError(f"{key}: missing (required)")
            continue
        values[name] = _check(hints[name], raw[name], key, spec.metadata)
    try:
        return cls(**values)
    except PipelineError as error:
        raise PipelineError(f"{where}.{error}" if where else str(error)) from None


def _check(hint: Any, value: Any, key: str, meta: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) > 1:  # `ModelParams.options`: read as a mapping here, typed by its `__post_init__`
            inner = [a for a in inner if typing.get_origin(a) is dict]
        return _check(inner[0], value, key, meta)
    if origin is Literal:
        if value not in args:
            raise PipelineError(f"{key}: must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise PipelineError(f"{key}: must be a list, got {value!r}")
        return [_check(args[0], item, f"{key}[{i}]", {}) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise PipelineError(f"{key}: must be a mapping, got {value!r}")
        if args[1] is Any:
            return dict(value)
        return {str(k): _check(args[1], v, f"{key}.{k}", {}) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise PipelineError(f"{key}: must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        ok = isinstance(value, int) if hint is int else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or not math.isfinite(value):
            raise PipelineError(f"{key}: must be {'an integer' if hint is int else 'a finite number'}, got {value!r}")
        _check_range(value, key, meta)
        return hint(value)
    if hint is str:
        if not isinstance(value, str) or not value:
            raise PipelineError(f"{key}: must be a non-empty string, got {value!r}")
        return value
    raise TypeError(f"params schema: unsupported type {hint} at {key}")


def _check_range(value: float, key: str, meta: Any) -> None:
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value <= low if meta.get("low_open") else value < low):
        raise PipelineError(f"{key}: must be {'>' if meta.get('low_open') else '>='} {low}, got {value}")
    if high is not None and (value >= high if meta.get("high_open") else value > high):
        raise PipelineError(f"{key}: must be {'<' if meta.get('high_open') else '<='} {high}, got {value}")
