"""Music decoders (MusicGen via transformers, AudioLDM2 via diffusers) seen from M2UGen.

Each decoder does two jobs (SPEC section 4):
- `targets(captions)`: the decoder's own conditioning of a caption, x10, in the projector's (N, D)
  layout. These are the MSE targets of stage 2; they come from frozen models, so they can be cached
  by caption text (any object with `get(key) -> Tensor | None` and `put(key, tensor)`).
- `synthesize(conditioning)`: waveforms from projector output (divided by 10), the design's route;
  `synthesize_from_text(texts)` is the published route (re-prompt the decoder with text).

MusicGen conditioning is the T5 encoder states of the caption padded/truncated to
`max_text_tokens` (zeros at padding) -> (N, D) = (max_text_tokens, T5 width). Classifier-free
guidance is ONE batched pass: conditional and unconditional (zero) states are stacked, exactly as
MusicGen's own text path does, so both routes give identical audio for identical states.

AudioLDM2 conditioning is `encode_prompt`'s T5 prompt embeddings (padded with zeros to
`max_text_tokens`) plus the GPT-2 generated embeddings, flattened into one vector -> (N, D) =
(1, max_text_tokens*T5 width + n_generated*GPT-2 width); `split_conditioning` undoes the layout.

Padding masks at inference: projector outputs carry no mask, so a position whose RMS is below
`DecoderConfig.pad_norm_threshold` x the largest position RMS of that sample counts as padding
(exact targets are exactly zero there). Pass `attention_mask=` to override.

`tiny` / `tiny-audioldm2` build small random-weight decoders (fixed seed, offline tokenizers) with
the real classes, so tests and the demo exercise the same code paths as real checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import string
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol, Sequence

import numpy as np
import torch

from llama.config import DecoderConfig, ProjectorConfig

log = logging.getLogger(__name__)

TINY_DECODER_SEED = 20240  # tiny weights must be identical in every process (cached targets)
TINY_VERSION = "v1"  # bump when the tiny architectures change (invalidates cached targets)
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


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG for one call without disturbing the caller's RNG state."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Tiny configs trip harmless 'token id outside vocabulary' warnings (real MusicGen too)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _resolve_seed(seed: Optional[int]) -> int:
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1)[0] % (2**31 - 1))
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def write_wav(path: str | os.PathLike, wave: np.ndarray, sr: int) -> Path:
    """Write a float waveform ((T,) mono or (T, C)) as 16-bit PCM WAV, atomically.

    Samples are clipped to [-1, 1] (PCM conversion would wrap otherwise); NaN/inf is an error.
    """
    import soundfile as sf

    path = Path(path)
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim not in (1, 2) or wave.shape[0] == 0:
        raise ValueError(
            f"write_wav({path}): expected a non-empty (T,) or (T, C) array, got {wave.shape}"
        )
    if not np.isfinite(wave).all():
        raise ValueError(f"write_wav({path}): waveform contains NaN or inf")
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr < 1:
        raise ValueError(f"write_wav({path}): sample rate must be a positive integer, got {sr!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        sf.write(tmp, np.clip(wave, -1.0, 1.0), int(sr), subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


# ---------------------------------------------------------------------------------------------
# Offline tokenizers for the tiny decoders

_TINY_WORDS = (
    "a an the of and or with in on at to for from by is are this that it its as but very some "
    "music musical melody melodies song songs tune track piece sound sounds audio clip instrument "
    "instruments piano organ flute guitar violin cello drums drum bass synth strings voice vocals "
    "choir trumpet saxophone harp bell bells low high slow fast soft loud quiet gentle calm happy "
    "sad dark bright warm cold deep light heavy upbeat mellow energetic dreamy ambient classical "
    "jazz rock pop electronic folk dance techno blues orchestral cinematic lofi tempo rhythm beat "
    "beats register pitch key major minor chord chords notes note playing plays played solo "
    "background texture harmony harmonies lead intro quality low-quality noise red green blue "
    "yellow small large brightening darkening colour color image video picture generate compose "
    "play create make edit change add remove replace more less faster slower higher lower "
    "short long steady rising falling repetitive simple complex acoustic electric"
).split()


def tiny_t5_tokenizer(max_length: int):
    """A T5 (Unigram) tokenizer built in memory: caption words as pieces, characters as fallback."""
    from transformers import T5Tokenizer

    vocab: list[tuple[str, float]] = [
        ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)
    ]
    seen = {p for p, _ in vocab}
    for word in _TINY_WORDS:
        piece = "\u2581" + word
        if piece not in seen:
            vocab.append((piece, -1.0))
            seen.add(piece)
    for ch in string.ascii_letters + string.digits + string.punctuation:
        if ch not in seen:
            vocab.append((ch, -6.0))
            seen.add(ch)
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


def tiny_roberta_tokenizer(max_length: int):
    """A byte-level BPE tokenizer without merges (one token per byte): enough for tiny CLAP."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in sorted(ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


# ---------------------------------------------------------------------------------------------
# Tiny random-weight decoders (real classes, small configs)


