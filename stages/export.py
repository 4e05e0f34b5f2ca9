"""DVC stage `export@<model>`: the trained network as ONNX (dynamic batch, height and width), checked against
PyTorch on generated images of several sizes; fails, writing nothing, when they disagree on more pixels than
`export.min_agreement` allows. The evaluate stage puts the file into the served model it logs and registers.

    python -m stages.export --model deeplab
"""

from __future__ import annotations

import argparse

from pipeline.core.atomic import write_json
from pipeline.core.cli import add_model_path_options, model_paths_from, run_stage
from pipeline.core.params.export import ExportParams
from pipeline.core.params.schema import ParamsFile
from pipeline.export.onnx_export import export_checked
from pipeline.models.saved import load_model

PATHS = ("model_file", "onnx_file", "export_report")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", required=True)
    parser.add_argument("--params", default="params.yaml")
    add_model_path_options(parser, *PATHS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = ParamsFile.read(args.params)
    key = params.model_key(args.model)
    paths = model_paths_from(args, key)
    report = export_checked(load_model(paths.model_file), paths.onnx_file, params.section("export", ExportParams))
    write_json(paths.export_report, report)
    print(f"{key}: {paths.onnx_file} ({report['bytes'] / 1e6:.1f} MB, opset {report['opset']}): ONNX Runtime agrees "
          f"with PyTorch on {report['agreement']:.4%} of the pixels, largest logit difference "
          f"{report['max_abs_logit_diff']:.2g}")


if __name__ == "__main__":
    run_stage(main)
