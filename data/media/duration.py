"""Playing time of an audio or video file without decoding it, so servers refuse long uploads
cheaply (before any sample or frame is decoded)."""

from __future__ import annotations

from pathlib import Path

import av
import soundfile as sf

from data.media.errors import FFMPEG_ERRORS, SOUNDFILE_ERRORS, PathLike


def media_duration(path: PathLike, *, limit: float | None = None) -> float | None:
    """Seconds of playing time of an audio or video file, without decoding any sample or frame.

    The container header is trusted when it declares a length (libsndfile's frame count, else
    FFmpeg's container or stream duration). A file whose header declares none (raw streams,
    some live recordings) is measured by demuxing its packets -- cheap, nothing is decoded --
    and the measurement stops as soon as it passes `limit`, so the result is then only known to
    exceed `limit`. Returns None when no library can read the file: the decoder that loads it
    reports why, in its own words.
    """
    p = Path(path)
    try:
        info = sf.info(str(p))
        if info.samplerate > 0 and info.frames > 0:
            return info.frames / info.samplerate
    except SOUNDFILE_ERRORS:
        pass  # not a libsndfile format: FFmpeg below
    try:
        with av.open(str(p), mode="r") as container:
            return _av_duration(container, limit)
    except FFMPEG_ERRORS:
        return None


def _av_duration(container: av.container.InputContainer, limit: float | None) -> float | None:
    """The container's declared duration, else the first audio/video stream measured by packets."""
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    streams = list(container.streams.video) + list(container.streams.audio)
    if not streams:
        return None
    stream = streams[0]
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    rate = stream.average_rate or getattr(stream, "rate", None) or 0
    summed = end = 0.0
    count = 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        count += 1
        tb = packet.time_base or stream.time_base
        if tb is not None and packet.duration:
            summed += float(packet.duration * tb)
        if tb is not None and packet.pts is not None:
            end = max(end, float((packet.pts + (packet.duration or 0)) * tb))
        seconds = max(summed, end, count / float(rate) if rate else 0.0)
        if limit is not None and seconds > limit:
            return seconds
    if not count:
        return None
    return max(summed, end, count / float(rate) if rate else 0.0)
