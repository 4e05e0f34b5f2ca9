"""The stages' MLflow runs: one per trained model, reopened by evaluate and render. An outage of the tracking store
(a refused or dropped connection, a time-out, an HTTP 5xx, a locked SQLite file) never fails a stage: it warns once,
tracking is off for the rest of the stage, and the stage goes on (the DVC outputs still hold the model and every
number). Anything else (a 4xx, a bug in the calls made here) fails the stage, so that a broken integration is never
mistaken for "tracking off". The other modules that import mlflow are the registry (`pipeline.tracking.registry`)
and the served model (`pipeline.serving`).

Default store: `mlflow.db` (SQLite) at the repository root, artefacts in `mlruns/`; `MLFLOW_TRACKING_URI`
points everything at a server instead. "The repository root" is DVC_ROOT when DVC runs the stage: a queued or
`--temp` experiment runs in a throwaway copy under .dvc/tmp/exps/, whose untracked files (a local store among them)
are deleted afterwards (iterative/dvc#8854), and DVC points DVC_ROOT at the checkout the experiment came from.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlruns"
MODEL_FILE = "model.pt"
MODEL_ARTIFACT = "model"  # the run's artefact folder holding the served model

# MLflow's own defaults retry a failing server for about 4 minutes per call (7 retries, exponential backoff) and
# wait 120 s for each answer, honouring any Retry-After: a server that answers its health check but fails or hangs
# would stall training for many minutes. Here a broken server costs a stage about 20 s (3 tries of 5 s, 1 s and 2 s
# apart) before tracking turns itself off for that stage; uploads may take longer, since a big model can take a
# while. A value set in the environment wins.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
    "MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT": "300",
}


# MLflow draws a progress bar for every artefact it copies (a model, a figure), interleaved with the stages' logs.
QUIET = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def configure_client() -> None:
    """HTTP_LIMITS and QUIET, where the environment does not already say otherwise."""
    for name, value in {**HTTP_LIMITS, **QUIET}.items():
        os.environ.setdefault(name, value)


def _store_root() -> Path:
    """Where the default store lives: the checkout DVC runs the stage for (DVC_ROOT, set by `dvc repro` and every
    `dvc exp run`), else the working directory."""
    return Path(os.environ.get("DVC_ROOT") or ".").resolve()


def _default_uri() -> str:
    return f"sqlite:///{_store_root() / DEFAULT_DB}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or _default_uri()


def _reachable(uri: str, timeout_s: float = 5.0) -> str | None:
    """None when an HTTP tracking server answers its health check, else why not (an outage). MLflow's own client
    would retry for minutes before giving up, so ask once, quickly. An answer that says the address is no tracking
    server (an HTTP 4xx) is a `PipelineError`: a wrong MLFLOW_TRACKING_URI is the user's to fix, not an outage."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return None
    except urllib.error.HTTPError as error:
        if error.code >= 500:
            return f"HTTP {error.code} {error.reason}"
        from pipeline.core.errors import PipelineError

        raise PipelineError(f"MLFLOW_TRACKING_URI {uri} answers /health with HTTP {error.code} {error.reason}: "
                            "not an MLflow tracking server; fix the URI or unset it to track locally") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:  # refused, DNS, time-out, reset
        return str(getattr(error, "reason", error))


def is_outage(error: BaseException, remote: bool) -> bool:
    """True for a failure of the tracking store itself, not of what was asked of it: a connection refused, reset or
    timed out (at any depth of the exception's chain: MLflow wraps requests' errors in its own), an HTTP 5xx from a
    `remote` (http, https) store, or a SQLite store locked by another process for longer than its time-out."""
    import requests  # MLflow's HTTP client, present wherever MLflow is
    import urllib3

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException,
                              requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError,
                              urllib3.exceptions.HTTPError)):
            return True
        status = getattr(error, "get_http_status_code", None)  # MlflowException: the server's answer, or ours
        if remote and status is not None and status() >= 500:
            return True
        if type(error).__name__ == "OperationalError" and "database is locked" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


# The experiment's tags: MLflow 3's UI opens an experiment by its kind, and without one guesses (a new, empty one
# opens on the GenAI tracing overview); a shared view state is a saved runs table that a link can open
# (`?viewStateShareKey=<key>`): here every run sorted by val mIoU, with the columns that tell models apart.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
RUNS_VIEW = "voc-runs-by-val-miou"
RUNS_COLUMNS = ["metrics.`val_miou`", "metrics.`val_pixel_accuracy`", "metrics.`best_val_miou`",
                "metrics.`val_images_per_second`", "params.`architecture`", "params.`train.epochs`",
                "params.`train.lr`", "tags.`git_commit`", "tags.`dvc_experiment`", "attributes.`Dataset`"]
