"""Configuration dataclasses for every part of M2UGen, plus named presets.

Cross-module contracts (backbone, tokenizer, encoders, decoders, data layout): docs/DATA.md.

One dataclass per component keeps each module's knobs next to each other; presets are plain
functions so a reader can see every number of a published configuration in one place.
The `tiny` presets are real in structure and tiny in size: they run on a CPU in seconds and are
what the tests and the demo use when no pretrained weights are present.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

from llama import chat_style as chat_styles
from llama.chat_style import ChatStyle
MODALITIES: tuple[str, ...] = ("audio", "image", "video")
AUD_TOKENS: tuple[str, ...] = tuple(f"[AUD{i}]" for i in range(8))


@dataclass
class LlamaConfig:
    """LLaMA-2 backbone shape plus the parameter-efficient tuning knobs (docs/MODEL.md, 2)."""

    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: Optional[int] = None  # None -> n_heads (no grouped-query attention)
    vocab_size: int = 32000  # base vocabulary, before the [AUD] tokens are appended
    multiple_of: int = 256
    ffn_dim_multiplier: Optional[float] = None
    ffn_hidden_dim: Optional[int] = None  # explicit FFN width (HF `intermediate_size`) wins
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 1024
    # Parameter-efficient tuning (llama/lora.py). LoRA adds (alpha / rank) * B(A(x)); the
    # published model has rank 16 and no scaling, which alpha None (= rank, scale 1.0) keeps.
    lora_rank: int = 16
    lora_alpha: Optional[float] = None
    adapter_layers_per_modality: int = 6  # the last 3 * this many layers take adapters
    modalities: tuple[str, ...] = MODALITIES
    # The adapter token goes through wv: False = the plain frozen wv, as the released models do
    # (the default: measured no worse on the tiny recipe, docs/SYNTHETIC.md); True = wv plus its
    # LoRA.
    adapter_uses_lora: bool = False

    @property
    def lora_scale(self) -> float:
        """alpha / rank (1.0 when alpha is None: the published, unscaled LoRA)."""
        if self.lora_alpha is None or self.lora_rank <= 0:
            return 1.0
        return float(self.lora_alpha) / self.lora_rank

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden_dim(self) -> int:
        """SwiGLU width: Meta's rule (2/3 of 4*dim, rounded up to `multiple_of`) unless explicit."""
        if self.ffn_hidden_dim is not None:
            return self.ffn_hidden_dim
        hidden = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    @property
    def n_adapter_layers(self) -> int:
        return self.adapter_layers_per_modality * len(self.modalities)

    @property
    def first_adapter_layer(self) -> int:
        return self.n_layers - self.n_adapter_layers

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.kv_heads:
            raise ValueError(
                f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.kv_heads}"
            )
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {self.lora_rank}")
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha must be > 0 (or None: equal to lora_rank), got "
                             f"{self.lora_alpha}")
        if self.n_adapter_layers > self.n_layers:
            raise ValueError(
                f"{self.n_adapter_layers} adapter layers requested but the model has "
                f"{self.n_layers}"
            )


@dataclass
class EncoderConfig:
    """A frozen encoder: where its weights come from and the preprocessing it expects.

    `path` is a hub id, a local folder, or "tiny" (random weights built from `tiny_config`).
    """

    path: str
    hidden_size: int
    num_hidden_states: int = 1  # MERT: layers + 1 (embedding output); ViT/ViViT: 1 (last layer)
    num_tokens: int = 1  # ViT/ViViT: tokens per sample (197 / 3137); MERT: frames vary
    sample_rate: int = 24000  # audio only
    window_seconds: float = 60.0  # audio only: long clips are encoded window by window
    image_size: int = 224  # image / video
    num_frames: int = 32  # video only
    tiny_config: dict = field(default_factory=dict)  # kwargs for the transformers config
    tiny_seed: int = 0  # "tiny" only: the random weights are a pure function of this seed
    trust_remote_code: bool = False  # MERT: run the folder's own code (explicit opt-in only)


