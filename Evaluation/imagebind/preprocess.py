"""ImageBind's input preprocessing without torchvision / torchaudio / pytorchvideo.

What the reference `imagebind.data` (and the published M2UGen evaluation, which called it)
computes, reproduced step by step:
- image: resize the shorter side to 224 (PIL bicubic; longer side int(224 * long / short)),
  centre crop 224 (offsets int(round((size - 224) / 2))), /255, CLIP mean/std;
- video (`load_and_transform_video_data`, as the published Video2Music evaluation called it):
  5 clips of 2 s evenly spread over the video (pytorchvideo ConstantClipsPerVideoSampler), in
  each the first and last frame whose timestamp lies in [start, end), /255, shorter side
  bilinearly scaled to 224 (torch `interpolate`, no antialias; longer side floored), CLIP
  mean/std, then 3 crops of 224 (start / centre / end along the longer side): 15 views of
  (3, 2, 224, 224), whose embeddings the model averages;
- audio (`load_and_transform_audio_data`): 16 kHz, 3 clips of 2 s evenly spread, each clip
  mean-subtracted IN PLACE (a view of the whole waveform, so overlapping clips of a short file
  see earlier subtractions, as in the reference), a Kaldi-compatible log-mel filterbank (25 ms
  symmetric Hann frames every 10 ms, per-frame DC removal, pre-emphasis 0.97, 512-point power
  spectrum, 128 triangular mel bands 20 Hz - 8 kHz, log with float32 eps floor, no dither),
  padded with zeros / cut to 204 frames, normalised with mean -4.268 and std 9.138.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
AUDIO_SR = 16000
AUDIO_MEAN, AUDIO_STD = -4.268, 9.138
AUDIO_CLIPS, VIDEO_CLIPS, CLIP_SECONDS = 3, 5, 2
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def clip_starts(duration: float | Fraction, clip_seconds: int, clips: int) -> list[Fraction]:
    """pytorchvideo's ConstantClipsPerVideoSampler: `clips` starts evenly spaced over
    [0, duration - clip_seconds] (all at 0 when the media is shorter than one clip)."""
    last = Fraction(max(duration - clip_seconds, 0))
    step = last / max(clips - 1, 1)
    starts = []
    for k in range(clips):
        starts.append(step * k)
        if step * (k + 1) > last:  # the sampler's early stop (never before `clips` when step=0)
            break
    return starts


# ---------------------------------------------------------------- image
def image_tensor(rgb: np.ndarray, size: int = 224) -> torch.Tensor:
    """uint8 (H, W, 3) -> normalised (3, size, size) float32."""
    im = Image.fromarray(np.asarray(rgb, dtype=np.uint8), mode="RGB")
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.BICUBIC)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    x = np.asarray(im, dtype=np.float32)[top:top + size, left:left + size] / 255.0
    x = (x - CLIP_MEAN) / CLIP_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


# ---------------------------------------------------------------- video
def _timeline(path: Path) -> tuple[list[int], Fraction, int, Fraction]:
    """Sorted frame timestamps (packet pts), time base, stream start, duration in seconds."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        tb, start = stream.time_base, stream.start_time or 0
        pts = sorted(p.pts for p in container.demux(stream) if p.size and p.pts is not None)
        total = stream.duration
    if not pts:
        raise ValueError(f"{path}: the video stream holds no timestamped frames")
    # pytorchvideo: duration = (stream.duration - start) * time_base, else the last frame's pts
    dur = Fraction(int((total if total is not None else pts[-1]) - start)) * Fraction(tb)
    return pts, Fraction(tb), int(start), dur


def video_clip_frames(path: Path, clips: int = VIDEO_CLIPS, clip_seconds: int = CLIP_SECONDS,
                      frames_per_clip: int = 2) -> list[np.ndarray]:
    """Per clip, `frames_per_clip` uint8 (H, W, 3) frames chosen as the reference does."""
    pts, tb, start, duration = _timeline(path)
    picks: list[list[int]] = []
    for s in clip_starts(duration, clip_seconds, clips):
        lo = math.ceil(s / tb) + start
        hi = math.ceil((s + clip_seconds) / tb) + start
        inside = [p for p in pts if lo <= p < hi]
        if not inside:
            raise ValueError(f"{path}: no frame between {float(s):.3f} s and "
                             f"{float(s) + clip_seconds:.3f} s")
        idx = np.linspace(0, len(inside) - 1, frames_per_clip).astype(np.int64)
        picks.append([inside[i] for i in idx])
    wanted = {p for clip in picks for p in clip}
    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.pts in wanted and frame.pts not in got:
                got[frame.pts] = frame.to_ndarray(format="rgb24")
    lost = sorted(wanted - set(got))
    if lost:
        raise ValueError(f"{path}: frames at pts {lost[:3]} did not decode")
    return [np.stack([got[p] for p in clip]) for clip in picks]


