"""Atomic outputs: a reader (or a killed stage) never sees a half-written file or directory, a full disk ends in
one message, and what a killed writer left behind is removed by the next one.

Temporary names are `.<name>.<host>-<pid>.<random>.tmp` beside the output: the writer's host and pid let a later
process tell an orphan (its writer is gone: SIGKILL, power loss) from a file another live process is writing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError

log = logging.getLogger(__name__)

_TEMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[^.]+\.tmp$")
_swept: set[Path] = set()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:32] or "host"


def _owner() -> str:
    return f"{_host()}-{os.getpid()}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_orphans(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and directories in `directory` whose writer, on this host, is no longer running;
    returns what was removed. Another host's temporaries (a shared filesystem) are left alone."""
    directory = Path(directory)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if not match or match["host"] != _host() or _alive(int(match["pid"])):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left in %s by a killed run: %s", len(removed), directory,
                 ", ".join(p.name for p in removed[:3]) + (" …" if len(removed) > 3 else ""))
    return removed


def _sweep_once(directory: Path) -> None:
    """`remove_orphans` the first time this process writes into `directory`: once, since a directory of predictions
    gets thousands of writes."""
    key = directory.resolve()
    if key not in _swept:
        _swept.add(key)
        remove_orphans(directory)


def no_space(path: str | os.PathLike, need_bytes: int | None = None) -> PipelineError:
    """The one message for a full disk: where, how much is needed and how much is free."""
    directory = Path(path) if Path(path).is_dir() else Path(path).parent
    try:
        free = f"{shutil.disk_usage(directory).free / 1e6:.0f} MB free"
    except OSError:
        free = "free space unknown"
    need = f"need about {need_bytes / 1e6:.0f} MB, " if need_bytes else ""
    return PipelineError(f"no space left on {directory}: {need}{free}; free some space (or write elsewhere) and rerun")


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def full_disk_reported(path: str | os.PathLike, need_bytes: int | None = None) -> Iterator[None]:
    """A full disk inside the block ends as `no_space(path, need_bytes)`; any other error passes unchanged."""
    try:
        yield
    except OSError as error:
        if is_disk_full(error):
            raise no_space(path, need_bytes) from None
        raise


def require_space(directory: str | os.PathLike, need_bytes: int) -> None:
    """Refuse up front when `directory`'s filesystem has less than `need_bytes` free."""
    directory = Path(directory)
    if shutil.disk_usage(directory).free < need_bytes:
        raise no_space(directory, need_bytes)


def require_writable(directory: str | os.PathLike, what_to_do: str) -> None:
    """Refuse up front, in one line, when files cannot be created in `directory` (read-only, no permission), rather
    than a traceback, or a misleading reason, halfway through the work."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        if is_disk_full(error):
            raise no_space(directory) from None
        raise PipelineError(f"cannot write in {directory} ({error.strerror or error}); {what_to_do}") from None


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed over `path`, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(path.parent)
    # Outside the clean-up below, so that a full-disk message counts the removed temporary's space as free.
    with full_disk_reported(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp's 0600 would make outputs private to their writer
        try:
            yield tmp_path
            with open(tmp_path, "rb") as written:
                os.fsync(written.fileno())
            os.replace(tmp_path, path)
        finally:
            tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; on success it replaces `path` whole, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(path.parent)
    with full_disk_reported(path):
        tmp_path = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_owner()}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp_path, 0o777 & ~_umask())
        try:
            yield tmp_path
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.{_owner()}.old.tmp")
                os.replace(path, old)
            os.replace(tmp_path, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp_path, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON with sorted keys and a fixed layout, so reruns give byte-identical files."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def write_png(path: str | os.PathLike, image) -> None:
    """Write a PIL image as PNG, atomically and without metadata (info dropped), so equal pixels give equal bytes."""
    clean = image.copy()
    clean.info = {}
    with atomic_file(path) as tmp:
        clean.save(tmp, format="PNG")
