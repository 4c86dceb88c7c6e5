"""Media loading for M2UGen: audio, images and video as plain numpy arrays.

Why one package: every data path (training, feature cache, inference, the demo) must decode media
the same way and must fail the same way. Any problem with a file -- missing, empty, truncated,
wrong content behind a right extension, random bytes, an unsupported codec, a decompression bomb --
raises `MediaError` naming the file and the reason, quickly and without unbounded memory. Only the
exception types the decoding libraries document for bad input are caught and re-raised; nothing is
swallowed and no other exception type escapes for a bad file.

- `load_audio(path, sr)` (audio.py): float32 mono in [-1, 1] at `sr` Hz.
- `load_image(path)` (image.py): uint8 RGB (H, W, 3), EXIF orientation applied; the pixel count is
  checked from the header before any pixel is decoded.
- `load_video(path, num_frames, sampling)` (video.py): uint8 (F, H, W, 3); frames sampled uniformly
  over the clip (default) or from a window of consecutive frames (the published demo's loader);
  `VideoSampling` is that choice as one value (CLI flags -> loader -> feature-cache key).
- `write_wav(path, wave, sr)` (wav.py): the one WAV writer (atomic; NaN/inf refused; nothing
  clipped).
- `media_duration(path, limit)` (duration.py): playing time of an audio/video file without
  decoding it, so servers refuse long uploads cheaply.
- `MediaError` (errors.py): the one error type, naming the file and the reason.
"""

from __future__ import annotations

from data.media.audio import DEFAULT_MAX_AUDIO_SECONDS, load_audio
from data.media.duration import media_duration
from data.media.errors import MediaError
from data.media.image import DEFAULT_MAX_IMAGE_PIXELS, load_image
from data.media.video import DEFAULT_MAX_FRAME_PIXELS, SAMPLINGS, VideoSampling, load_video
from data.media.wav import WAV_SUBTYPES, write_wav

__all__ = [
    "MediaError",
    "load_audio",
    "load_image",
    "load_video",
    "VideoSampling",
    "SAMPLINGS",
    "media_duration",
    "write_wav",
    "WAV_SUBTYPES",
    "DEFAULT_MAX_AUDIO_SECONDS",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DEFAULT_MAX_FRAME_PIXELS",
]
