"""The `tracking` section: the MLflow experiment, by default named after the dataset (`dataset.name`)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core import layout
from pipeline.core.params.schema import ParamsFile, source_origin


@dataclass(frozen=True)
class TrackingParams:
    experiment: str | None = None  # null: <dataset.name>-segmentation (voc-segmentation for VOC)


def tracking_params(params: ParamsFile) -> TrackingParams:
    """The section, with the experiment named after `dataset.name` when it is null."""
    tracking = params.section("tracking", TrackingParams)
    if tracking.experiment is not None:
        return tracking
    return TrackingParams(f"{params.dataset_name()}-segmentation")


def dataset_source(params: ParamsFile) -> str:
    """Where the dataset's files came from, for a run's record (`data.path`, or the archive's first URL), read
    without the data stages' schema: they have checked the section before any run starts."""
    data = params.raw.get("data") or {}
    return source_origin(str(data.get("path", layout.SOURCE.as_posix())), list(data.get("urls") or []))
