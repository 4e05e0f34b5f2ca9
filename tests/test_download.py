"""pipeline.ingest.download.fetch against a loopback HTTP server whose misbehaviour each test picks by URL path."""

from __future__ import annotations

import hashlib
import http.server
import io
import logging
import random
import socket
import sys
import threading

import pytest

from pipeline.core.errors import PipelineError
from pipeline.ingest import download
from pipeline.ingest.download import fetch

DATA = random.Random(0).randbytes(3 * 1024 * 1024 + 123)  # not a multiple of the chunk size
MD5 = hashlib.md5(DATA).hexdigest()
OTHER = bytes(reversed(DATA))  # same size, different md5


class Handler(http.server.BaseHTTPRequestHandler):
    """`/ok` honours Range; `/drop` cuts its first response in half, `/stall` stops sending halfway through
    it; `/norange` always sends 200 and all of DATA; `/wrong` serves OTHER; `/short` is an HTML error page
    with status 200; `/slow` never answers; `/404` and `/500` are those errors."""

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        kind = self.path.strip("/")
        if kind in ("404", "500"):
            self.send_error(int(kind))
        elif kind == "slow":
            server.stop.wait(10)
        elif kind == "short":
            self._send(200, b"<html>mirror moved</html>")
        elif kind == "norange":
            self._send(200, DATA)
        elif kind in ("drop", "stall") and sum(path == self.path for path, _ in server.requests) == 1:
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATA)))
            self.end_headers()
            self.wfile.write(DATA[: len(DATA) // 2])
            if kind == "stall":
                server.stop.wait(10)
            self.close_connection = True
        else:
            self._send_range(OTHER if kind == "wrong" else DATA)

    def _send_range(self, body):
        header = self.headers.get("Range")
        if not header:
            return self._send(200, body)
        first = int(header.removeprefix("bytes=").rstrip("-"))
        if first >= len(body):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(206, body[first:], {"Content-Range": f"bytes {first}-{len(body) - 1}/{len(body)}"})

    def _send(self, status, body, headers=()):
        self.send_response(status)
        for key, value in dict(headers).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # clients that time out leave broken pipes behind: expected here


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(download, "BACKOFF_S", 0.0)
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.requests, httpd.stop = [], threading.Event()
    httpd.url = lambda path: f"http://127.0.0.1:{httpd.server_address[1]}/{path}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.stop.set()
    httpd.shutdown()
    httpd.server_close()


def get(urls, dest, **kwargs):
    kwargs = {"md5": MD5, "size": len(DATA), "timeout_s": 5, "retries": 2, "progress": False, **kwargs}
    return fetch(urls, dest, **kwargs)


def part_of(dest):
    return dest.with_name(dest.name + ".part")


def test_full_transfer(server, tmp_path):
    dest = tmp_path / "raw" / "voc.tar"
    assert get([server.url("ok")], dest) == dest
    assert dest.read_bytes() == DATA
    assert not part_of(dest).exists()
    assert server.requests == [("/ok", None)]


@pytest.mark.parametrize("kind", ["drop", "stall"])
def test_interrupted_transfer_resumes_with_range(server, tmp_path, kind):
    dest = tmp_path / "voc.tar"
    get([server.url(kind)], dest, timeout_s=0.5)
    assert dest.read_bytes() == DATA
    assert server.requests == [(f"/{kind}", None), (f"/{kind}", f"bytes={len(DATA) // 2}-")]


def test_partial_file_from_an_interrupted_run_is_resumed(server, tmp_path):
    dest = tmp_path / "voc.tar"
    part_of(dest).write_bytes(DATA[:1_000_000])
    get([server.url("ok")], dest)
    assert dest.read_bytes() == DATA
    assert server.requests == [("/ok", "bytes=1000000-")]


def test_ctrl_c_keeps_the_part_file_for_the_next_run(server, tmp_path, monkeypatch):
    dest = tmp_path / "voc.tar"

    def interrupt(self, n):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(download.Progress, "update", interrupt)
        with pytest.raises(KeyboardInterrupt):
            get([server.url("ok")], dest)
    kept = part_of(dest).stat().st_size
    assert 0 < kept < len(DATA)
    get([server.url("ok")], dest)
    assert dest.read_bytes() == DATA
    assert server.requests == [("/ok", None), ("/ok", f"bytes={kept}-")]


def test_complete_part_file_gets_416_and_is_used(server, tmp_path):
    dest = tmp_path / "voc.tar"
    part_of(dest).write_bytes(DATA)
    get([server.url("ok")], dest)
    assert dest.read_bytes() == DATA
    assert server.requests == [("/ok", f"bytes={len(DATA)}-")]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    dest = tmp_path / "voc.tar"
    part_of(dest).write_bytes(b"stale bytes" * 1000)
    get([server.url("norange")], dest)
    assert dest.read_bytes() == DATA
    assert server.requests == [("/norange", "bytes=11000-")]


def test_bad_part_file_is_downloaded_again_from_the_start(server, tmp_path):
    dest = tmp_path / "voc.tar"
    part_of(dest).write_bytes(b"stale bytes" * 1000)
    get([server.url("ok")], dest)
    assert dest.read_bytes() == DATA
    assert server.requests == [("/ok", "bytes=11000-"), ("/ok", None)]


def test_wrong_bytes_from_first_mirror_fall_through_to_second(server, tmp_path):
    dest = tmp_path / "voc.tar"
    get([server.url("wrong"), server.url("ok")], dest)
    assert dest.read_bytes() == DATA
    assert [path for path, _ in server.requests] == ["/wrong", "/ok"]


def test_every_source_failing_lists_each_reason_and_leaves_no_file(server, tmp_path):
    with socket.socket() as unused:  # a port that nobody listens on once closed
        unused.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{unused.getsockname()[1]}/voc.tar"
    urls = [server.url(kind) for kind in ("404", "500", "slow", "wrong", "short")] + [refused]
    dest = tmp_path / "voc.tar"
    with pytest.raises(PipelineError) as error:
        get(urls, dest, timeout_s=0.5, retries=1)
    message = str(error.value)
    assert "\n" not in message
    for url, reason in zip(urls, ["HTTP 404", "HTTP 500", "timed out",
                                  f"md5 mismatch (got {hashlib.md5(OTHER).hexdigest()}, want {MD5})",
                                  f"size mismatch (server says 25 bytes, want {len(DATA)})",
                                  "connection refused"]):
        assert f"{url}: {reason}" in message
    assert "data.urls" in message and "params.yaml" in message
    assert sorted(path for path, _ in server.requests).count("/500") == 2  # retried once
    assert list(tmp_path.iterdir()) == []


def test_local_path_and_file_url(server, tmp_path):
    copy = tmp_path / "my copy.tar"
    copy.write_bytes(DATA)
    for source in (str(copy), copy.as_uri()):
        dest = tmp_path / "raw" / "voc.tar"
        get([str(tmp_path / "missing.tar"), source], dest)
        assert dest.read_bytes() == DATA
        dest.unlink()


def test_local_copy_with_wrong_md5_is_rejected(tmp_path):
    copy = tmp_path / "copy.tar"
    copy.write_bytes(OTHER)
    dest = tmp_path / "voc.tar"
    with pytest.raises(PipelineError, match=r"copy\.tar: md5 mismatch .*missing\.tar: no such file"):
        get([str(copy), str(tmp_path / "missing.tar")], dest)
    assert not dest.exists() and not part_of(dest).exists()


def test_file_already_present_is_not_downloaded_again(server, tmp_path):
    dest = tmp_path / "voc.tar"
    dest.write_bytes(DATA)
    get([server.url("404")], dest)
    assert server.requests == []


def test_wrong_file_already_present_is_replaced(server, tmp_path):
    dest = tmp_path / "voc.tar"
    dest.write_bytes(OTHER)
    get([server.url("ok")], dest)
    assert dest.read_bytes() == DATA


def test_progress_without_terminal_logs_lines(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setattr(download, "CHUNK", 64 * 1024)  # 49 chunks, so ~10 % steps are visible
    caplog.set_level(logging.INFO, logger="pipeline.ingest.download")
    get([server.url("ok")], tmp_path / "voc.tar", progress=True)
    percents = [record.getMessage() for record in caplog.records if "%)" in record.getMessage()]
    assert 5 <= len(percents) <= 11
    assert "(100%)" in percents[-1]
