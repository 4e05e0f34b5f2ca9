"""Fetch one file from a list of sources (http(s) URLs, file:// URLs, local paths): resumable and verified.

Bytes go to ``<dest>.part`` and are hashed as they arrive; only a part whose size and md5 match is renamed
to ``dest``. An interrupted run (Ctrl-C, a killed job) leaves the part behind and the next run resumes it
with an HTTP Range request; a part is deleted only when it is known to be bad or when every source failed.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pipeline.core.atomic import require_writable
from pipeline.core.errors import PipelineError
from pipeline.core.progress import Progress

log = logging.getLogger(__name__)

CHUNK = 1 << 20
BACKOFF_S = 1.0  # first retry waits this long, then twice as long each time; tests set it to 0
MAX_BACKOFF_S = 60.0
# Worth another try on the same URL; any other HTTP error (404, 403, ...) will not change by retrying.
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
# Some mirrors refuse urllib's default "Python-urllib/x.y" agent.
USER_AGENT = "voc-segmentation-pipeline (python urllib)"


@dataclass(frozen=True)
class _Want:
    md5: str
    size: int | None


class _Retry(Exception):
    """A transient failure (timeout, dropped connection, 5xx): try the same URL again, resuming the part."""


class _SourceFailed(Exception):
    """This source cannot deliver the file; its message is the reason shown to the user."""


def fetch(
    urls: list[str],
    dest: str | os.PathLike,
    *,
    md5: str,
    size: int | None = None,
    timeout_s: float = 30,
    retries: int = 3,
    progress: bool = True,
    urls_key: str = "data.urls",
    otherwise: str = "",
) -> Path:
    """Put the file with this md5 (and size, when given) at `dest`, trying each source in turn.

    When every source fails, the message tells the user to add a local copy to `urls_key` (the params key the
    `urls` came from), then `otherwise` (another way out, if there is one).

    `retries` counts consecutive failed attempts on one URL that brought no new bytes, so a slow mirror that
    keeps dropping the connection still finishes as long as every attempt makes progress.
    """
    dest = Path(dest)
    want = _Want(md5.lower(), size)
    if dest.exists():
        problem = _check_file(dest, want)
        if problem is None:
            log.info("%s is already present (md5 %s)", dest, want.md5)
            return dest
        log.warning("%s: %s; downloading it again", dest, problem)
        dest.unlink()
    # Checked before any source is tried, or a read-only directory would read as every source failing.
    require_writable(dest.parent, "make it writable or pass another --out")
    part = dest.with_name(dest.name + ".part")

    reasons = []
    for source in urls:
        log.info("fetching %s from %s", dest.name, source)
        try:
            if urllib.parse.urlsplit(source).scheme in ("http", "https"):
                _fetch_http(source, part, want, timeout_s=timeout_s, retries=retries, progress=progress)
            else:
                _copy_local(_local_path(source), part, want, progress=progress)
        except _SourceFailed as failure:
            log.warning("%s: %s", source, failure)
            reasons.append(f"{source}: {failure}")
            continue
        os.replace(part, dest)
        log.info("%s: %d bytes, md5 %s", dest, dest.stat().st_size, want.md5)
        return dest

    part.unlink(missing_ok=True)
    raise PipelineError(
        f"could not get {dest.name} from any source ({'; '.join(reasons)}); put the path or file:// URL of a "
        f"local copy into {urls_key} in params.yaml and rerun{otherwise}"
    )


# --- HTTP ---------------------------------------------------------------------------------------------

def _fetch_http(url: str, part: Path, want: _Want, *, timeout_s: float, retries: int, progress: bool) -> None:
    """Leave a verified copy in `part`, or raise `_SourceFailed` (deleting `part` only if it is known bad)."""
    failures, restarted = 0, False
    while True:
        start = _size_of(part)
        try:
            digest, resumed = _http_attempt(url, part, want, timeout_s=timeout_s, progress=progress)
        except _Retry as error:
            failures = 1 if _size_of(part) > start else failures + 1
            if failures > retries:
                raise _SourceFailed(f"{error} ({failures} attempts)") from None
            delay = min(BACKOFF_S * 2 ** (failures - 1), MAX_BACKOFF_S)
            log.warning("%s: %s; retrying in %.0f s (%d of %d)", url, error, delay, failures, retries)
            time.sleep(delay)
            continue
        problem = _mismatch(_size_of(part), digest, want)
        if problem is None:
            return
        part.unlink()
        if resumed and not restarted:
            # The bytes kept from an earlier run (perhaps from another mirror) may be the bad ones: give
            # this source one clean try from the start before blaming it.
            log.warning("%s: %s after resuming; downloading it again from the start", url, problem)
            restarted = True
            continue
        raise _SourceFailed(problem)


def _http_attempt(url: str, part: Path, want: _Want, *, timeout_s: float, progress: bool) -> tuple[str, bool]:
    """One request; returns (md5 of the whole part, whether it continued an existing part)."""
    offset = _size_of(part)
    if want.size is not None and offset > want.size:
        part.unlink()
        offset = 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            # The part already reaches the end of the file (or beyond): let the size and md5 check decide.
            return md5_of(part), True
        if error.code in RETRY_STATUSES:
            raise _Retry(f"HTTP {error.code}") from None
        raise _SourceFailed(f"HTTP {error.code}") from None
    except (OSError, http.client.HTTPException) as error:
        raise _Retry(_describe(error)) from None

    with response:
        if response.status == 206 and offset:
            first, total = _content_range(response.headers.get("Content-Range", ""))
            if first != offset:
                part.unlink()
                raise _Retry(f"server answered a request for byte {offset} from byte {first}")
        else:
            if offset:
                log.info("%s ignored the Range request; downloading from the start", url)
            offset = 0
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
        if want.size is not None and total is not None and total != want.size:
            # Nothing from this source is written yet, so a part from another source stays resumable.
            raise _SourceFailed(f"size mismatch (server says {total} bytes, want {want.size})")

        hasher = _md5_hasher(part) if offset else hashlib.md5(usedforsecurity=False)
        bar = Progress(want.size or total, desc=part.name.removesuffix(".part"), unit="B", enabled=progress,
                       initial=offset, logger=log)
        received = offset
        try:
            with open(part, "ab" if offset else "wb") as out:
                while chunk := _read(response):
                    _write(out, chunk, part)
                    hasher.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    if want.size is not None and received > want.size:
                        part.unlink()
                        raise _SourceFailed(f"size mismatch (more than {want.size} bytes)")
                out.flush()
                os.fsync(out.fileno())
        finally:
            bar.close()
        if total is not None and received < total:
            raise _Retry(f"connection dropped after {received} of {total} bytes")
        return hasher.hexdigest(), bool(offset)


def _read(response: http.client.HTTPResponse) -> bytes:
    try:
        return response.read1(CHUNK)  # what has arrived, so a stall loses nothing already received
    except (OSError, http.client.HTTPException) as error:
        raise _Retry(_describe(error)) from None


def _content_range(value: str) -> tuple[int | None, int | None]:
    """`bytes 100-199/1000` → (100, 1000); a part that cannot be parsed is None."""
    try:
        span, _, total = value.removeprefix("bytes ").partition("/")
        first = int(span.partition("-")[0])
    except ValueError:
        return None, None
    return first, int(total) if total.isdigit() else None


def _describe(error: BaseException) -> str:
    """A short, one-line reason for a network error, as the user will read it in the final message."""
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, (ConnectionResetError, ConnectionAbortedError, http.client.IncompleteRead)):
        return "connection dropped"
    if isinstance(error, socket.gaierror):
        return "host not found"
    if isinstance(error, ssl.SSLError):
        return f"TLS error ({error.reason or error})"
    text = str(getattr(error, "reason", None) or error) or type(error).__name__
    return " ".join(text.split())


# --- local files --------------------------------------------------------------------------------------

def _local_path(source: str) -> Path:
    parts = urllib.parse.urlsplit(source)
    if parts.scheme == "file":
        return Path(urllib.request.url2pathname(parts.path))
    if "://" in source:
        raise _SourceFailed(f"unsupported URL scheme {parts.scheme!r} (use http, https, file:// or a path)")
    return Path(source).expanduser()


def _copy_local(path: Path, part: Path, want: _Want, *, progress: bool) -> None:
    try:
        source_size = path.stat().st_size
        if not path.is_file():
            raise _SourceFailed("not a file")
        if want.size is not None and source_size != want.size:
            raise _SourceFailed(f"size mismatch (got {source_size} bytes, want {want.size})")
        hasher = hashlib.md5(usedforsecurity=False)
        bar = Progress(source_size, desc=part.name.removesuffix(".part"), unit="B", enabled=progress, logger=log)
        try:
            with open(path, "rb") as source, open(part, "wb") as out:
                while chunk := source.read(CHUNK):
                    _write(out, chunk, part)
                    hasher.update(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        finally:
            bar.close()
    except FileNotFoundError:
        raise _SourceFailed("no such file") from None
    except OSError as error:
        raise _SourceFailed((error.strerror or str(error)).lower()) from None
    problem = _mismatch(_size_of(part), hasher.hexdigest(), want)
    if problem is not None:
        part.unlink()
        raise _SourceFailed(problem)


# --- verification and files ---------------------------------------------------------------------------

def _check_file(path: Path, want: _Want) -> str | None:
    size = path.stat().st_size
    if want.size is not None and size != want.size:  # no need to hash 2 GB to know
        return f"size mismatch (got {size} bytes, want {want.size})"
    return _mismatch(size, md5_of(path), want)


def _mismatch(size: int, digest: str, want: _Want) -> str | None:
    if want.size is not None and size != want.size:
        return f"size mismatch (got {size} bytes, want {want.size})"
    if digest != want.md5:
        return f"md5 mismatch (got {digest}, want {want.md5})"
    return None


def _md5_hasher(path: Path):
    """A hashlib md5 object fed with the whole file, ready to be fed the bytes that follow it."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, lambda: hashlib.md5(usedforsecurity=False))


def md5_of(path: Path) -> str:
    """The hex md5 of a whole file, as DVC and the archives' published checksums give it."""
    return _md5_hasher(path).hexdigest()


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _write(out: BinaryIO, chunk: bytes, part: Path) -> None:
    try:
        out.write(chunk)
    except OSError as error:
        raise PipelineError(
            f"cannot write {part} ({error.strerror}); fix that and rerun: the download resumes where it stopped"
        ) from None
