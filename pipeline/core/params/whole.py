"""Every section of params.yaml at once, checked together: for tools, developer commands and tests. No stage imports
this module; each reads only its own sections (see `pipeline.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.params.data import (
    DataParams,
    DataSections,
    DatasetParams,
    PrepareParams,
    SourceParams,
    data_sections,
)
from pipeline.core.params.evaluate import EvaluateParams
from pipeline.core.params.export import ExportParams
from pipeline.core.params.inference import InferenceParams
from pipeline.core.params.models import ModelParams, model_params
from pipeline.core.params.render import RenderParams
from pipeline.core.params.schema import ParamsFile
from pipeline.core.params.serving import ServingParams
from pipeline.core.params.tracking import TrackingParams, tracking_params
from pipeline.core.params.train import TrainParams, train_params


@dataclass(frozen=True)
class Params:
    data: SourceParams
    dataset: DatasetParams
    prepare: PrepareParams
    sbd: DataParams | None
    train: TrainParams
    models: dict[str, ModelParams]
    inference: InferenceParams
    evaluate: EvaluateParams
    export: ExportParams
    serving: ServingParams
    render: RenderParams
    tracking: TrackingParams
    file: ParamsFile

    def model_key(self, name: str) -> str:
        return self.file.model_key(name)

    def model(self, name: str) -> ModelParams:
        return self.models[self.model_key(name)]

    def train_for(self, name: str) -> TrainParams:
        """The shared `train` recipe with the model's own `train` overrides applied."""
        return train_params(self.file, self.model_key(name))


def load(path: str | Path = "params.yaml") -> Params:
    return _whole(ParamsFile.read(path))


def parse(raw: Any, source: str = "params.yaml") -> Params:
    return _whole(ParamsFile(raw, source))


def _whole(params: ParamsFile) -> Params:
    data = data_sections(params)
    models = dict(model_params(params, key) for key in params.model_keys())
    for key in models:
        train_params(params, key)  # every model's overrides checked now, not when its stage runs
    return Params(data=data.data, dataset=data.dataset, prepare=data.prepare, sbd=data.sbd,
                  train=params.section("train", TrainParams), models=models,
                  inference=params.section("inference", InferenceParams),
                  evaluate=params.section("evaluate", EvaluateParams), export=params.section("export", ExportParams),
                  serving=params.section("serving", ServingParams), render=params.section("render", RenderParams),
                  tracking=tracking_params(params), file=params)


__all__ = ["Params", "load", "parse", "DataSections"]
