"""MLflow, and nothing else imports it. A tracking failure never fails a stage: it warns once and the stage
goes on (the DVC outputs still hold the model and every number).

Default store: `mlflow.db` (SQLite) at the repository root, artefacts in `mlruns/`; `MLFLOW_TRACKING_URI`
points everything at a server instead.
"""

from __future__ import annotations

import logging
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlruns"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_DB).resolve()}"


def _reachable(uri: str, timeout_s: float = 5.0) -> str | None:
    """None when an HTTP tracking server answers its health check, else why not. MLflow's own client would
    retry for minutes before giving up, so ask once, quickly."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return None
    except Exception as error:  # refused, DNS, timeout, HTTP error: all mean "not usable now"
        return str(getattr(error, "reason", error))


class Tracker:
    """One MLflow run, or a no-op after the first failure (with one warning saying what was not logged)."""

    def __init__(self, experiment: str, *, run_id: str | None = None, run_name: str | None = None) -> None:
        self.run_id: str | None = None
        self.active = False
        uri = tracking_uri()
        reason = _reachable(uri)
        if reason is not None:
            log.warning("MLflow tracking server %s unreachable (%s): this run is not tracked; the DVC outputs "
                        "still hold the model and metrics", uri, reason)
            return
        try:
            import mlflow

            mlflow.set_tracking_uri(uri)
            if mlflow.get_experiment_by_name(experiment) is None:
                artifacts = None if "MLFLOW_TRACKING_URI" in os.environ else Path(DEFAULT_ARTIFACTS).resolve().as_uri()
                mlflow.create_experiment(experiment, artifact_location=artifacts)
            mlflow.set_experiment(experiment)
            run = None
            if run_id is not None:
                try:
                    run = mlflow.start_run(run_id=run_id)
                except Exception as error:
                    log.warning("MLflow run %s is not in %s (%s): logging to a new run", run_id, uri, error)
            if run is None:
                run = mlflow.start_run(run_name=run_name)
            self.run_id = run.info.run_id
            self.active = True
        except Exception as error:
            self._disable("start the run", error)

    def _disable(self, what: str, error: Exception) -> None:
        log.warning("MLflow: could not %s (%s): tracking is off for the rest of this stage", what, error)
        self.active = False

    def _do(self, what: str, call):
        """`call(mlflow)`, unless tracking is off; MLflow is imported only then, so that a machine without it
        (or with tracking off) still runs every stage."""
        if not self.active:
            return None
        try:
            import mlflow

            return call(mlflow)
        except Exception as error:
            self._disable(what, error)
            return None

    def log_params(self, params: dict[str, Any]) -> None:
        self._do("log params", lambda mlflow: mlflow.log_params({k: str(v) for k, v in params.items()}))

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._do("set tags", lambda mlflow: mlflow.set_tags({k: str(v) for k, v in tags.items()}))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        finite = {k: float(v) for k, v in metrics.items() if v is not None and v == v}
        self._do("log metrics", lambda mlflow: mlflow.log_metrics(finite, step=step))

    def logged_steps(self, key: str) -> set[int]:
        """Steps already logged for `key`: a resumed run logs only the epochs that are missing."""
        history = self._do("read metric history",
                           lambda mlflow: mlflow.tracking.MlflowClient().get_metric_history(self.run_id, key))
        return {m.step for m in history or []}

    def log_image(self, image, artifact_file: str) -> None:
        self._do(f"log {artifact_file}", lambda mlflow: mlflow.log_image(image, artifact_file=artifact_file))

    def log_table(self, data: dict[str, list], artifact_file: str) -> None:
        self._do(f"log {artifact_file}", lambda mlflow: mlflow.log_table(data=data, artifact_file=artifact_file))

    def log_artifacts(self, directory: str | Path, artifact_path: str) -> None:
        self._do(f"log {directory}", lambda mlflow: mlflow.log_artifacts(str(directory), artifact_path=artifact_path))

    def log_model(self, model, *, num_classes: int) -> None:
        """The trained network via `mlflow.pytorch`, with a signature that admits any image size."""
        self._do("log the model", lambda mlflow: _log_pytorch_model(model, num_classes))

    def close(self, status: str = "FINISHED") -> None:
        if self.active:
            self._do("end the run", lambda mlflow: mlflow.end_run(status=status))
            self.active = False


def _log_pytorch_model(model, num_classes: int) -> None:
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes, -1, -1))]),
    )
    example = np.zeros((1, 3, 64, 64), dtype=np.float32)
    requirements = [f"torch=={torch.__version__.split('+')[0]}", "torchvision", "numpy"]
    # Pickle, not MLflow 3's torch.export default: an exported program fixes the input size of the example
    # and cannot be put in eval mode, and these networks take any image size.
    mlflow.pytorch.log_model(model.cpu().eval(), name="model", signature=signature, input_example=example,
                             pip_requirements=requirements, serialization_format="pickle")


def provenance_tags(prepared_dir: str = "data/prepared") -> dict[str, str]:
    """Git commit and dirty flag, and the DVC hash of the prepared data: what a run can be reproduced from."""
    import torch

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    tags = {
        "git_commit": git("rev-parse", "HEAD") or "unknown",
        "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no"))).lower(),
        "data_dvc_md5": _dvc_lock_md5(prepared_dir) or "unknown",
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "none",
    }
    return tags


def _dvc_lock_md5(out_path: str) -> str | None:
    try:
        lock = yaml.safe_load(Path("dvc.lock").read_text())
    except (OSError, yaml.YAMLError):
        return None
    for stage in (lock or {}).get("stages", {}).values():
        for out in stage.get("outs", []):
            if out.get("path") == out_path:
                return out.get("md5")
    return None


def resume_training_run(run_file: str | Path, experiment: str, run_name: str) -> Tracker:
    """Reopen the run the train stage wrote to `models/<name>/mlflow_run.json`, so evaluation and renders land
    beside the training curves; a new run (tagged with the old id) when that run is not in this store."""
    try:
        run_id = yaml.safe_load(Path(run_file).read_text()).get("run_id")
    except (OSError, yaml.YAMLError, AttributeError):
        run_id = None
    tracker = Tracker(experiment, run_id=run_id, run_name=run_name)
    if tracker.active and run_id and tracker.run_id != run_id:
        tracker.set_tags({"training_run_id": run_id})
    return tracker


def load_logged_model(model_uri: str):
    """A model logged by the train stage, e.g. `runs:/<run id>/model`, from the configured tracking store."""
    import mlflow
    import mlflow.pytorch

    from pipeline.errors import PipelineError

    mlflow.set_tracking_uri(tracking_uri())
    try:
        return mlflow.pytorch.load_model(model_uri, map_location="cpu")
    except Exception as error:
        raise PipelineError(f"{model_uri}: could not load it from MLflow at {tracking_uri()} "
                            f"({str(error).splitlines()[0]})") from None
