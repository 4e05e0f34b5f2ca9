"""DVC stages `render@<model>` (panels of chosen and worst val images, the training curves and the confusion matrix)
and `compare` (every model side by side).

    python -m stages.render --model fcn
    python -m stages.render --compare
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.core import layout
from pipeline.core.cli import add_model_path_options, model_paths_from, run_stage
from pipeline.core.params.render import RenderParams
from pipeline.core.params.schema import ParamsFile
from pipeline.core.params.tracking import tracking_params
from pipeline.prepared.dataset import PreparedSplit
from pipeline.reporting.render import model_figures, render_comparison, render_model
from pipeline.tracking.runs import resume_training_run

PATHS = ("run_file", "predictions", "history", "confusion", "renders")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("-m", "--model")
    target.add_argument("--compare", action="store_true")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", type=Path, default=layout.PREPARED)
    add_model_path_options(parser, *PATHS)
    parser.add_argument("--predictions-root", type=Path, help="with --compare: holds <model>/ predictions of every "
                        f"model (default {layout.PREDICTIONS})")
    parser.add_argument("--comparison", type=Path,
                        help=f"with --compare: the image to write (default {layout.COMPARISON})")
    args = parser.parse_args(argv)
    if args.compare:
        args.predictions_root = args.predictions_root or layout.PREDICTIONS
        args.comparison = args.comparison or layout.COMPARISON
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = ParamsFile.read(args.params)
    render = params.section("render", RenderParams)
    val = PreparedSplit(args.prepared, "val")
    if args.compare:
        directories = {key: args.predictions_root / key for key in params.model_keys()}
        ids = render_comparison(val, directories, args.comparison, render.chosen(val.ids))
        print(f"{args.comparison}: {len(ids)} images × {len(directories)} models")
        return
    key = params.model_key(args.model)
    paths = model_paths_from(args, key)
    chosen = render_model(key, val, paths.predictions, paths.renders, render.chosen(val.ids), render.worst_k,
                          figures=model_figures(paths.history, paths.confusion))
    tracker = resume_training_run(paths.run_file, tracking_params(params).experiment, key)
    tracker.log_artifacts(paths.renders, "renders")
    tracker.close()
    print(f"{key}: {len(chosen)} panels in {paths.renders}/")


if __name__ == "__main__":
    run_stage(main)
