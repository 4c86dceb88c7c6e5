"""What every media decoder shares: the one error type, the file checks, and the exception types
the decoding libraries document (or were seen to raise) for malformed input, caught narrowly."""

from __future__ import annotations

import os
from pathlib import Path

import av
import soundfile as sf

PathLike = str | os.PathLike

SOUNDFILE_ERRORS: tuple[type[BaseException], ...] = (sf.SoundFileError,)
FFMPEG_ERRORS: tuple[type[BaseException], ...] = (av.error.FFmpegError, ValueError)


class MediaError(Exception):
    """A media file could not be used; the message names the file and the reason."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def check_file(path: PathLike) -> Path:
    """Fail early (and clearly) on missing, non-regular or empty files."""
    p = Path(path)
    if not p.exists():
        raise MediaError(path, "file not found")
    if not p.is_file():
        raise MediaError(path, "not a regular file")
    if p.stat().st_size == 0:
        raise MediaError(path, "file is empty")
    return p