@dataclass
class BridgeConfig:
    """Modality bridges into the backbone width (docs/MODEL.md section 3)."""

    music_pooling: Literal["rnn-attention", "mean"] = "rnn-attention"
    bridge_norm: Literal["rms", "layer"] = "rms"  # "layer": the legacy LayerNorm-with-bias bridges
    n_residual_blocks: int = 3
    # Where the music bridge L2-normalises: "pooled" (our design: the pooled vector) or "frames"
    # (the published newer release: every frame before the RNN, the pooled vector left as is).
    music_l2: Literal["pooled", "frames"] = "pooled"
    # Inner width of the residual blocks' W1/W3 (None: the backbone width; MU-LLaMA: 4 x it).
    block_hidden_dim: Optional[int] = None


@dataclass
class KnnConfig:
    """Optional faiss retrieval of feature prototypes (off by default)."""

    enabled: bool = False
    cache_size: int = 10
    cache_t: float = 20.0
    cache_weight: float = 0.5
    index_path: Optional[str] = None


@dataclass
class ProjectorConfig:
    """Output projector: LLM hidden states for [AUD0..7] -> decoder conditioning (docs/MODEL.md,
    section 4)."""

    d_model: int = 512
    n_heads: int = 4
    n_encoder_layers: int = 4
    n_decoder_layers: int = 4
    ffn_dim: int = 2048
    dropout: float = 0.0
    # Filled from the decoder: number of output tokens and their width.
    n_output_tokens: int = 128
    output_dim: int = 768
    target_scale: float = 10.0  # targets are 10 x the decoder's own conditioning
    norm_first: bool = False  # the published projector's nn.Transformer was post-norm
    # Which backbone states feed the projector: "pre_norm_predicting" (states before the final
    # norm at the positions that predict [AUD0..7], one earlier: docs/MODEL.md section 4 and what
    # the released models compute; the default, measured better on the tiny recipe) or
    # "post_norm_at_tokens" (final-norm states at the [AUD0..7] positions themselves).
    input: Literal["post_norm_at_tokens", "pre_norm_predicting"] = "pre_norm_predicting"


@dataclass
class DecoderConfig:
    """Music decoder: MusicGen (transformers) or AudioLDM2 (diffusers)."""

    kind: Literal["musicgen", "audioldm2"] = "musicgen"
    path: str = "facebook/musicgen-small"  # hub id, local folder, "tiny" or "tiny-audioldm2"
    max_text_tokens: int = 128
    # MusicGen
    guidance_scale: float = 3.5
    frames_per_second: int = 50
    # AudioLDM2
    num_inference_steps: int = 200
    scheduler: Literal["ddim", "dpm-multistep"] = "ddim"
    num_waveforms_per_prompt: int = 3
    negative_prompt: str = "Low quality."
    # Both: longest clip accepted, and the relative per-position RMS under which a conditioning
    # position counts as padding when no mask is given (projector outputs carry no mask).
    max_seconds: float = 30.0
    pad_norm_threshold: float = 0.05


@dataclass
class M2UGenConfig:
    """Everything that defines one M2UGen configuration."""

    name: str
    llama: LlamaConfig
    llama_path: str  # Meta or HF folder, or "tiny"
    tokenizer_path: str  # tokenizer.model / HF tokenizer folder, or "tiny"
    mert: EncoderConfig
    vit: EncoderConfig
    vivit: EncoderConfig
    bridges: BridgeConfig = field(default_factory=BridgeConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    # How the model is prompted and decoded; stored with the weights (llama/chat_style.py).
    chat_style: ChatStyle = field(default_factory=lambda: chat_styles.DEFAULT)

    def replace(self, **changes) -> "M2UGenConfig":
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------
# Backbone presets


def llama_tiny() -> LlamaConfig:
    """A LLaMA that runs in seconds on a CPU: 4 layers, one adapter layer per modality."""
    return LlamaConfig(
        dim=128,
        n_layers=4,
        n_heads=4,
        n_kv_heads=2,
        vocab_size=1000,
        multiple_of=32,
        max_seq_len=512,
        lora_rank=8,
        adapter_layers_per_modality=1,
    )


def llama_7b() -> LlamaConfig:
    """LLaMA-2 7B exactly as docs/MODEL.md section 2."""
    return LlamaConfig()


LLAMA_PRESETS: dict[str, Callable[[], LlamaConfig]] = {"tiny": llama_tiny, "7B": llama_7b}


# ---------------------------------------------------------------------------------------------
# Encoder presets


def mert_330m(path: str = "m-a-p/MERT-v1-330M") -> EncoderConfig:
    return EncoderConfig(path=path, hidden_size=1024, num_hidden_states=25, sample_rate=24000)


def vit_b16(path: str = "google/vit-base-patch16-224") -> EncoderConfig:
    return EncoderConfig(path=path, hidden_size=768, num_tokens=197, image_size=224)


def vivit_b(path: str = "google/vivit-b-16x2-kinetics400") -> EncoderConfig:
    return EncoderConfig(path=path, hidden_size=768, num_tokens=3137, image_size=224, num_frames=32)


def mert_tiny() -> EncoderConfig:
    """HuBERT-shaped MERT, 4 layers -> 5 hidden states, with MERT's 320-sample hop (75 frames/s)
    and 64 convolution channels (why: docs/SYNTHETIC.md, "The tiny recipe, number by number")."""
    return EncoderConfig(
        path="tiny",
        hidden_size=64,
        num_hidden_states=5,
        sample_rate=24000,
        window_seconds=10.0,
        tiny_config=dict(
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=128,
            conv_dim=(64, 64, 64, 64, 64, 64, 64),
            conv_stride=(5, 2, 2, 2, 2, 2, 2),
            conv_kernel=(10, 3, 3, 3, 3, 2, 2),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
        ),
    )


def vit_tiny() -> EncoderConfig:
    """ViT with 64x64 inputs and 16x16 patches: 16 patches + CLS = 17 tokens."""
    return EncoderConfig(
        path="tiny",
        hidden_size=32,
        num_tokens=17,
        image_size=64,
        tiny_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=64,
            patch_size=16,
        ),
    )


