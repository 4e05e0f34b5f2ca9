"""`make server`: an MLflow tracking server for a team, on SQLite, with the artefacts it stores and serves.

    python -m tools.server [--host 127.0.0.1] [--port 5050] [--dir .mlflow-server]

Point the pipeline at it with `export MLFLOW_TRACKING_URI=http://<host>:<port>`. Clients upload artefacts through
the server (`--serve-artifacts`), so they need no access to its disk.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.core.cli import run_stage, venv_tool


def server_command(host: str, port: int, directory: Path) -> list[str]:
    directory = directory.resolve()
    return [venv_tool("mlflow"), "server", "--host", host, "--port", str(port),
            "--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}",
            "--artifacts-destination", str(directory / "artifacts"), "--serve-artifacts"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines (put it behind "
                        "authentication: see the README)")
    parser.add_argument("--port", type=int, default=5050)
    parser.add_argument("--dir", type=Path, default=Path(".mlflow-server"), help="the store: mlflow.db and artifacts/")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    command = server_command(args.host, args.port, args.dir)
    print(f"MLflow server on http://{args.host}:{args.port}, store in {args.dir}/: "
          f"export MLFLOW_TRACKING_URI=http://{args.host}:{args.port}", flush=True)
    # MLflow starts its web server as a command of its own (uvicorn): it must be found beside this interpreter.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    run_stage(main)