def build_tiny_musicgen(max_text_tokens: int, **decoder_overrides: Any):
    """(model, tokenizer): MusicGen with a 2-layer T5, a 4-codebook EnCodec at 32 kHz / 50 frames/s.

    `decoder_overrides` resize the MusicGen decoder (benchmarks use a mid-size one).
    """
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    tokenizer = tiny_t5_tokenizer(max_text_tokens)
    codebook_size = 64
    t5 = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, dropout_rate=0.0,
    )
    # 32 kHz / (8*5*4*4) = 50 frames/s like the real codec; 1.2 kbps at 6 bits/frame = 4 quantizers.
    encodec = EncodecConfig(
        sampling_rate=32000, audio_channels=1, hidden_size=16, num_filters=4,
        upsampling_ratios=[8, 5, 4, 4], codebook_size=codebook_size, codebook_dim=16,
        num_lstm_layers=1, target_bandwidths=[1.2],
    )
    dec_kwargs = dict(
        vocab_size=codebook_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        ffn_dim=64, num_codebooks=4, max_position_embeddings=2048, dropout=0.0,
        pad_token_id=codebook_size, bos_token_id=codebook_size,
    )
    dec_kwargs.update(decoder_overrides)
    with _quiet_transformers(), _seeded(TINY_DECODER_SEED, torch.device("cpu")):
        config = MusicgenConfig(
            text_encoder=t5, audio_encoder=encodec, decoder=MusicgenDecoderConfig(**dec_kwargs)
        )
        model = MusicgenForConditionalGeneration(config)
        # EnCodec initialises its codebooks to zeros (real ones are learned): every code would
        # decode to the same sound. Random codebooks make the tiny audio depend on the codes.
        for name, buffer in model.audio_encoder.named_buffers():
            if name.endswith("codebook.embed"):
                buffer.normal_()
            elif name.endswith("codebook.embed_avg"):
                buffer.copy_(model.audio_encoder.get_buffer(name[: -len("_avg")]))
    gen = model.generation_config
    gen.decoder_start_token_id = codebook_size
    gen.pad_token_id = codebook_size
    gen.bos_token_id = codebook_size
    gen.do_sample = True
    gen.top_k = 250
    return model.eval(), tokenizer


def build_tiny_audioldm2(max_text_tokens: int):
    """AudioLDM2Pipeline from tiny components (16 kHz, 100 mel frames/s, 16 mel bins)."""
    from diffusers import (
        AudioLDM2Pipeline,
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
        AutoencoderKL,
        DDIMScheduler,
    )
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        T5Config,
        T5EncoderModel,
    )

    tokenizer = tiny_roberta_tokenizer(64)
    tokenizer_2 = tiny_t5_tokenizer(max_text_tokens)
    clap_dim, t5_dim, gpt_dim = 16, 32, 16
    with _quiet_transformers(), _seeded(TINY_DECODER_SEED, torch.device("cpu")):
        unet = AudioLDM2UNet2DConditionModel(
            block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
            out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=([None, gpt_dim, t5_dim], [None, gpt_dim, t5_dim]),
            norm_num_groups=4, attention_head_dim=4,
        )
        vae = AutoencoderKL(
            block_out_channels=[8, 16], in_channels=1, out_channels=1,
            down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
            latent_channels=4, norm_num_groups=4, layers_per_block=1,
        )
        text_cfg = ClapTextConfig(
            bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=clap_dim,
            intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
            vocab_size=len(tokenizer), projection_dim=clap_dim, max_position_embeddings=70,
        )
        audio_cfg = ClapAudioConfig(
            spec_size=64, window_size=4, num_mel_bins=16, intermediate_size=32, depths=[1, 1],
            num_attention_heads=[2, 2], num_hidden_layers=2, hidden_size=16,
            patch_embeds_hidden_size=8, projection_dim=clap_dim, patch_size=2, patch_stride=2,
            patch_embed_input_channels=4,
        )
        clap = ClapModel(
            ClapConfig(
                text_config=text_cfg.to_dict(), audio_config=audio_cfg.to_dict(),
                projection_dim=clap_dim,
            )
        )
        t5 = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2), d_model=t5_dim, d_ff=64, d_kv=8, num_heads=4,
                num_layers=2, dropout_rate=0.0, pad_token_id=tokenizer_2.pad_token_id,
            )
        )
        gpt_cfg = GPT2Config(
            n_embd=gpt_dim, n_head=2, n_layer=2, vocab_size=100, n_positions=max_text_tokens + 32,
            bos_token_id=0, eos_token_id=0,
        )
        gpt_cfg.max_new_tokens = 8
        language_model = GPT2LMHeadModel(gpt_cfg)
        projection = AudioLDM2ProjectionModel(
            text_encoder_dim=clap_dim, text_encoder_1_dim=t5_dim, langauge_model_dim=gpt_dim
        )
        vocoder = SpeechT5HifiGan(
            SpeechT5HifiGanConfig(
                model_in_dim=16, sampling_rate=16000, upsample_initial_channel=16,
                upsample_rates=[8, 5, 4], upsample_kernel_sizes=[16, 10, 8],
                resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
                normalize_before=False,
            )
        )
        # HiFi-GAN's own init (std 0.01) makes a random vocoder output ~1e-7, i.e. silence in a
        # 16-bit WAV; fan-in scaled weights give audible (if meaningless) tiny-preset audio.
        for module in vocoder.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                fan_in = module.weight.shape[1] * module.weight.shape[2]
                torch.nn.init.normal_(module.weight, std=fan_in**-0.5)
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False,
    )
    with warnings_suppressed("At least one mel filter"):
        feature_extractor = ClapFeatureExtractor(
            feature_size=16, sampling_rate=16000, hop_length=160, max_length_s=2,
            fft_window_size=400,
        )
    return AudioLDM2Pipeline(
        vae=vae, text_encoder=clap, text_encoder_2=t5, projection_model=projection,
        language_model=language_model, tokenizer=tokenizer, tokenizer_2=tokenizer_2,
        feature_extractor=feature_extractor, unet=unet, scheduler=scheduler, vocoder=vocoder,
    )