RUNS_VIEW_STATE = {"orderByKey": "metrics.`val_miou`", "orderByAsc": False, "selectedColumns": RUNS_COLUMNS,
                   "columnOrder": RUNS_COLUMNS, "runsHiddenMode": "SHOW_ALL"}
EXPERIMENT_TAGS = {EXPERIMENT_KIND[0]: EXPERIMENT_KIND[1],
                   f"mlflow.sharedViewState.{RUNS_VIEW}": json.dumps(RUNS_VIEW_STATE, sort_keys=True)}


def ensure_experiment(mlflow, name: str, uri: str) -> str:
    """The id of experiment `name` in the store at `uri`, created if missing (in the default store with its
    artefacts beside it), with `EXPERIMENT_TAGS` set where they differ."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        artifacts = (_store_root() / DEFAULT_ARTIFACTS).as_uri() if uri == _default_uri() else None
        experiment = mlflow.get_experiment(mlflow.create_experiment(name, artifact_location=artifacts))
    for key, value in EXPERIMENT_TAGS.items():
        if experiment.tags.get(key) != value:
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def runs_view_url(ui: str, experiment_id: str) -> str:
    """The link that opens the experiment's runs in the saved view (`RUNS_VIEW_STATE`) on the UI at `ui`."""
    # workflowType: the UI's "Model training" navigation rather than its default, the GenAI one.
    return (f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={RUNS_VIEW}"
            "&workflowType=machine_learning")


def run_name(key: str, summary: str, provenance: dict[str, str]) -> str:
    """`fcn · fcn32s · a76e7b3` (`+` after the commit when tracked files had changes), or with the DVC experiment's
    name in place of the commit under `dvc exp run`: a list of runs tells them apart at a glance."""
    commit = provenance.get("git_commit", "unknown")
    source = provenance.get("dvc_experiment") or commit[:7] + ("+" if provenance.get("git_dirty") == "true" else "")
    return f"{key} · {summary} · {source}"