def _three_crops(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    """pytorchvideo uniform_crop at spatial index 0, 1, 2 of a (C, T, H, W) clip."""
    h, w = x.shape[-2:]
    y0, x0 = math.ceil((h - size) / 2), math.ceil((w - size) / 2)
    out = []
    for i in range(3):
        y, xx = y0, x0
        if h > w:
            y = {0: 0, 1: y0, 2: h - size}[i]
        else:
            xx = {0: 0, 1: x0, 2: w - size}[i]
        out.append(x[..., y:y + size, xx:xx + size])
    return out


def video_views(clips: list[np.ndarray], size: int = 224) -> torch.Tensor:
    """Clips of uint8 (T, H, W, 3) frames -> (3 * clips, 3, T, size, size) normalised views."""
    mean = torch.from_numpy(CLIP_MEAN)[:, None, None, None]
    std = torch.from_numpy(CLIP_STD)[:, None, None, None]
    views = []
    for frames in clips:
        x = torch.from_numpy(np.asarray(frames)).permute(3, 0, 1, 2).float() / 255.0
        h, w = x.shape[-2:]
        if w < h:
            new_h, new_w = int(math.floor(h / w * size)), size
        else:
            new_h, new_w = size, int(math.floor(w / h * size))
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        views += _three_crops((x - mean) / std, size)
    return torch.stack(views)


# ---------------------------------------------------------------- audio
def _mel(f: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def kaldi_mel_banks(n_mels: int = 128, n_fft: int = 512, sr: int = AUDIO_SR,
                    low: float = 20.0, high: float = 0.0) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) Kaldi mel triangles (linear in mel; Nyquist bin weight 0)."""
    high = high if high > 0 else high + sr / 2
    lo_mel, hi_mel = _mel(low), _mel(high)
    delta = (hi_mel - lo_mel) / (n_mels + 1)
    b = np.arange(n_mels)[:, None]
    left, center, right = lo_mel + b * delta, lo_mel + (b + 1) * delta, lo_mel + (b + 2) * delta
    mel = _mel(sr / n_fft * np.arange(n_fft // 2))[None, :]
    banks = np.maximum(0.0, np.minimum((mel - left) / (center - left),
                                       (right - mel) / (right - center)))
    return np.pad(banks, ((0, 0), (0, 1)))


def kaldi_fbank(wave: np.ndarray, sr: int = AUDIO_SR, n_mels: int = 128) -> np.ndarray:
    """(frames, n_mels) log-mel energies as torchaudio.compliance.kaldi.fbank computes them with
    htk_compat, hanning window, dither 0, 25 ms / 10 ms, use_energy off (snip_edges: only whole
    frames)."""
    x = np.asarray(wave, dtype=np.float64)
    win, hop = int(sr * 0.025), int(sr * 0.010)
    if len(x) < win:
        raise ValueError(f"an audio clip of {len(x)} samples is shorter than one {win}-sample "
                         "frame")
    n_fft = 1 << (win - 1).bit_length()
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][: 1 + (len(x) - win) // hop]
    frames = frames - frames.mean(axis=1, keepdims=True)
    prev = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames - 0.97 * prev
    frames = frames * np.hanning(win)  # symmetric Hann, as torch.hann_window(periodic=False)
    power = np.abs(np.fft.rfft(frames, n_fft)) ** 2
    energies = power @ kaldi_mel_banks(n_mels, n_fft, sr).T
    return np.log(np.maximum(energies, FLOAT32_EPS)).astype(np.float32)


def audio_clips(wave16k: np.ndarray, n_mels: int = 128, target_frames: int = 204,
                clips: int = AUDIO_CLIPS, clip_seconds: int = CLIP_SECONDS) -> torch.Tensor:
    """16 kHz mono waveform -> (clips, 1, n_mels, target_frames) normalised log-mel images."""
    wave = np.array(wave16k, dtype=np.float32)  # a copy: clips are mean-subtracted in place
    duration = len(wave) / AUDIO_SR
    out = []
    for s in clip_starts(duration, clip_seconds, clips):
        view = wave[int(s * AUDIO_SR):int((s + clip_seconds) * AUDIO_SR)]
        view -= view.mean()  # in place on the shared waveform, as the reference does
        mel = kaldi_fbank(view, AUDIO_SR, n_mels).T  # (n_mels, frames)
        fixed = np.zeros((n_mels, target_frames), dtype=np.float32)
        n = min(target_frames, mel.shape[1])
        fixed[:, :n] = mel[:, :n]
        out.append((fixed - AUDIO_MEAN) / AUDIO_STD)
    return torch.from_numpy(np.stack(out)[:, None])
