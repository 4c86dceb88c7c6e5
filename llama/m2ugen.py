"""The composed M2UGen model: losses for a training batch, and the model side of a chat turn.

Data flow (docs/MODEL.md section 1): media -> frozen encoder (or cached features) -> bridge ->
one vector per modality -> backbone adapters; text -> backbone -> cross-entropy; for answers that
produce music, the hidden states for [AUD0..7] (`cfg.projector.input` says which) + those tokens'
embeddings -> output projector -> MSE to the decoder's own conditioning of the target caption
(x target_scale). At inference the projector output conditions the decoder directly (the published
code re-prompted the decoder with text instead: still available as `music_conditioning="text"`).
A chat turn (prompt, decoding, reply) is `llama.chat`, driven by the model's chat style
(`cfg.chat_style`); its types are re-exported here.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llama import chat
from llama import checkpoint as ckpt
from llama.backbone import Transformer
from llama.lora import keep_peft_float32, peft_parameter_names, set_trainable
from llama.bridges import build_bridges
from llama.chat import ChatReply, GenerationSettings, MediaInput, PromptTooLong
from llama.chat_style import FIRST_STYLE, PUBLISHED_STYLES, ChatStyle
from llama.config import AUD_TOKENS, MODALITIES, M2UGenConfig, get_preset
from llama.projector import OutputProjector
from llama.prompt import IGNORE_INDEX
from llama.tokenizer import Tokenizer, load_tokenizer
from util.seed import seeded

__all__ = ["ChatReply", "GenerationSettings", "LossOutput", "M2UGen", "MediaInput",
           "PromptTooLong", "apply_path_overrides", "config_from_dict", "trainable_groups"]

log = logging.getLogger(__name__)

TINY_SEED = 1234  # the frozen random weights of the tiny presets must be identical in every process
STAGES = (1, 2, 3)


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
            legacy = saved.get("published", {}).get("release")  # imported before styles were
            if "chat_style" not in saved["m2ugen"] and legacy in PUBLISHED_STYLES:  # stored
                cfg.chat_style = PUBLISHED_STYLES[legacy]
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
        """Freeze everything but the stage's trainable set; returns the trainable names.

        Training teaches our token layout (answers end with EOS; music answers with [AUD0..7]
        before it), so a model tuned here chats with that ending afterwards, whatever chat style
        it started from (a release's); its template stays (`ChatStyle.for_training`)."""
        self.cfg.chat_style = self.cfg.chat_style.for_training()
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
        """Token ids of the dialogue in this model's chat style, oldest turns dropped to fit the
        context; (ids, dropped)."""
        return chat.build_prompt(self, prompt, history, max_new_tokens)

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
        """Text deltas as they are produced, then the ChatReply (`llama.chat.stream_chat`; the
        chat style in `cfg.chat_style` decides the prompt and where the answer ends)."""
        return chat.stream_chat(self, prompt, history=history, media=media, settings=settings,
                                want_music=want_music)

    def chat(self, prompt: str, **kwargs: Any) -> ChatReply:
        """Blocking form of `stream_chat`."""
        reply = None
        for item in self.stream_chat(prompt, **kwargs):
            reply = item
        assert isinstance(reply, ChatReply)
        return reply

    @torch.no_grad()
    def music_condition(self, ids: list[int], feats: Optional[torch.Tensor]) -> torch.Tensor:
        """The projector output for a reply's ids: [AUD0..7] appended, their hidden states (the
        kind `cfg.projector.input` names) plus their embeddings projected; (1, N, D)."""
        full = torch.tensor([ids + list(self.tokenizer.aud_ids)], device=self.device_)
        hidden = self.projector_hidden(full, feats)
        start = full.shape[1] - len(AUD_TOKENS)
        positions = torch.arange(start, full.shape[1], device=self.device_)[None]
        return self.project_music(hidden, positions)

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
        cond = self.music_condition(ids, feats)
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
        # A config.json written before chat styles were stored: the style it was trained with.
        chat_style=_stored_style(d["chat_style"]) if "chat_style" in d else FIRST_STYLE,
    )


def _stored_style(d: Any) -> ChatStyle:
    try:
        return ChatStyle.from_dict(d)
    except (TypeError, ValueError) as err:
        raise ckpt.CheckpointError(f"config: {err}") from None


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
