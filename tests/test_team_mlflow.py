"""A team's MLflow, for real: a tracking server started by `tools.server` (what `make server` runs), the train and
evaluate stages logging to it, the registry and `tools.promote`, and `mlflow models serve` answering requests with
the masks `tools.predict` writes. Every server is a real process on a free loopback port."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from PIL import Image

from pipeline.ingest.prepare import prepare
from pipeline.prepared.dataset import PreparedSplit

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = {
    "train": {"epochs": 2, "batch_size": 4, "optimizer": "adam", "lr": 0.003, "weight_decay": 0.0,
              "lr_schedule": "cosine", "warmup_epochs": 0, "crop_size": [48, 48], "scale_range": [0.75, 1.25],
              "workers": 0, "device": "cpu", "bn_momentum": 0.1, "val_every": 1},
    "models": {"unet": {"architecture": "unet", "options": {"width": 4}}},
    "tracking": {"experiment": "team"},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
            f"{os.environ['PATH']}", **extra}


def start(command: list[str], cwd: Path, env: dict[str, str], ready_url: str, log: Path) -> subprocess.Popen:
    """A server process in its own process group (MLflow starts uvicorn as a child), up once `ready_url` answers."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{command[:3]} exited {process.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(ready_url, timeout=2):
                return process
        except OSError:
            time.sleep(0.5)
    stop(process)
    raise AssertionError(f"{ready_url} never answered: {log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run(cwd: Path, *args: str, uri: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=environment(MLFLOW_TRACKING_URI=uri),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python -m tools.server` on a free port, its store in a temporary directory."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    process = start([sys.executable, "-m", "tools.server", "--port", str(port), "--dir", str(root / "store")],
                    cwd=REPO, env=environment(), ready_url=f"http://127.0.0.1:{port}/health", log=root / "server.log")
    yield f"http://127.0.0.1:{port}", root / "store"
    stop(process)


@pytest.fixture(scope="module")
def project(server, voc_tree, tmp_path_factory) -> Path:
    """A working directory with prepared data and a one-model params.yaml, trained and evaluated against the
    server."""
    uri, _ = server
    root = tmp_path_factory.mktemp("team")
    prepare(voc_tree, root / "data/prepared", workers=1, progress=False)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw.update(json.loads(json.dumps(TINY)))
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    run(root, "stages.train", "--model", "unet", "--no-progress", uri=uri)
    run(root, "stages.evaluate", "--model", "unet", uri=uri)
    return root


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_runs_metrics_and_artifacts_land_on_the_server_and_nothing_local(server, project, tmp_path):
    uri, store = server
    mlflow = client(uri)
    run_id = json.loads((project / "models/unet/mlflow_run.json").read_text())["run_id"]
    logged = mlflow.get_run(run_id)
    assert logged.data.params["train.lr"] == "0.003" and logged.data.tags["model"] == "unet"
    assert [m.step for m in mlflow.get_metric_history(run_id, "loss")] == [1, 2]
    evaluation = json.loads((project / "metrics/unet.json").read_text())
    assert logged.data.metrics["val_miou"] == pytest.approx(evaluation["miou"], abs=1e-6)  # the JSON keeps 6 digits

    model_dir = Path(mlflow.download_artifacts(run_id, "model", str(tmp_path)))
    assert (model_dir / "MLmodel").is_file()
    assert (model_dir / "artifacts/model.pt").read_bytes() == (project / "models/unet/model.pt").read_bytes()
    assert any(path.name == "model.pt" for path in (store / "artifacts").rglob("*"))  # stored by the server
    assert not (project / "mlflow.db").exists() and not (project / "mlruns").exists()


def test_evaluation_registers_one_version_per_run_and_promote_picks_the_best(server, project):
    uri, _ = server
    mlflow = client(uri)
    first_run = json.loads((project / "models/unet/mlflow_run.json").read_text())["run_id"]
    run(project, "stages.evaluate", "--model", "unet", uri=uri)  # evaluating again registers nothing new
    versions = mlflow.search_model_versions("name='voc-unet'")
    assert [(int(v.version), v.run_id) for v in versions] == [(1, first_run)]
    tags = versions[0].tags
    miou = json.loads((project / "metrics/unet.json").read_text())["miou"]
    assert float(tags["val_miou"]) == pytest.approx(miou, abs=1e-6)
    assert len(tags["git_commit"]) == 40 or tags["git_commit"] == "unknown"
    assert "data_dvc_md5" in tags

    moved = run(project, "tools.promote", "--model", "unet", uri=uri).stdout
    assert "voc-unet: champion moved from no version to version 1" in moved

    # A second training run (another seed) is a second version; promote points champion at the better one.
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train"]["seed"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    run(project, "stages.train", "--model", "unet", "--no-progress", uri=uri)
    run(project, "stages.evaluate", "--model", "unet", uri=uri)
    scores = {int(v.version): float(v.tags["val_miou"]) for v in mlflow.search_model_versions("name='voc-unet'")}
    assert sorted(scores) == [1, 2]
    best = max(scores, key=lambda number: (scores[number], number))
    promoted = run(project, "tools.promote", "--model", "unet", uri=uri).stdout
    assert int(mlflow.get_model_version_by_alias("voc-unet", "champion").version) == best
    assert (f"to version {best}" if best == 2 else "stays on version 1") in promoted
    assert "stays on" in run(project, "tools.promote", "--model", "unet", uri=uri).stdout


def post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_champion_served_over_http_answers_like_predict(server, project, tmp_path):
    uri, _ = server
    run(project, "tools.promote", "--model", "unet", uri=uri)
    val = PreparedSplit(project / "data/prepared", "val")
    photos = []
    for index, suffix in ((0, "jpg"), (1, "png")):  # two sizes, a JPEG and a PNG
        path = tmp_path / f"photo{index}.{suffix}"
        Image.fromarray(val[index][0].permute(1, 2, 0).numpy()).save(path)
        photos.append(path)
    run(project, "tools.predict", "--model-uri", "models:/voc-unet@champion", *map(str, photos),
        "--out", str(tmp_path / "predicted"), uri=uri)

    port = free_port()
    # Started outside the repository, so the code it runs is the copy stored with the model.
    serving = start([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", "models:/voc-unet@champion",
                     "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], cwd=tmp_path,
                    env={**environment(MLFLOW_TRACKING_URI=uri), "PYTHONPATH": ""},
                    ready_url=f"http://127.0.0.1:{port}/ping", log=tmp_path / "serve.log")
    try:
        invocations = f"http://127.0.0.1:{port}/invocations"
        rows = [[base64.b64encode(path.read_bytes()).decode()] for path in photos]
        status, answer = post(invocations, {"dataframe_split": {"columns": ["image"], "data": rows}})
        assert status == 200, answer
        for path, prediction in zip(photos, answer["predictions"]):
            mask = base64.b64decode(prediction["mask_png"])
            assert mask == (tmp_path / "predicted" / f"{path.stem}.png").read_bytes()
            with Image.open(io.BytesIO(mask)) as png, Image.open(path) as photo:
                assert png.mode == "P" and png.size == photo.size

        status, answer = post(invocations, {"dataframe_split": {"columns": ["image"], "data": [
            rows[0], [base64.b64encode(b"%PDF-1.4 not an image").decode()]]}})
        assert status == 400 and "row 1: not a readable image" in answer["message"]
        status, answer = post(invocations, {"dataframe_split": {"columns": ["image"], "data": [["***"]]}})
        assert status == 400 and "row 0: `image` is not base64" in answer["message"]

        status, answer = post(invocations, {"dataframe_split": {"columns": ["image"], "data": rows[:1]}})
        assert status == 200 and len(answer["predictions"]) == 1  # still serving after the bad requests
    finally:
        stop(serving)
