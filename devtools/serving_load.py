"""A bounded load test of a served model: `clients` threads share `requests` POSTs of one-row requests, each
answer compared with the mask it must be; latency percentiles and throughput of the whole run."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


@contextlib.contextmanager
def served(model_dir: Path, workdir: Path, timeout_s: float = 120.0) -> Iterator[str]:
    """`mlflow models serve` of `model_dir` on a free loopback port, in its own process group; yields its
    /invocations URL once /ping answers, and stops it (uvicorn included) afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", str(model_dir),
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    # MLflow starts uvicorn by name: the one beside this interpreter.
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = workdir / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow models serve did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/invocations"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def one_row(image_file: bytes) -> bytes:
    encoded = base64.b64encode(image_file).decode("ascii")
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": [[encoded]]}}).encode()


def post(url: str, body: bytes, timeout_s: float = 120.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def run(url: str, images: list[bytes], masks: list[bytes], *, clients: int = 8, requests: int = 200) -> dict:
    """POST image `i % len(images)` as request i from `clients` threads; every answer must be HTTP 200 with the
    palette PNG `masks[i % len(images)]`. Counts what came back wrong or not at all instead of raising."""
    bodies = [one_row(image) for image in images]

    def send(index: int) -> tuple[float, bool]:
        started = time.perf_counter()
        try:
            status, answer = post(url, bodies[index % len(bodies)])
            correct = status == 200 and base64.b64decode(
                json.loads(answer)["predictions"][0]["mask_png"]) == masks[index % len(masks)]
        except OSError:
            correct = False
        return time.perf_counter() - started, correct

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(send, range(requests)))
    seconds = time.perf_counter() - started
    latencies = sorted(latency for latency, _ in results)
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"clients": clients, "requests": requests, "correct": sum(ok for _, ok in results),
            "seconds": round(seconds, 3), "requests_per_second": round(requests / seconds, 2),
            "p50_ms": round(quantiles[49] * 1000, 1), "p95_ms": round(quantiles[94] * 1000, 1)}
