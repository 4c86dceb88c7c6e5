"""Video decoding: `num_frames` frames -> uint8 (F, H, W, 3) RGB, decoded as a stream that keeps
only the selected frames. A header that promises more frames than decode is not an error (players
show what is there): the decodable frames are used and a warning is logged; only a video with no
decodable frame is refused.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

import av
import numpy as np

from data.media.errors import FFMPEG_ERRORS, MediaError, PathLike, check_file

logger = logging.getLogger(__name__)

#: Video frames above this many pixels are refused before decoding (8K UHD fits).
DEFAULT_MAX_FRAME_PIXELS = 7680 * 4320

Sampling = Literal["uniform", "window"]
SAMPLINGS: tuple[str, ...] = ("uniform", "window")


@dataclass(frozen=True)
class VideoSampling:
    """Which frames of a clip a video encoder sees (what `--video_sampling` and `--seed` choose).

    "uniform" (our default): frames spread evenly over the whole clip. "window": consecutive
    frames, as the published demo's loader read them (32 from a random start); the window is
    centred when `seed` is None, else its start is drawn from `seed` (the same draw on every
    call, so a run is reproducible). `cache_params` names the choice in feature-cache keys, so a
    cache never serves one sampling's features for another.
    """

    mode: Sampling = "uniform"
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        if self.mode not in SAMPLINGS:
            raise ValueError(f"video sampling must be one of {SAMPLINGS}, got {self.mode!r}")

    def load(self, path: PathLike, num_frames: int, **kwargs: Any) -> np.ndarray:
        seed = self.seed if self.mode == "window" else None
        return load_video(path, num_frames, self.mode, seed=seed, **kwargs)

    def cache_params(self) -> dict[str, Any]:
        if self.mode == "uniform":
            return {"sampling": "uniform"}  # the key every earlier cache entry was written under
        return {"sampling": "window", "window_start": "centre" if self.seed is None else self.seed}


def load_video(
    path: PathLike,
    num_frames: int = 32,
    sampling: Sampling = "uniform",
    *,
    frame_stride: int = 1,
    seed: Optional[int] = None,
    size: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
) -> np.ndarray:
    """Decode `num_frames` frames of `path` to uint8 (F, H, W, 3) RGB.

    Sampling:
    - "uniform" (default): the clip's time span is cut into `num_frames` equal segments and the
      frame on screen at the middle of each segment is taken. Working in presentation time (not
      frame index) makes variable-frame-rate clips sample evenly in time.
    - "window": like the published ViViT loader, `num_frames` frames `frame_stride` apart from a
      window of consecutive frames; the window is centred, or, with `seed`, starts at a random
      frame drawn from `numpy.random.default_rng(seed)` (reproducible).
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
    if seed is not None and sampling != "window":
        raise ValueError("a seed places a window; uniform sampling has nothing random")
    rng = np.random.default_rng(seed) if seed is not None else None
    p = check_file(path)
    try:
        return _read_video(p, num_frames, sampling, frame_stride, rng, size, max_pixels)
    except FFMPEG_ERRORS as e:
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
            except FFMPEG_ERRORS as e:
                logger.warning("%s: video demuxing stopped after %d frames: %s", p, index, e)
                return
            try:
                frames = packet.decode()
            except FFMPEG_ERRORS as e:
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
