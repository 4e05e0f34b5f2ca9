"""`make ui`: the MLflow UI on the project's store, and the link that opens the project's runs compared by val mIoU.

    python -m tools.ui [--host 127.0.0.1] [--port 5000] [--params params.yaml]

With MLFLOW_TRACKING_URI set to a tracking server, the server already has a UI: only its link is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.core.cli import run_stage, venv_tool
from pipeline.core.params.whole import load
from pipeline.tracking.runs import configure_client, ensure_experiment, runs_view_url, tracking_uri


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    experiment = load(args.params).tracking.experiment
    uri = tracking_uri()
    configure_client()
    import mlflow

    mlflow.set_tracking_uri(uri)
    experiment_id = ensure_experiment(mlflow, experiment, uri)
    remote = uri.startswith(("http://", "https://"))
    link = runs_view_url(uri if remote else f"http://{args.host}:{args.port}", experiment_id)
    print(f"The runs of {experiment!r}, by val mIoU: {link}", flush=True)
    if remote:
        return
    command = [venv_tool("mlflow"), "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    run_stage(main)
