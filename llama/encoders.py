"""Frozen MERT / ViT / ViViT wrappers: preprocessing + encoding, never trained.

Facts: docs/MODEL.md section 3.

Each wrapper holds a transformers model in eval mode with `requires_grad=False` and runs it under
`torch.no_grad()` (not `inference_mode`: its outputs feed trainable bridges, and inference tensors
cannot be saved for backward). Public surface, shared by the three wrappers:

- `encode(batch)`: music -> `EncodedAudio(hidden_states (B, S, T, H), mask (B, T))`, S = layers+1;
  image -> (B, num_tokens, H); video -> (B, num_tokens, H). All float32 on the encoder's device.
- `encode_items(batch)`: the same features unpadded, one tensor per sample (what the feature cache
  stores), and `collate(items)`: per-sample tensors back into the batch form of `encode`.
- `identity`: model path + config hash + weight fingerprint + dtype + preprocessing parameters. The
  feature cache keys entries with it, so changing any of those can never serve stale features.

`path == "tiny"` builds random weights from `cfg.tiny_config`, seeded by `cfg.tiny_seed` (same seed,
same weights, whatever the caller's global RNG state).

Preprocessing uses the transformers processors, which work here without torchvision (the PIL/numpy
backends: `ViTImageProcessorPil`, `VivitImageProcessor`, `Wav2Vec2FeatureExtractor`).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import nn

from llama.config import EncoderConfig
from util.hashing import module_fingerprint, sha256_json
from util.seed import seeded

log = logging.getLogger(__name__)

# The real MERT folder ships remote code; these are the errors that mean "that code cannot run
# here" (missing optional dependency, incompatible transformers internals), after which the
# HuBERT classes (same parameter names, same maths) take over.

# Config keys that do not change what a model computes (left out of the identity hash).
_CONFIG_KEYS_IGNORED = {"transformers_version", "architectures", "auto_map", "dtype", "torch_dtype"}


class EncodedAudio(NamedTuple):
    """MERT output for a batch: every hidden state of every frame, and which frames are real."""

    hidden_states: torch.Tensor  # (B, S, T, H) float32, S = num_hidden_layers + 1
    mask: torch.Tensor  # (B, T) bool, True = a real frame (clips differ in length)


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _config_hash(config: Any) -> str:
    """Hash of the fields that define the computation (not versions or class names)."""
    d = {k: v for k, v in config.to_dict().items()
         if not k.startswith("_") and k not in _CONFIG_KEYS_IGNORED}
    return sha256_json(d)[:16]


def _processor_params(processor: Any) -> dict:
    d = processor.to_dict()
    return {k: v for k, v in d.items() if not k.startswith("_") and "processor_class" not in k
            and k not in ("feature_extractor_type", "image_processor_type")}


class EncoderLoadError(ValueError):
    """An encoder's weights or configuration cannot be used (weights missing from the folder, a
    shape that does not match its configuration, failed remote code): the folder is the wrong
    one. `modality` says which encoder; per-item content errors stay plain ValueErrors."""

    def __init__(self, modality: str, message: str) -> None:
        super().__init__(message)
        self.modality = modality


def _check_path(path: str, what: str) -> None:
    """A local-looking path that does not exist is a typo, not a hub id: say so immediately."""
    looks_local = path.startswith(("/", ".", "~")) or path.count("/") > 1  # hub ids: "org/name"
    if looks_local and not os.path.isdir(os.path.expanduser(path)):
        raise FileNotFoundError(f"{what} folder {path!r} does not exist")


def _read_json(path: str, filename: str, required: bool) -> Optional[dict]:
    """`filename` from a local folder or a hub id (the local hub cache when offline)."""
    from transformers.utils import cached_file

    try:
        f = cached_file(path, filename, _raise_exceptions_for_missing_entries=required)
    except OSError as e:
        raise OSError(f"{path!r}: cannot read {filename} ({e})") from e
    if f is None:
        return None
    with open(f, encoding="utf-8") as fh:
        return json.load(fh)


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _check_loading_info(path: str, info: dict, modality: str) -> None:
    """A checkpoint that leaves weights uninitialised would silently encode with random weights."""
    missing = list(info.get("missing_keys", []))
    if missing:
        raise EncoderLoadError(
            modality, f"{path!r}: {len(missing)} encoder weights missing from the checkpoint "
            f"(e.g. {missing[:5]}); is this the right model folder?"
        )
    unexpected = list(info.get("unexpected_keys", []))
    if unexpected:
        log.info("%s: ignoring %d checkpoint tensors the encoder does not use (e.g. %s)",
                 path, len(unexpected), unexpected[:3])


def _build_tiny(model_cls: type, config: Any, seed: int) -> nn.Module:
    """Random weights that depend only on `seed` (the caller's RNG state is left untouched)."""
    with seeded(seed):
        return model_cls(config)


class FrozenEncoder(nn.Module):
    """Common frozen-wrapper behaviour: eval forever, no gradients, a cache identity."""

    modality: str = ""

    def __init__(self, cfg: EncoderConfig, model: nn.Module, processor: Any, dtype: torch.dtype,
                 max_batch: int) -> None:
        super().__init__()
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.cfg = cfg
        self._weights = module_fingerprint(model)  # of the weights as loaded, before any cast
        self.model = _freeze(model.to(dtype=dtype))
        self.processor = processor
        self.max_batch = max_batch
        self._identity = ""  # set by subclasses once the preprocessing parameters are known

    def _make_identity(self, preprocessing: dict) -> str:
        return "|".join([
            f"{self.modality}:{type(self.model).__name__}",
            # not the path: a hub id and a local copy of the same weights share cache entries
            f"tiny#seed{self.cfg.tiny_seed}" if self.cfg.path == "tiny" else "weights",
            f"config={_config_hash(self.model.config)}",
            f"weights={self._weights}",
            f"pre={sha256_json(preprocessing)[:16]}",
        ])

    @property
    def identity(self) -> str:
        """Cache identity; the dtype is read live, so casting the wrapper later (e.g. with the
        enclosing model) can never reuse features computed at another precision."""
        return f"{self._identity}|dtype={str(self.dtype).replace('torch.', '')}"

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def train(self, mode: bool = True) -> "FrozenEncoder":
        """Frozen: stays in eval mode whatever the enclosing model does (dropout never fires)."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_items(self, batch: Sequence[Any]) -> list[torch.Tensor]:
        raise NotImplementedError

    def collate(self, items: Sequence[torch.Tensor]) -> Any:
        raise NotImplementedError

    def encode(self, batch: Sequence[Any]) -> Any:
        """Features for a batch, in the form the matching bridge takes."""
        return self.collate(self.encode_items(batch))


# ---------------------------------------------------------------------------------------------
# Music: MERT (HuBERT-shaped)


def _conv_receptive_field(config: Any) -> int:
    """Samples needed for one output frame of the convolutional feature extractor (MERT: 400)."""
    r = 1
    for k, s in reversed(list(zip(config.conv_kernel, config.conv_stride))):
        r = (r - 1) * s + k
    return r


class MusicEncoder(FrozenEncoder):
    """MERT: 1-D waveforms at `cfg.sample_rate` -> all hidden states of every frame.

    Long clips are cut into windows of `cfg.window_seconds` and ALL windows are encoded, their
    frames concatenated in time (the published code kept only the first 60 s). A trailing piece
    shorter than `min_tail_seconds` is merged into the previous window rather than encoded alone.
    Each window is normalised on its own (the folder's Wav2Vec2 feature extractor: zero mean, unit
    variance over its real samples), as the published code did by calling the processor per
    window: each window is an independent encoder input, like the clips MERT was trained on.

    Batching: windows of all clips are sorted by length and encoded in micro-batches of
    `max_batch`. With a layer-norm feature extractor (`feat_extract_norm="layer"`, HuBERT-large
    style, the tiny preset) windows of different lengths are padded and masked, which leaves every
    real frame unchanged; with a group-norm extractor (its statistics over time would include the
    padding) only windows of equal length share a micro-batch. Either way batched = one by one.
    """

    modality = "audio"

    def __init__(self, cfg: EncoderConfig, model: nn.Module, processor: Any,
                 dtype: torch.dtype = torch.float32, max_batch: int = 8,
                 min_tail_seconds: float = 1.0) -> None:
        super().__init__(cfg, model, processor, dtype, max_batch)
        mc = model.config
        if mc.num_hidden_layers + 1 != cfg.num_hidden_states:
            raise EncoderLoadError(
                self.modality, f"{cfg.path!r}: the model has {mc.num_hidden_layers} layers -> "
                f"{mc.num_hidden_layers + 1} hidden states, but cfg.num_hidden_states is "
                f"{cfg.num_hidden_states}"
            )
        if mc.hidden_size != cfg.hidden_size:
            raise EncoderLoadError(self.modality, f"{cfg.path!r}: hidden size {mc.hidden_size} "
                                   f"!= cfg.hidden_size {cfg.hidden_size}")
        if int(processor.sampling_rate) != int(cfg.sample_rate):
            raise EncoderLoadError(self.modality, f"{cfg.path!r}: the feature extractor expects "
                                   f"{processor.sampling_rate} Hz but cfg.sample_rate is "
                                   f"{cfg.sample_rate}")
        self.min_samples = _conv_receptive_field(mc)
        self.window = int(round(cfg.window_seconds * cfg.sample_rate))
        if self.window < self.min_samples:
            raise EncoderLoadError(self.modality, f"window_seconds {cfg.window_seconds} is shorter "
                                   f"than the encoder's receptive field ({self.min_samples} "
                                   "samples)")
        self.min_tail = max(self.min_samples, int(round(min_tail_seconds * cfg.sample_rate)))
        self.pad_with_mask = getattr(mc, "feat_extract_norm", "group") == "layer"
        self._identity = self._make_identity({
            "processor": _processor_params(processor),
            "sample_rate": cfg.sample_rate,
            "window": self.window,
            "min_tail": self.min_tail,
            "normalise": "per-window",
        })

    def windows(self, n: int) -> list[tuple[int, int]]:
        """(start, end) sample spans covering the whole clip."""
        if n < self.min_samples:
            secs = self.min_samples / self.cfg.sample_rate
            raise ValueError(f"audio of {n} samples is shorter than the encoder's receptive field "
                             f"({self.min_samples} samples = {secs:.3f} s)")
        spans = [(s, min(s + self.window, n)) for s in range(0, n, self.window)]
        if len(spans) > 1 and spans[-1][1] - spans[-1][0] < self.min_tail:
            spans[-2] = (spans[-2][0], n)
            spans.pop()
        return spans

    def _check_wave(self, i: int, w: Any) -> np.ndarray:
        a = w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)
        if a.ndim != 1:
            raise ValueError(f"audio item {i}: expected a 1-D mono waveform, got shape {a.shape}")
        a = a.astype(np.float32, copy=False)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"audio item {i}: waveform contains NaN or infinite samples")
        return a

    @torch.no_grad()
    def encode_items(self, batch: Sequence[Any]) -> list[torch.Tensor]:
        """Per clip: (S, T_i, H) float32, T_i = frames of the whole clip."""
        waves = [self._check_wave(i, w) for i, w in enumerate(batch)]
        jobs = []  # (clip, window index, samples)
        for ci, w in enumerate(waves):
            for wi, (s, e) in enumerate(self.windows(len(w))):
                jobs.append((ci, wi, w[s:e]))
        out: dict[tuple[int, int], torch.Tensor] = {}
        order = sorted(range(len(jobs)), key=lambda j: -len(jobs[j][2]))
        for group in self._micro_batches(order, [len(j[2]) for j in jobs]):
            feats = self._encode_windows([jobs[j][2] for j in group])
            for j, f in zip(group, feats):
                out[jobs[j][0], jobs[j][1]] = f
        items = []
        for ci in range(len(waves)):
            parts = [out[ci, wi] for wi in range(len(self.windows(len(waves[ci]))))]
            items.append(torch.cat(parts, dim=1))
        return items

    def _micro_batches(self, order: list[int], lengths: list[int]) -> list[list[int]]:
        groups: list[list[int]] = []
        for j in order:
            g = groups[-1] if groups else None
            if (g is None or len(g) >= self.max_batch
                    or (not self.pad_with_mask and lengths[g[0]] != lengths[j])):
                groups.append([j])
            else:
                g.append(j)
        return groups

    def _encode_windows(self, windows: list[np.ndarray]) -> list[torch.Tensor]:
        inputs = self.processor(
            windows, sampling_rate=self.cfg.sample_rate, padding=True,
            return_attention_mask=True, return_tensors="pt",
        )
        values = inputs["input_values"].to(self.device, self.dtype)
        lengths = torch.tensor([len(w) for w in windows])
        kwargs = {}
        if self.pad_with_mask:
            kwargs["attention_mask"] = inputs["attention_mask"].to(self.device)
        result = self.model(values, output_hidden_states=True, **kwargs)
        states = torch.stack(result.hidden_states, dim=1).float()  # (b, S, T, H)
        frames = self.model._get_feat_extract_output_lengths(lengths).tolist()
        return [states[i, :, : int(frames[i])] for i in range(len(windows))]

    def collate(self, items: Sequence[torch.Tensor]) -> EncodedAudio:
        """Right-pad per-clip (S, T_i, H) features to (B, S, T, H) with a (B, T) frame mask."""
        if not items:
            raise ValueError("collate needs at least one item")
        s, _, h = items[0].shape
        t = max(x.shape[1] for x in items)
        states = items[0].new_zeros(len(items), s, t, h)
        mask = torch.zeros(len(items), t, dtype=torch.bool, device=items[0].device)
        for i, x in enumerate(items):
            if x.shape[0] != s or x.shape[2] != h:
                raise ValueError(f"audio feature {i} has shape {tuple(x.shape)}, "
                                 f"expected (S={s}, T, H={h})")
            states[i, :, : x.shape[1]] = x
            mask[i, : x.shape[1]] = True
        return EncodedAudio(states, mask)


def _load_mert_model(cfg: EncoderConfig) -> nn.Module:
    """MERT with transformers' HuBERT classes (MERT-v1 has HuBERT's parameter names and forward
    for its configuration), so no code from the weights folder runs. The folder's own remote code
    runs only when `cfg.trust_remote_code` asks for it (`--trust_remote_code`)."""
    from transformers import AutoModel, HubertConfig, HubertModel

    if cfg.path == "tiny":
        base = {"feat_extract_norm": "layer", "do_stable_layer_norm": True}  # HuBERT-large style
        return _build_tiny(HubertModel, HubertConfig(**{**base, **cfg.tiny_config}), cfg.tiny_seed)
    _check_path(cfg.path, "MERT")
    config = _read_json(cfg.path, "config.json", required=True)
    if cfg.trust_remote_code and "AutoModel" in (config.get("auto_map") or {}):
        try:  # trust_remote_code is explicit, so transformers never asks on the terminal
            model, info = AutoModel.from_pretrained(cfg.path, trust_remote_code=True,
                                                    output_loading_info=True)
        except (ImportError, OSError, AttributeError) as e:
            raise EncoderLoadError(
                "audio", f"{cfg.path}: MERT remote code failed ({type(e).__name__}: {e}); "
                "drop --trust_remote_code to load it with HuBERT classes") from e
        _check_loading_info(cfg.path, info, "audio")
        return model
    model, info = HubertModel.from_pretrained(
        cfg.path, config=HubertConfig.from_pretrained(cfg.path), output_loading_info=True)
    _check_loading_info(cfg.path, info, "audio")
    return model


def _load_mert_processor(cfg: EncoderConfig) -> Any:
    """The folder's Wav2Vec2 feature extractor, else zero-mean unit-variance at the cfg rate."""
    from transformers import Wav2Vec2FeatureExtractor

    if cfg.path != "tiny" and _read_json(cfg.path, "preprocessor_config.json", required=False):
        return Wav2Vec2FeatureExtractor.from_pretrained(cfg.path)
    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=cfg.sample_rate, padding_value=0.0, do_normalize=True,
        return_attention_mask=True,
    )


