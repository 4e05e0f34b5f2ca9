"""Fail when a model's val mIoU moved: the check CI runs after forcing the evaluation stages again.

    python -m tools.check_metrics --against origin/main     # vs the metrics committed on a branch (dvc metrics diff)
    python -m tools.check_metrics --baseline saved/metrics  # vs metrics/<model>.json files saved earlier
    ... [--tolerance 0.005] [--exact]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.core.cli import run_stage, venv_tool
from pipeline.core.errors import PipelineError
from pipeline.core.params.whole import load
from pipeline.evaluation.regression import current_scores, regressions, scores_at_revision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    baseline = parser.add_mutually_exclusive_group(required=True)
    baseline.add_argument("--against", metavar="REV", help="git revision whose committed metrics are the baseline")
    baseline.add_argument("--baseline", metavar="DIR", type=Path, help="directory holding baseline <model>.json files")
    parser.add_argument("--tolerance", type=float, help="allowed mIoU drop (default: evaluate.max_miou_drop)")
    parser.add_argument("--exact", action="store_true", help="any change at all fails (deterministic CPU reruns)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    params = load(args.params)
    models = list(params.models)
    tolerance = params.evaluate.max_miou_drop if args.tolerance is None else args.tolerance
    current = current_scores(models)
    if args.against:
        baseline_scores = scores_at_revision(models, args.against, venv_tool("dvc"))
    else:
        baseline_scores = current_scores(models, args.baseline)
    for name in models:
        old = baseline_scores.get(name)
        print(f"{name:10s} baseline {'-' if old is None else f'{old:.6f}'}  now {current[name]:.6f}")
    problems = regressions(current, baseline_scores, tolerance, exact=args.exact)
    if problems:
        raise PipelineError("val mIoU moved: " + "; ".join(problems))
    print("metrics check passed")


if __name__ == "__main__":
    run_stage(main)
