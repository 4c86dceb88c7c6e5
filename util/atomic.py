"""Atomic writes: a reader (or a crash) never sees a half-written file or folder.

Files: written to a temporary file in the destination folder, fsynced, then moved over the
destination with `os.replace` (atomic on POSIX). The previous version stays intact until the new
one is complete, and the temporary file is removed on any failure.

Folders: built aside, fsynced, then swapped in. The swap keeps the last complete folder under a
`.old` name until the new one is in place, and never deletes that `.old` copy unless the main
folder is complete, so two crashes in a row still leave one complete folder (see `swap_in_dir`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

OLD_SUFFIX = ".old"


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file (or a folder's directory entry) to disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(dst: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `dst`; on success it is fsynced and renamed onto `dst`."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        fsync_path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; written files should read like any other
        os.replace(tmp, dst)
        fsync_path(dst.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(dst: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dst) as tmp:
        tmp.write_bytes(data)


def write_text(dst: str | os.PathLike, text: str) -> None:
    write_bytes(dst, text.encode("utf-8"))


def write_json(dst: str | os.PathLike, obj: Any) -> None:
    write_text(dst, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def append_jsonl(dst: str | os.PathLike, obj: Any) -> None:
    """Append one JSON line to a log (train_log.jsonl, ...), whole or not at all.

    The line goes out in one `os.write` on an O_APPEND descriptor, then fsync: concurrent
    appenders never interleave inside a line, and a crash can leave at most a torn last line (a
    reader of the log skips a line that does not parse), never a rewritten earlier one.
    """
    data = (json.dumps(obj) + "\n").encode("utf-8")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(dst, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"{dst}: short append ({written} of {len(data)} bytes)")
        os.fsync(fd)
    finally:
        os.close(fd)


def old_copy(folder: str | os.PathLike) -> Path:
    """Where `swap_in_dir` keeps the previous complete version of `folder` during a swap."""
    folder = Path(folder)
    return folder.with_name(folder.name + OLD_SUFFIX)


def swap_in_dir(tmp: Path, folder: Path, is_complete: Callable[[Path], bool]) -> None:
    """Replace `folder` by the complete folder `tmp` so that a crash at any point leaves a
    complete copy at `folder` or at its `.old` twin.

    The `.old` copy is deleted only while `folder` itself is complete: after a crash between the
    two renames (main gone, `.old` complete) the next swap keeps `.old` and simply moves the new
    folder in, instead of deleting the only complete copy.
    """
    old = old_copy(folder)
    if folder.exists() and is_complete(folder):
        if old.exists():
            shutil.rmtree(old)
        os.replace(folder, old)  # crash after this: `.old` is complete
    elif folder.exists():
        shutil.rmtree(folder)  # an incomplete leftover; `.old` (if any) is the last good state
    os.replace(tmp, folder)  # crash after this: both are complete
    fsync_path(folder.parent)
    if old.exists():
        shutil.rmtree(old)


@contextlib.contextmanager
def atomic_dir(folder: str | os.PathLike,
               is_complete: Callable[[Path], bool] = lambda p: p.is_dir()) -> Iterator[Path]:
    """Yield an empty temporary folder beside `folder`; on success every file in it is fsynced
    and it is swapped in with `swap_in_dir`. On failure it is removed and `folder` is untouched."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                fsync_path(f)
        tmp.chmod(0o755)
        swap_in_dir(tmp, folder, is_complete)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def complete_or_old(folder: str | os.PathLike,
                    is_complete: Callable[[Path], bool]) -> Path | None:
    """The complete version of `folder` (itself, else its `.old` twin), or None."""
    for candidate in (Path(folder), old_copy(folder)):
        if candidate.is_dir() and is_complete(candidate):
            return candidate
    return None
