"""Decoder targets: 10 x the music decoder's own conditioning of each caption (what the output
projector learns to produce), computed by the frozen decoder once and cached."""

from __future__ import annotations

from typing import Optional

import torch

from llama.m2ugen import M2UGen


class TargetProvider:
    """Decoder targets (x10 conditioning) per caption, memoised and optionally cached on disk."""

    def __init__(self, model: M2UGen, cache_dir: Optional[str]) -> None:
        self.model = model
        self._memo: dict[str, torch.Tensor] = {}
        self._disk = None
        if cache_dir:
            from data.features import TextFeatureStore

            self._disk = TextFeatureStore(cache_dir, model.decoder.identity)

    def get(self, key: str) -> Optional[torch.Tensor]:
        if key in self._memo:
            return self._memo[key]
        return self._disk.lookup(key) if self._disk is not None else None

    def put(self, key: str, tensor: torch.Tensor) -> None:
        self._memo[key] = tensor
        if self._disk is not None:
            self._disk.put(key, tensor)

    def __call__(self, captions: list[str]) -> torch.Tensor:
        return self.model.decoder.targets(
            captions, cache=self, scale=self.model.cfg.projector.target_scale
        )
