"""Image/video-to-music relevance without ImageBind: a transformers-native FALLBACK.

The paper ranked systems by ImageBind (imagebind_huge) similarity between the input image/video
and the generated music; that model is `Evaluation.imagebind` (`--relevance_model imagebind`,
user-supplied weights). This module is the fallback when those weights are not available, and
its numbers are NOT comparable with the paper. What it computes instead:
1. caption the input with a native captioner (BLIP, `BlipForConditionalGeneration`): an image
   once; a video on `video_frames` uniformly spaced frames (1 = the middle frame);
2. embed each caption with CLAP's text tower; a video's frame embeddings are L2-normalised,
   averaged and normalised again;
3. similarity = cosine between that embedding and the CLAP audio embedding of the music.
It measures "does the music match what a captioner says is in the picture", which misses
everything a caption does not put into words (mood, motion, colour palette).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from Evaluation.metrics.audio import cosine_rows


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class CaptionClapRelevance:
    """Captioner + CLAP relevance (not comparable with the paper's ImageBind ranks)."""

    audio_kind = "clap"  # the music side is the CLAP audio embedding `score` computes anyway

    def __init__(self, captioner: str, clap, device: str = "cpu", *, video_frames: int = 3,
                 max_new_tokens: int = 30) -> None:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        if video_frames < 1:
            raise ValueError(f"video_frames must be >= 1, got {video_frames}")
        self.model = BlipForConditionalGeneration.from_pretrained(captioner).eval().to(device)
        self.processor = BlipProcessor.from_pretrained(captioner)
        self.clap = clap
        self.device = device
        self.video_frames = video_frames
        self.max_new_tokens = max_new_tokens
        self.identity = (f"caption:{captioner} + {clap.identity} text-audio cosine "
                         "(fallback, NOT comparable with the paper's ImageBind)")
        self.last_captions: list[list[str]] = []  # per item, for inspection

    def frames(self, modality: str, path: Path) -> list[np.ndarray]:
        """The pictures captioned for one input (uint8 RGB arrays)."""
        from data.media import load_image, load_video

        if modality == "image":
            return [load_image(path)]
        if modality == "video":
            return list(load_video(path, num_frames=self.video_frames))
        raise ValueError(f"relevance is defined for image or video inputs, not {modality!r}")

    @torch.no_grad()
    def caption(self, images: Sequence[np.ndarray]) -> list[str]:
        """Greedy BLIP captions of RGB arrays."""
        inp = self.processor(images=list(images), return_tensors="pt").to(self.device)
        ids = self.model.generate(**inp, max_new_tokens=self.max_new_tokens, do_sample=False)
        return [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]

    def media_embeddings(self, modality: str, paths: Sequence[Path]) -> np.ndarray:
        """(n, d) unit CLAP text embeddings of the inputs' captions."""
        out, self.last_captions = [], []
        for path in paths:
            caps = self.caption(self.frames(modality, Path(path)))
            self.last_captions.append(caps)
            out.append(_unit(_unit(self.clap.text(caps)).mean(axis=0)))
        return np.stack(out)

    @staticmethod
    def similarity(media_emb: np.ndarray, audio_emb: np.ndarray) -> np.ndarray:
        """Per-row cosine between input embeddings and the generated music's CLAP embeddings."""
        return cosine_rows(media_emb, audio_emb)