def vivit_tiny() -> EncoderConfig:
    """ViViT on 8 frames of 32x32 with 2x8x8 tubelets: 4*4*4 = 64 tubelets + CLS = 65 tokens."""
    return EncoderConfig(
        path="tiny",
        hidden_size=32,
        num_tokens=65,
        image_size=32,
        num_frames=8,
        tiny_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            num_frames=8,
            tubelet_size=[2, 8, 8],
        ),
    )


# ---------------------------------------------------------------------------------------------
# Whole-system presets


def preset_tiny() -> M2UGenConfig:
    return M2UGenConfig(
        name="tiny",
        llama=llama_tiny(),
        llama_path="tiny",
        tokenizer_path="tiny",
        mert=mert_tiny(),
        vit=vit_tiny(),
        vivit=vivit_tiny(),
        projector=ProjectorConfig(
            d_model=64, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, ffn_dim=128
        ),
        decoder=DecoderConfig(kind="musicgen", path="tiny", max_text_tokens=16),
    )


def preset_tiny_audioldm2() -> M2UGenConfig:
    cfg = preset_tiny()
    return cfg.replace(
        name="tiny-audioldm2",
        decoder=DecoderConfig(
            kind="audioldm2",
            path="tiny-audioldm2",
            max_text_tokens=16,
            num_inference_steps=4,
            num_waveforms_per_prompt=1,
        ),
    )


def _published(name: str, decoder: DecoderConfig) -> M2UGenConfig:
    return M2UGenConfig(
        name=name,
        llama=llama_7b(),
        llama_path="ckpts/LLaMA-2/7B",
        tokenizer_path="ckpts/LLaMA-2/tokenizer.model",
        mert=mert_330m(),
        vit=vit_b16(),
        vivit=vivit_b(),
        decoder=decoder,
    )


def preset_musicgen_small() -> M2UGenConfig:
    return _published(
        "m2ugen-musicgen-small", DecoderConfig(kind="musicgen", path="facebook/musicgen-small")
    )


def preset_musicgen_medium() -> M2UGenConfig:
    return _published(
        "m2ugen-musicgen-medium", DecoderConfig(kind="musicgen", path="facebook/musicgen-medium")
    )


def preset_audioldm2() -> M2UGenConfig:
    return _published(
        "m2ugen-audioldm2", DecoderConfig(kind="audioldm2", path="cvssp/audioldm2-music")
    )


PRESETS: dict[str, Callable[[], M2UGenConfig]] = {
    "tiny": preset_tiny,
    "tiny-audioldm2": preset_tiny_audioldm2,
    "m2ugen-musicgen-small": preset_musicgen_small,
    "m2ugen-musicgen-medium": preset_musicgen_medium,
    "m2ugen-audioldm2": preset_audioldm2,
}


