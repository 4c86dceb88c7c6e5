"""Import of the released M2UGen / MuMu-LLaMA `checkpoint.pth` files (docs/MODEL.md section 8).

A release file is a pickled dict {model, optimizer, epoch, scaler, args} whose `model` is the FULL
state dict (frozen LLaMA, MERT, ViT, ViViT and MusicGen included). Loading it here:

- never unpickles anything but tensors, containers and `argparse.Namespace`
  (`torch.load(weights_only=True)` with a one-class allow-list), memory-mapped, so tensors are
  paged in when copied into the model and no second full copy is held;
- maps every key onto our modules or reports it: unknown or missing learned tensors are an error
  naming the first keys (`allow_partial` downgrades it to a warning listing them); keys with no use
  in the published forward (gates of non-adapter layers, the ViT/ViViT poolers, the newer
  release's never-run video RNN) are reported by reason, never silently dropped;
- detects the release from its keys and returns a configuration with the published behaviour:
  the adapter token through the plain frozen `wv` (`adapter_uses_lora=False`), the projector fed
  from pre-norm states at the positions predicting [AUD0..7] (`projector.input`), the music
  pooling of that release (`bridges.music_pooling`, `bridges.music_l2`).

The model is built on the meta device and the file's tensors are assigned into it, so a 7B
release never allocates a randomly initialised copy first.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

from llama.checkpoint import CheckpointError
from llama.config import (
    AUD_TOKENS,
    BridgeConfig,
    DecoderConfig,
    EncoderConfig,
    KnnConfig,
    LlamaConfig,
    M2UGenConfig,
    ProjectorConfig,
)

log = logging.getLogger(__name__)

RELEASES = ("m2ugen", "mumu-llama")
ALLOWED_GLOBALS = (argparse.Namespace,)
_LAYER = re.compile(r"^llama\.layers\.(\d+)\.")
# Frozen components kept in the file: state-dict prefix -> modality of our encoders.
ENCODER_PREFIX = {"audio": "mert_model.", "image": "vit_model.", "video": "vivit_model."}
# Published defaults (gradio_app.py) when the file's args do not name a decoder.
PUBLISHED_DECODER_PATH = {"musicgen": "facebook/musicgen-small",
                          "audioldm2": "cvssp/audioldm2-music"}
AUDIOLDM2_DIM = 128 * 1024 + 8 * 768


class PublishedCheckpointError(CheckpointError):
    """A release file cannot be read or does not fit a known layout (message names file + key)."""


@dataclass
class PublishedInfo:
    """What the importer found: the release, and every key it did not use, with the reason."""

    path: str
    release: str
    decoder_kind: str
    args: dict[str, Any]
    unused: dict[str, list[str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unsupported_modalities: tuple[str, ...] = ()
    gates_all_zero: bool = False


# ---------------------------------------------------------------------------------------------
# Reading the file


def read_published(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict with `module.` stripped and old names renamed, args as a dict).

    Raises PublishedCheckpointError for a missing/truncated file, a pickle that names any global
    outside the allow-list (nothing is executed), or a dict without `model`.
    """
    path = Path(path)
    if not path.is_file():
        raise PublishedCheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise PublishedCheckpointError(
            f"{path}: not a torch zip checkpoint (truncated, or saved with the legacy format)")
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            blob = torch.load(path, weights_only=True, mmap=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        first = next((ln.strip() for ln in str(err).splitlines() if "global" in ln.lower()),
                     str(err).strip().splitlines()[0] if str(err).strip() else "")
        raise PublishedCheckpointError(
            f"{path}: refused: the pickle refers to a global outside the allow-list "
            f"(argparse.Namespace): {first}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise PublishedCheckpointError(f"{path}: unreadable (truncated?): "
                                       f"{str(err).strip().splitlines()[0]}") from None
    if not isinstance(blob, dict) or not isinstance(blob.get("model"), Mapping):
        keys = sorted(blob)[:5] if isinstance(blob, dict) else type(blob).__name__
        raise PublishedCheckpointError(f"{path}: expected a dict with a 'model' state dict, "
                                       f"got {keys}")
    state: dict[str, torch.Tensor] = {}
    for key, value in blob["model"].items():
        if not isinstance(value, torch.Tensor):
            raise PublishedCheckpointError(f"{path}: model[{key!r}] is not a tensor")
        key = key.replace("module.", "")  # DDP wrappers, as the published loaders strip it
        for old in ("rnn", "attention", "softmax"):  # the newer loader's renaming
            key = key.replace(f"iu_vit_{old}", f"iu_vivit_{old}")
        state[key] = value
    args = blob.get("args")
    return state, (vars(args) if isinstance(args, argparse.Namespace) else {})


def detect_release(state: Mapping[str, torch.Tensor], path: str = "checkpoint") -> str:
    """"mumu-llama" when the music bridge has RNN/attention pooling keys, else "m2ugen"."""
    needed = ("llama.tok_embeddings.weight", "llama.layers.0.attention.wq.weight",
              "prefix_query.weight", "mu_mert_agg.weight", "output_projector.fc.weight")
    absent = [k for k in needed if k not in state]
    if absent:
        raise PublishedCheckpointError(
            f"{path}: unknown layout: not an M2UGen/MuMu-LLaMA release (no {absent[0]!r})")
    return "mumu-llama" if "mu_mert_rnn.weight_ih_l0" in state else "m2ugen"


# ---------------------------------------------------------------------------------------------
# Configuration from the keys and shapes


def count_indexed(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    """How many distinct indices the regex `pattern` (one group) captures over the keys."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def backbone_config(state: Mapping[str, torch.Tensor], norm_eps: float = 1e-5,
                    max_seq_len: int = 1024) -> LlamaConfig:
    """The LLaMA shape and tuning knobs of a release, from its tensors."""
    emb = state["llama.tok_embeddings.weight"]
    gate = state["llama.layers.0.attention.gate"]
    n_prefix = state["prefix_query.weight"].shape[0]
    lora = state.get("llama.layers.0.attention.lora_wq_l1.weight")
    if n_prefix % 3:
        raise PublishedCheckpointError(f"prefix_query.weight has {n_prefix} rows, not 3 x layers")
    return LlamaConfig(
        dim=emb.shape[1], n_layers=count_indexed(state, r"^llama\.layers\.(\d+)\."),
        n_heads=gate.numel(), vocab_size=emb.shape[0] - len(AUD_TOKENS),
        ffn_hidden_dim=state["llama.layers.0.feed_forward.w1.weight"].shape[0],
        norm_eps=norm_eps, max_seq_len=max_seq_len,
        lora_rank=0 if lora is None else lora.shape[0],
        adapter_layers_per_modality=n_prefix // 3, adapter_uses_lora=False,
    )


def projector_config(state: Mapping[str, torch.Tensor]) -> ProjectorConfig:
    q = state["output_projector.query_embs"]
    return ProjectorConfig(
        d_model=q.shape[2], n_heads=4,  # published nn.Transformer(nhead=4); not in the shapes
        n_encoder_layers=count_indexed(state, r"^output_projector\.tfm\.encoder\.layers\.(\d+)\."),
        n_decoder_layers=count_indexed(state, r"^output_projector\.tfm\.decoder\.layers\.(\d+)\."),
        ffn_dim=state["output_projector.tfm.encoder.layers.0.linear1.weight"].shape[0],
        n_output_tokens=q.shape[1], output_dim=state["output_projector.model.weight"].shape[0],
        input="pre_norm_predicting",
    )


def bridge_config(state: Mapping[str, torch.Tensor], release: str) -> BridgeConfig:
    return BridgeConfig(
        music_pooling="rnn-attention" if release == "mumu-llama" else "mean",
        bridge_norm="layer" if "mu_mert_norm_1.bias" in state else "rms",
        music_l2="frames" if release == "mumu-llama" else "pooled",
    )


# ---------------------------------------------------------------------------------------------
# Frozen encoders: a folder's weights, or the file's weights under a folder's / published config


def _has_weights(path: str) -> bool:
    p = Path(path)
    if not p.is_dir():
        return True  # a hub id: its weights come from the hub (cache)
    return any(p.glob("*.safetensors")) or any(p.glob("pytorch_model*.bin"))


def _encoder_model(modality: str, config_dir: Optional[str],
                   state: Mapping[str, torch.Tensor]):
    """The transformers encoder (empty) for `modality`: its config from `config_dir`, else read
    off the file's tensors (`llama.published_encoders`)."""
    from transformers import HubertConfig, HubertModel, ViTConfig, ViTModel, VivitConfig, VivitModel

    from llama import published_encoders as pe

    klass, cfg_cls = {"audio": (HubertModel, HubertConfig), "image": (ViTModel, ViTConfig),
                      "video": (VivitModel, VivitConfig)}[modality]
    if config_dir is not None:
        config = cfg_cls.from_pretrained(config_dir)
    else:
        prefix = ENCODER_PREFIX[modality]
        config = cfg_cls(**(pe.mert_config(state, prefix) if modality == "audio" else
                            pe.vision_config(state, prefix, video=modality == "video")))
    if modality == "audio":
        return klass(config)
    return klass(config, add_pooling_layer=False)


def load_component(model: torch.nn.Module, prefix: str, state: Mapping[str, torch.Tensor],
                   path: str, dtype: torch.dtype) -> list[str]:
    """Fill a meta-built frozen transformers component with the file's tensors under `prefix`,
    cast to `dtype`; returns the keys under `prefix` it has no use for. Every tensor the model
    stores must be there, with its shape.

    The releases were saved with 2023 transformers: older parameter names (ViT/ViViT
    `encoder.layer.N.attention.attention.query`, weight norms as `weight_g/weight_v`) are
    renamed by transformers' own checkpoint conversion mapping, as its `from_pretrained` does."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, rename_source_key

    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if not isinstance(t, WeightConverter)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    wanted = model.state_dict()
    out, unused = {}, []
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name not in wanted:
            name, converted = rename_source_key(name, renamings, converters)
            if converted is not None:
                raise PublishedCheckpointError(f"{path}: {key} needs a tensor conversion "
                                               f"({converted}) this loader does not apply")
        if name not in wanted:
            unused.append(key)
            continue
        if tuple(value.shape) != tuple(wanted[name].shape):
            raise PublishedCheckpointError(
                f"{path}: {prefix}{name} has shape {tuple(value.shape)}, the config expects "
                f"{tuple(wanted[name].shape)} (give the matching --*_path with the right config)")
        out[name] = value
    missing = sorted(set(wanted) - set(out))
    if missing:
        raise PublishedCheckpointError(f"{path}: {prefix}* lacks {missing[:3]} (give a folder "
                                       f"with weights via the matching --*_path)")
    model.load_state_dict({k: v.to(dtype) for k, v in out.items()}, strict=True, assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise PublishedCheckpointError(f"{path}: {prefix}* gives no value for {left[:3]}")
    return unused


def build_encoder(modality: str, enc_cfg: EncoderConfig, config_dir: Optional[str],
                  state: Mapping[str, torch.Tensor], path: str, dtype: torch.dtype):
    """A frozen encoder wrapper whose weights come from the release file; (encoder, cfg, unused)."""
    from llama import encoders

    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        model = _encoder_model(modality, config_dir, state)
    unused = load_component(model, ENCODER_PREFIX[modality], state, path, dtype)
    mc = model.config
    has_processor = config_dir is not None and (Path(config_dir) / "preprocessor_config.json"
                                                ).is_file()
    label = config_dir or f"published {modality} encoder"
    if modality == "audio":
        from transformers import Wav2Vec2FeatureExtractor

        cfg = replace(enc_cfg, path=label, hidden_size=mc.hidden_size,
                      num_hidden_states=mc.num_hidden_layers + 1)
        proc = (Wav2Vec2FeatureExtractor.from_pretrained(config_dir) if has_processor else
                Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=cfg.sample_rate,
                                         padding_value=0.0, do_normalize=True,
                                         return_attention_mask=True))
        enc = encoders.MusicEncoder(cfg, encoders._freeze(model), proc, dtype)
    elif modality == "image":
        from transformers import ViTImageProcessorPil

        n = (mc.image_size // mc.patch_size) ** 2 + 1
        cfg = replace(enc_cfg, path=label, hidden_size=mc.hidden_size, num_tokens=n,
                      image_size=mc.image_size)
        size = {"height": mc.image_size, "width": mc.image_size}
        proc = (ViTImageProcessorPil.from_pretrained(config_dir) if has_processor else
                ViTImageProcessorPil(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3))
        enc = encoders.ImageEncoder(cfg, encoders._freeze(model), proc, dtype)
    else:
        from transformers import VivitImageProcessor

        t, ph, pw = mc.tubelet_size
        n = (mc.num_frames // t) * (mc.image_size // ph) * (mc.image_size // pw) + 1
        cfg = replace(enc_cfg, path=label, hidden_size=mc.hidden_size, num_tokens=n,
                      image_size=mc.image_size, num_frames=mc.num_frames)
        proc = (VivitImageProcessor.from_pretrained(config_dir) if has_processor else
                VivitImageProcessor())  # the defaults are google/vivit-b-16x2-kinetics400's
        enc = encoders.VideoEncoder(cfg, encoders._freeze(model), proc, dtype)
    return enc, cfg, unused


# ---------------------------------------------------------------------------------------------
# Key maps


def map_backbone(state: Mapping[str, torch.Tensor], cfg: LlamaConfig
                 ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """llama.* -> backbone state (new-token rows split off, gates reshaped); (ours, unused)."""
    out: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    base = cfg.vocab_size
    for key, value in state.items():
        if not key.startswith("llama."):
            continue
        name = key[len("llama."):]
        if name in ("tok_embeddings.weight", "output.weight"):
            new = "new_tok_embeddings" if name.startswith("tok") else "new_output"
            out[name], out[new] = value[:base], value[base:]
        elif name.endswith(".attention.gate"):
            layer = int(name.split(".")[1])
            if layer < cfg.first_adapter_layer:
                unused.append(key)  # the published forward gives these layers no adapter
            else:
                out[name] = value.reshape(-1)
        else:
            out[name] = value
    out["prefix_query.weight"] = state["prefix_query.weight"]
    return out, unused


def map_state(state: Mapping[str, torch.Tensor], model: torch.nn.Module, cfg: M2UGenConfig
              ) -> tuple[dict[str, torch.Tensor], dict[str, list[str]], list[str]]:
    """(our state dict, {reason: unused published keys}, unknown published keys)."""
    from llama.bridges import published_key_map

    ours, gate_unused = map_backbone(state, cfg.llama)
    ours = {f"backbone.{k}": v for k, v in ours.items()}
    bridge_map = published_key_map(model.bridges)
    unused: dict[str, list[str]] = {"gates of layers without an adapter": gate_unused}
    never_run = []
    unknown = []
    for key, value in state.items():
        if key.startswith("llama.") or key == "prefix_query.weight":
            continue
        if key in bridge_map:
            ours[f"bridges.{bridge_map[key]}"] = value
        elif key.startswith("output_projector."):
            ours[f"projector.{key[len('output_projector.'):]}"] = value
        elif key.startswith(("iu_vivit_rnn.", "iu_vivit_attention.")):
            never_run.append(key)
        elif key.startswith(tuple(ENCODER_PREFIX.values()) + ("generation_model.",)):
            continue  # frozen components: handled by load_published_model
        else:
            unknown.append(key)
    if never_run:
        unused["the newer release's video RNN/attention (its video path never ran)"] = never_run
    return ours, unused, unknown


# ---------------------------------------------------------------------------------------------
# Loading


def _tokenizer_path(llama_dir: Optional[str], path: Path) -> str:
    if llama_dir is None:
        raise PublishedCheckpointError(f"{path}: --llama_dir is needed for the tokenizer "
                                       "(tokenizer.model or a Hugging Face tokenizer folder)")
    tok = Path(llama_dir) / "tokenizer.model"
    return str(tok) if tok.is_file() else str(llama_dir)


def _assign(model: torch.nn.Module, ours: dict[str, torch.Tensor], path: Path,
            allow_partial: bool, dtype: Optional[torch.dtype], device: str) -> list[str]:
    """Copy the mapped tensors into the meta-built model; returns the missing names."""
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    unknown = sorted(set(ours) - set(params) - set(buffers))
    if unknown:
        raise PublishedCheckpointError(f"{path}: {len(unknown)} key(s) map to no parameter, e.g. "
                                       f"{unknown[:3]}")
    for name, value in ours.items():
        target = params.get(name, buffers.get(name))
        if tuple(target.shape) != tuple(value.shape):
            raise PublishedCheckpointError(f"{path}: {name} has shape {tuple(value.shape)}, the "
                                           f"model expects {tuple(target.shape)}")
    missing = sorted(n for n in params if n not in ours)
    if missing and not allow_partial:
        raise PublishedCheckpointError(f"{path}: {len(missing)} learned tensor(s) missing, e.g. "
                                       f"{missing[:3]} (allow_partial loads the rest)")
    # Each tensor in the dtype the model declares (frozen: `dtype`; tuned: float32): a tensor
    # already in that dtype stays the memory-mapped one, so no second copy is made.
    # `dtype` None (import): every tensor exactly as stored (the writer converts nothing).
    full = {n: v.to(device=device, dtype=v.dtype if dtype is None else
                    params.get(n, buffers.get(n)).dtype) for n, v in ours.items()}
    for n in missing:
        full[n] = torch.zeros(params[n].shape, dtype=params[n].dtype, device=device)
    for n, b in buffers.items():
        if n not in full:
            full[n] = torch.zeros(b.shape, dtype=b.dtype, device=device)
    model.load_state_dict(full, strict=True, assign=True)
    return missing


def load_published_model(
    path: str | os.PathLike,
    llama_dir: Optional[str] = None,
    mert_path: Optional[str] = None,
    vit_path: Optional[str] = None,
    vivit_path: Optional[str] = None,
    music_decoder: Optional[str] = None,
    music_decoder_path: Optional[str] = None,
    knn_dir: Optional[str] = None,
    allow_partial: bool = False,
    device: str = "cpu",
    dtype: Optional[torch.dtype] = torch.float32,
    norm_eps: float = 1e-5,
):
    """An M2UGen computing what the published code computed for this release file.

    `*_path` naming a folder with weights (or a hub id) supplies that frozen component; a folder
    with only config files, or None, builds it from that / the published configuration and takes
    its weights from the file. The returned model carries `model.published` (PublishedInfo).
    """
    from llama.m2ugen import M2UGen

    path = Path(path)
    state, args = read_published(path)
    release = detect_release(state, str(path))
    # dtype None: the frozen LLaMA as stored (fp16 in the releases), encoders float32 as stored.
    enc_dtype = torch.float32 if dtype is None else dtype
    as_stored = dtype is None
    dtype = dtype or state["llama.layers.0.attention.wq.weight"].dtype
    llama_cfg = backbone_config(state, norm_eps=norm_eps)
    proj = projector_config(state)
    kind = music_decoder or args.get("music_decoder") or (
        "audioldm2" if proj.output_dim == AUDIOLDM2_DIM else "musicgen")
    kind = kind.lower()
    dec_path = music_decoder_path or args.get("music_decoder_path") or PUBLISHED_DECODER_PATH[kind]
    mert = EncoderConfig(path=mert_path or "m-a-p/MERT-v1-330M",
                         hidden_size=state["mu_mert_proj.weight"].shape[1],
                         num_hidden_states=state["mu_mert_agg.weight"].shape[1])
    vit = EncoderConfig(path=vit_path or "google/vit-base-patch16-224",
                        hidden_size=state["iu_vit_proj.weight"].shape[1],
                        num_tokens=state["iu_vit_agg.weight"].shape[1])
    vivit = EncoderConfig(path=vivit_path or "google/vivit-b-16x2-kinetics400",
                          hidden_size=state["iu_vivit_proj.weight"].shape[1],
                          num_tokens=state["iu_vivit_agg.weight"].shape[1])
    cfg = M2UGenConfig(
        name=f"published-{release}", llama=llama_cfg, llama_path="tiny",
        tokenizer_path=_tokenizer_path(llama_dir, path), mert=mert, vit=vit, vivit=vivit,
        bridges=bridge_config(state, release), knn=KnnConfig(), projector=proj,
        decoder=DecoderConfig(kind=kind, path=dec_path, max_text_tokens=proj.n_output_tokens),
    )
    with torch.device("meta"):
        model = M2UGen(cfg, device="meta", dtype=dtype, load_decoder=False)
    ours, unused, unknown = map_state(state, model, cfg)
    if unknown and not allow_partial:
        raise PublishedCheckpointError(f"{path}: {len(unknown)} unknown key(s), e.g. "
                                       f"{unknown[:3]}")
    if unknown:
        unused["unknown (allow_partial)"] = unknown
    missing = _assign(model, ours, path, allow_partial, None if as_stored else dtype, device)
    _finish(model, device)
    model.cfg.llama_path = f"published:{path}"
    _attach_encoders(model, state, path, unused, enc_dtype, device,
                     {"audio": mert_path, "image": vit_path, "video": vivit_path})
    _release_musicgen(model, state, path, unused, args, music_decoder_path, enc_dtype, device)
    model.trained = True
    gates = [p for n, p in model.backbone.named_parameters() if n.endswith(".gate")]
    info = PublishedInfo(
        path=str(path), release=release, decoder_kind=kind, args=args,
        unused={k: v for k, v in unused.items() if v}, missing=missing,
        unsupported_modalities=("video",) if release == "mumu-llama" else (),
        gates_all_zero=all(bool((g == 0).all()) for g in gates),
    )
    model.published = info
    _report(info, llama_dir)
    if knn_dir is not None:
        attach_knn(model, knn_dir)
    return model


def _finish(model, device: str) -> None:
    """Point the meta-built model's bookkeeping at the real device."""
    model.device_ = torch.device(device)
    model.aud_ids = torch.tensor(model.tokenizer.aud_ids, device=device)
    model.backbone._rope = {}


def _attach_encoders(model, state, path: Path, unused: dict[str, list[str]], dtype, device,
                     paths: dict[str, Optional[str]]) -> None:
    for modality, prefix in ENCODER_PREFIX.items():
        given = paths[modality]
        keys = [k for k in state if k.startswith(prefix)]
        if given is not None and _has_weights(given):
            if keys:
                unused[f"{prefix}* (superseded by {given})"] = keys
            continue
        if not keys:
            raise PublishedCheckpointError(f"{path}: no {prefix}* weights and no weights folder "
                                           f"given for the {modality} encoder")
        part = {"audio": "mert", "image": "vit", "video": "vivit"}[modality]
        enc, enc_cfg, extra = build_encoder(modality, getattr(model.cfg, part), given, state,
                                            str(path), dtype)
        setattr(model.cfg, part, enc_cfg)
        model._encoders[modality] = enc.to(device)
        if extra:
            unused[f"{prefix}* not used by our encoder (e.g. its pooler)"] = extra


def _release_musicgen(model, state: Mapping[str, torch.Tensor], path: Path,
                      unused: dict[str, list[str]], args: Mapping[str, Any],
                      given: Optional[str], dtype: torch.dtype, device: str) -> None:
    """Run the MusicGen the release file holds (built on first use, from the published config
    of its size or a config-only `given` folder), unless `given` supplies weights (a folder with
    weights or a hub id) or the file's MusicGen has no published shape: then the decoder loads
    from `cfg.decoder.path` and the file's MusicGen keys are reported unused."""
    from llama import published_musicgen as pm

    keys = [k for k in state if k.startswith(pm.PREFIX)]
    if not keys:
        return
    dec = model.cfg.decoder
    if dec.kind != "musicgen":
        unused[f"MusicGen weights (the {dec.kind} decoder was chosen)"] = keys
        return
    if given is not None and _has_weights(given):
        unused[f"{pm.PREFIX}* (superseded by {given})"] = keys
        return
    if given is None and pm.published_size(state) is None:
        unused[f"{pm.PREFIX}* (shape {pm.decoder_shape(state)} is no published MusicGen size; "
               f"the decoder loads from {dec.path})"] = keys
        return
    mine = {k: state[k] for k in keys}  # the closure keeps only these tensors (memory-mapped)
    label = given or f"published MusicGen in {path}"
    model.cfg.decoder = replace(dec, path=label)

    def build():
        from llama.decoders import DecoderLoadError, MusicGenDecoder

        try:
            musicgen, extra = pm.build_release_musicgen(mine, str(path), given, dtype)
        except (PublishedCheckpointError, OSError, ValueError) as exc:
            raise DecoderLoadError(f"cannot build the MusicGen of {path}: {exc}") from exc
        if extra:
            log.info("%s: %d MusicGen key(s) not used, e.g. %s", path, len(extra), extra[:2])
        tokenizer, why = pm.load_tokenizer(pm.tokenizer_sources(given, args, mine))
        if tokenizer is None:
            log.warning("%s: MusicGen weights taken from the file; no T5 tokenizer found (%s): "
                        "music from text needs --music_decoder_path", path, why)
        return MusicGenDecoder(model.cfg.decoder, musicgen, tokenizer, device, dtype,
                               missing_tokenizer=why)

    model.decoder_factory = build


def _report(info: PublishedInfo, llama_dir: Optional[str]) -> None:
    for reason, keys in info.unused.items():
        log.info("%s: %d key(s) not used: %s (e.g. %s)", info.path, len(keys), reason, keys[:2])
    if info.missing:
        log.warning("%s: %d learned tensor(s) missing, set to zero (allow_partial): %s",
                    info.path, len(info.missing), info.missing[:5])
    if llama_dir is not None:
        weights = [p for p in Path(llama_dir).rglob("*") if p.suffix in (".pth", ".safetensors")]
        if weights:
            log.info("%s: LLaMA base weights taken from the checkpoint; %s is used for the "
                     "tokenizer only", info.path, llama_dir)
    if info.gates_all_zero:
        log.warning(
            "%s: every adapter gate is 0 (the published trainer never trained them): music, "
            "image and video inputs cannot change this model's answers; `python -m "
            "Evaluation.sensitivity` measures it", info.path)


# ---------------------------------------------------------------------------------------------
# The published inference semantics


def project_published(model, ids: list[int], modality_features: Optional[torch.Tensor]
                      ) -> torch.Tensor:
    """Projector output for a sequence ending in [AUD0..7], read as the published code read it:
    pre-norm states at the 8 positions predicting [AUD0..7], plus those tokens' embeddings.
    (Projector scale: the published code divided by 10 before the decoder.)"""
    n = len(AUD_TOKENS)
    tokens = torch.tensor([ids], device=model.device_)
    _, hidden = model.backbone(tokens, modality_features=modality_features, return_hidden=True,
                               pre_norm_hidden=True)
    start = len(ids) - n
    h = hidden[:, start - 1: start - 1 + n]
    emb = model.backbone.embed(tokens[:, start:])
    return model.projector(h.to(emb.dtype), emb)


@torch.inference_mode()
def generate_published(model, prompt_ids: list[int], modality_features: Optional[torch.Tensor],
                       max_gen_len: int, release: str, stop_text: str = "\n###",
                       temperature: float = 0.0, top_p: float = 1.0,
                       generator: Optional[torch.Generator] = None) -> list[int]:
    """Decoding with the published stopping rules: no EOS stop; stop when the last three
    tokens decode to "\\n###"; the newer release also stops right after the 8th [AUD] token of an
    in-order [AUD0..7] run. Greedy at temperature 0, else top-p sampling (the published
    `sample_top_p`). Returns the generated ids (special tokens included)."""
    from llama.generation import select_next

    total = min(model.cfg.llama.max_seq_len, max_gen_len + len(prompt_ids))
    cache = model.backbone.new_cache(1, total)
    tokens = list(prompt_ids)
    aud = list(model.tokenizer.aud_ids)
    gather = 0
    logits = model.backbone(torch.tensor([tokens], device=model.device_),
                            modality_features=modality_features, cache=cache, last_only=True)
    for cur in range(len(prompt_ids), total):
        nxt = int(select_next(logits[:, -1].float(), temperature, top_p, generator)[0])
        tokens.append(nxt)
        if nxt == aud[gather]:
            gather += 1
            if gather == len(aud):
                gather = 0
                if release == "mumu-llama":
                    break
        if model.tokenizer.hf.decode(tokens[cur - 2: cur + 1]) == stop_text:
            break
        if cur + 1 < total:
            logits = model.backbone(torch.tensor([[nxt]], device=model.device_),
                                    cache=cache, last_only=True)
    return tokens[len(prompt_ids):]



# ---------------------------------------------------------------------------------------------
# A chat turn with the published semantics


class UnsupportedModalityError(ValueError):
    """The release's published code could not run this modality (we refuse it the same way)."""


def published_chat(model, prompt: str, *, history: Sequence[tuple[str, str]] = (),
                   media: Any = None, settings: Any = None, want_music: bool = True):
    """One turn as the published demo ran it: Alpaca template + BOS, no EOS stop, stop on
    "\\n###" (the newer release also after the 8th [AUD]), greedy at temperature 0.

    Returns a `ChatReply` whose `generated_ids` are every generated id (special tokens and the
    stop text included), `token_ids` those before the first [AUD] token, and `text` that answer
    without the stop text.
    """
    from llama.m2ugen import ChatReply, GenerationSettings

    info: PublishedInfo = model.published
    settings = settings or GenerationSettings()
    settings.validate()
    present = media.present() if media is not None else {}
    refused = [m for m in present if m in info.unsupported_modalities]
    if refused:
        raise UnsupportedModalityError(
            f"{refused[0]} input is not supported by the {info.release} release: its published "
            f"{refused[0]} path could not run, so the weights were never trained for it")
    ids, dropped = model.build_prompt(prompt, history, settings.max_new_tokens)
    feats = model.media_vector(media)
    generator = None
    if settings.seed is not None:
        generator = torch.Generator(device=model.device_).manual_seed(settings.seed)
    new = generate_published(model, ids, feats, settings.max_new_tokens, info.release,
                             temperature=settings.temperature, top_p=settings.top_p,
                             generator=generator)
    aud = set(model.tokenizer.aud_ids)
    cut = next((i for i, t in enumerate(new) if t in aud), len(new))
    text = model.tokenizer.decode(new[:cut]).split("\n###")[0].strip()
    reply = ChatReply(text=text, token_ids=new[:cut], generated_ids=list(new),
                      dropped_history_turns=dropped)
    if cut < len(new) and want_music:
        reply.music, reply.sample_rate = model.synthesize(ids + new[:cut], feats, text, settings)
    return reply


# ---------------------------------------------------------------------------------------------
# kNN retrieval (--knn_dir)


def knn_index_file(knn_dir: str | os.PathLike) -> Path:
    """The published layout keeps the index as `<knn_dir>/knn.index`; a file path is taken as is."""
    p = Path(knn_dir)
    return p / "knn.index" if p.is_dir() else p


def attach_knn(model, knn_dir: str | os.PathLike) -> list[str]:
    """Mix every modality whose pooled feature width equals the index width with its retrieved
    prototypes (the published forward_audio/_image/_video did this with one shared index).
    Returns the modalities covered; an index matching no modality is an error."""
    import functools

    from llama.knn import KnnIndex

    path = knn_index_file(knn_dir)
    index = KnnIndex.load(path)
    cfg = replace(model.cfg.knn, enabled=True, index_path=str(path))
    mixer = index.mixer(cfg)
    widths = {"audio": model.cfg.mert.hidden_size, "image": model.cfg.vit.hidden_size,
              "video": model.cfg.vivit.hidden_size}
    covered = [m for m, w in widths.items() if w == index.dim]
    if not covered:
        raise ValueError(f"{path}: the index holds {index.dim}-wide vectors; no encoder feature "
                         f"has that width ({widths})")
    for modality in covered:
        if modality == "audio":
            model._knn = mixer  # M2UGen.bridge hands it to the music bridge
        else:  # the token bridges take `knn=` too; bind it (their weights are untouched)
            bridge = model.bridges[modality]
            bridge.forward = functools.partial(type(bridge).forward, bridge, knn=mixer)
    model.cfg.knn = cfg
    log.info("%s: kNN retrieval enabled for %s", path, ", ".join(covered))
    return covered


# ---------------------------------------------------------------------------------------------
# Import into our checkpoint folder


def _base_from(model) -> bool:
    return model.cfg.llama_path.startswith("published:")


def _write_encoders(model, tmp: Path, final: Path, cfg: M2UGenConfig) -> None:
    """Encoders whose weights came from the release file become HF folders in the checkpoint."""
    for modality, part in (("audio", "mert"), ("image", "vit"), ("video", "vivit")):
        enc = model._encoders.get(modality)
        enc_cfg = getattr(cfg, part)
        if enc is None or _has_weights(enc_cfg.path) and not enc_cfg.path.startswith("published"):
            continue
        enc.model.save_pretrained(str(tmp / part), safe_serialization=True)
        enc.processor.save_pretrained(str(tmp / part))
        setattr(cfg, part, replace(enc_cfg, path=str(final / part)))


def _write_musicgen(model, tmp: Path, final: Path, cfg: M2UGenConfig) -> None:
    """A MusicGen taken from the release file becomes an HF folder (with its T5 tokenizer when
    one was found), so the imported checkpoint still needs no MusicGen download."""
    if model.decoder_factory is None:
        return
    dec = model.decoder
    dec.model.save_pretrained(str(tmp / "musicgen"), safe_serialization=True)
    if dec.tokenizer is not None:
        dec.tokenizer.save_pretrained(str(tmp / "musicgen"))
    cfg.decoder = replace(cfg.decoder, path=str(final / "musicgen"))


def write_imported(model, dst: str | os.PathLike, llama_dir: Optional[str] = None) -> Path:
    """Write a loaded release as our checkpoint folder: tuned weights (`model.safetensors`),
    `config.json` with the compatibility values and the release facts, and the frozen parts the
    file supplied (LLaMA base as an HF folder unless `llama_dir` holds the base weights, the
    encoders as HF folders, the tokenizer). Later loads read safetensors only."""
    import copy
    import json
    import shutil

    from llama import checkpoint as ckpt
    from llama.weights import detect_layout, save_hf
    from util.atomic import atomic_dir

    final = Path(dst).resolve()
    cfg = copy.deepcopy(model.cfg)
    with atomic_dir(final, ckpt.is_complete) as tmp:
        tmp = Path(tmp)
        base = _llama_weights_dir(llama_dir)
        if base is None:
            save_hf(model.backbone, model.backbone.config, tmp / "llama",
                    max_shard_bytes=2**30)
            base = str(final / "llama")
        else:
            detect_layout(base)
        cfg.llama_path = base
        tok = Path(cfg.tokenizer_path)
        if tok.is_file():
            shutil.copyfile(tok, tmp / "tokenizer.model")
            cfg.tokenizer_path = str(final / "tokenizer.model")
        _write_encoders(model, tmp, final, cfg)
        _write_musicgen(model, tmp, final, cfg)
        weights = ckpt.tuned_state_dict(model, model.tuned_parameter_names())
        from safetensors.torch import save_file

        save_file(weights, str(tmp / ckpt.WEIGHTS_FILE))
        del weights
        config = {"m2ugen": dataclasses.asdict(cfg), "published": _info_dict(model.published)}
        (tmp / ckpt.CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return final


def _llama_weights_dir(llama_dir: Optional[str]) -> Optional[str]:
    """The folder of LLaMA base weights under `llama_dir` (published `<dir>/7B` layout or the
    folder itself), or None when it holds only a tokenizer."""
    if llama_dir is None:
        return None
    for folder in (Path(llama_dir) / "7B", Path(llama_dir)):
        if (folder / "params.json").is_file() or (folder / "config.json").is_file():
            return str(folder.resolve())
    return None


def _info_dict(info: PublishedInfo) -> dict[str, Any]:
    return {"source": info.path, "release": info.release, "decoder_kind": info.decoder_kind,
            "unsupported_modalities": list(info.unsupported_modalities),
            "gates_all_zero": info.gates_all_zero,
            "unused": {k: len(v) for k, v in info.unused.items()}, "missing": info.missing}


def restore_compat(model, saved: Mapping[str, Any]) -> None:
    """Re-apply what a checkpoint's config records but the generic loader does not carry
    through (the adapter's LoRA switch, lost when the base config is re-read from the weights
    folder), and attach `model.published` for an imported release (its generation semantics)."""
    want = bool(saved["m2ugen"]["llama"].get("adapter_uses_lora", True))
    model.cfg.llama.adapter_uses_lora = want
    for layer in model.backbone.layers:
        layer.attention.adapter_uses_lora = want
    pub = saved.get("published")
    if pub:
        model.published = PublishedInfo(
            path=pub["source"], release=pub["release"], decoder_kind=pub["decoder_kind"],
            args={}, missing=list(pub.get("missing", [])),
            unsupported_modalities=tuple(pub.get("unsupported_modalities", ())),
            gates_all_zero=bool(pub.get("gates_all_zero", False)))
        if model.published.gates_all_zero:
            _report(replace(model.published, unused={}, missing=[]), None)


def load_imported(folder: str | os.PathLike, *, overrides: Optional[dict[str, str]] = None,
                  device: str = "cpu", dtype: torch.dtype = torch.float32,
                  load_decoder: bool = False):
    """An imported release folder (or any checkpoint folder), compatibility values re-applied."""
    from llama import checkpoint as ckpt
    from llama.m2ugen import M2UGen

    model = M2UGen.from_pretrained(str(folder), overrides=overrides, device=device, dtype=dtype,
                                   load_decoder=load_decoder)
    restore_compat(model, ckpt.read_config(folder))
    return model


def is_release_file(path: str | os.PathLike) -> bool:
    """A file (not a checkpoint folder): the released `checkpoint.pth` format."""
    return Path(path).is_file()


def import_release(src: str | os.PathLike, dst: str | os.PathLike, *,
                   llama_dir: Optional[str] = None, mert_path: Optional[str] = None,
                   vit_path: Optional[str] = None, vivit_path: Optional[str] = None,
                   allow_partial: bool = False) -> Path:
    """`checkpoint.pth` -> our checkpoint folder (see `write_imported`); tensors keep the dtype
    they have in the file, so nothing is converted or copied twice on the way."""
    model = load_published_model(src, llama_dir=llama_dir, mert_path=mert_path,
                                 vit_path=vit_path, vivit_path=vivit_path,
                                 allow_partial=allow_partial, dtype=None)
    return write_imported(model, dst, llama_dir)

__all__ = [
    "PublishedCheckpointError", "PublishedInfo", "RELEASES", "backbone_config",
    "build_encoder", "detect_release", "generate_published", "load_published_model",
    "map_state", "project_published", "read_published", "UnsupportedModalityError",
    "attach_knn", "import_release", "is_release_file", "knn_index_file", "load_imported",
    "published_chat", "restore_compat", "write_imported",
]