def load_music_encoder(cfg: EncoderConfig, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32, max_batch: int = 8) -> MusicEncoder:
    """Frozen MERT from a hub id, a local folder, or "tiny" (random HuBERT-shaped weights)."""
    enc = MusicEncoder(cfg, _load_mert_model(cfg), _load_mert_processor(cfg), dtype, max_batch)
    return enc.to(device)


# ---------------------------------------------------------------------------------------------
# Images: ViT


def _as_rgb(i: int, img: Any, what: str) -> np.ndarray:
    a = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if a.dtype != np.uint8:
        raise ValueError(f"{what} {i}: expected uint8 pixels, got {a.dtype}")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise ValueError(f"{what} {i}: expected (H, W, 3) RGB, got shape {a.shape}")
    if a.shape[-1] == 1:  # grey: repeated to 3 channels (docs/MODEL.md section 3)
        a = np.repeat(a, 3, axis=-1)
    return a


class _PixelEncoder(FrozenEncoder):
    """Shared by ViT and ViViT: processor -> model -> last hidden state, in chunks of max_batch."""

    def _prepare(self, i: int, item: Any) -> Any:
        raise NotImplementedError

    @torch.no_grad()
    def encode_items(self, batch: Sequence[Any]) -> list[torch.Tensor]:
        from transformers.image_utils import ChannelDimension

        inputs = [self._prepare(i, x) for i, x in enumerate(batch)]
        items: list[torch.Tensor] = []
        for s in range(0, len(inputs), self.max_batch):
            px = self.processor(inputs[s: s + self.max_batch], return_tensors="pt",
                                input_data_format=ChannelDimension.LAST)["pixel_values"]
            _check_pixels(self.cfg, px.shape[-2:])
            h = self.model(pixel_values=px.to(self.device, self.dtype)).last_hidden_state.float()
            items.extend(h.unbind(0))
        return items

    def collate(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(items))