def get_preset(name: str) -> M2UGenConfig:
    """Return a fresh copy of the named preset (a clear error lists the known names)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


# ---------------------------------------------------------------------------------------------
# Training settings and per-preset recipes


class SettingError(ValueError):
    """A training setting out of range; `name` is the field (and the CLI flag `--name`)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name, self.reason = name, reason
        super().__init__(f"{name} {reason}")


MIXED_PRECISIONS: tuple[str, ...] = ("no", "bf16", "fp16")
STAGE2_INSTRUCTIONS: tuple[str, ...] = ("caption", "request", "mixed")  # data.mixes
REFIT_STARTS: tuple[str, ...] = ("trained", "fresh")  # engine_refit


def _setting(default: Any, text: str, **extra: Any) -> Any:
    """A TrainSettings field: its default and the help its CLI flag shows."""
    return field(default=default, metadata={"help": text, **extra})


@dataclass(frozen=True)
class TrainSettings:
    """Every setting of one training stage, with its default (the published flag defaults).

    The one source of training defaults: a preset's `TrainRecipe` overrides some of them per stage,
    `train_m2ugen.py` has one flag per field (named after it, help from `metadata`), and
    `engine_train.Trainer` reads the resolved object. Checked on construction (`SettingError`).
    """

    # optimisation
    epochs: int = _setting(5, "passes over the stage's training samples")
    batch_size: int = _setting(1, "samples per process and micro-step (global batch: x processes)")
    accum_iter: int = _setting(1, "micro-steps accumulated per optimizer step")
    lr: float = _setting(1e-4, "peak learning rate (warm-up, then half-cycle cosine)")
    min_lr: float = _setting(1e-6, "learning rate at the end of the cosine")
    warmup_epochs: float = _setting(1.0, "epochs of linear warm-up")
    weight_decay: float = _setting(0.05, "AdamW weight decay (weight matrices only)")
    clip_grad: float = _setting(1.0, "gradient-norm clip (0: none)")
    bridge_lr_scale: float = _setting(1.0, "learning-rate multiplier for the modality bridges")
    # data
    audio_crop: float = _setting(
        1.0, "train on a random span of at least this fraction of each clip's music frames "
        "(augmentation; 1 = whole clips)", metavar="MIN_FRACTION")
    max_words: int = _setting(512, "longest tokenised sample (tokens)")
    replay: float = _setting(
        0.0, "stages 2-3: add this fraction (of the stage's size) of samples of the earlier "
        "stages, so later stages do not erase what those taught")
    stage2_instruction: str = _setting(
        "caption", "the human turn of stage 2's text -> music samples (also when stage 3 replays "
        "them): the bare caption (as published), a request wrapping it, or each half",
        choices=STAGE2_INSTRUCTIONS)
    # loss
    ce_weight: float = _setting(1.0, "weight of the text cross-entropy")
    mse_weight: float = _setting(1.0, "weight of the projector MSE (music samples)")
    # stage 3's last phase (engine_refit.py)
    projector_refit_steps: int = _setting(
        0, "stage 3: after the last epoch, fit the output projector alone for this many steps on "
        "the final model's [AUD] states of the stage's music samples (0 = off)")
    projector_refit_lr: float = _setting(1e-3, "peak learning rate of the projector refit "
                                               "(cosine to 3e-5)")
    projector_refit_batch_size: int = _setting(16, "samples per projector refit step")
    projector_refit_mixup: float = _setting(
        0.0, "mix pairs of refit rows (inputs and targets alike) with weights ~ Beta(A, A), so the "
        "projector is smooth between the combinations it saw (0 = off)", metavar="A")
    projector_refit_start: str = _setting(
        "trained", "the refit starts from the projector stages 2-3 trained, or from a fresh "
        "seeded initialisation (then it is a function of the final model's states alone)",
        choices=REFIT_STARTS)
    # the run
    mixed_precision: str = _setting(
        "no", "autocast the forward in bf16/fp16 (fp16 adds a gradient scaler; steps with "
        "non-finite gradients are skipped and counted)", choices=MIXED_PRECISIONS)
    seed: int = _setting(0, "seed of the shuffling, the augmentation and the replay picks")
    save_every: int = _setting(0, "optimizer steps between checkpoints (0: epoch ends only)")
    log_every: int = _setting(10, "optimizer steps between log lines")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "accum_iter", "max_words",
                     "projector_refit_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("projector_refit_steps", "save_every", "clip_grad", "weight_decay",
                     "replay", "min_lr", "warmup_epochs", "projector_refit_mixup"):
            if getattr(self, name) < 0:
                raise SettingError(name, f"must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.audio_crop <= 1.0:
            raise SettingError("audio_crop", f"must be in (0, 1], got {self.audio_crop}")
        for name in ("lr", "projector_refit_lr"):
            if not getattr(self, name) > 0:
                raise SettingError(name, f"must be > 0, got {getattr(self, name)}")
        if self.stage2_instruction not in STAGE2_INSTRUCTIONS:
            raise SettingError("stage2_instruction", f"must be one of {STAGE2_INSTRUCTIONS}, "
                                                     f"got {self.stage2_instruction!r}")
        if self.projector_refit_start not in REFIT_STARTS:
            raise SettingError("projector_refit_start", f"must be one of {REFIT_STARTS}, "
                                                        f"got {self.projector_refit_start!r}")
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise SettingError("mixed_precision",
                               f"must be one of {MIXED_PRECISIONS}, got {self.mixed_precision!r}")

    def check_stage(self, stage: int) -> None:
        """Settings that only one stage accepts."""
        if self.projector_refit_steps and stage != 3:
            raise SettingError("projector_refit_steps", "is a stage-3 phase (stage 2 trains the "
                               "projector itself)")


TRAIN_SETTING_FIELDS: dict[str, dataclasses.Field] = {
    f.name: f for f in dataclasses.fields(TrainSettings)}


@dataclass(frozen=True)
class TrainRecipe:
    """What `train.sh --preset NAME` trains with for every flag the user does not give.

    `common` applies to all stages, `stages[k]` to stage k only (it wins over `common`); flags on
    the command line win over both; `TrainSettings` holds the rest. `data_n` is the
    `python -m data.synthetic --n` the recipe was measured on (None: a recipe for real data).
    """

    common: dict[str, Any] = field(default_factory=dict)
    stages: dict[int, dict[str, Any]] = field(default_factory=dict)
    data_n: Optional[int] = None

    def values(self, stage: int) -> dict[str, Any]:
        """The recipe's own values for `stage` (common < stage), names checked."""
        if stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3, got {stage!r}")
        merged = {**self.common, **self.stages.get(stage, {})}
        unknown = set(merged) - set(TRAIN_SETTING_FIELDS)
        if unknown:
            raise ValueError(f"recipe names unknown training flags {sorted(unknown)}")
        return merged

    def for_stage(self, stage: int, **given: Any) -> TrainSettings:
        """Settings for `stage`: TrainSettings defaults < common < stage < `given` (non-None)."""
        chosen = {k: v for k, v in given.items() if v is not None}
        return TrainSettings(**{**self.values(stage), **chosen})


def recipe_tiny() -> TrainRecipe:
    """The tiny preset on `data.synthetic` data; why each number: docs/SYNTHETIC.md, "The tiny
    recipe"."""
    return TrainRecipe(
        common={"batch_size": 16, "lr": 3e-3, "min_lr": 1e-4, "warmup_epochs": 0.5,
                "max_words": 160, "audio_crop": 0.5, "stage2_instruction": "mixed"},
        stages={
            1: {"epochs": 60, "bridge_lr_scale": 0.3},
            2: {"epochs": 15, "replay": 0.3},
            3: {"epochs": 30, "replay": 1.0, "mse_weight": 0.3,
                "projector_refit_steps": 1600, "projector_refit_batch_size": 64,
                "projector_refit_lr": 2e-3, "projector_refit_mixup": 0.4,
                "projector_refit_start": "fresh"},
        },
        data_n=400,
    )


RECIPES: dict[str, Callable[[], TrainRecipe]] = {
    "tiny": recipe_tiny,
    "tiny-audioldm2": recipe_tiny,
    "m2ugen-musicgen-small": TrainRecipe,
    "m2ugen-musicgen-medium": TrainRecipe,
    "m2ugen-audioldm2": TrainRecipe,
}


def get_recipe(name: str) -> TrainRecipe:
    """The named preset's training recipe (a clear error lists the known names)."""
    try:
        return RECIPES[name]()
    except KeyError:
        raise ValueError(f"no training recipe for preset {name!r}; known: {', '.join(RECIPES)}"
                         ) from None