@contextlib.contextmanager
def warnings_suppressed(message_prefix: str) -> Iterator[None]:
    """Silence one known, harmless library warning (by its message prefix) for a block."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape(message_prefix) + ".*")
        yield


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

    # -- shape and identity --------------------------------------------------------------------
    @property
    def condition_shape(self) -> tuple[int, int]:
        raise NotImplementedError

    @property
    def sample_rate(self) -> int:
        raise NotImplementedError

    @property
    def identity(self) -> str:
        """Names everything a target depends on (cache keys include it)."""
        path = self.cfg.path
        if path.startswith("tiny"):
            path = f"{path}-{TINY_VERSION}"
        n, d = self.condition_shape
        return f"{self.kind}:{path}:{n}x{d}"

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

    write_wav = staticmethod(write_wav)


# ---------------------------------------------------------------------------------------------
# MusicGen


class MusicGenDecoder(MusicDecoder):
    """MusicgenForConditionalGeneration driven by precomputed T5 states or by text."""

    kind = "musicgen"

    def __init__(self, cfg: DecoderConfig, model, tokenizer, device, dtype) -> None:
        super().__init__(cfg, device, dtype)
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

        with self._lock, _seeded(_resolve_seed(seed), self.device):
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
        with self._lock, _seeded(_resolve_seed(seed), self.device):
            audio = self.model.generate(**enc, **kwargs)
        return self._finish(audio, seconds, frames), self.sample_rate


# ---------------------------------------------------------------------------------------------
# AudioLDM2


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
        # T5 prompt embeddings are truncated at max_text_tokens on both routes (SPEC: 128).
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
        steps = _check_positive_int("num_inference_steps", num_inference_steps)
        n = _check_positive_int(
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
            generator = torch.Generator(device=self.device).manual_seed(_resolve_seed(seed))
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


# ---------------------------------------------------------------------------------------------
# Loading


def _load_musicgen(cfg: DecoderConfig, dtype: torch.dtype):
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    try:
        model = MusicgenForConditionalGeneration.from_pretrained(cfg.path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(cfg.path)
    except (OSError, ValueError) as exc:
        raise DecoderLoadError(
            f"could not load MusicGen from {cfg.path!r} (a hub id or a local folder with "
            f"config.json, weights and tokenizer files; offline runs need them cached): {exc}"
        ) from exc
    return model, tokenizer


def _load_audioldm2(cfg: DecoderConfig, dtype: torch.dtype):
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


def load_decoder(
    cfg: DecoderConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> MusicDecoder:
    """A frozen MusicGen / AudioLDM2 decoder from a hub id, a local folder or a tiny preset."""
    device = torch.device(device)
    if cfg.max_text_tokens < 1:
        raise ValueError(f"DecoderConfig.max_text_tokens must be >= 1, got {cfg.max_text_tokens}")
    if cfg.kind == "musicgen":
        if cfg.path == "tiny-audioldm2":
            raise ValueError("DecoderConfig: path 'tiny-audioldm2' needs kind 'audioldm2'")
        if cfg.path == "tiny":
            model, tokenizer = build_tiny_musicgen(cfg.max_text_tokens)
        else:
            model, tokenizer = _load_musicgen(cfg, dtype)
        return MusicGenDecoder(cfg, model, tokenizer, device, dtype)
    if cfg.kind == "audioldm2":
        if cfg.path in ("tiny", "tiny-audioldm2"):
            pipe = build_tiny_audioldm2(cfg.max_text_tokens)
            if dtype != torch.float32:
                pipe = pipe.to(dtype=dtype)
        else:
            pipe = _load_audioldm2(cfg, dtype)
        return AudioLDM2Decoder(cfg, pipe, device, dtype)
    raise ValueError(f"DecoderConfig.kind must be 'musicgen' or 'audioldm2', got {cfg.kind!r}")


def projector_config_for(decoder: MusicDecoder, base_cfg: ProjectorConfig) -> ProjectorConfig:
    """The projector config with N x D taken from the loaded decoder's conditioning shape."""
    n, d = decoder.condition_shape
    return dataclasses.replace(base_cfg, n_output_tokens=n, output_dim=d)