class ImageEncoder(_PixelEncoder):
    """ViT: uint8 (H, W, 3) RGB images -> last hidden state (num_tokens, H) per image.

    Preprocessing: `ViTImageProcessor` semantics (resize to image_size x image_size, rescale to
    [0, 1], normalise with the folder's mean/std; 0.5/0.5 for the tiny preset)."""

    modality = "image"

    def __init__(self, cfg: EncoderConfig, model: nn.Module, processor: Any,
                 dtype: torch.dtype = torch.float32, max_batch: int = 16) -> None:
        super().__init__(cfg, model, processor, dtype, max_batch)
        _check_token_shape(cfg, model, self.modality)
        self._identity = self._make_identity({"processor": _processor_params(processor)})

    def _prepare(self, i: int, item: Any) -> Any:
        return _as_rgb(i, item, "image")


def _check_token_shape(cfg: EncoderConfig, model: nn.Module, modality: str) -> None:
    mc = model.config
    if mc.hidden_size != cfg.hidden_size:
        raise EncoderLoadError(modality, f"{cfg.path!r}: hidden size {mc.hidden_size} != "
                               f"cfg.hidden_size {cfg.hidden_size}")
    if mc.image_size != cfg.image_size:
        raise EncoderLoadError(modality, f"{cfg.path!r}: model image_size {mc.image_size} != "
                               f"cfg.image_size {cfg.image_size}")


