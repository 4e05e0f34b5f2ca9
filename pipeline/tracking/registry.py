"""The MLflow model registry: every evaluated model is a version of `<dataset>-<model key>` (registered by the evaluate
stage, tagged with its val mIoU, the git commit and the DVC hash of its data), and `promote` points the
`champion` alias at the best version, which is what `make serve` serves."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.errors import PipelineError
from pipeline.tracking.runs import configure_client, tracking_uri

CHAMPION = "champion"
SCORE_TAG = "val_miou"
PROVENANCE_TAGS = ("git_commit", "git_dirty", "data_dvc_md5")


def registered_name(key: str, dataset: str = "voc") -> str:
    """`voc-deeplab`: the dataset's name (`dataset.name`) and the model's key."""
    return f"{dataset}-{key}"


def version_tags(miou: float, provenance: dict[str, str]) -> dict[str, str]:
    """What a version records: how good it is and what it can be reproduced from."""
    return {SCORE_TAG: f"{miou:.6f}", **{key: provenance[key] for key in PROVENANCE_TAGS if key in provenance}}


@dataclass(frozen=True)
class Version:
    number: int
    miou: float


@dataclass(frozen=True)
class Promotion:
    name: str
    previous: Version | None
    champion: Version

    def __str__(self) -> str:
        now = f"version {self.champion.number} (val mIoU {self.champion.miou:.4f})"
        if self.previous == self.champion:
            return f"{self.name}: {CHAMPION} stays on {now}, the best by val mIoU"
        before = "no version" if self.previous is None else \
            f"version {self.previous.number} (val mIoU {self.previous.miou:.4f})"
        return f"{self.name}: {CHAMPION} moved from {before} to {now}"


def promote(key: str, dataset: str = "voc") -> Promotion:
    """Set `champion` on the version of `<dataset>-<key>` with the highest val mIoU (the newest among equals)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    configure_client()
    uri = tracking_uri()
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = registered_name(key, dataset)
    try:
        versions = {int(v.version): v for v in client.search_model_versions(f"name='{name}'")}
        try:
            previous = int(client.get_model_version_by_alias(name, CHAMPION).version)
        except MlflowException:
            previous = None  # no alias yet
    except MlflowException as error:
        raise PipelineError(f"{name}: could not read the registry at {uri} ({str(error).splitlines()[0]})") from None
    scored = {number: Version(number, float(v.tags[SCORE_TAG])) for number, v in versions.items()
              if SCORE_TAG in v.tags}
    if not scored:
        raise PipelineError(f"{name}: no evaluated version in the registry at {uri}; run "
                            f"`dvc repro evaluate@{key}` with this tracking URI first")
    best = max(scored.values(), key=lambda version: (version.miou, version.number))
    if previous != best.number:
        try:
            client.set_registered_model_alias(name, CHAMPION, str(best.number))
        except MlflowException as error:
            raise PipelineError(f"{name}: could not set {CHAMPION} ({str(error).splitlines()[0]})") from None
    before = None if previous is None else scored.get(previous, Version(previous, float("nan")))
    return Promotion(name, before, best)
