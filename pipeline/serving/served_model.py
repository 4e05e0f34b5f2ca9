"""What MLflow runs to load a served model (`mlflow models serve`, `mlflow.pyfunc.load_model`): a model directory
written by `pipeline.serving.package.save_served_model` holds this file and the package it imports, never a pickle."""

import dataclasses

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from pipeline.core.errors import PipelineError
from pipeline.core.params.inference import InferenceParams
from pipeline.core.params.serving import ServingParams
from pipeline.serving.package import INPUT_COLUMN, OUTPUT_COLUMN
from pipeline.serving.service import load_service_model, segment_encoded


class SegmentationService(mlflow.pyfunc.PythonModel):
    # MLflow wants type hints on `predict` to validate requests, and warns without them; the signature that
    # save_served_model writes already validates them. (The attribute MLflow reads to skip that check.)
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self.model, self.runtime, self.labels = load_service_model(context.artifacts["model"])
        config = context.model_config or {}  # served models logged before the limits had none: the defaults
        self.limits = {name: int(config[name]) if name in config else default
                       for name, default in dataclasses.asdict(ServingParams()).items()}
        # How the model runs over an image (whole or slide, TTA): params.yaml's `inference` when it was logged
        self.inference = InferenceParams(**config["inference"]) if "inference" in config else InferenceParams()

    def predict(self, context, model_input, params=None):
        import pandas as pd

        # MlflowException with INVALID_PARAMETER_VALUE: the scoring server answers 400 with the message, not a
        # 500 with a traceback, and goes on serving.
        if INPUT_COLUMN not in getattr(model_input, "columns", ()):
            raise MlflowException(f"send a column named `{INPUT_COLUMN}` holding base64 image files",
                                  error_code=INVALID_PARAMETER_VALUE)
        try:
            masks = segment_encoded(self.model, self.runtime, [str(v) for v in model_input[INPUT_COLUMN]],
                                    labels=self.labels, inference=self.inference, **self.limits)
        except PipelineError as error:
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from None
        return pd.DataFrame({OUTPUT_COLUMN: masks})


mlflow.models.set_model(SegmentationService())
