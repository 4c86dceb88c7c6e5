"""Image/video-to-music relevance with ImageBind, as the paper measured it.

similarity(input, music) = cosine between the ImageBind vision embedding of the input (an image:
one 224 centre crop; a video: the mean over 5 clips x 3 crops) and the ImageBind audio embedding
of the music (the mean over 3 clips of 2 s). Weights: the user's `imagebind_huge.pth` from
facebookresearch/ImageBind (https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth,
CC-BY-NC 4.0, non-commercial use only); nothing is downloaded here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

import Evaluation.imagebind.preprocess as P
from Evaluation.imagebind.config import HUGE, USED, ImageBindConfig, checkpoint_shapes, modality_of
from Evaluation.imagebind.model import ImageBindVisionAudio
from Evaluation.metrics.audio import cosine_rows

SHOW = 5


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from `torch.load(weights_only=True)`, memory-mapped when the format allows
    (only the vision and audio tensors are then ever read from disk)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ImageBind weights {p} do not exist (imagebind_huge.pth from "
                                "facebookresearch/ImageBind)")
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ValueError(f"{p}: not a state dict of tensors (expected imagebind_huge.pth)")
    return state


def check_checkpoint(state: dict[str, torch.Tensor], cfg: ImageBindConfig, where: str) -> None:
    """Exact key and shape check against `checkpoint_shapes(cfg)`; the error names the first
    missing, unexpected and mis-shaped tensors."""
    want = checkpoint_shapes(cfg)
    missing = sorted(set(want) - set(state))
    extra = sorted(set(state) - set(want))
    bad = sorted(k for k in set(want) & set(state) if tuple(state[k].shape) != want[k])
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (first: {', '.join(missing[:SHOW])})")
    if extra:
        problems.append(f"{len(extra)} unexpected (first: {', '.join(extra[:SHOW])})")
    if bad:
        problems.append("wrong shapes: " + ", ".join(
            f"{k} {tuple(state[k].shape)} != {want[k]}" for k in bad[:SHOW]))
    if problems:
        raise ValueError(f"{where} is not an ImageBind checkpoint of the expected configuration: "
                         + "; ".join(problems))


def load_model(path: str | Path, cfg: ImageBindConfig = HUGE,
               device: str = "cpu") -> ImageBindVisionAudio:
    """Vision + audio towers filled from the file (strict), in float32, eval mode."""
    state = read_checkpoint(path)
    check_checkpoint(state, cfg, str(path))
    used = {k: v.float() for k, v in state.items() if modality_of(k) in USED}
    with torch.device("meta"):  # no random init of ~700 M parameters: the file fills them
        model = ImageBindVisionAudio(cfg)
    model.load_state_dict(used, strict=True, assign=True)
    return model.eval().to(device)


class ImageBindRelevance:
    """The paper's relevance model: ImageBind vision (input) vs audio (music) embeddings."""

    sample_rate = P.AUDIO_SR
    audio_kind = "imagebind"  # the Features memo key of its audio embeddings

    def __init__(self, weights: str | Path, device: str = "cpu", *,
                 config: ImageBindConfig = HUGE, batch_size: int = 8) -> None:
        self.cfg = config
        self.model = load_model(weights, config, device)
        self.device = device
        self.batch = max(1, batch_size)
        name = "imagebind_huge" if config == HUGE else f"imagebind({config})"
        self.identity = (f"{name}:{Path(weights).name} vision-audio cosine (image: 224 centre "
                         "crop; video: 5 clips x 2 frames x 3 crops; audio: 3 x 2 s 128-bin "
                         "fbank at 16 kHz)")

    @torch.no_grad()
    def _embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Post-processed embeddings of single clips/images, `batch` at a time."""
        parts = [self.model.embed_clips(modality, x[i:i + self.batch].to(self.device))
                 for i in range(0, len(x), self.batch)]
        return torch.cat(parts).cpu()

    def image(self, rgb: Sequence[np.ndarray]) -> np.ndarray:
        """(n, out_dim) unit embeddings of uint8 RGB images."""
        x = torch.stack([P.image_tensor(im, self.cfg.image_size) for im in rgb])
        return self._embed("vision", x).double().numpy()

    def video(self, path: Path) -> np.ndarray:
        """(out_dim,) mean of the unit embeddings of a video's 15 views."""
        from data.media import MediaError

        try:
            clips = P.video_clip_frames(Path(path), frames_per_clip=self.cfg.video_frames)
        except (ValueError, av_errors()) as exc:
            raise MediaError(path, f"cannot sample ImageBind clips ({exc})") from exc
        views = P.video_views(clips, self.cfg.image_size)
        return self._embed("vision", views).mean(dim=0).double().numpy()

    def media_embeddings(self, modality: str, paths: Sequence[Path]) -> np.ndarray:
        """(n, out_dim) ImageBind embeddings of the inputs (images or videos)."""
        from data.media import load_image

        if modality == "image":
            return np.concatenate([self.image([load_image(p)]) for p in paths])
        if modality == "video":
            return np.stack([self.video(Path(p)) for p in paths])
        raise ValueError(f"relevance is defined for image or video inputs, not {modality!r}")

    def audio(self, waves16k: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per 16 kHz waveform, the mean of its 3 clips' scaled unit audio embeddings."""
        cfg = self.cfg
        out = []
        for w in waves16k:
            clips = P.audio_clips(w, cfg.mel_bins, cfg.audio_frames)
            out.append(self._embed("audio", clips).mean(dim=0).double().numpy())
        return out

    @staticmethod
    def similarity(media_emb: np.ndarray, audio_emb: np.ndarray) -> np.ndarray:
        """Per-row cosine between input and music embeddings."""
        return cosine_rows(media_emb, audio_emb)


def av_errors() -> type[Exception]:
    """PyAV's error base class (decoding failures of a video)."""
    import av

    return av.FFmpegError
