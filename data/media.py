"""Media loading for M2UGen: audio, images and video as plain numpy arrays.

Why one module: every data path (training, feature cache, inference, the demo) must decode media
the same way and must fail the same way. Any problem with a file -- missing, empty, truncated,
wrong content behind a right extension, random bytes, an unsupported codec, a decompression bomb --
raises `MediaError` naming the file and the reason, quickly and without unbounded memory. Only the
exception types the decoding libraries document for bad input are caught and re-raised; nothing is
swallowed and no other exception type escapes for a bad file.

- `load_audio(path, sr)`: float32 mono in [-1, 1] at `sr` Hz. wav/flac/ogg(vorbis)/opus/mp3 (and
  everything else libsndfile reads) through soundfile; m4a/aac, the audio track of mp4 and other
  containers through PyAV (FFmpeg). Channels are averaged; rates are converted with soxr's
  band-limited high-quality resampler.
- `load_image(path)`: uint8 RGB (H, W, 3), EXIF orientation applied; the pixel count is checked
  from the header before any pixel is decoded.
- `load_video(path, num_frames)`: uint8 (F, H, W, 3), decoded as a stream that keeps only the
  selected frames. A header that promises more frames than decode is not an error (players
  show what is there): the decodable frames are used and a warning is logged; only a video with
  no decodable frame is refused.
- `write_wav(path, wave, sr)`: the one WAV writer (atomic; NaN/inf refused; nothing clipped).
- `media_duration(path, limit)`: playing time of an audio/video file without decoding it (header,
  else packet timestamps, stopping once past `limit`), so servers refuse long uploads cheaply.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import av
import numpy as np
import soundfile as sf
import soxr
from PIL import Image, ImageOps

from util.atomic import atomic_path

__all__ = [
    "MediaError",
    "load_audio",
    "load_image",
    "load_video",
    "media_duration",
    "write_wav",
    "WAV_SUBTYPES",
    "DEFAULT_MAX_AUDIO_SECONDS",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DEFAULT_MAX_FRAME_PIXELS",
]

PathLike = str | os.PathLike
logger = logging.getLogger(__name__)

LOSSY_SOUNDFILE_FORMATS = {"MPEG", "MP3", "OGG"}  # libsndfile major formats with estimated lengths
LOSSLESS_CODECS = {"flac", "alac", "wavpack", "ape", "tta"} | {  # FFmpeg decoder names
    f"pcm_{kind}" for kind in ("s16le", "s16be", "s24le", "s32le", "f32le", "f64le", "u8")}

#: Longer audio is refused (from the header when it declares a length, else while decoding):
#: one hour of 24 kHz float32 is ~350 MB, a sane ceiling for a music clip.
DEFAULT_MAX_AUDIO_SECONDS = 3600.0
#: Images above this many pixels are refused before decoding (50 MP ~ 150 MB as RGB).
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
#: Video frames above this many pixels are refused before decoding (8K UHD fits).
DEFAULT_MAX_FRAME_PIXELS = 7680 * 4320

# Exceptions the libraries raise for malformed input (documented or observed); caught narrowly.
_SF_ERRORS: tuple[type[BaseException], ...] = (sf.SoundFileError,)
_AV_ERRORS: tuple[type[BaseException], ...] = (av.error.FFmpegError, ValueError)
_PIL_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes PIL.UnidentifiedImageError and "image file is truncated"
    ValueError,
    SyntaxError,  # some PIL plugins signal a bad header this way
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


class MediaError(Exception):
    """A media file could not be used; the message names the file and the reason."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _check_file(path: PathLike) -> Path:
    """Fail early (and clearly) on missing, non-regular or empty files."""
    p = Path(path)
    if not p.exists():
        raise MediaError(path, "file not found")
    if not p.is_file():
        raise MediaError(path, "not a regular file")
    if p.stat().st_size == 0:
        raise MediaError(path, "file is empty")
    return p


# ---------------------------------------------------------------------------------------------
# Audio


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
    p = _check_file(path)
    try:
        wave, in_sr = _read_soundfile(p, max_seconds)
    except _SF_ERRORS as sf_err:
        # Not something libsndfile reads (m4a/aac/mp4, or a bad file): let FFmpeg try.
        try:
            wave, in_sr = _read_av_audio(p, max_seconds)
        except _AV_ERRORS as av_err:
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


# ---------------------------------------------------------------------------------------------
# Duration without decoding


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
    except _SF_ERRORS:
        pass  # not a libsndfile format: FFmpeg below
    try:
        with av.open(str(p), mode="r") as container:
            return _av_duration(container, limit)
    except _AV_ERRORS:
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


# ---------------------------------------------------------------------------------------------
# Writing audio

