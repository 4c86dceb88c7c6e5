"""Meta <-> Hugging Face LLaMA layouts: configs, weight names and the RoPE row permutation.

Pure translation, no file I/O (reading and writing folders is `llama.weights`' job).

Meta layout: `params.json` + `consolidated.NN.pth` (one file per model-parallel rank;
column-parallel matrices wq/wk/wv/w1/w3/output are split along dim 0, row-parallel wo/w2 and
tok_embeddings along dim 1, norms replicated: `SHARD_DIM`). HF layout: `config.json` (model_type
"llama") + weights under `model.layers.N.*` names. HF rotates query/key pairs by "rotate half"
instead of Meta's interleaved pairs, so its wq/wk rows are permuted per head; converting undoes or
redoes that permutation (a pure re-indexing, hence bit-exact).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Optional

import torch

from llama.config import LlamaConfig

__all__ = [
    "DERIVED_KEY_RE",
    "SHARD_DIM",
    "WeightsError",
    "base_weight_shapes",
    "config_from_hf",
    "config_from_params",
    "hf_config_dict",
    "hf_name_to_meta",
    "hf_to_meta_state_dict",
    "meta_name_to_hf",
    "meta_params_dict",
    "meta_to_hf_state_dict",
    "permute_hf_to_meta",
    "permute_meta_to_hf",
    "permuted_heads",
]

# Keys some published checkpoints carry that are recomputed, not learned: dropped on load.
DERIVED_KEY_RE = re.compile(r"(^rope\.freqs$)|(rotary_emb\.inv_freq$)")


class WeightsError(ValueError):
    """A weight folder or file is missing, malformed or does not fit the model."""


# ---------------------------------------------------------------------------------------------
# Configs


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
SHARD_DIM = {"wq": 0, "wk": 0, "wv": 0, "w1": 0, "w3": 0, "output": 0,
              "wo": 1, "w2": 1, "tok_embeddings": 1}


def meta_name_to_hf(name: str) -> str:
    """HF name of a Meta LLaMA weight (an error for names outside the base layout)."""
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


def permuted_heads(meta_name: str, cfg: LlamaConfig) -> Optional[int]:
    """How many heads a weight's rows are permuted over between the layouts (None: not at all)."""
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
        heads = permuted_heads(name, cfg)
        out[meta_name_to_hf(name)] = permute_meta_to_hf(t, heads) if heads else t
    return out


def hf_to_meta_state_dict(sd: Mapping[str, torch.Tensor], cfg: LlamaConfig
                          ) -> dict[str, torch.Tensor]:
    """HF LLaMA weights -> Meta names (permutation undone); tied lm_head filled from embeddings."""
    out: dict[str, torch.Tensor] = {}
    for name, t in sd.items():
        if DERIVED_KEY_RE.search(name):
            continue
        meta = hf_name_to_meta(name)
        if meta is None:
            raise WeightsError(f"unexpected weight {name!r} in a Hugging Face LLaMA checkpoint")
        heads = permuted_heads(meta, cfg)
        out[meta] = permute_hf_to_meta(t, heads) if heads else t
    if "output.weight" not in out and "tok_embeddings.weight" in out:
        out["output.weight"] = out["tok_embeddings.weight"]  # tie_word_embeddings
    return out
