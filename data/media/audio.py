"""Audio decoding: any file libsndfile or FFmpeg reads -> float32 mono in [-1, 1] at a given rate.

wav/flac/ogg(vorbis)/opus/mp3 (and everything else libsndfile reads) go through soundfile;
m4a/aac, the audio track of mp4 and other containers through PyAV (FFmpeg). Channels are
averaged; rates are converted with soxr's band-limited high-quality resampler. A truncated
lossless file is refused; a lossy one whose header over-estimates its length is used as players
use it, with a warning.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr

from data.media.errors import FFMPEG_ERRORS, SOUNDFILE_ERRORS, MediaError, PathLike, check_file

logger = logging.getLogger(__name__)

LOSSY_SOUNDFILE_FORMATS = {"MPEG", "MP3", "OGG"}  # libsndfile major formats with estimated lengths
LOSSLESS_CODECS = {"flac", "alac", "wavpack", "ape", "tta"} | {  # FFmpeg decoder names
    f"pcm_{kind}" for kind in ("s16le", "s16be", "s24le", "s32le", "f32le", "f64le", "u8")}

#: Longer audio is refused (from the header when it declares a length, else while decoding):
#: one hour of 24 kHz float32 is ~350 MB, a sane ceiling for a music clip.
DEFAULT_MAX_AUDIO_SECONDS = 3600.0


def load_audio(
    path: PathLike,
    sr: int,
    *,
    min_seconds: float = 0.0,
    max_seconds: float | None = DEFAULT_MAX_AUDIO_SECONDS,
) -> np.ndarray:
    """Decode `path` to float32 mono in [-1, 1] at `sr` Hz.

    Clips shorter than `min_seconds` (after resampling) raise, so that an encoder never sees fewer
    samples than its receptive field; a file with no samples at all always raises. Silence is valid.
    Files longer than `max_seconds` (None: no limit) raise instead of filling memory.
    """
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    p = check_file(path)
    try:
        wave, in_sr = _read_soundfile(p, max_seconds)
    except SOUNDFILE_ERRORS as sf_err:
        # Not something libsndfile reads (m4a/aac/mp4, or a bad file): let FFmpeg try.
        try:
            wave, in_sr = _read_av_audio(p, max_seconds)
        except FFMPEG_ERRORS as av_err:
            raise MediaError(
                path, f"cannot decode audio (soundfile: {sf_err}; ffmpeg: {av_err})"
            ) from av_err
    if wave.shape[0] == 0:
        raise MediaError(path, "no audio samples")
    if not np.all(np.isfinite(wave)):
        raise MediaError(path, "audio contains NaN or infinite samples")
    mono = wave.mean(axis=1, dtype=np.float32) if wave.shape[1] > 1 else wave[:, 0]
    if in_sr != sr:
        mono = soxr.resample(mono, in_sr, sr, quality="HQ")
    mono = np.clip(np.ascontiguousarray(mono, dtype=np.float32), -1.0, 1.0)
    seconds = mono.shape[0] / sr
    if seconds < min_seconds:
        raise MediaError(path, f"audio too short: {seconds:.3f} s < minimum {min_seconds:.3f} s")
    return mono


def _read_soundfile(p: Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 via libsndfile, with truncation and length checks."""
    with sf.SoundFile(p) as f:
        in_sr, declared, fmt = f.samplerate, f.frames, f.format
        if in_sr <= 0:
            raise MediaError(p, f"invalid sample rate {in_sr}")
        if max_seconds is not None and declared > max_seconds * in_sr:
            raise MediaError(p, f"audio too long: {declared / in_sr:.1f} s > {max_seconds} s")
        if f.format in ("WAV", "WAVEX"):
            _check_riff_complete(p)
        wave = f.read(dtype="float32", always_2d=True)
    if declared > 0 and wave.shape[0] < 0.95 * declared - 0.1 * in_sr:
        _shortfall(p, lossy=fmt in LOSSY_SOUNDFILE_FORMATS,
                   detail=f"header declares {declared} frames, only {wave.shape[0]} decoded")
    return wave, in_sr


def _shortfall(p: Path, lossy: bool, detail: str) -> None:
    """Less audio decoded than the header declares. Lossy streams (mp3, ogg, aac) carry length
    estimates (an mp3 without a Xing count is guessed from one frame's bitrate): use what is there,
    as every player does, with a warning. Lossless headers are exact: the file was cut."""
    if lossy:
        logger.warning("%s: %s; using those", p, detail)
        return
    raise MediaError(p, f"truncated: {detail}")


def _check_riff_complete(p: Path) -> None:
    """Raise if a RIFF/WAVE `data` chunk declares more bytes than the file holds.

    libsndfile silently clamps such files to what is there, which would hide a truncated copy.
    Streaming writers use 0 or 0xFFFFFFFF as "unknown size"; those are accepted.
    """
    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return  # RF64 / W64 and friends: nothing to check here
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                available = size - (pos + 8)
                if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                    raise MediaError(
                        p,
                        f"truncated: WAV data chunk declares {chunk_size} bytes, "
                        f"file holds {available}",
                    )
                return
            pos += 8 + chunk_size + (chunk_size & 1)


def _read_av_audio(p: Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 of the first audio stream via FFmpeg, decoded as a stream."""
    with av.open(str(p), mode="r") as container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise MediaError(
                p, f"no audio stream (container {container.format.name}, streams: {kinds})"
            )
        stream = container.streams.audio[0]
        if stream.codec_context is None:
            raise MediaError(p, "unsupported audio codec (no decoder available)")
        in_sr = stream.codec_context.sample_rate or stream.rate
        codec = stream.codec_context.name
        if not in_sr or in_sr <= 0:
            raise MediaError(p, "audio stream has no sample rate")
        declared = (
            float(stream.duration * stream.time_base)
            if stream.duration is not None and stream.time_base is not None
            else None
        )
        if max_seconds is not None and declared is not None and declared > max_seconds:
            raise MediaError(p, f"audio too long: {declared:.1f} s > {max_seconds} s")
        limit = None if max_seconds is None else int(max_seconds * in_sr) + in_sr
        resampler = av.AudioResampler(format="fltp")  # planar float, input layout and rate kept
        chunks: list[np.ndarray] = []
        total = 0
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                block = out.to_ndarray()  # (channels, samples)
                chunks.append(block)
                total += block.shape[1]
            if limit is not None and total > limit:
                raise MediaError(p, f"audio too long: more than {max_seconds} s")
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if not chunks:
        return np.zeros((0, 1), np.float32), in_sr
    n_channels = max(c.shape[0] for c in chunks)
    if any(c.shape[0] != n_channels for c in chunks):
        raise MediaError(p, "channel count changes inside the audio stream")
    wave = np.concatenate(chunks, axis=1).T.astype(np.float32, copy=False)
    got = wave.shape[0] / in_sr
    if declared is not None and got < 0.95 * declared - 0.1:
        _shortfall(p, lossy=codec not in LOSSLESS_CODECS,
                   detail=f"header declares {declared:.2f} s, only {got:.2f} s decoded")
    return wave, in_sr