#: WAV sample formats `write_wav` writes. FLOAT keeps every value as it is; PCM_16 is compact.
WAV_SUBTYPES = ("FLOAT", "PCM_16")
#: A 2-D wave with more rows than this is taken for a (samples, channels) array and refused.
MAX_WAV_CHANNELS = 32


def write_wav(
    path: PathLike, wave: np.ndarray, sr: int, *, subtype: str = "FLOAT"
) -> Path:
    """Write `wave` (float, (n,) mono or (channels, n)) to the WAV file `path`, atomically.

    The one WAV writer of the project, so every file we produce has the same guarantees:
    - a reader never sees half a file (temporary file, fsync, rename: `util.atomic`);
    - NaN or infinite samples raise `MediaError` naming the path: they mean a numerical fault
      upstream, and writing them as silence (or noise) would hide it;
    - nothing is clipped silently. "FLOAT" (default) stores 32-bit float samples, so values
      beyond [-1, 1] are kept exactly (a player clips on playback, `load_audio` clips on reading);
      "PCM_16" (compact, for generated datasets) refuses any |x| > 1 with `MediaError` instead of
      clipping it.
    Returns `path` as a Path.
    """
    path = Path(path)
    data = _wav_frames(path, wave)
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"{path}: sample rate must be a positive integer, got {sr!r}")
    if subtype not in WAV_SUBTYPES:
        raise ValueError(f"{path}: WAV subtype must be one of {WAV_SUBTYPES}, got {subtype!r}")
    if not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise MediaError(path, f"refusing to write audio with {bad} NaN or infinite samples")
    peak = float(np.abs(data).max())
    if subtype == "PCM_16" and peak > 1.0:
        raise MediaError(
            path, f"peak {peak:.3f} exceeds 1.0: PCM_16 would clip it (write FLOAT, or scale)"
        )
    with atomic_path(path) as tmp:
        sf.write(tmp, data, int(sr), subtype=subtype, format="WAV")
    return path


