"""MusicGen (transformers) as an M2UGen music decoder.

Conditioning is the T5 encoder states of the caption padded/truncated to `max_text_tokens`
(zeros at padding) -> (N, D) = (max_text_tokens, T5 width). Classifier-free guidance is ONE
batched pass: conditional and unconditional (zero) states are stacked, exactly as MusicGen's own
text path does, so both routes give identical audio for identical states.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from llama.config import DecoderConfig
from llama.decoders.base import (
    DecoderLoadError,
    MusicDecoder,
    clean_decoder_text,
    infer_padding_mask,
    resolve_seed,
)
from util.seed import seeded


class MusicGenDecoder(MusicDecoder):
    """MusicgenForConditionalGeneration driven by precomputed T5 states or by text."""

    kind = "musicgen"

    def __init__(self, cfg: DecoderConfig, model, tokenizer, device, dtype, *,
                 missing_tokenizer: str = "") -> None:
        """`tokenizer` None (a release file's MusicGen without one): the precomputed-states
        route works and the text route raises, naming `missing_tokenizer` (where it looked)."""
        super().__init__(cfg, device, dtype)
        self.missing_tokenizer = missing_tokenizer
        self.model = model.to(device=device, dtype=dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        rate = self.model.config.audio_encoder.frame_rate
        if rate != cfg.frames_per_second:
            raise DecoderLoadError(
                f"DecoderConfig.frames_per_second={cfg.frames_per_second} but the EnCodec of "
                f"{cfg.path!r} runs at {rate} frames/s"
            )

    def weights_module(self) -> torch.nn.Module:
        return self.model

    @property
    def condition_shape(self) -> tuple[int, int]:
        return self.cfg.max_text_tokens, int(self.model.config.text_encoder.d_model)

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.audio_encoder.sampling_rate)

    @property
    def frames_per_second(self) -> int:
        return int(self.model.config.audio_encoder.frame_rate)

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if self.tokenizer is None:
            raise DecoderLoadError(
                f"MusicGen {self.cfg.path!r} has no T5 tokenizer ({self.missing_tokenizer}), so "
                "it cannot turn text into music; give --music_decoder_path with a MusicGen folder "
                "or hub id that has one")
        enc = self.tokenizer(
            texts, padding="max_length", max_length=self.cfg.max_text_tokens, truncation=True,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"].to(self.device),
                "attention_mask": enc["attention_mask"].to(self.device)}

    def _conditioning(self, texts: list[str]) -> torch.Tensor:
        enc = self._tokenize(texts)
        states = self.model.text_encoder(**enc).last_hidden_state
        return states * enc["attention_mask"][..., None].to(states.dtype)

    def _generate_kwargs(
        self, seconds: float, guidance_scale: float, temperature: float, top_k: int, top_p: float
    ) -> tuple[dict[str, Any], int]:
        if not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {top_k!r}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p}")
        frames = math.ceil(seconds * self.frames_per_second - 1e-9)
        # The codebook delay pattern costs num_codebooks - 1 extra steps before the last frame.
        kwargs: dict[str, Any] = {
            "max_new_tokens": frames + self.model.decoder.num_codebooks - 1,
            "guidance_scale": guidance_scale,
            "do_sample": temperature > 0,
        }
        if temperature > 0:
            kwargs.update(temperature=float(temperature), top_k=top_k, top_p=float(top_p))
        return kwargs, frames

    def _finish(self, audio: torch.Tensor, seconds: float, frames: int) -> list[np.ndarray]:
        hop = self.sample_rate // self.frames_per_second
        if audio.shape[-1] < frames * hop:
            raise RuntimeError(
                f"MusicGen returned {audio.shape[-1]} samples, expected {frames * hop} "
                f"({frames} frames)"
            )
        n = int(round(seconds * self.sample_rate))
        audio = audio[..., :n].float().cpu().numpy()
        return [a[0] if a.shape[0] == 1 else a.T.copy() for a in audio]

    def _check_extra(self, extra: dict[str, Any]) -> None:
        steps = extra.pop("num_inference_steps", None)
        if steps is not None:
            raise ValueError("num_inference_steps applies to AudioLDM2 diffusion, not MusicGen")
        if extra:
            raise TypeError(f"unexpected MusicGen synthesis settings: {sorted(extra)}")

    @torch.no_grad()
    def synthesize(
        self,
        conditioning: torch.Tensor,
        seconds: float = 10.0,
        seed: Optional[int] = 0,
        *,
        guidance_scale: Optional[float] = None,
        temperature: float = 1.0,
        top_k: int = 250,
        top_p: float = 1.0,
        scale: float = 10.0,
        attention_mask: Optional[torch.Tensor] = None,
        **extra: Any,
    ) -> tuple[list[np.ndarray], int]:
        """Waveforms from projector output (B, N, D); it is divided by `scale` first.

        Guidance > 1 runs conditional + unconditional (zero states, zero mask) in one batch.
        One seed drives the whole batch. Returns ([float32 (T,) or (T, C)] * B, sample rate).
        """
        self._check_extra(extra)
        cond = self._check_conditioning(conditioning)
        seconds = self._check_seconds(seconds)
        g = self._guidance(guidance_scale)
        kwargs, frames = self._generate_kwargs(seconds, g, temperature, top_k, top_p)
        states = (cond / scale).to(device=self.device, dtype=self.dtype)
        if attention_mask is None:
            mask = infer_padding_mask(states, self.cfg.pad_norm_threshold)
        else:
            if tuple(attention_mask.shape) != tuple(states.shape[:2]):
                raise ValueError(
                    f"attention_mask must be {tuple(states.shape[:2])}, "
                    f"got {tuple(attention_mask.shape)}"
                )
            mask = attention_mask.to(self.device).long()
        b = states.shape[0]
        if g > 1:
            states = torch.cat([states, torch.zeros_like(states)])
            mask = torch.cat([mask, torch.zeros_like(mask)])
        from transformers.modeling_outputs import BaseModelOutput

        with self._lock, seeded(resolve_seed(seed)):
            audio = self.model.generate(
                inputs=torch.zeros(b, 1, dtype=torch.long, device=self.device),
                encoder_outputs=BaseModelOutput(last_hidden_state=states),
                attention_mask=mask,
                **kwargs,
            )
        return self._finish(audio, seconds, frames), self.sample_rate

    @torch.no_grad()
    def synthesize_from_text(
        self,
        texts: Sequence[str],
        seconds: float = 10.0,
        seed: Optional[int] = 0,
        *,
        guidance_scale: Optional[float] = None,
        temperature: float = 1.0,
        top_k: int = 250,
        top_p: float = 1.0,
        **extra: Any,
    ) -> tuple[list[np.ndarray], int]:
        """The published route: MusicGen's own text path (T5 inside `generate`)."""
        self._check_extra(extra)
        if isinstance(texts, str) or not texts:
            raise ValueError("synthesize_from_text takes a non-empty list of texts")
        seconds = self._check_seconds(seconds)
        g = self._guidance(guidance_scale)
        kwargs, frames = self._generate_kwargs(seconds, g, temperature, top_k, top_p)
        enc = self._tokenize([clean_decoder_text(t) for t in texts])
        with self._lock, seeded(resolve_seed(seed)):
            audio = self.model.generate(**enc, **kwargs)
        return self._finish(audio, seconds, frames), self.sample_rate


def load_musicgen(cfg: DecoderConfig, dtype: torch.dtype):
    """(model, tokenizer) of a published MusicGen from a hub id or a local folder."""
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    try:
        model = MusicgenForConditionalGeneration.from_pretrained(cfg.path, dtype=dtype)
        local = Path(cfg.path)
        tokenizer = (None if local.is_dir() and not has_tokenizer_files(local)
                     else AutoTokenizer.from_pretrained(cfg.path))
    except (OSError, ValueError) as exc:
        raise DecoderLoadError(
            f"could not load MusicGen from {cfg.path!r} (a hub id or a local folder with "
            f"config.json, weights and tokenizer files; offline runs need them cached): {exc}"
        ) from exc
    return model, tokenizer


def has_tokenizer_files(folder: Path) -> bool:
    """Whether a local folder holds a tokenizer. A MusicGen folder without one (an imported
    release's MusicGen) still runs from projector states; its text route reports the lack."""
    return any((folder / f).is_file()
               for f in ("tokenizer.json", "spiece.model", "tokenizer_config.json"))
