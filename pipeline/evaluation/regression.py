"""Did a metric move? The logic behind `tools/check_metrics.py`, used by users' CI and by ours."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

from pipeline.core.errors import PipelineError

METRIC = "miou"


def current_scores(models: list[str], metrics_dir: Path = Path("metrics")) -> dict[str, float]:
    scores = {}
    for name in models:
        path = metrics_dir / f"{name}.json"
        try:
            value = json.loads(path.read_text())[METRIC]
        except (OSError, ValueError, KeyError, TypeError):
            raise PipelineError(f"{path}: no {METRIC} in it; run `dvc repro evaluate@{name}` first") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PipelineError(f"{path}: {METRIC} must be a number, got {value!r}; run `dvc repro evaluate@{name}` "
                                "again or restore the file")
        scores[name] = float(value)
    return scores


def scores_at_revision(models: list[str], revision: str, dvc: str = "dvc") -> dict[str, float | None]:
    """mIoU per model at a git revision, as `dvc metrics diff` reads it (None where that revision has none)."""
    try:
        result = subprocess.run([dvc, "metrics", "diff", revision, "--json", "--all"], capture_output=True,
                                text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        last_line = detail.strip().splitlines()[-1] if detail.strip() else error
        raise PipelineError(f"`dvc metrics diff {revision}` failed: {last_line}") from None
    diff = json.loads(result.stdout or "{}")
    diff = diff.get("diff", diff)
    old = {}
    for name in models:
        entry = diff.get(f"metrics/{name}.json", {}).get(METRIC, {})
        old[name] = entry.get("old")
    return old


def regressions(current: dict[str, float], baseline: dict[str, float | None], tolerance: float,
                exact: bool = False) -> list[str]:
    """One line per model whose mIoU fell by more than `tolerance` (or changed at all, with `exact`)."""
    problems = []
    for name, new in current.items():
        old = baseline.get(name)
        if old is None:
            continue  # a new model, or none measured at the baseline: nothing to regress from
        drop = old - new
        if exact and new != old:
            problems.append(f"{name}: mIoU {new:.6f} differs from the baseline {old:.6f}")
        elif drop > tolerance:
            problems.append(f"{name}: mIoU fell from {old:.4f} to {new:.4f} (by {drop:.4f} > {tolerance})")
    return problems
