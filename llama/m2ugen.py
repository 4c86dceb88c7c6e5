"""The composed M2UGen model: losses for a training batch, and chat for inference.

Data flow (docs/MODEL.md section 1): media -> frozen encoder (or cached features) -> bridge ->
one vector per modality -> backbone adapters; text -> backbone -> cross-entropy; for answers that
produce music, the hidden states for [AUD0..7] (`cfg.projector.input` says which) + those tokens'
embeddings -> output projector -> MSE to the decoder's own conditioning of the target caption
(x target_scale). At inference the projector output conditions the decoder directly (the published
code re-prompted the decoder with text instead: still available as `music_conditioning="text"`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llama import checkpoint as ckpt
from llama.backbone import Transformer
from llama.lora import keep_peft_float32, peft_parameter_names, set_trainable
from llama.bridges import build_bridges
from llama.config import AUD_TOKENS, MODALITIES, M2UGenConfig, get_preset
from llama.projector import OutputProjector
from llama.tokenizer import Tokenizer, load_tokenizer
from llama.prompt import IGNORE_INDEX, encode_prompt
from util.seed import seeded

log = logging.getLogger(__name__)

TINY_SEED = 1234  # the frozen random weights of the tiny presets must be identical in every process
STAGES = (1, 2, 3)


class PromptTooLong(ValueError):
    """The prompt (after dropping all history) does not fit the context window."""


@dataclass
class GenerationSettings:
    """Knobs of one chat turn (text sampling and music synthesis).

    The one definition of their defaults and valid ranges: the CLI, the demo, the evaluation and
    the library all build settings from this class (flags and UI values left unset mean these
    defaults). Greedy decoding by default, so that one prompt gives one answer everywhere.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: Optional[int] = None
    audio_seconds: float = 5.0
    guidance_scale: Optional[float] = None  # classifier-free guidance >= 1 (None: the decoder's)
    num_inference_steps: Optional[int] = None  # AudioLDM2 diffusion steps (None: the decoder's)
    music_conditioning: Literal["projector", "text"] = "projector"

    INT_FIELDS = ("max_new_tokens", "seed", "num_inference_steps")

    def validate(self, decoder: Any = None) -> None:
        """Raise ValueError naming the first invalid field. With `decoder` (a DecoderConfig), also
        check what depends on it: the longest clip, and steps only for a diffusion decoder."""
        import math

        def number(name: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
            return float(value)

        for name in self.INT_FIELDS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.seed is not None and self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if number("temperature", self.temperature) < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < number("top_p", self.top_p) <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if number("audio_seconds", self.audio_seconds) <= 0:
            raise ValueError(f"audio_seconds must be > 0, got {self.audio_seconds}")
        if self.guidance_scale is not None and number("guidance_scale", self.guidance_scale) < 1:
            raise ValueError(f"guidance_scale must be >= 1 (1 disables classifier-free guidance), "
                             f"got {self.guidance_scale}")
        if self.num_inference_steps is not None and self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.music_conditioning not in ("projector", "text"):
            raise ValueError(
                f"music_conditioning must be 'projector' or 'text', got {self.music_conditioning!r}"
            )
        if decoder is not None:
            if self.audio_seconds > decoder.max_seconds:
                raise ValueError(f"audio_seconds must be <= {decoder.max_seconds} for this "
                                 f"decoder, got {self.audio_seconds}")
            if self.num_inference_steps is not None and decoder.kind != "audioldm2":
                raise ValueError(f"num_inference_steps applies to the AudioLDM2 decoder, not "
                                 f"{decoder.kind}")


@dataclass
class MediaInput:
    """The media attached to a turn, per modality: a decoded array (np.ndarray: waveform, image
    or frames) or that item's precomputed frozen-encoder features (torch.Tensor). Paths are
    resolved outside the model package (`data.features.MediaFeatures`)."""

    audio: Any = None
    image: Any = None
    video: Any = None

    def present(self) -> dict[str, Any]:
        return {m: v for m in MODALITIES if (v := getattr(self, m)) is not None}


@dataclass
class ChatReply:
    text: str
    music: Optional[np.ndarray] = None
    sample_rate: Optional[int] = None
    token_ids: list[int] = field(default_factory=list)  # the answer's text tokens
    dropped_history_turns: int = 0
    generated_ids: list[int] = field(default_factory=list)  # every id produced, special included



@dataclass
class LossOutput:
    loss: torch.Tensor
    ce: torch.Tensor
    mse: torch.Tensor
    n_music: int


def trainable_groups(stage: int) -> dict[str, bool]:
    """What trains in each stage (docs/MODEL.md section 5); the PEFT set trains in all three."""
    if stage not in STAGES:
        raise ValueError(f"stage must be 1, 2 or 3, got {stage}")
    return {"bridges": stage == 1, "projector": stage == 2}


class M2UGen(nn.Module):
    """Backbone + bridges + projector, with lazily loaded frozen encoders and music decoder."""

    def __init__(
        self,
        cfg: M2UGenConfig,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        load_decoder: bool = True,
        quantize: str = "none",
    ) -> None:
        super().__init__()
        cfg = copy.deepcopy(cfg)  # loading fills in derived values; never touch the caller's copy
        self.cfg = cfg
        self.device_ = torch.device(device)
        self.dtype_ = dtype
        self.tokenizer: Tokenizer = load_tokenizer(cfg.tokenizer_path)
        self.backbone = _build_backbone(cfg, dtype, self.device_, quantize)
        if self.tokenizer.base_vocab_size != self.backbone.config.vocab_size:
            raise ValueError(
                f"tokenizer {cfg.tokenizer_path!r} has {self.tokenizer.base_vocab_size} pieces but "
                f"the backbone {cfg.llama_path!r} has {self.backbone.config.vocab_size} rows"
            )
        self.backbone.add_tokens(len(AUD_TOKENS))
        # `dtype` is the frozen weights' (backbone, encoders, decoder); everything any stage
        # trains stays float32 (the forward casts it to the activation dtype).
        keep_peft_float32(self.backbone)
        with seeded(TINY_SEED + 1):
            self.bridges = build_bridges(cfg)
        self._decoder = None
        # Set by loaders whose decoder is not described by cfg.decoder alone (a release file's
        # own MusicGen weights): called instead of `load_decoder` on first use.
        self.decoder_factory: Optional[Callable[[], Any]] = None
        if load_decoder:
            self._decoder = self._load_decoder()
            from llama.decoders import projector_config_for

            cfg.projector = projector_config_for(self._decoder, cfg.projector)
        with seeded(TINY_SEED + 2):
            self.projector = OutputProjector(cfg.llama.dim, cfg.projector)
        self.bridges.to(self.device_)
        self.projector.to(self.device_)
        self._encoders: dict[str, Any] = {}
        # Optional retrieval of music-feature prototypes (docs/MODEL.md section 3; off by default).
        from llama.knn import load_knn

        index = load_knn(cfg.knn)
        self._knn = index.mixer(cfg.knn) if index is not None else None
        self.trained = False  # True once tuned weights were loaded from a checkpoint
        self.aud_ids = torch.tensor(self.tokenizer.aud_ids, device=self.device_)

    # -----------------------------------------------------------------------------------------
    # Construction and persistence

    @classmethod
    def from_pretrained(
        cls,
        model: Optional[str] = None,
        *,
        preset: str = "tiny",
        overrides: Optional[dict[str, str]] = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        load_decoder: bool = True,
        quantize: str = "none",
    ) -> "M2UGen":
        """A trained checkpoint folder (`model`), or the preset's random tuned weights if None.

        `overrides` replaces component paths: llama_path, tokenizer_path, mert_path, vit_path,
        vivit_path, music_decoder_path.
        """
        if model is not None:
            saved = ckpt.read_config(model)
            cfg = config_from_dict(saved["m2ugen"])
        else:
            cfg = get_preset(preset)
        cfg = apply_path_overrides(cfg, overrides or {})
        m = cls(cfg, device=device, dtype=dtype, load_decoder=load_decoder, quantize=quantize)
        if model is not None:
            ckpt.load_tuned_weights(m, ckpt.read_weights(model), source=str(model))
            m.trained = True
        return m

    def tuned_parameter_names(self) -> list[str]:
        """Every parameter any stage trains: what a checkpoint stores."""
        names = []
        frozen_backbone = {f"backbone.{n}" for n, _ in self.backbone.named_parameters()}
        tuned_backbone = {f"backbone.{n}" for n in peft_parameter_names(self.backbone)}
        for name, _ in self.named_parameters():
            if name in frozen_backbone and name not in tuned_backbone:
                continue
            names.append(name)
        return names

    def set_stage(self, stage: int) -> list[str]:
        """Freeze everything but the stage's trainable set; returns the trainable names."""
        groups = trainable_groups(stage)
        set_trainable(self.backbone)
        for p in self.bridges.parameters():
            p.requires_grad_(groups["bridges"])
        for p in self.projector.parameters():
            p.requires_grad_(groups["projector"])
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.cfg)

    # -----------------------------------------------------------------------------------------
    # Frozen components (loaded on first use, never part of the tuned state)

    def encoder(self, modality: str):
        if modality not in self._encoders:
            from llama import encoders

            loader, enc_cfg = {
                "audio": (encoders.load_music_encoder, self.cfg.mert),
                "image": (encoders.load_image_encoder, self.cfg.vit),
                "video": (encoders.load_video_encoder, self.cfg.vivit),
            }[modality]
            with seeded(TINY_SEED + 10 + MODALITIES.index(modality)):
                self._encoders[modality] = loader(enc_cfg, device=self.device_,
                                                  dtype=self.dtype_)
        return self._encoders[modality]

    @property
    def decoder(self):
        if self._decoder is None:
            self._decoder = self._load_decoder()
        return self._decoder

    def _load_decoder(self):
        from llama.decoders import load_decoder

        if self.decoder_factory is not None:
            return self.decoder_factory()
        with seeded(TINY_SEED + 20):
            return load_decoder(self.cfg.decoder, device=self.device_, dtype=self.dtype_)

    # -----------------------------------------------------------------------------------------
    # Media -> one vector per modality

    def encode_media(self, modality: str, items: Sequence[Any]) -> Any:
        """Batched frozen-encoder features for media items: decoded arrays are encoded, tensors
        are taken as that item's precomputed features (from the feature cache)."""
        encoder = self.encoder(modality)
        per_item = []
        for x in items:
            if isinstance(x, torch.Tensor):
                per_item.append(x)
            elif isinstance(x, np.ndarray):
                per_item.append(encoder.encode_items([x])[0])
            else:
                raise TypeError(
                    f"{modality} input must be a decoded np.ndarray or a feature tensor, got "
                    f"{type(x).__name__} (paths are resolved by data.features.MediaFeatures)"
                )
        return encoder.collate(per_item)

    def bridge(self, modality: str, features: Any) -> torch.Tensor:
        """Encoder features -> (n, dim) vectors in the backbone width."""
        if modality == "audio":
            states, mask = features
            return self.bridges["audio"](states.to(self.device_), mask.to(self.device_),
                                         knn=self._knn)
        return self.bridges[modality](features.to(self.device_))

    def modality_features(
        self, media: dict[str, tuple[list[int], Any]], batch_size: int
    ) -> Optional[torch.Tensor]:
        """(B, 3, dim) adapter inputs: bridged vectors where a sample has a modality, else zeros."""
        if not media:
            return None
        out = torch.zeros(
            batch_size, len(MODALITIES), self.cfg.llama.dim, device=self.device_,
        )
        for modality, (rows, features) in media.items():
            vectors = self.bridge(modality, features)
            out[torch.as_tensor(rows, device=self.device_), MODALITIES.index(modality)] = (
                vectors.to(out.dtype)
            )
        return out

    # -----------------------------------------------------------------------------------------
    # Training losses

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        *,
        media: Optional[dict[str, tuple[list[int], Any]]] = None,
        music_rows: Optional[torch.Tensor] = None,
        aud_positions: Optional[torch.Tensor] = None,
        music_targets: Optional[torch.Tensor] = None,
        ce_weight: float = 1.0,
        mse_weight: float = 1.0,
    ) -> LossOutput:
        """Text cross-entropy (+ projector MSE for samples whose answer produces music)."""
        input_ids = input_ids.to(self.device_)
        labels = labels.to(self.device_)
        feats = self.modality_features(media or {}, input_ids.shape[0])
        # Position t predicts token t + 1: only positions whose next token is a target need the
        # vocabulary head (the others would add exactly nothing to the loss or its gradients).
        predicts = torch.zeros_like(labels, dtype=torch.bool)
        predicts[:, :-1] = labels[:, 1:] != IGNORE_INDEX
        logits, hidden = self.backbone(input_ids, modality_features=feats, return_hidden=True,
                                       pre_norm_hidden=self._projector_reads_pre_norm,
                                       logit_rows=predicts)
        ce = F.cross_entropy(logits.float(), labels[:, 1:][predicts[:, :-1]])
        mse = torch.zeros((), device=self.device_)
        n_music = 0 if music_rows is None else int(music_rows.numel())
        if n_music:
            pred = self.project_music(hidden[music_rows.to(self.device_)], aud_positions)
            mse = F.mse_loss(pred.float(), music_targets.to(self.device_).float())
        return LossOutput(ce_weight * ce + mse_weight * mse, ce.detach(), mse.detach(), n_music)

    @property
    def _projector_reads_pre_norm(self) -> bool:
        return self.cfg.projector.input == "pre_norm_predicting"

    def projector_hidden(self, tokens: torch.Tensor,
                         modality_features: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The hidden states `project_music` expects for `tokens` (the kind the config names)."""
        _, hidden = self.backbone(tokens.to(self.device_), modality_features=modality_features,
                                  return_hidden=True,
                                  pre_norm_hidden=self._projector_reads_pre_norm)
        return hidden

    def project_music(self, hidden: torch.Tensor, aud_positions: torch.Tensor) -> torch.Tensor:
        """Hidden states (n, T, dim) for the 8 [AUD] tokens + their embeddings -> projector.

        `cfg.projector.input` picks which states: "pre_norm_predicting" (docs/MODEL.md section 4,
        what the released models compute) takes the last layer's output before the final norm at
        the positions that predict each [AUD] token (one earlier); "post_norm_at_tokens" takes the
        normed states at the tokens themselves. `hidden` must be the matching kind.
        """
        return self.projector(self.projector_inputs(hidden, aud_positions))

    def projector_inputs(self, hidden: torch.Tensor, aud_positions: torch.Tensor) -> torch.Tensor:
        """(n, 8, dim) what the projector reads: the chosen [AUD] states + the tokens' embeddings
        (in the projector's dtype). Split out so the projector can be refitted on cached inputs."""
        aud_positions = aud_positions.to(hidden.device)
        if self._projector_reads_pre_norm:
            aud_positions = aud_positions - 1  # the state that predicts [AUDk] sits one earlier
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
        h = hidden[rows, aud_positions]
        emb = self.backbone.embed(self.aud_ids[None].expand(hidden.shape[0], -1))
        return (h + emb).to(next(self.projector.parameters()).dtype)

    # -----------------------------------------------------------------------------------------
    # Inference

    def build_prompt(
        self, prompt: str, history: Sequence[tuple[str, str]], max_new_tokens: int
    ) -> tuple[list[int], int]:
        """Token ids of the dialogue, oldest turns dropped to fit the context; (ids, dropped)."""
        if not prompt.strip():
            raise ValueError("the prompt is empty")
        budget = self.cfg.llama.max_seq_len - max_new_tokens - len(AUD_TOKENS)
        history = list(history)
        for dropped in range(len(history) + 1):
            ids = encode_prompt(self.tokenizer, prompt, history[dropped:])
            if len(ids) <= budget:
                return ids, dropped
        raise PromptTooLong(
            f"the prompt is {len(ids)} tokens; with max_new_tokens={max_new_tokens} the context of "
            f"{self.cfg.llama.max_seq_len} tokens allows {budget}"
        )

    @torch.no_grad()
    def media_vector(self, media: Optional[MediaInput]) -> Optional[torch.Tensor]:
        present = media.present() if media is not None else {}
        if not present:
            return None
        feats = {m: ([0], self.encode_media(m, [item])) for m, item in present.items()}
        return self.modality_features(feats, 1)

    def stream_chat(
        self,
        prompt: str,
        *,
        history: Sequence[tuple[str, str]] = (),
        media: Optional[MediaInput] = None,
        settings: Optional[GenerationSettings] = None,
        want_music: bool = True,
    ) -> Iterator[Any]:
        """Yield text deltas (without [AUD] tokens) as they are produced, then the ChatReply."""
        from llama.generation import stream_generate

        settings = settings or GenerationSettings()
        settings.validate()
        ids, dropped = self.build_prompt(prompt, history, settings.max_new_tokens)
        feats = self.media_vector(media)
        generator = None
        if settings.seed is not None:
            generator = torch.Generator(device=self.device_).manual_seed(settings.seed)
        new: list[int] = []
        shown = ""
        aud = set(self.tokenizer.aud_ids)
        produced_music = False
        # stream_generate runs each step under inference_mode; no grad mode leaks to the caller
        # while this generator is paused at a yield.
        for step in stream_generate(
            self.backbone,
            [ids],
            settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            eos_id=self.tokenizer.eos_id,
            generator=generator,
            modality_features=feats,
            pad_id=self.tokenizer.pad_id,
        ):
            # stream_generate yields, per step, the list of token ids released for each prompt
            for token in map(int, step[0]):
                if token in aud:
                    produced_music = True
                    break
                new.append(token)
            if produced_music:
                break
            text = self.tokenizer.decode(new)
            if text.startswith(shown) and len(text) > len(shown):
                yield text[len(shown):]
                shown = text
        text = self.tokenizer.decode(new).strip()
        # The full output as the model's sequence holds it: the text tokens, then either the 8
        # [AUD] tokens of a music answer (the model emits [AUD0]; the rest are appended) or the
        # EOS that ended the answer (absent when max_new_tokens ran out).
        ended_by_eos = not produced_music and len(new) < settings.max_new_tokens
        tail = list(self.tokenizer.aud_ids) if produced_music else (
            [self.tokenizer.eos_id] if ended_by_eos else [])
        reply = ChatReply(text=text, token_ids=list(new), dropped_history_turns=dropped,
                          generated_ids=list(new) + tail)
        if produced_music and want_music:
            reply.music, reply.sample_rate = self.synthesize(ids + new, feats, text, settings)
        yield reply

    def chat(self, prompt: str, **kwargs: Any) -> ChatReply:
        """Blocking form of `stream_chat`."""
        reply = None
        for item in self.stream_chat(prompt, **kwargs):
            reply = item
        assert isinstance(reply, ChatReply)
        return reply

    @torch.no_grad()
    def synthesize(
        self,
        ids: list[int],
        feats: Optional[torch.Tensor],
        text: str,
        settings: GenerationSettings,
    ) -> tuple[np.ndarray, int]:
        """Music for a reply: append [AUD0..7], project their hidden states, run the decoder."""
        decoder_kwargs: dict[str, Any] = {"seconds": settings.audio_seconds, "seed": settings.seed}
        if settings.guidance_scale is not None:
            decoder_kwargs["guidance_scale"] = settings.guidance_scale
        if settings.num_inference_steps is not None:
            decoder_kwargs["num_inference_steps"] = settings.num_inference_steps
        if settings.music_conditioning == "text":
            waves, sr = self.decoder.synthesize_from_text([text], **decoder_kwargs)
            return waves[0], sr
        full = torch.tensor([ids + list(self.tokenizer.aud_ids)], device=self.device_)
        hidden = self.projector_hidden(full, feats)
        start = full.shape[1] - len(AUD_TOKENS)
        positions = torch.arange(start, full.shape[1], device=self.device_)[None]
        cond = self.project_music(hidden, positions)
        waves, sr = self.decoder.synthesize(cond, scale=self.cfg.projector.target_scale,
                                            **decoder_kwargs)
        return waves[0], sr


# ---------------------------------------------------------------------------------------------
# Helpers


def _build_backbone(cfg: M2UGenConfig, dtype: torch.dtype, device: torch.device,
                    quantize: str = "none") -> Transformer:
    """The backbone of `cfg`; `quantize="int8"` quantizes its projections while they are read
    (llama.quantize), so a full-precision copy of the base weights is never held."""
    from llama.quantize import check_supported, quantize_backbone_

    check_supported(quantize, device, dtype)
    if cfg.llama_path == "tiny":
        with seeded(TINY_SEED):
            model = Transformer(cfg.llama)
        model = model.to(device=device, dtype=dtype)
        quantize_backbone_(model, quantize)
        return model
    from llama.weights import load_backbone

    overrides = dict(
        lora_rank=cfg.llama.lora_rank,
        lora_alpha=cfg.llama.lora_alpha,
        adapter_layers_per_modality=cfg.llama.adapter_layers_per_modality,
        max_seq_len=cfg.llama.max_seq_len,
        adapter_uses_lora=cfg.llama.adapter_uses_lora,
    )
    model = load_backbone(cfg.llama_path, dtype=dtype, device=str(device),
                          config_overrides=overrides,
                          quantize=None if quantize == "none" else quantize)
    cfg.llama = model.config
    return model


def config_from_dict(d: dict[str, Any]) -> M2UGenConfig:
    """Rebuild an M2UGenConfig from `dataclasses.asdict` output (tuples restored)."""
    from llama import config as C

    def build(klass, values):
        fields = {f.name: f for f in dataclasses.fields(klass)}
        unknown = set(values) - set(fields)
        if unknown:
            raise ckpt.CheckpointError(
                f"config: unknown {klass.__name__} field(s) {sorted(unknown)}")
        kwargs = {}
        for k, v in values.items():
            if isinstance(v, list) and k in ("modalities",):
                v = tuple(v)
            kwargs[k] = v
        return klass(**kwargs)

    return C.M2UGenConfig(
        name=d["name"],
        llama=build(C.LlamaConfig, d["llama"]),
        llama_path=d["llama_path"],
        tokenizer_path=d["tokenizer_path"],
        mert=build(C.EncoderConfig, d["mert"]),
        vit=build(C.EncoderConfig, d["vit"]),
        vivit=build(C.EncoderConfig, d["vivit"]),
        bridges=build(C.BridgeConfig, d["bridges"]),
        knn=build(C.KnnConfig, d["knn"]),
        projector=build(C.ProjectorConfig, d["projector"]),
        decoder=build(C.DecoderConfig, d["decoder"]),
    )


def apply_path_overrides(cfg: M2UGenConfig, overrides: dict[str, Optional[str]]) -> M2UGenConfig:
    """Point components at user-given weights (CLI flags keep the published names)."""
    known = {"llama_path", "tokenizer_path", "mert_path", "vit_path", "vivit_path",
             "music_decoder_path", "trust_remote_code"}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown path override(s) {sorted(unknown)}; known: {sorted(known)}")
    o = {k: v for k, v in overrides.items() if v}
    changes: dict[str, Any] = {}
    if "llama_path" in o:
        changes["llama_path"] = o["llama_path"]
    if "tokenizer_path" in o:
        changes["tokenizer_path"] = o["tokenizer_path"]
    for flag, part in (("mert_path", "mert"), ("vit_path", "vit"), ("vivit_path", "vivit"),
                       ("music_decoder_path", "decoder")):
        if flag in o:
            changes[part] = dataclasses.replace(getattr(cfg, part), path=o[flag])
    if o.get("trust_remote_code") in ("true", "1", True):
        mert = changes.get("mert", cfg.mert)
        changes["mert"] = dataclasses.replace(mert, trust_remote_code=True)
    return dataclasses.replace(cfg, **changes)
