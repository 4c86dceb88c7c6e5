"""What every music decoder shares: the `MusicDecoder` API, input checks and padding helpers.

A decoder does two jobs (docs/MODEL.md section 4):
- `targets(captions)`: the decoder's own conditioning of a caption, x10, in the projector's (N, D)
  layout. These are the MSE targets of stage 2; they come from frozen models, so they can be cached
  by caption text (any object with `get(key) -> Tensor | None` and `put(key, tensor)`).
- `synthesize(conditioning)`: waveforms from projector output (divided by 10), the design's route;
  `synthesize_from_text(texts)` is the published route (re-prompt the decoder with text).

Padding masks at inference: projector outputs carry no mask, so a position whose RMS is below
`DecoderConfig.pad_norm_threshold` x the largest position RMS of that sample counts as padding
(exact targets are exactly zero there). Pass `attention_mask=` to override.

Waveforms are returned as arrays; writing them to disk is the caller's job (`data.media`).
"""

from __future__ import annotations

import math
import re
import threading
from typing import Any, Optional, Protocol, Sequence

import numpy as np
import torch

from llama.config import DecoderConfig
from util.hashing import module_fingerprint

SCHEDULERS = ("ddim", "dpm-multistep")
SCHEDULER_DEFAULT_STEPS = {"ddim": 200, "dpm-multistep": 25}
_AUD_RE = re.compile(r"\[AUD\d+\]")


class DecoderLoadError(RuntimeError):
    """A decoder checkpoint could not be loaded (names the path and the reason)."""


class TargetCache(Protocol):
    """Anything with a text-keyed `get(key)` (or `lookup(key)`, as `data.features.
    TextFeatureStore`) returning a tensor or None, and `put(key, tensor)`; if `put` returns a
    tensor (the stored, possibly rounded, value) that value is used so that fresh and cached
    targets are identical."""

    def get(self, key: str) -> Optional[torch.Tensor]: ...

    def put(self, key: str, tensor: torch.Tensor) -> Optional[torch.Tensor]: ...


# ---------------------------------------------------------------------------------------------
# Small shared helpers


def clean_decoder_text(text: str) -> str:
    """Remove `[AUDk]` markers (they mean nothing to a decoder) and tidy the whitespace."""
    return " ".join(_AUD_RE.sub(" ", text).split())


def infer_padding_mask(states: torch.Tensor, rel_threshold: float) -> torch.Tensor:
    """(B, N, D) -> (B, N) long mask: 1 where a position's RMS >= rel_threshold x the sample max.

    All-zero samples get an all-zero mask (the unconditional input).
    """
    rms = states.float().pow(2).mean(-1).sqrt()
    peak = rms.amax(dim=1, keepdim=True)
    return ((rms >= rel_threshold * peak) & (peak > 0)).long()


