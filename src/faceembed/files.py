"""Atomic writes: temporary file in the same folder, fsync, rename. An interrupted run never leaves a
truncated output under the final name."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
#: A temporary file of faceembed's writer: ``.NAME.fe-HOST-PID.XXXXXXXX.tmp.EXT``.
_TEMP = re.compile(r"^\..+\.fe-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)\.[^.]+\.tmp")
STALE_AFTER_S = 24 * 3600


def temp_prefix(path: Path, pid: int | None = None) -> str:
    """The prefix of a temporary file for ``path``: names the writing host and process (default: this one)."""
    return f".{path.name}.fe-{_HOST}-{pid if pid is not None else os.getpid()}."


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the permissions a plain open() gives
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces ``path`` only when the block ends without error."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` (e.g. ``torch.save``, ``fig.savefig``) and move the result onto ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)


def append_line(path: str | Path, line: str) -> None:
    """Append one line to a log file and fsync it (JSON-lines logs: a torn last line is detectable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def is_stale_temp(path: Path, now: float | None = None) -> bool:
    """True for a temporary file of faceembed's writer whose process is gone (same host), or that is older than
    a day (another host's, whose processes this one cannot see). Any other file is never stale."""
    m = _TEMP.match(path.name)
    if m is None:
        return False
    try:
        age = (now if now is not None else time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    if age > STALE_AFTER_S:
        return True
    return m["host"] == _HOST and not _pid_alive(int(m["pid"]))


def remove_stale_temps(folder: str | Path) -> int:
    """Delete the temporary files killed faceembed writers left in ``folder`` (:func:`is_stale_temp`); another
    program's files and a live writer's are kept. Returns the count removed."""
    removed = 0
    for tmp in Path(folder).glob(".*.tmp*"):
        if is_stale_temp(tmp):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed += 1
    return removed


def cache_dir() -> Path:
    """faceembed's cache of converted models: ``$FACEEMBED_CACHE`` or ``~/.cache/faceembed``."""
    env = os.environ.get("FACEEMBED_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "faceembed"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
