"""The dataset layouts: how a dataset's source tree (or archive) holds its images, masks and splits. A layout is
one module of this package, named as `dataset.layout` says (`voc.py` is `layout: voc`), that registers its
functions with `@register_layout`: its own checks of the `dataset` section, the (id, image, mask) pairs of each
split, and how its archive is unpacked. The extract and prepare stages import the layout they read, by name, and
depend on its file alone (dvc.yaml's `${dataset.layout}`)."""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from pipeline.core.errors import PipelineError
from pipeline.core.params.data import DatasetParams


class Pair(NamedTuple):
    """One sample to prepare: its id, where it comes from (the dataset's name, or "voc" and "sbd" for trainaug),
    and its image and mask files."""

    image_id: str
    origin: str
    image: Path
    label: Path


@dataclass(frozen=True)
class Sources:
    """Where prepare reads a dataset from: its tree, and SBD's for VOC's trainaug."""

    root: Path
    train_set: str  # prepare.train_set: train, or trainaug (VOC with SBD)
    sbd_root: Path | None
    seed: int  # prepare.seed, for a split drawn by val_fraction


@dataclass(frozen=True)
class Layout:
    name: str
    # The layout's own checks of the `dataset` section (PipelineError messages name `dataset.<key>`).
    check: Callable[[DatasetParams], None]
    # The (id, image, mask) pairs of "train" and "val", every file listed checked to exist.
    pairs: Callable[[DatasetParams, Sources], dict[str, list[Pair]]]
    # Unpack the dataset's archive as the tree `pairs` reads, safely and whole or not at all; returns counts.
    extract: Callable[[Path, Path, DatasetParams, bool], dict]
    fix: str  # the advice that ends a message about a broken file of this layout
    origins: Callable[[DatasetParams, str], tuple[str, ...]]  # (dataset, train_set) → where pairs come from


_REGISTERED: dict[str, Layout] = {}


def register_layout(layout: Layout) -> Layout:
    _REGISTERED[layout.name] = layout
    return layout


def names() -> list[str]:
    """Every layout there is: the modules of this package, none of them imported."""
    return sorted(module.name for module in pkgutil.iter_modules(__path__))


def dataset_layout(dataset: DatasetParams) -> Layout:
    """The layout `dataset` names, its module imported now, with the dataset's keys checked by it."""
    name = dataset.layout
    if name not in _REGISTERED:
        if name not in names():
            raise PipelineError(f"dataset.layout: unknown layout {name!r}; must be one of {', '.join(names())}")
        importlib.import_module(f"{__name__}.{name}")
    spec = _REGISTERED[name]
    spec.check(dataset)
    return spec


def extract_source(archive: str | os.PathLike, out_dir: str | os.PathLike, dataset: DatasetParams, *,
                   progress: bool = True) -> dict:
    """Unpack the dataset's archive as `out_dir`, the tree prepare reads, as its layout says."""
    return dataset_layout(dataset).extract(Path(archive), Path(out_dir), dataset, progress)
