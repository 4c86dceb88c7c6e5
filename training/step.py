"""One collated batch -> the loss: media features batched per modality, decoder targets for the
music rows, each loss term weighted by this rank's share of the global batch."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from data.augment import random_time_crop
from llama.config import TrainSettings
from llama.m2ugen import LossOutput, M2UGen
from llama.prompt import IGNORE_INDEX
from training.targets import TargetProvider


def loss_counts(batch: dict[str, Any]) -> list[float]:
    """Denominators of the two loss terms: target tokens (cross-entropy) and music rows (MSE)."""
    tokens = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
    return [float(tokens), float(batch["music_mask"].sum())]


def batch_media(model: M2UGen, batch: dict[str, Any],
                audio_crop: float = 1.0) -> dict[str, tuple[list[int], Any]]:
    """Per modality present in a collated batch: (its rows, the encoder's collated input), music
    randomly cropped to at least `audio_crop` of each clip when it is below 1."""
    media = {}
    for modality, group in batch["media"].items():
        rows = group["index"].tolist()
        if not rows:
            continue
        items = group["data"]
        if modality == "audio" and audio_crop < 1.0:
            items = [random_time_crop(x, audio_crop) for x in items]
        media[modality] = (rows, model.encoder(modality).collate(items))
    return media


def make_step(model: M2UGen, forward: Any, targets: TargetProvider, settings: TrainSettings,
              device: torch.device):
    """(batch (data.collate), term weights) -> LossOutput, media features batched per modality.

    `forward` is the model as prepared by accelerate (the DDP wrapper when distributed), so the
    loss call goes through it and gradients are synchronised.
    """

    def step(batch: dict[str, Any], weights: Sequence[float] = (1.0, 1.0)) -> LossOutput:
        media = batch_media(model, batch, settings.audio_crop)
        music_rows = batch["music_mask"].nonzero().flatten()
        music_targets = aud = None
        if music_rows.numel():
            captions = [batch["music_captions"][i] for i in music_rows.tolist()]
            music_targets = targets(captions).to(device)
            aud = batch["aud_positions"][music_rows]
        return forward(
            batch["input_ids"], batch["labels"], media=media,
            music_rows=music_rows if music_rows.numel() else None,
            aud_positions=aud, music_targets=music_targets,
            ce_weight=settings.ce_weight * weights[0], mse_weight=settings.mse_weight * weights[1],
        )

    return step
