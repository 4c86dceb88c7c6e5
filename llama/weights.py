"""Load and save LLaMA base weights in Meta's and Hugging Face's layouts.

Meta layout: `params.json` + `consolidated.NN.pth` (one file per model-parallel rank; column-parallel
matrices wq/wk/wv/w1/w3/output are split along dim 0, row-parallel wo/w2 and tok_embeddings along
dim 1, norms replicated). HF layout: `config.json` (model_type "llama") + `model.safetensors`,
sharded safetensors with an index, or `pytorch_model*.bin`. HF rotates query/key pairs by "rotate
half" instead of Meta's interleaved pairs, so its wq/wk rows are permuted per head; converting undoes
or redoes that permutation (a pure re-indexing, hence bit-exact).

Memory: the model is built on the meta device and the checkpoint tensors (memory-mapped, not read)
are assigned to it, so a same-dtype CPU load keeps no second copy. Multi-shard merges and dtype
conversions copy tensors group by group, re-opening the shards per group so at most one group of the
mapped pages stays resident. Parameters absent from base checkpoints (LoRA, biases, gates, adapter
prefix) get the backbone's own initial values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Optional

import torch

from llama.config import LlamaConfig

__all__ = [
    "WeightsError",
    "base_weight_shapes",
    "config_from_hf",
    "config_from_params",
    "detect_layout",
    "hf_config_dict",
    "hf_to_meta_state_dict",
    "load_backbone",
    "load_base_state_dict",
    "meta_params_dict",
    "meta_to_hf_state_dict",
    "read_config",
    "save_hf",
    "save_meta",
    "state_dict_nbytes",
]

META_SHARD_RE = re.compile(r"^consolidated\.(\d+)\.pth$")
HF_SAFE_INDEX = "model.safetensors.index.json"
HF_BIN_INDEX = "pytorch_model.bin.index.json"
# Keys some published checkpoints carry that are recomputed, not learned: dropped on load.
_DERIVED_KEY_RE = re.compile(r"(^rope\.freqs$)|(rotary_emb\.inv_freq$)")
# Merge/convert this many bytes of tensors per group (bounds the transiently mapped pages).
_GROUP_BYTES = 512 * 2**20


class WeightsError(ValueError):
    """A weight folder or file is missing, malformed or does not fit the model."""


# ---------------------------------------------------------------------------------------------
# Configs


def detect_layout(path: str | os.PathLike) -> str:
    """"meta" or "hf" for a weight folder; a clear error for anything else."""
    folder = Path(path)
    if not folder.is_dir():
        raise WeightsError(f"{folder}: no such weight folder")
    if (folder / "params.json").is_file():
        return "meta"
    if (folder / "config.json").is_file():
        return "hf"
    raise WeightsError(
        f"{folder}: neither a Meta LLaMA folder (params.json + consolidated.NN.pth) nor a Hugging "
        "Face one (config.json + *.safetensors / *.bin)"
    )


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"{file}: cannot read JSON ({err})") from err
    if not isinstance(data, dict):
        raise WeightsError(f"{file}: expected a JSON object")
    return data


def config_from_params(params: Mapping[str, Any], source: str, vocab_size: Optional[int] = None
                       ) -> LlamaConfig:
    """LlamaConfig from Meta's params.json (`vocab_size` -1 is taken from the embedding shape)."""
    if params.get("use_scaled_rope") or params.get("rope_scaling"):
        raise WeightsError(f"{source}: scaled RoPE (LLaMA-3.1 style) is not supported")
    try:
        vocab = int(params.get("vocab_size", -1))
        if vocab <= 0:
            if vocab_size is None:
                raise WeightsError(f"{source}: vocab_size is {vocab} and no embedding to infer it")
            vocab = vocab_size
        kw: dict[str, Any] = dict(
            dim=int(params["dim"]),
            n_layers=int(params["n_layers"]),
            n_heads=int(params["n_heads"]),
            n_kv_heads=int(params["n_kv_heads"]) if params.get("n_kv_heads") else None,
            vocab_size=vocab,
            multiple_of=int(params.get("multiple_of", 256)),
            ffn_dim_multiplier=(float(params["ffn_dim_multiplier"])
                                if params.get("ffn_dim_multiplier") is not None else None),
            ffn_hidden_dim=(int(params["ffn_hidden_dim"])
                            if params.get("ffn_hidden_dim") is not None else None),
            norm_eps=float(params.get("norm_eps", 1e-5)),
            rope_theta=float(params.get("rope_theta", 10000.0)),
        )
        if params.get("max_seq_len"):
            kw["max_seq_len"] = int(params["max_seq_len"])
    except KeyError as err:
        raise WeightsError(f"{source}: missing field {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise WeightsError(f"{source}: bad field value ({err})") from err
    return _make_config(kw, source)


def config_from_hf(conf: Mapping[str, Any], source: str) -> LlamaConfig:
    """LlamaConfig from an HF LLaMA config.json (intermediate_size -> ffn_hidden_dim)."""
    if conf.get("model_type") != "llama":
        raise WeightsError(f"{source}: model_type is {conf.get('model_type')!r}, expected 'llama'")
    if conf.get("hidden_act", "silu") != "silu":
        raise WeightsError(f"{source}: hidden_act {conf.get('hidden_act')!r} is not supported")
    for flag in ("attention_bias", "mlp_bias"):
        if conf.get(flag):
            raise WeightsError(f"{source}: {flag}=true is not supported by the LLaMA-2 backbone")
    rope = conf.get("rope_parameters") or {}
    scaling = conf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if rope_type not in (None, "default"):
        raise WeightsError(f"{source}: rope_type {rope_type!r} is not supported (only 'default')")
    theta = rope.get("rope_theta", conf.get("rope_theta", 10000.0))
    try:
        dim, n_heads = int(conf["hidden_size"]), int(conf["num_attention_heads"])
        if conf.get("head_dim") not in (None, dim // n_heads):
            raise WeightsError(f"{source}: head_dim {conf['head_dim']} != hidden_size/heads")
        kw: dict[str, Any] = dict(
            dim=dim,
            n_layers=int(conf["num_hidden_layers"]),
            n_heads=n_heads,
            n_kv_heads=(int(conf["num_key_value_heads"])
                        if conf.get("num_key_value_heads") not in (None, n_heads) else None),
            vocab_size=int(conf["vocab_size"]),
            ffn_hidden_dim=int(conf["intermediate_size"]),
            norm_eps=float(conf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
        )
    except KeyError as err:
        raise WeightsError(f"{source}: missing field {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise WeightsError(f"{source}: bad field value ({err})") from err
    return _make_config(kw, source)


def _make_config(kw: dict[str, Any], source: str) -> LlamaConfig:
    # A checkpoint may be smaller than the adapter layout of the default config; clamp it so a
    # small base model still loads (callers override the adapter layout explicitly if needed).
    base = LlamaConfig.__dataclass_fields__["adapter_layers_per_modality"].default
    n_mod = len(LlamaConfig.__dataclass_fields__["modalities"].default)
    kw.setdefault("adapter_layers_per_modality", min(base, kw["n_layers"] // n_mod))
    try:
        return LlamaConfig(**kw)
    except ValueError as err:
        raise WeightsError(f"{source}: inconsistent config ({err})") from err


def meta_params_dict(cfg: LlamaConfig) -> dict[str, Any]:
    """params.json content for `cfg` (ffn_hidden_dim only when Meta's rule cannot express it)."""
    params: dict[str, Any] = dict(
        dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads, vocab_size=cfg.vocab_size,
        multiple_of=cfg.multiple_of, norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
        max_seq_len=cfg.max_seq_len,
    )
    if cfg.n_kv_heads is not None and cfg.n_kv_heads != cfg.n_heads:
        params["n_kv_heads"] = cfg.n_kv_heads
    if cfg.ffn_dim_multiplier is not None:
        params["ffn_dim_multiplier"] = cfg.ffn_dim_multiplier
    if cfg.ffn_hidden_dim is None or cfg.ffn_hidden_dim == _rule_hidden(cfg, cfg.multiple_of):
        return params
    # An explicit width (from HF's intermediate_size): say it in Meta's terms when possible, so
    # Meta's own code can read the file (11008 for 7B is 256 * ceil(2/3 * 4 * 4096 / 256)).
    params.pop("ffn_dim_multiplier", None)
    for multiple in (256, 128, 64, 32, 16, 8, 4, 2, 1):
        if _rule_hidden(cfg, multiple, multiplier=None) == cfg.ffn_hidden_dim:
            params["multiple_of"] = multiple
            return params
    params["ffn_hidden_dim"] = cfg.ffn_hidden_dim
    return params


def _rule_hidden(cfg: LlamaConfig, multiple_of: int, multiplier: Any = "keep") -> int:
    changes: dict[str, Any] = dict(ffn_hidden_dim=None, multiple_of=multiple_of)
    if multiplier != "keep":
        changes["ffn_dim_multiplier"] = multiplier
    return dataclasses.replace(cfg, **changes).hidden_dim


def hf_config_dict(cfg: LlamaConfig, dtype: torch.dtype) -> dict[str, Any]:
    """config.json content written through transformers' own LlamaConfig."""
    from transformers import LlamaConfig as HFLlamaConfig

    hf = HFLlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.kv_heads, hidden_act="silu", rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta, max_position_embeddings=max(cfg.max_seq_len, 4096),
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    )
    hf.architectures = ["LlamaForCausalLM"]
    hf.dtype = dtype
    return hf.to_dict()


def read_config(path: str | os.PathLike) -> tuple[str, LlamaConfig]:
    """(layout, LlamaConfig) of a weight folder; Meta's vocab_size -1 is read from the embedding."""
    folder = Path(path)
    layout = detect_layout(folder)
    if layout == "hf":
        return layout, config_from_hf(_read_json(folder / "config.json"), str(folder / "config.json"))
    params = _read_json(folder / "params.json")
    vocab = None
    if int(params.get("vocab_size", -1)) <= 0:
        files = _meta_shard_files(folder)
        with _open_meta(files[0]) as sd:
            if "tok_embeddings.weight" not in sd:
                raise WeightsError(f"{files[0]}: no tok_embeddings.weight to infer vocab_size")
            vocab = int(sd["tok_embeddings.weight"].shape[0])
    return layout, config_from_params(params, str(folder / "params.json"), vocab)


# ---------------------------------------------------------------------------------------------
# Names, shapes, permutation


def base_weight_shapes(cfg: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Meta names and shapes of every base (checkpointed) weight of `cfg`."""
    d, h, kv = cfg.dim, cfg.hidden_dim, cfg.kv_heads * cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (cfg.vocab_size, d)}
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        shapes.update({
            p + "attention.wq.weight": (d, d), p + "attention.wk.weight": (kv, d),
            p + "attention.wv.weight": (kv, d), p + "attention.wo.weight": (d, d),
            p + "feed_forward.w1.weight": (h, d), p + "feed_forward.w2.weight": (d, h),
            p + "feed_forward.w3.weight": (h, d),
            p + "attention_norm.weight": (d,), p + "ffn_norm.weight": (d,),
        })
    shapes.update({"norm.weight": (d,), "output.weight": (cfg.vocab_size, d)})
    return shapes


_META_TO_HF_LAYER = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_HF_TO_META_LAYER = {v: k for k, v in _META_TO_HF_LAYER.items()}
_META_TO_HF_TOP = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_HF_TO_META_TOP = {v: k for k, v in _META_TO_HF_TOP.items()}
_LAYER_RE = re.compile(r"^layers\.(\d+)\.(.+)$")
_HF_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")

# Column-parallel weights are split along dim 0 across Meta shards, row-parallel along dim 1.
_SHARD_DIM = {"wq": 0, "wk": 0, "wv": 0, "w1": 0, "w3": 0, "output": 0,
              "wo": 1, "w2": 1, "tok_embeddings": 1}


def meta_name_to_hf(name: str) -> str:
    if name in _META_TO_HF_TOP:
        return _META_TO_HF_TOP[name]
    m = _LAYER_RE.match(name)
    if m and m.group(2) in _META_TO_HF_LAYER:
        return f"model.layers.{m.group(1)}.{_META_TO_HF_LAYER[m.group(2)]}"
    raise WeightsError(f"no Hugging Face name for Meta weight {name!r}")


def hf_name_to_meta(name: str) -> Optional[str]:
    """Meta name of an HF LLaMA weight, or None for names that are not LLaMA weights."""
    if name in _HF_TO_META_TOP:
        return _HF_TO_META_TOP[name]
    m = _HF_LAYER_RE.match(name)
    if m and m.group(2) in _HF_TO_META_LAYER:
        return f"layers.{m.group(1)}.{_HF_TO_META_LAYER[m.group(2)]}"
    return None


def permute_meta_to_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder each head's rows from interleaved (x0,y0,x1,y1,..) to halves (x0,x1,..,y0,y1,..)."""
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def permute_hf_to_meta(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of `permute_meta_to_hf`."""
    rows, cols = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def _permuted_heads(meta_name: str, cfg: LlamaConfig) -> Optional[int]:
    if meta_name.endswith("attention.wq.weight"):
        return cfg.n_heads
    if meta_name.endswith("attention.wk.weight"):
        return cfg.kv_heads
    return None


def meta_to_hf_state_dict(sd: Mapping[str, torch.Tensor], cfg: LlamaConfig
                          ) -> dict[str, torch.Tensor]:
    """Meta-named base weights -> HF names, wq/wk rows permuted for rotate-half RoPE."""
    out: dict[str, torch.Tensor] = {}
    for name, t in sd.items():
        heads = _permuted_heads(name, cfg)
        out[meta_name_to_hf(name)] = permute_meta_to_hf(t, heads) if heads else t
    return out


def hf_to_meta_state_dict(sd: Mapping[str, torch.Tensor], cfg: LlamaConfig
                          ) -> dict[str, torch.Tensor]:
    """HF LLaMA weights -> Meta names (permutation undone); tied lm_head filled from embeddings."""
    out: dict[str, torch.Tensor] = {}
    for name, t in sd.items():
        if _DERIVED_KEY_RE.search(name):
            continue
        meta = hf_name_to_meta(name)
        if meta is None:
            raise WeightsError(f"unexpected weight {name!r} in a Hugging Face LLaMA checkpoint")
        heads = _permuted_heads(meta, cfg)
        out[meta] = permute_hf_to_meta(t, heads) if heads else t
    if "output.weight" not in out and "tok_embeddings.weight" in out:
        out["output.weight"] = out["tok_embeddings.weight"]  # tie_word_embeddings
    return out


# ---------------------------------------------------------------------------------------------
# Reading checkpoints


@contextlib.contextmanager
def _open_meta(file: Path) -> Iterator[dict[str, torch.Tensor]]:
    """A shard's tensors, memory-mapped; the mapping is released when the block ends."""
    sd = _torch_load(file)
    try:
        yield sd
    finally:
        sd.clear()


def _torch_load(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise WeightsError(f"{file}: missing weight file")
    errors = (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError)
    try:
        sd = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except errors as err:
        if "zipfile" not in str(err):
            raise WeightsError(f"{file}: cannot read PyTorch weights ({_first_line(err)})") from err
        try:  # pre-1.6 (non-zip) serialisation cannot be memory-mapped
            sd = torch.load(file, map_location="cpu", weights_only=True)
        except errors as err2:
            raise WeightsError(
                f"{file}: cannot read PyTorch weights ({_first_line(err2)})"
            ) from err2
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{file}: expected a flat dict of tensors")
    return sd


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _meta_shard_files(folder: Path) -> list[Path]:
    found = sorted(
        ((int(m.group(1)), p) for p in folder.iterdir() if (m := META_SHARD_RE.match(p.name))),
        key=lambda x: x[0],
    )
    if not found:
        raise WeightsError(f"{folder}: no consolidated.NN.pth shard next to params.json")
    numbers = [n for n, _ in found]
    expected = list(range(len(found)))
    if numbers != expected:
        gap = sorted(set(range(max(numbers) + 1)) - set(numbers))
        raise WeightsError(
            f"{folder}: missing shard(s) "
            + ", ".join(f"consolidated.{n:02d}.pth" for n in gap)
        )
    return [p for _, p in found]


def _groups(names: Iterable[str], nbytes: Mapping[str, int]) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    size = 0
    for name in names:
        if groups[-1] and size + nbytes[name] > _GROUP_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes[name]
    return [g for g in groups if g]


def _convert(t: torch.Tensor, dtype: Optional[torch.dtype], device: torch.device) -> torch.Tensor:
    return t.to(device=device, dtype=dtype or t.dtype)


def _needs_copy(ts: Iterable[torch.Tensor], dtype: Optional[torch.dtype], device: torch.device
                ) -> bool:
    return device.type != "cpu" or any(dtype is not None and t.dtype != dtype for t in ts)


def _load_meta(folder: Path, cfg: LlamaConfig, dtype: Optional[torch.dtype], device: torch.device
               ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Merged Meta-named tensors and, for error messages, the file each came from."""
    files = _meta_shard_files(folder)
    first = [_torch_load(f) for f in files]
    keys = [k for k in first[0] if not _DERIVED_KEY_RE.search(k)]
    for f, sd in zip(files[1:], first[1:]):
        other = {k for k in sd if not _DERIVED_KEY_RE.search(k)}
        if other != set(keys):
            diff = sorted(set(keys) ^ other)[:5]
            raise WeightsError(f"{f}: holds different tensors than {files[0].name} (e.g. {diff})")
    origin = {k: str(files[0]) if len(files) == 1 else f"{folder}/consolidated.*.pth" for k in keys}
    if len(files) == 1 and not _needs_copy((first[0][k] for k in keys), dtype, device):
        return {k: first[0][k] for k in keys}, origin  # zero-copy: tensors stay memory-mapped
    nbytes = {k: sum(sd[k].numel() * sd[k].element_size() for sd in first) for k in keys}
    del first
    out: dict[str, torch.Tensor] = {}
    for group in _groups(keys, nbytes):
        shards = [_torch_load(f) for f in files]
        for k in group:
            parts = [sd[k] for sd in shards]
            t = _convert(_merge(k, parts, files), dtype, device)
            mapped = {p.untyped_storage().data_ptr() for p in parts}
            # A result still viewing a shard would keep that shard's touched pages resident.
            out[k] = t.clone() if t.untyped_storage().data_ptr() in mapped else t
        del shards, parts  # unmaps this group's pages before the next group is touched
    return out, origin


def _merge(name: str, parts: list[torch.Tensor], files: list[Path]) -> torch.Tensor:
    if len(parts) == 1:
        return parts[0]
    leaf = name.split(".")[-2] if name.endswith(".weight") else name
    dim = _SHARD_DIM.get(leaf)
    if dim is None:  # norms: replicated on every rank
        for f, p in zip(files[1:], parts[1:]):
            if not torch.equal(p, parts[0]):
                raise WeightsError(f"{f}: replicated weight {name} differs from {files[0].name}")
        return parts[0]
    shapes = {tuple(p.shape[:dim]) + tuple(p.shape[dim + 1:]) for p in parts}
    if len(shapes) != 1:
        raise WeightsError(f"{files[0].parent}: shards of {name} have incompatible shapes "
                           f"{[tuple(p.shape) for p in parts]}")
    return torch.cat(parts, dim=dim)


def _hf_weight_files(folder: Path) -> tuple[list[Path], str]:
    """The weight files of an HF folder (index-listed shards must all exist) and their kind."""
    for index_name, kind in ((HF_SAFE_INDEX, "safetensors"), (HF_BIN_INDEX, "bin")):
        index = folder / index_name
        if index.is_file():
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise WeightsError(f"{index}: no weight_map")
            files = [folder / n for n in sorted(set(weight_map.values()))]
            for f in files:
                if not f.is_file():
                    raise WeightsError(f"{f}: missing shard listed in {index_name}")
            return files, kind
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"], "safetensors"
    safes = sorted(folder.glob("*.safetensors"))
    if safes:
        return safes, "safetensors"
    bins = sorted(folder.glob("pytorch_model*.bin")) or sorted(folder.glob("*.bin"))
    if bins:
        return bins, "bin"
    raise WeightsError(f"{folder}: config.json but no *.safetensors or *.bin weight files")


def _read_hf_file(file: Path, kind: str) -> dict[str, torch.Tensor]:
    if kind == "bin":
        return _torch_load(file)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # memory-mapped, not read
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{file}: cannot read safetensors ({err})") from err


def _load_hf(folder: Path, cfg: LlamaConfig, dtype: Optional[torch.dtype], device: torch.device
             ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    files, kind = _hf_weight_files(folder)
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    shapes = base_weight_shapes(cfg)
    for f in files:
        raw = _read_hf_file(f, kind)
        permuted: list[tuple[str, str, int]] = []
        for name, t in raw.items():
            if _DERIVED_KEY_RE.search(name):
                continue
            meta = hf_name_to_meta(name)
            if meta is None:
                raise WeightsError(f"{f}: unexpected weight {name!r} for a LLaMA model")
            if meta in out or any(meta == m for _, m, _ in permuted):
                raise WeightsError(f"{f}: weight {name!r} appears in more than one file")
            origin[meta] = str(f)
            heads = _permuted_heads(meta, cfg)
            if heads:
                if tuple(t.shape) != shapes.get(meta):
                    raise WeightsError(f"{f}: {name} has shape {tuple(t.shape)}, config.json "
                                       f"implies {shapes.get(meta)}")
                permuted.append((name, meta, heads))
            else:
                out[meta] = _convert(t, dtype, device)
        del raw
        if permuted:
            # wq/wk are re-ordered into new memory; reading them through a second mapping that
            # is dropped afterwards keeps their original pages from staying resident as well.
            again = _read_hf_file(f, kind)
            for name, meta, heads in permuted:
                out[meta] = _convert(permute_hf_to_meta(again[name], heads).contiguous(), dtype,
                                     device)
            del again
    if "output.weight" not in out and "tok_embeddings.weight" in out:
        out["output.weight"] = out["tok_embeddings.weight"]  # tie_word_embeddings
        origin["output.weight"] = origin["tok_embeddings.weight"]
    return out, origin


def load_base_state_dict(path: str | os.PathLike, dtype: Optional[torch.dtype] = None,
                         device: str | torch.device = "cpu", cfg: Optional[LlamaConfig] = None
                         ) -> tuple[LlamaConfig, dict[str, torch.Tensor], dict[str, str]]:
    """(config, Meta-named base weights, key -> source file) of a Meta or HF folder, validated.

    Every base weight must be present with the shape the config implies, and nothing else.
    """
    folder = Path(path)
    layout, file_cfg = read_config(folder)
    cfg = cfg or file_cfg
    dev = torch.device(device)
    sd, origin = (_load_meta if layout == "meta" else _load_hf)(folder, cfg, dtype, dev)
    expected = base_weight_shapes(cfg)
    missing = [k for k in expected if k not in sd]
    if missing:
        more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        raise WeightsError(f"{folder}: checkpoint lacks {', '.join(missing[:5])}{more}")
    extra = [k for k in sd if k not in expected]
    if extra:
        raise WeightsError(f"{origin[extra[0]]}: unexpected weight(s) {extra[:5]} for this config")
    for k, shape in expected.items():
        if tuple(sd[k].shape) != shape:
            hint = ""
            if layout == "meta" and k in sd and len(_meta_shard_files(folder)) > 1:
                hint = " (are shards missing or extra?)"
            raise WeightsError(
                f"{origin[k]}: {k} has shape {tuple(sd[k].shape)}, the config implies "
                f"{shape}{hint}"
            )
    return cfg, sd, origin


# ---------------------------------------------------------------------------------------------
# The model


def load_backbone(path: str | os.PathLike, dtype: Optional[torch.dtype] = None,
                  device: str | torch.device = "cpu",
                  config_overrides: Optional[Mapping[str, Any]] = None):
    """Build the backbone of a Meta or HF folder and fill its base weights without a second copy.

    `dtype` None keeps the checkpoint's dtype; `config_overrides` replaces LlamaConfig fields
    (e.g. lora_rank, adapter_layers_per_modality, max_seq_len) before the model is built.
    The returned model carries its config at `.config`.
    """
    from llama.backbone import Transformer

    folder = Path(path)
    _, cfg = read_config(folder)
    if config_overrides:
        unknown = set(config_overrides) - {f.name for f in dataclasses.fields(LlamaConfig)}
        if unknown:
            raise WeightsError(f"config_overrides: unknown LlamaConfig field(s) {sorted(unknown)}")
        try:
            cfg = dataclasses.replace(cfg, **dict(config_overrides))
        except ValueError as err:
            raise WeightsError(f"{folder}: config_overrides give an invalid config ({err})") from err
    cfg, sd, origin = load_base_state_dict(folder, dtype=dtype, device=device, cfg=cfg)
    dev = torch.device(device)
    with torch.device("meta"):
        model = Transformer(cfg)
    params = dict(model.named_parameters())
    for k, t in sd.items():
        if k not in params:
            raise WeightsError(f"{origin[k]}: backbone has no parameter {k!r}")
        if tuple(params[k].shape) != tuple(t.shape):
            raise WeightsError(f"{origin[k]}: {k} has shape {tuple(t.shape)}, the backbone "
                               f"expects {tuple(params[k].shape)}")
    result = model.load_state_dict(sd, strict=False, assign=True)
    if result.unexpected_keys:
        raise WeightsError(f"{folder}: backbone rejected {result.unexpected_keys[:5]}")
    del sd
    _materialise_rest(model, dev, dtype or _checkpoint_dtype(model))
    model.config = cfg
    return model


def _checkpoint_dtype(model: torch.nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.device.type != "meta":
            return p.dtype
    return torch.get_default_dtype()


def _materialise_rest(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Give every parameter left on the meta device (LoRA, biases, gates, prefix) its initial value.

    The values are the backbone's own: modules whose parameters were all missing are re-initialised
    by their `reset_parameters` (e.g. LoRA down matrices, the prefix table), then the backbone's
    `reset_peft_parameters` zeroes biases, LoRA up matrices and gates. A parameter neither rule
    reaches is left NaN-filled and reported, never silently random.
    """
    filled: dict[str, torch.nn.Parameter] = {}
    fully_missing: list[torch.nn.Module] = []
    for mod_name, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        missing = [(n, p) for n, p in own if p.is_meta]
        for n, p in missing:
            new = torch.nn.Parameter(
                torch.full(p.shape, float("nan"), device=device, dtype=dtype),
                requires_grad=p.requires_grad,
            )
            setattr(module, n, new)
            filled[f"{mod_name}.{n}" if mod_name else n] = new
        if missing and len(missing) == len(own) and hasattr(module, "reset_parameters"):
            fully_missing.append(module)
    with torch.no_grad():
        for module in fully_missing:
            module.reset_parameters()
        reset = getattr(model, "reset_peft_parameters", None)
        if reset is not None:
            reset()
    left = [n for n, p in filled.items() if torch.isnan(p).any()]
    left += [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise WeightsError(f"backbone parameters with no defined initial value: {left[:5]}")


# ---------------------------------------------------------------------------------------------
# Writing checkpoints


def _base_state(model_or_sd: Any, cfg: LlamaConfig) -> dict[str, torch.Tensor]:
    """The base weights of a model or state dict (tuning parameters are not part of the layout)."""
    sd = model_or_sd.state_dict() if isinstance(model_or_sd, torch.nn.Module) else model_or_sd
    expected = base_weight_shapes(cfg)
    missing = [k for k in expected if k not in sd]
    if missing:
        raise WeightsError(f"state dict lacks base weight(s) {missing[:5]}")
    out = {}
    for k, shape in expected.items():
        t = sd[k].detach()
        if tuple(t.shape) != shape:
            raise WeightsError(f"{k} has shape {tuple(t.shape)}, the config implies {shape}")
        out[k] = t
    return out


def _split(name: str, t: torch.Tensor, n: int) -> list[torch.Tensor]:
    leaf = name.split(".")[-2]
    dim = _SHARD_DIM.get(leaf)
    if dim is None:
        return [t] * n
    if t.shape[dim] % n:
        raise WeightsError(f"cannot split {name} {tuple(t.shape)} into {n} shards along dim {dim}")
    # clone: torch.save would otherwise write each view's whole underlying storage
    return [c.clone() for c in torch.chunk(t, n, dim=dim)]


def save_meta(model_or_state_dict: Any, config: LlamaConfig, dst: str | os.PathLike,
              n_shards: int = 1) -> Path:
    """Write `params.json` + `consolidated.NN.pth` (`n_shards` model-parallel files) to `dst`."""
    dst = Path(dst)
    sd = _base_state(model_or_state_dict, config)
    if n_shards < 1:
        raise WeightsError(f"n_shards must be >= 1, got {n_shards}")
    if n_shards > 1 and config.kv_heads % n_shards:
        raise WeightsError(f"{config.kv_heads} key/value heads cannot be split into {n_shards} shards")
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "params.json").write_text(json.dumps(meta_params_dict(config), indent=2) + "\n")
    for rank in range(n_shards):
        shard = {k: _split(k, t, n_shards)[rank] if n_shards > 1 else t for k, t in sd.items()}
        _atomic_torch_save(shard, dst / f"consolidated.{rank:02d}.pth")
        del shard
    return dst


def _atomic_torch_save(obj: dict[str, torch.Tensor], target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, target)


def _chmod_default(file: Path) -> None:
    """Give a written file the permissions the user's umask implies (safetensors writes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(file, 0o666 & ~umask)


def save_hf(model_or_state_dict: Any, config: LlamaConfig, dst: str | os.PathLike,
            max_shard_bytes: int = 5 * 2**30) -> Path:
    """Write an HF LLaMA folder: config.json and safetensors (sharded with an index when large)."""
    from safetensors.torch import save_file

    dst = Path(dst)
    sd = meta_to_hf_state_dict(_base_state(model_or_state_dict, config), config)
    dtypes = {t.dtype for t in sd.values()}
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.json").write_text(
        json.dumps(hf_config_dict(config, next(iter(dtypes))), indent=2, default=str) + "\n"
    )
    sizes = {k: t.numel() * t.element_size() for k, t in sd.items()}
    shards: list[list[str]] = [[]]
    acc = 0
    for k in sd:
        if shards[-1] and acc + sizes[k] > max_shard_bytes:
            shards.append([])
            acc = 0
        shards[-1].append(k)
        acc += sizes[k]
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    for name, keys in zip(names, shards):
        tmp = dst / f".{name}.tmp{os.getpid()}"
        save_file({k: sd[k].contiguous() for k in keys}, str(tmp), metadata={"format": "pt"})
        _chmod_default(tmp)
        os.replace(tmp, dst / name)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(sizes.values())},
                 "weight_map": {k: n for n, keys in zip(names, shards) for k in keys}}
        (dst / HF_SAFE_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return dst


def state_dict_nbytes(sd: Mapping[str, torch.Tensor]) -> int:
    """Bytes held by the tensors of `sd` (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for t in sd.values():
        key = t.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total