def _wav_frames(path: Path, wave: np.ndarray) -> np.ndarray:
    """(n,) or (channels, n) float -> soundfile's (n,) or (n, channels) float32."""
    arr = np.asarray(wave)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{path}: expected a float waveform, got dtype {arr.dtype}")
    if arr.ndim == 2:
        if arr.shape[0] > MAX_WAV_CHANNELS:
            raise ValueError(
                f"{path}: expected (channels, samples) with at most {MAX_WAV_CHANNELS} channels, "
                f"got shape {arr.shape} (transpose a (samples, channels) array)"
            )
        arr = arr.T
    elif arr.ndim != 1:
        raise ValueError(f"{path}: expected a (n,) or (channels, n) waveform, got {arr.shape}")
    if arr.shape[0] == 0 or arr.size == 0:
        raise MediaError(path, "refusing to write audio with no samples")
    return np.ascontiguousarray(arr, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Images


def load_image(
    path: PathLike,
    *,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    min_side: int = 8,
) -> np.ndarray:
    """Decode `path` to uint8 RGB (H, W, 3).

    - The pixel count is read from the header and checked against `max_pixels` before decoding,
      so decompression bombs cost neither time nor memory. (PIL's own global limit,
      `Image.MAX_IMAGE_PIXELS`, still applies as a backstop: raising `max_pixels` above twice that
      value also needs that global raised.)
    - EXIF orientation is applied; grey, palette, CMYK, 16-bit and float images are converted;
      transparency is composited over white (dropping alpha would expose arbitrary hidden colours).
    - Degenerate sizes (a side shorter than `min_side`, e.g. 1x1) are stretched to `min_side` on
      that side with nearest-neighbour resampling: encoder processors resize to a fixed square
      anyway, and arrays like (1, 1, 3) or (3, W, 3) would make transformers' image processors
      guess the channel axis wrongly. Multi-frame files (GIF, TIFF) give their first frame.
    """
    p = _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:  # reads the header only
                w, h = im.size
                if w <= 0 or h <= 0:
                    raise MediaError(path, f"invalid image size {w}x{h}")
                if w * h > max_pixels:
                    raise MediaError(
                        path,
                        f"image of {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} "
                        "(refused before decoding: possible decompression bomb)",
                    )
                im.load()
                im = ImageOps.exif_transpose(im)
                rgb = _to_rgb(im)
    except Image.DecompressionBombError as e:
        raise MediaError(path, f"refused before decoding: {e}") from e
    except _PIL_ERRORS as e:
        raise MediaError(path, f"cannot decode image ({type(e).__name__}: {e})") from e
    h, w = rgb.shape[:2]
    if min(h, w) < min_side:
        im = Image.fromarray(rgb).resize(
            (max(w, min_side), max(h, min_side)), Image.Resampling.NEAREST
        )
        rgb = np.asarray(im)
    return np.array(rgb, dtype=np.uint8, order="C")  # a writable copy, never PIL's buffer


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8 (H, W, 3)."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im, dtype=np.float64)
        grey = np.clip(a / 257.0, 0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if a.size and a.max() <= 1.0 else 1.0
        grey = np.clip(a * scale, 0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------------------------------------
# Video

Sampling = Literal["uniform", "window"]


def load_video(
    path: PathLike,
    num_frames: int = 32,
    sampling: Sampling = "uniform",
    *,
    frame_stride: int = 1,
    rng: np.random.Generator | None = None,
    size: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
) -> np.ndarray:
    """Decode `num_frames` frames of `path` to uint8 (F, H, W, 3) RGB.

    Sampling:
    - "uniform" (default): the clip's time span is cut into `num_frames` equal segments and the
      frame on screen at the middle of each segment is taken. Working in presentation time (not
      frame index) makes variable-frame-rate clips sample evenly in time.
    - "window": like the published ViViT loader, `num_frames` frames `frame_stride` apart from a
      window of consecutive frames; the window is centred, or placed at random when `rng` is given.
    If the clip has fewer frames than requested, frames are repeated (uniform: each frame covers
    several segments, in order; window: the last frame repeats), so the output always has exactly
    `num_frames` frames.

    Memory stays bounded: a first pass reads packet timestamps only (no decoding), a second pass
    decodes frame by frame and converts only the selected frames. `size=(H, W)` resizes the kept
    frames during conversion; frames larger than `max_pixels` are refused before decoding.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if sampling not in ("uniform", "window"):
        raise ValueError(f"sampling must be 'uniform' or 'window', got {sampling!r}")
    if frame_stride <= 0:
        raise ValueError(f"frame_stride must be positive, got {frame_stride}")
    p = _check_file(path)
    try:
        return _read_video(p, num_frames, sampling, frame_stride, rng, size, max_pixels)
    except _AV_ERRORS as e:
        raise MediaError(path, f"cannot decode video ({type(e).__name__}: {e})") from e


@dataclass(frozen=True)
class _Timeline:
    """Presentation order of a video stream's packets, read without decoding.

    `times[k]` is the k-th frame's timestamp in presentation order (frame indices when the stream
    has no timestamps); `last_duration` is how long the last frame stays on screen (0: unknown).
    """

    times: list[int]
    last_duration: int
    has_pts: bool

    def __len__(self) -> int:
        return len(self.times)


def _read_video(
    p: Path,
    num_frames: int,
    sampling: Sampling,
    frame_stride: int,
    rng: np.random.Generator | None,
    size: tuple[int, int] | None,
    max_pixels: int,
) -> np.ndarray:
    """Two passes: timestamps (no decoding) to choose frames, then a decode keeping only those."""
    with av.open(str(p), mode="r") as container:
        stream = _video_stream(container, p, max_pixels)
        timeline = _packet_timeline(container, stream, p)
    if sampling == "uniform":
        picks = _uniform_picks(timeline, num_frames)
    else:
        picks = _window_picks(len(timeline), num_frames, frame_stride, rng)
    kept, decodable = _decode_frames(p, timeline, set(picks), size)
    lost = sorted(set(picks) - set(kept))
    if lost:
        picks = _replace_lost(p, picks, lost, decodable)
        missing = set(picks) - set(kept)
        if missing:  # a third pass, only for damaged files
            kept.update(_decode_frames(p, timeline, missing, size)[0])
        if missing - set(kept):
            raise MediaError(p, "frames that decoded once did not decode again")
    return np.stack([kept[i] for i in picks]).astype(np.uint8, copy=False)


def _video_stream(container: av.container.InputContainer, p: Path, max_pixels: int) -> Any:
    """The first video stream, after checking it is a video we can decode at a sane size."""
    fmt = container.format.name
    if fmt == "image2" or fmt.endswith("_pipe"):
        raise MediaError(p, f"a still image (format {fmt}), not a video")
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise MediaError(p, f"no video stream (container {fmt}, streams: {kinds})")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx is None:
        raise MediaError(p, "unsupported video codec (no decoder available)")
    w, h = ctx.width, ctx.height
    if w <= 0 or h <= 0:
        raise MediaError(p, f"invalid frame size {w}x{h}")
    if w * h > max_pixels:
        raise MediaError(p, f"frame of {w}x{h} exceeds the limit of {max_pixels} pixels")
    return stream


def _packet_timeline(container: av.container.InputContainer, stream: Any, p: Path) -> _Timeline:
    """Pass 1: presentation timestamps of every frame's packet, without decoding.

    A header that declares more frames than the file holds (a cut download, or a writer that
    never fixed its header: e.g. an AVI declaring 444 frames with 68 present) is logged and the
    frames that are there are used, as every player does.
    """
    times: list[int] = []
    durations: list[int] = []
    has_pts = True
    for packet in container.demux(stream):
        if packet.size == 0:
            continue  # flush packet
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None:
            has_pts = False
            ts = len(times)
        times.append(ts)
        durations.append(packet.duration or 0)
    if not times:
        raise MediaError(p, "video stream holds no frames")
    if stream.frames and len(times) < 0.95 * stream.frames - 1:
        logger.warning(
            "%s: header declares %d frames, only %d present; using those", p, stream.frames,
            len(times),
        )
    if not has_pts:
        return _Timeline(list(range(len(times))), 0, has_pts=False)
    order = sorted(range(len(times)), key=times.__getitem__)
    return _Timeline([times[i] for i in order], durations[order[-1]], has_pts=True)


def _uniform_picks(timeline: _Timeline, num_frames: int) -> list[int]:
    """The frame on screen at the middle of each of `num_frames` equal spans of the clip's time
    (presentation time, not frame index, so variable-frame-rate clips sample evenly in time)."""
    times, n = timeline.times, len(timeline)
    step = (times[-1] - times[0]) / (n - 1) if n > 1 else 1
    last = timeline.last_duration or step
    start, end = times[0], times[-1] + max(last, 1)
    targets = start + (np.arange(num_frames) + 0.5) * (end - start) / num_frames
    return [max(bisect.bisect_right(times, t) - 1, 0) for t in targets]


def _window_picks(
    n: int, num_frames: int, frame_stride: int, rng: np.random.Generator | None
) -> list[int]:
    """`num_frames` frames `frame_stride` apart from a centred (or, with `rng`, random) window;
    past the clip's end the last frame repeats."""
    span = (num_frames - 1) * frame_stride + 1
    slack = max(n - span, 0)
    first = int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
    return [min(first + k * frame_stride, n - 1) for k in range(num_frames)]


def _decode_frames(
    p: Path, timeline: _Timeline, wanted: set[int], size: tuple[int, int] | None
) -> tuple[dict[int, np.ndarray], list[int]]:
    """Pass 2 (a fresh demuxer, so no seeking): decode in order, convert only `wanted` frames.

    Returns the converted frames by index and the (sorted) indices of every frame that decoded,
    which is what a replacement for an undecodable pick is chosen from.
    """
    kept: dict[int, np.ndarray] = {}
    decodable: list[int] = []
    out_h, out_w = size if size is not None else (None, None)
    pts_to_index = {t: i for i, t in enumerate(timeline.times)} if timeline.has_pts else None
    with av.open(str(p), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in _decoded(p, container, stream):
            i = index
            if pts_to_index is not None and frame.pts is not None:
                i = pts_to_index.get(frame.pts, -1)
            if i < 0:
                continue
            decodable.append(i)
            if i in wanted and i not in kept:
                kept[i] = frame.to_ndarray(format="rgb24", width=out_w, height=out_h)
                if len(kept) == len(wanted):
                    break
    return kept, sorted(set(decodable))


def _decoded(
    p: Path, container: av.container.InputContainer, stream: Any
) -> Iterator[tuple[int, av.VideoFrame]]:
    """(decode order, frame) for every frame that decodes. A packet the decoder rejects is
    skipped and decoding goes on with the next one, as players do; damage that stops the
    demuxer ends the stream there. Both are logged; the caller refuses a stream with no frame."""
    packets = container.demux(stream)
    index = failed = 0
    try:
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except _AV_ERRORS as e:
                logger.warning("%s: video demuxing stopped after %d frames: %s", p, index, e)
                return
            try:
                frames = packet.decode()
            except _AV_ERRORS as e:
                failed += 1
                if failed == 1:
                    logger.warning("%s: a video packet did not decode (%s); skipping it", p, e)
                continue
            for frame in frames:
                yield index, frame
                index += 1
    finally:
        if failed > 1:
            logger.warning("%s: %d video packets did not decode in all", p, failed)


def _replace_lost(p: Path, picks: list[int], lost: list[int], decodable: list[int]) -> list[int]:
    """Swap every pick whose frame did not decode for the nearest earlier decodable frame (the
    one a player would still show), else the nearest later one; refuse a file with none."""
    if not decodable:
        raise MediaError(p, "no frame of the video stream could be decoded")
    logger.warning(
        "%s: %d of %d selected frames did not decode; using the nearest decodable frames",
        p, len(lost), len(set(picks)),
    )
    lost_set = set(lost)
    out = []
    for i in picks:
        if i in lost_set:
            k = bisect.bisect_right(decodable, i) - 1
            i = decodable[k] if k >= 0 else decodable[0]
        out.append(i)
    return out