def pad_states(states: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, L, D) with L <= length -> (length, D) zero-padded + (length,) mask."""
    n = states.shape[1]
    if n > length:
        raise ValueError(f"{n} text tokens exceed max_text_tokens={length}")
    out = states.new_zeros(length, states.shape[-1])
    out[:n] = states[0]
    mask = torch.zeros(length, dtype=torch.long, device=states.device)
    mask[:n] = 1
    return out, mask


def resolve_seed(seed: Optional[int]) -> int:
    """The given seed, checked, or a fresh random one for `None` (an unseeded, varied call)."""
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1)[0] % (2**31 - 1))
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


def check_positive_int(name: str, value: Any) -> int:
    """`value` as an int, or a ValueError naming the setting `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# Base class


class MusicDecoder:
    """Common API: targets for training, waveform synthesis for inference."""

    kind: str = ""

    def __init__(self, cfg: DecoderConfig, device: torch.device, dtype: torch.dtype) -> None:
        self.cfg = cfg
        self.device = device
        self.dtype = dtype
        self._lock = threading.RLock()  # schedulers/generation state are per-call, not re-entrant
        self._identity: Optional[str] = None

    # -- shape and identity --------------------------------------------------------------------
    @property
    def condition_shape(self) -> tuple[int, int]:
        raise NotImplementedError

    @property
    def sample_rate(self) -> int:
        raise NotImplementedError

    @property
    def identity(self) -> str:
        """Names everything a target depends on (cache keys include it): the family, a content
        fingerprint of the weights (not the path: a hub id and a local copy agree, a fine-tuned
        copy does not), the conditioning shape and the dtype the targets are computed in."""
        if self._identity is None:
            n, d = self.condition_shape
            weights = module_fingerprint(self.weights_module())
            self._identity = f"{self.kind}:{weights}:{n}x{d}"
        return f"{self._identity}:{str(self.dtype).replace('torch.', '')}"

    def weights_module(self) -> torch.nn.Module:
        """The module whose weights define the targets (fingerprinted for `identity`)."""
        raise NotImplementedError

    # -- targets -------------------------------------------------------------------------------
    def target_key(self, caption: str) -> str:
        return f"decoder-target|{self.identity}|{clean_decoder_text(caption)}"

    def targets(
        self,
        captions: Sequence[str],
        cache: Optional[TargetCache] = None,
        scale: float = 10.0,
    ) -> torch.Tensor:
        """(B, N, D) float32 on CPU: `scale` x the decoder's conditioning of each caption.

        The unscaled conditioning is what gets cached (so `scale` can change freely).
        """
        if isinstance(captions, str):
            raise TypeError("targets() takes a list of captions, not one string")
        texts = [clean_decoder_text(c) for c in captions]
        found: dict[int, torch.Tensor] = {}
        if cache is not None:
            getter = getattr(cache, "get", None) or getattr(cache, "lookup", None)
            if getter is None or not callable(getattr(cache, "put", None)):
                raise TypeError(
                    f"{type(cache).__name__} is no target cache: needs get (or lookup) and put"
                )
            for i, text in enumerate(texts):
                hit = getter(self.target_key(text))
                if hit is not None:
                    if tuple(hit.shape) != self.condition_shape:
                        raise ValueError(
                            f"cached decoder target for {text!r} has shape {tuple(hit.shape)}, "
                            f"expected {self.condition_shape} (stale cache for {self.identity}?)"
                        )
                    found[i] = hit.float().cpu()
        todo = [i for i in range(len(texts)) if i not in found]
        if todo:
            fresh = self.conditioning([texts[i] for i in todo])
            for j, i in enumerate(todo):
                found[i] = fresh[j]
                if cache is not None:
                    stored = cache.put(self.target_key(texts[i]), fresh[j].clone())
                    if isinstance(stored, torch.Tensor):
                        found[i] = stored.float().cpu()
        if not texts:
            return torch.zeros(0, *self.condition_shape)
        return torch.stack([found[i] for i in range(len(texts))]) * scale

    def conditioning(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, N, D) float32 CPU, unscaled, uncached (a `compute` function for feature stores)."""
        with self._lock, torch.no_grad():
            return self._conditioning([clean_decoder_text(t) for t in texts]).float().cpu()

    def _conditioning(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    # -- validation ----------------------------------------------------------------------------
    def _check_seconds(self, seconds: float) -> float:
        if not isinstance(seconds, (int, float, np.floating)) or isinstance(seconds, bool):
            raise ValueError(f"seconds must be a number, got {seconds!r}")
        seconds = float(seconds)
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        if seconds > self.cfg.max_seconds:
            raise ValueError(
                f"seconds={seconds} exceeds DecoderConfig.max_seconds={self.cfg.max_seconds}"
            )
        return seconds

    def _guidance(self, guidance_scale: Optional[float]) -> float:
        """The given guidance, or the config's; >= 1 (1 disables guidance)."""
        return self._check_guidance(
            self.cfg.guidance_scale if guidance_scale is None else guidance_scale
        )

    @staticmethod
    def _check_guidance(guidance_scale: float) -> float:
        if not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        if guidance_scale < 1:
            raise ValueError(
                f"guidance_scale must be >= 1 (1 disables classifier-free guidance), got "
                f"{guidance_scale}"
            )
        return float(guidance_scale)

    def _check_conditioning(self, conditioning: torch.Tensor) -> torch.Tensor:
        if not isinstance(conditioning, torch.Tensor):
            raise TypeError(f"conditioning must be a tensor, got {type(conditioning).__name__}")
        if conditioning.dim() != 3 or tuple(conditioning.shape[1:]) != self.condition_shape:
            raise ValueError(
                f"conditioning must have shape (batch, {self.condition_shape[0]}, "
                f"{self.condition_shape[1]}) for {self.identity}, got {tuple(conditioning.shape)}"
            )
        if conditioning.shape[0] == 0:
            raise ValueError("conditioning has an empty batch")
        if not torch.isfinite(conditioning).all():
            raise ValueError("conditioning contains NaN or inf")
        return conditioning