class Tracker:
    """One MLflow run, or a no-op after the first failure (with one warning saying what was not logged)."""

    def __init__(self, experiment: str, *, run_id: str | None = None, run_name: str | None = None) -> None:
        self.run_id: str | None = None
        self.active = False
        uri = tracking_uri()
        self.remote = uri.startswith(("http://", "https://"))
        configure_client()
        reason = _reachable(uri)
        if reason is not None:
            log.warning("MLflow tracking server %s unreachable (%s): this run is not tracked; the DVC outputs "
                        "still hold the model and metrics", uri, reason)
            return
        try:
            import mlflow
            from mlflow.exceptions import MlflowException

            mlflow.set_tracking_uri(uri)
            mlflow.set_experiment(experiment_id=ensure_experiment(mlflow, experiment, uri))
            run = None
            if run_id is not None:
                try:
                    run = mlflow.start_run(run_id=run_id)
                except MlflowException as error:
                    if is_outage(error, self.remote):
                        raise
                    log.warning("MLflow run %s is not in %s (%s): logging to a new run", run_id, uri, error)
            if run is None:
                run = mlflow.start_run(run_name=run_name)
            self.run_id = run.info.run_id
            self.active = True
        except Exception as error:
            self._disable("start the run", error)

    def _disable(self, what: str, error: Exception) -> None:
        """Tracking off for the rest of the stage after an outage; any other failure is the stage's."""
        if not is_outage(error, self.remote):
            from mlflow.exceptions import MlflowException

            from pipeline.core.errors import PipelineError

            if isinstance(error, MlflowException):  # the store refused what was asked: a permission, a bad value
                raise PipelineError(f"MLflow at {tracking_uri()}: could not {what}: {str(error).splitlines()[0]}; "
                                    "only an outage of the tracking store turns tracking off") from error
            raise error
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

    def log_dataset(self, name: str, digest: str, source: str) -> None:
        """What the run trained on, in MLflow's dataset tracking (the runs table's Dataset column): the dataset's
        name, the prepared data's content hash and where its files came from (a URL, or a local path)."""
        def log(mlflow) -> None:
            from mlflow.data.dataset_source_registry import resolve_dataset_source
            from mlflow.data.http_dataset_source import HTTPDatasetSource
            from mlflow.data.meta_dataset import MetaDataset

            if source.startswith(("http://", "https://")):
                origin = HTTPDatasetSource(source)
            else:
                with warnings.catch_warnings():  # "can be interpreted in multiple ways": all of them local files
                    warnings.simplefilter("ignore", UserWarning)
                    origin = resolve_dataset_source(source if "://" in source else Path(source).absolute().as_uri())
            mlflow.log_input(MetaDataset(origin, name=name, digest=digest[:36]), context="training")

        self._do("log the dataset", log)

    def log_image(self, image, artifact_file: str) -> None:
        self._do(f"log {artifact_file}", lambda mlflow: mlflow.log_image(image, artifact_file=artifact_file))

    def log_table(self, data: dict[str, list], artifact_file: str) -> None:
        self._do(f"log {artifact_file}", lambda mlflow: mlflow.log_table(data=data, artifact_file=artifact_file))

    def log_artifacts(self, directory: str | Path, artifact_path: str) -> None:
        self._do(f"log {directory}", lambda mlflow: mlflow.log_artifacts(str(directory), artifact_path=artifact_path))

    def log_model(self, model_file: str | Path, save: Callable[[Path, Path], Path]) -> None:
        """The trained model as the train stage wrote it (`pipeline.models.saved.save_model`: architecture, options
        and a state dict, read back with `weights_only=True`) under the run's `model/`, as the MLflow model
        directory that `save(model_file, directory)` writes (`pipeline.serving.package.save_served_model`: what
        `mlflow models serve` serves). Not an `mlflow.pytorch` pickle: loading one runs whatever code the
        artefact store holds."""
        def log(mlflow) -> None:
            with tempfile.TemporaryDirectory() as scratch:
                directory = save(Path(model_file), Path(scratch) / MODEL_ARTIFACT)
                mlflow.log_artifacts(str(directory), artifact_path=MODEL_ARTIFACT)

        self._do("log the model", log)

    def register_model(self, name: str, tags: dict[str, Any]) -> str | None:
        """Register this run's `model/` as a version of `name` with `tags`, and return the version; a run that
        already has a version of `name` gets its tags updated instead of a second version. None when the run
        logged no model (e.g. evaluated in another store than it was trained in) or tracking is off."""
        def register(mlflow) -> str | None:
            client = mlflow.MlflowClient()
            if not any(item.path == f"{MODEL_ARTIFACT}/MLmodel"
                       for item in client.list_artifacts(self.run_id, MODEL_ARTIFACT)):
                log.warning("MLflow run %s holds no served model under %s/: not registered as %s", self.run_id,
                            MODEL_ARTIFACT, name)
                return None
            values = {key: str(value) for key, value in tags.items()}
            existing = client.search_model_versions(f"name='{name}' and run_id='{self.run_id}'")
            if existing:
                version = min(existing, key=lambda v: int(v.version)).version
                for key, value in values.items():
                    client.set_model_version_tag(name, version, key, value)
                return str(version)
            return str(mlflow.register_model(f"runs:/{self.run_id}/{MODEL_ARTIFACT}", name, tags=values).version)

        return self._do(f"register the model as {name}", register)

    def close(self, status: str = "FINISHED") -> None:
        if self.active:
            self._do("end the run", lambda mlflow: mlflow.end_run(status=status))
            self.active = False


def provenance_tags(prepared_dir: str = "data/prepared") -> dict[str, str]:
    """Git commit and dirty flag, and the DVC hash of the prepared data: what a run can be reproduced from. Under
    `dvc exp run` also the experiment's name and the commit it branched from, which DVC passes in the environment:
    a sweep is one filter in MLflow (`tags.dvc_baseline_rev = '…'`), each run tagged with its `dvc exp show` name."""
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
    for tag, variable in (("dvc_experiment", "DVC_EXP_NAME"), ("dvc_baseline_rev", "DVC_EXP_BASELINE_REV")):
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
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


def download_logged_model(model_uri: str, destination: str | Path) -> Path:
    """The model file a train stage logged, e.g. under `runs:/<run id>/model`, copied into `destination`; load it
    with `pipeline.models.saved.load_model`, which never unpickles code."""
    import mlflow

    from pipeline.core.errors import PipelineError

    configure_client()
    mlflow.set_tracking_uri(tracking_uri())
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(destination)))
    except Exception as error:
        raise PipelineError(f"{model_uri}: could not fetch it from MLflow at {tracking_uri()} "
                            f"({str(error).splitlines()[0]})") from None
    # The served model keeps the file under artifacts/; runs logged before serving existed hold it at the top.
    candidates = [local / "artifacts" / MODEL_FILE, local / MODEL_FILE] if local.is_dir() else [local]
    model_file = next((path for path in candidates if path.is_file()), candidates[0])
    if not model_file.is_file():
        raise PipelineError(f"{model_uri}: holds no {MODEL_FILE}; give the URI of a run's model logged by this "
                            "pipeline, e.g. runs:/<run id>/model")
    return model_file