def _check_pixels(cfg: EncoderConfig, hw: Sequence[int]) -> None:
    if tuple(hw) != (cfg.image_size, cfg.image_size):
        raise ValueError(f"{cfg.path!r}: the processor produced {tuple(hw)} pixels, the model "
                         f"expects {cfg.image_size}x{cfg.image_size}")


def load_image_encoder(cfg: EncoderConfig, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32, max_batch: int = 16) -> ImageEncoder:
    """Frozen ViT (no pooler) from a hub id, a local folder, or "tiny"."""
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    size = {"height": cfg.image_size, "width": cfg.image_size}
    if cfg.path == "tiny":
        model = _build_tiny(lambda c: ViTModel(c, add_pooling_layer=False),
                            ViTConfig(**cfg.tiny_config), cfg.tiny_seed)
        processor = ViTImageProcessorPil(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    else:
        _check_path(cfg.path, "ViT")
        model, info = ViTModel.from_pretrained(cfg.path, add_pooling_layer=False,
                                               output_loading_info=True)
        _check_loading_info(cfg.path, info, "image")
        if _read_json(cfg.path, "preprocessor_config.json", required=False):
            processor = ViTImageProcessorPil.from_pretrained(cfg.path)
        else:
            processor = ViTImageProcessorPil(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    n = (cfg.image_size // model.config.patch_size) ** 2 + 1
    if n != cfg.num_tokens:
        raise EncoderLoadError("image", f"{cfg.path!r}: the model yields {n} tokens, "
                               f"cfg.num_tokens is {cfg.num_tokens}")
    return ImageEncoder(cfg, model, processor, dtype, max_batch).to(device)


# ---------------------------------------------------------------------------------------------
# Video: ViViT


def sample_frame_indices(n: int, num_frames: int) -> np.ndarray:
    """`num_frames` indices spread evenly over n frames (repeats when n < num_frames)."""
    if n < 1:
        raise ValueError("a video needs at least one frame")
    return np.linspace(0, n - 1, num_frames).round().astype(np.int64)


class VideoEncoder(_PixelEncoder):
    """ViViT: uint8 (F, H, W, 3) clips -> last hidden state (num_tokens, H) per clip.

    The model's position table fixes the frame count: clips with F != cfg.num_frames are
    resampled with `sample_frame_indices` (evenly spread, repeating frames of short clips).
    Frames are processed by `VivitImageProcessor` (the folder's, e.g. resize 256 + centre crop 224;
    for the tiny preset: resize to image_size x image_size, scaled to [-1, 1])."""

    modality = "video"

    def __init__(self, cfg: EncoderConfig, model: nn.Module, processor: Any,
                 dtype: torch.dtype = torch.float32, max_batch: int = 4) -> None:
        super().__init__(cfg, model, processor, dtype, max_batch)
        _check_token_shape(cfg, model, self.modality)
        if model.config.num_frames != cfg.num_frames:
            raise EncoderLoadError(self.modality, f"{cfg.path!r}: model num_frames "
                                   f"{model.config.num_frames} != cfg.num_frames "
                                   f"{cfg.num_frames}")
        self._identity = self._make_identity({"processor": _processor_params(processor),
                                              "num_frames": cfg.num_frames,
                                              "frame_resampling": "linspace-round"})

    def _frames(self, i: int, clip: Any) -> list[np.ndarray]:
        a = clip.detach().cpu().numpy() if isinstance(clip, torch.Tensor) else np.asarray(clip)
        if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
            raise ValueError(f"video {i}: expected uint8 (F, H, W, 3), got {a.dtype} {a.shape}")
        idx = sample_frame_indices(a.shape[0], self.cfg.num_frames)
        return [a[k] for k in idx]

    def _prepare(self, i: int, item: Any) -> Any:
        return self._frames(i, item)


def load_video_encoder(cfg: EncoderConfig, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32, max_batch: int = 4) -> VideoEncoder:
    """Frozen ViViT (no pooler) from a hub id, a local folder, or "tiny"."""
    from transformers import VivitConfig, VivitImageProcessor, VivitModel

    if cfg.path == "tiny":
        model = _build_tiny(lambda c: VivitModel(c, add_pooling_layer=False),
                            VivitConfig(**cfg.tiny_config), cfg.tiny_seed)
        processor = _default_vivit_processor(cfg)
    else:
        _check_path(cfg.path, "ViViT")
        model, info = VivitModel.from_pretrained(cfg.path, add_pooling_layer=False,
                                                 output_loading_info=True)
        _check_loading_info(cfg.path, info, "video")
        if _read_json(cfg.path, "preprocessor_config.json", required=False):
            processor = VivitImageProcessor.from_pretrained(cfg.path)
        else:
            processor = _default_vivit_processor(cfg)
    t, ph, pw = model.config.tubelet_size
    n = (cfg.num_frames // t) * (cfg.image_size // ph) * (cfg.image_size // pw) + 1
    if n != cfg.num_tokens:
        raise EncoderLoadError("video", f"{cfg.path!r}: the model yields {n} tokens, "
                               f"cfg.num_tokens is {cfg.num_tokens}")
    return VideoEncoder(cfg, model, processor, dtype, max_batch).to(device)


def _default_vivit_processor(cfg: EncoderConfig) -> Any:
    from transformers import VivitImageProcessor

    return VivitImageProcessor(
        size={"height": cfg.image_size, "width": cfg.image_size}, do_center_crop=False,
        rescale_factor=1 / 255, offset=False, image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )


__all__ = [
    "EncodedAudio", "EncoderLoadError", "FrozenEncoder", "MusicEncoder", "ImageEncoder",
    "VideoEncoder",
    "load_music_encoder", "load_image_encoder", "load_video_encoder", "sample_frame_indices",
]
