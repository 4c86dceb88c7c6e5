"""AudioLDM2 (diffusers) as an M2UGen music decoder.

Conditioning is the pipeline's own `encode_prompt` T5 prompt embeddings (padded with zeros to
`max_text_tokens`) plus the GPT-2 generated embeddings, flattened into one vector -> (N, D) =
(1, max_text_tokens*T5 width + n_generated*GPT-2 width); `split_conditioning` undoes the layout.
Several waveforms per prompt are ranked by the pipeline's CLAP model against a text.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import numpy as np
import torch

from llama.config import DecoderConfig
from llama.decoders.base import (
    SCHEDULER_DEFAULT_STEPS,
    SCHEDULERS,
    DecoderLoadError,
    MusicDecoder,
    check_positive_int,
    clean_decoder_text,
    infer_padding_mask,
    pad_states,
    resolve_seed,
)

log = logging.getLogger(__name__)


class AudioLDM2Decoder(MusicDecoder):
    """AudioLDM2Pipeline driven by (prompt_embeds, generated_prompt_embeds) or by text."""

    kind = "audioldm2"

    def __init__(self, cfg: DecoderConfig, pipe, device, dtype) -> None:
        super().__init__(cfg, device, dtype)
        if cfg.scheduler not in SCHEDULERS:
            raise ValueError(
                f"DecoderConfig.scheduler must be one of {SCHEDULERS}, got {cfg.scheduler!r}"
            )
        self.pipe = pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        for name in ("vae", "text_encoder", "text_encoder_2", "projection_model", "language_model",
                     "unet", "vocoder"):
            module = getattr(self.pipe, name, None)
            if module is not None:
                module.eval().requires_grad_(False)
        # T5 prompt embeddings are truncated at max_text_tokens on both routes (128 published,
        # docs/MODEL.md section 4).
        self.pipe.tokenizer_2.model_max_length = cfg.max_text_tokens
        self._base_scheduler_config = dict(self.pipe.scheduler.config)
        self._schedulers: dict[str, Any] = {}
        self._negatives: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._warned_no_rank_text = False

    # -- layout --------------------------------------------------------------------------------
    @property
    def t5_dim(self) -> int:
        return int(self.pipe.text_encoder_2.config.d_model)

    @property
    def gpt_dim(self) -> int:
        return int(self.pipe.language_model.config.n_embd)

    @property
    def n_generated(self) -> int:
        return int(getattr(self.pipe.language_model.config, "max_new_tokens", None) or 8)

    def weights_module(self) -> torch.nn.Module:
        """The text side the targets come from (CLAP text, T5, projection, GPT-2)."""
        names = ("text_encoder", "text_encoder_2", "projection_model", "language_model")
        return torch.nn.ModuleDict({n: getattr(self.pipe, n) for n in names})

    @property
    def condition_shape(self) -> tuple[int, int]:
        return 1, self.cfg.max_text_tokens * self.t5_dim + self.n_generated * self.gpt_dim

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.vocoder.config.sampling_rate)

    def join_conditioning(
        self, prompt_embeds: torch.Tensor, generated: torch.Tensor
    ) -> torch.Tensor:
        """(B, max_text_tokens, T5) + (B, n_generated, GPT-2) -> (B, 1, D) projector layout."""
        b = prompt_embeds.shape[0]
        return torch.cat([prompt_embeds.reshape(b, -1), generated.reshape(b, -1)], dim=1)[:, None]

    def split_conditioning(self, conditioning: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, D) -> prompt_embeds (B, max_text_tokens, T5), generated (B, n_gen, GPT-2)."""
        b = conditioning.shape[0]
        flat = conditioning.reshape(b, -1)
        cut = self.cfg.max_text_tokens * self.t5_dim
        return (flat[:, :cut].reshape(b, self.cfg.max_text_tokens, self.t5_dim),
                flat[:, cut:].reshape(b, self.n_generated, self.gpt_dim))

    # -- encoding ------------------------------------------------------------------------------
    def _encode_one(self, text: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pipeline's own encode_prompt for ONE text (so GPT-2 sees no batch padding)."""
        prompt_embeds, _, generated = self.pipe.encode_prompt(
            prompt=[text], device=self.device, num_waveforms_per_prompt=1,
            do_classifier_free_guidance=False,
        )
        padded, mask = pad_states(prompt_embeds, self.cfg.max_text_tokens)
        return padded, mask, generated[0]

    def _conditioning(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            padded, _, generated = self._encode_one(text)
            rows.append(self.join_conditioning(padded[None], generated[None])[0])
        return torch.stack(rows)

    def _negative(self, text: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if text not in self._negatives:
            with torch.no_grad():
                self._negatives[text] = self._encode_one(clean_decoder_text(text))
        return self._negatives[text]

    def _scheduler(self, name: str):
        if name not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {name!r}")
        if name not in self._schedulers:
            from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

            cls = DDIMScheduler if name == "ddim" else DPMSolverMultistepScheduler
            self._schedulers[name] = cls.from_config(self._base_scheduler_config)
        return self._schedulers[name]

    # -- synthesis -----------------------------------------------------------------------------
    def _settings(
        self, seconds, guidance_scale, num_inference_steps, scheduler, num_waveforms
    ) -> tuple[float, float, int, str, int]:
        seconds = self._check_seconds(seconds)
        vocoder = self.pipe.vocoder.config
        hop_seconds = float(np.prod(vocoder.upsample_rates)) / vocoder.sampling_rate
        minimum = hop_seconds * self.pipe.vae_scale_factor
        if seconds < minimum:
            raise ValueError(f"seconds must be >= {minimum} for this AudioLDM2, got {seconds}")
        g = self._guidance(guidance_scale)
        name = scheduler or self.cfg.scheduler
        if name not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {name!r}")
        if num_inference_steps is None:
            num_inference_steps = (self.cfg.num_inference_steps if name == self.cfg.scheduler
                                   else SCHEDULER_DEFAULT_STEPS[name])
        steps = check_positive_int("num_inference_steps", num_inference_steps)
        n = check_positive_int(
            "num_waveforms_per_prompt",
            self.cfg.num_waveforms_per_prompt if num_waveforms is None else num_waveforms,
        )
        return seconds, g, steps, name, n

    def _run(
        self,
        prompt_embeds: torch.Tensor,
        mask: torch.Tensor,
        generated: torch.Tensor,
        negative: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        *,
        seconds: float,
        guidance: float,
        steps: int,
        scheduler: str,
        n: int,
        seed: Optional[int],
        rank_texts: Optional[Sequence[str]],
        eta: float,
    ) -> list[np.ndarray]:
        b = prompt_embeds.shape[0]
        if n > 1 and rank_texts is None:
            if not self._warned_no_rank_text:
                log.warning(
                    "AudioLDM2: ranking %d waveforms needs text (CLAP scores audio against text); "
                    "without rank_texts one waveform per prompt is generated (warned once)", n,
                )
                self._warned_no_rank_text = True
            n = 1
        if rank_texts is not None and len(rank_texts) != b:
            raise ValueError(f"rank_texts has {len(rank_texts)} texts for a batch of {b}")
        kwargs: dict[str, Any] = {}
        if guidance > 1:
            neg_embeds, neg_mask, neg_generated = negative
            kwargs.update(
                negative_prompt_embeds=neg_embeds, negative_attention_mask=neg_mask,
                negative_generated_prompt_embeds=neg_generated,
            )
        with self._lock:
            self.pipe.scheduler = self._scheduler(scheduler)
            generator = torch.Generator(device=self.device).manual_seed(resolve_seed(seed))
            audio = self.pipe(
                prompt_embeds=prompt_embeds, attention_mask=mask,
                generated_prompt_embeds=generated, num_inference_steps=steps,
                guidance_scale=guidance, num_waveforms_per_prompt=n, audio_length_in_s=seconds,
                generator=generator, eta=eta, output_type="pt", **kwargs,
            ).audios
            audio = audio.float().cpu()
            if n > 1:
                audio = self._rank(audio, [clean_decoder_text(t) for t in rank_texts], n)
        return [a.numpy().copy() for a in audio]

    def _rank(self, audio: torch.Tensor, texts: list[str], n: int) -> torch.Tensor:
        """Best of n per prompt by CLAP text-audio similarity (within each prompt's group)."""
        from transformers import ClapModel

        clap = self.pipe.text_encoder
        extractor = getattr(self.pipe, "feature_extractor", None)
        if not isinstance(clap, ClapModel) or extractor is None:
            log.warning("AudioLDM2: no CLAP model in this pipeline; keeping the first waveform")
            return audio[::n]
        import librosa

        waves = audio.numpy()
        if self.sample_rate != extractor.sampling_rate:
            waves = librosa.resample(
                waves, orig_sr=self.sample_rate, target_sr=extractor.sampling_rate
            )
        feats = extractor(list(waves), return_tensors="pt", sampling_rate=extractor.sampling_rate)
        tok = self.pipe.tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
        with torch.no_grad():
            out = clap(
                input_ids=tok["input_ids"].to(self.device),
                attention_mask=tok["attention_mask"].to(self.device),
                input_features=feats["input_features"].to(self.device, clap.dtype),
                is_longer=feats.get("is_longer"),
            )
        scores = out.logits_per_text.float().cpu()  # (B, B*n)
        best = [b * n + int(scores[b, b * n:(b + 1) * n].argmax()) for b in range(len(texts))]
        return audio[best]

    @torch.no_grad()
    def synthesize(
        self,
        conditioning: torch.Tensor,
        seconds: float = 10.0,
        seed: Optional[int] = 0,
        *,
        guidance_scale: Optional[float] = None,
        num_inference_steps: Optional[int] = None,
        scheduler: Optional[str] = None,
        num_waveforms_per_prompt: Optional[int] = None,
        negative_prompt: Optional[str] = None,
        negative_conditioning: Optional[torch.Tensor] = None,
        rank_texts: Optional[Sequence[str]] = None,
        scale: float = 10.0,
        attention_mask: Optional[torch.Tensor] = None,
        eta: float = 0.0,
    ) -> tuple[list[np.ndarray], int]:
        """Waveforms from projector output (B, 1, D), divided by `scale` and split into
        prompt_embeds + generated_prompt_embeds. Negative conditioning (guidance > 1): the
        pipeline's encoding of `negative_prompt` (default `DecoderConfig.negative_prompt`), or
        `negative_conditioning` in the projector layout/scale. With several waveforms per prompt
        the best one by CLAP against `rank_texts` is returned (ranking needs text: without it
        a single waveform is generated and a warning says so).

        The negative prompt is encoded on its own; the pipeline's text route instead pads or
        truncates it to the prompt's token count (so the two agree when those counts match).
        """
        cond = self._check_conditioning(conditioning)
        seconds, g, steps, name, n = self._settings(
            seconds, guidance_scale, num_inference_steps, scheduler, num_waveforms_per_prompt
        )
        prompt_embeds, generated = self.split_conditioning(cond / scale)
        dtype = self.pipe.text_encoder_2.dtype
        prompt_embeds = prompt_embeds.to(self.device, dtype)
        generated = generated.to(self.device, self.pipe.language_model.dtype)
        if attention_mask is None:
            mask = infer_padding_mask(prompt_embeds, self.cfg.pad_norm_threshold)
        else:
            mask = attention_mask.to(self.device).long()
        b = prompt_embeds.shape[0]
        negative = None
        if g > 1:
            if negative_conditioning is not None:
                if negative_prompt is not None:
                    raise ValueError("give negative_prompt or negative_conditioning, not both")
                neg = self._check_conditioning(negative_conditioning).expand(b, -1, -1)
                neg_embeds, neg_generated = self.split_conditioning(neg / scale)
                neg_embeds = neg_embeds.to(self.device, dtype)
                neg_mask = infer_padding_mask(neg_embeds, self.cfg.pad_norm_threshold)
                negative = (neg_embeds, neg_mask, neg_generated.to(self.device, generated.dtype))
            else:
                text = self.cfg.negative_prompt if negative_prompt is None else negative_prompt
                e, m, gen = self._negative(text)
                negative = (e[None].expand(b, -1, -1).to(dtype), m[None].expand(b, -1),
                            gen[None].expand(b, -1, -1).to(generated.dtype))
        waves = self._run(
            prompt_embeds, mask, generated, negative, seconds=seconds, guidance=g, steps=steps,
            scheduler=name, n=n, seed=seed, rank_texts=rank_texts, eta=eta,
        )
        return waves, self.sample_rate

    @torch.no_grad()
    def synthesize_from_text(
        self,
        texts: Sequence[str],
        seconds: float = 10.0,
        seed: Optional[int] = 0,
        *,
        guidance_scale: Optional[float] = None,
        num_inference_steps: Optional[int] = None,
        scheduler: Optional[str] = None,
        num_waveforms_per_prompt: Optional[int] = None,
        negative_prompt: Optional[str] = None,
        eta: float = 0.0,
    ) -> tuple[list[np.ndarray], int]:
        """The published route: the pipeline's own `encode_prompt` of the texts (and of the
        negative prompt), then the same denoising; best-of-n ranked by CLAP against the texts."""
        if isinstance(texts, str) or not texts:
            raise ValueError("synthesize_from_text takes a non-empty list of texts")
        seconds, g, steps, name, n = self._settings(
            seconds, guidance_scale, num_inference_steps, scheduler, num_waveforms_per_prompt
        )
        clean = [clean_decoder_text(t) for t in texts]
        neg_text = clean_decoder_text(
            self.cfg.negative_prompt if negative_prompt is None else negative_prompt
        )
        with self._lock:
            embeds, mask, generated = self.pipe.encode_prompt(
                prompt=clean, device=self.device, num_waveforms_per_prompt=1,
                do_classifier_free_guidance=g > 1, negative_prompt=[neg_text] * len(clean),
            )
        negative = None
        if g > 1:  # encode_prompt returns [negative; positive] stacked
            b = len(clean)
            negative = (embeds[:b], mask[:b], generated[:b])
            embeds, mask, generated = embeds[b:], mask[b:], generated[b:]
        waves = self._run(
            embeds, mask, generated, negative, seconds=seconds, guidance=g, steps=steps,
            scheduler=name, n=n, seed=seed, rank_texts=clean, eta=eta,
        )
        return waves, self.sample_rate


def load_audioldm2(cfg: DecoderConfig, dtype: torch.dtype):
    """A published AudioLDM2Pipeline from a hub id or a local diffusers folder."""
    from diffusers import AudioLDM2Pipeline
    from transformers import GPT2LMHeadModel

    try:
        # Published folders name GPT2Model, which lost the generation helpers the pipeline calls
        # in transformers 5; GPT2LMHeadModel loads the same weights (its head is tied) and has them.
        language_model = GPT2LMHeadModel.from_pretrained(
            cfg.path, subfolder="language_model", dtype=dtype
        )
        if getattr(language_model.config, "max_new_tokens", None) is None:
            language_model.config.max_new_tokens = 8
        pipe = AudioLDM2Pipeline.from_pretrained(
            cfg.path, language_model=language_model, dtype=dtype
        )
    except (OSError, ValueError) as exc:
        raise DecoderLoadError(
            f"could not load AudioLDM2 from {cfg.path!r} (a hub id or a local diffusers folder "
            f"with model_index.json; offline runs need it cached): {exc}"
        ) from exc
    return pipe
