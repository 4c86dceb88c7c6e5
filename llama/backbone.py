"""LLaMA-2 backbone (Meta layout) with M2UGen's parameter-efficient additions and a KV cache.

What lives here (docs/MODEL.md section 2, docs/DATA.md):
- RMSNorm, rotary embeddings in Meta's interleaved-pair convention (HF checkpoints are permuted
  into it by the loader), grouped-query attention through `scaled_dot_product_attention`,
  SwiGLU feed-forward.
- LoRA (`llama.lora`: alpha/rank scaling, 1.0 by default as published) on wq/wk/wv/wo/w1/w2/w3,
  zero-initialised biases on wq/wo/w1/w2/w3, a per-head gate (init 0, tanh) for the single-token
  adapter of adapter layers, and the learned prefix table that carries one modality feature per
  adapter layer group. Which parameters train: `llama.lora.set_trainable`.
- The KV cache and each call's positions and masks: `llama.kv_cache`.
- New vocabulary rows ([AUD0..7]) live in separate parameters (`new_tok_embeddings`,
  `new_output`) so only they train and weight decay never touches the frozen rows;
  `merge_new_tokens` / `split_new_tokens` convert to and from one grown matrix for export/import.

Parameter names follow Meta and the published M2UGen checkpoint so loaders can map them 1:1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from llama.config import LlamaConfig
from llama.kv_cache import KVCache, Plan, forward_plan
from llama.lora import NEW_TOKEN_PARAMS, cast_to, linear, make_lora


# ---------------------------------------------------------------------------------------------
# Small building blocks


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 (as Meta does) and cast back before the weight multiply."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.shape = (dim,)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, self.shape, self.weight, self.eps)  # one fused kernel
        normed = F.rms_norm(x.float(), self.shape, eps=self.eps).type_as(x)
        return normed * cast_to(self.weight, x.dtype)


def rope_frequencies(
    head_dim: int, length: int, theta: float, device: torch.device
) -> torch.Tensor:
    """Complex rotations e^{i * pos * theta^(-2k/d)} (length, head_dim/2), always in float32."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.outer(torch.arange(length, device=device).float(), inv)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2k], x[2k+1]) of x (B, T, heads, hd) by freqs (B|1, T, 1, hd/2).

    This is Meta's convention; HF's rotate-half layout differs by a fixed row permutation of wq/wk.
    """
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs).flatten(3).type_as(x)


# ---------------------------------------------------------------------------------------------
# Layers


class Attention(nn.Module):
    """Multi-head attention with GQA, LoRA, biases on wq/wo and (adapter layers) a gated adapter."""

    def __init__(self, cfg: LlamaConfig, adapter: bool) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.n_kv_heads = cfg.kv_heads
        self.n_rep = cfg.n_heads // cfg.kv_heads
        self.head_dim = cfg.head_dim
        self.adapter_uses_lora = cfg.adapter_uses_lora
        q_out, kv_out = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        self.wq = nn.Linear(cfg.dim, q_out, bias=True)
        self.wk = nn.Linear(cfg.dim, kv_out, bias=False)
        self.wv = nn.Linear(cfg.dim, kv_out, bias=False)
        self.wo = nn.Linear(q_out, cfg.dim, bias=True)
        r, scale = cfg.lora_rank, cfg.lora_scale
        self._q = make_lora(self, "wq", self.wq, r, scale)
        self._k = make_lora(self, "wk", self.wk, r, scale)
        self._v = make_lora(self, "wv", self.wv, r, scale)
        self._o = make_lora(self, "wo", self.wo, r, scale)
        if adapter:
            self.gate = nn.Parameter(torch.zeros(cfg.n_heads))
        else:
            self.register_parameter("gate", None)

    def adapter_output(self, token: torch.Tensor) -> torch.Tensor:
        """The adapter token (b, 1, dim) -> its contribution (b, 1, dim) to every position.

        One adapter token means softmax over it is 1: the contribution is tanh(gate) * wv(token)
        per head, independent of the query, added to the attention output before wo.
        """
        if self.adapter_uses_lora:
            v = linear(token, *self._v)
        else:
            v = linear(token, self.wv, None, None)  # wv has no bias
        b = v.shape[0]
        v = v.view(b, 1, self.n_kv_heads, 1, self.head_dim)
        v = v.expand(b, 1, self.n_kv_heads, self.n_rep, self.head_dim).reshape(
            b, 1, self.n_heads, self.head_dim
        )
        gate = torch.tanh(self.gate).to(v.dtype)[:, None]
        return (gate * v).reshape(b, 1, self.n_heads * self.head_dim)

    def forward(
        self, x: torch.Tensor, plan: Plan, layer_id: int, adapter: Optional[torch.Tensor]
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = linear(x, *self._q).view(B, T, self.n_heads, self.head_dim)
        k = linear(x, *self._k).view(B, T, self.n_kv_heads, self.head_dim)
        v = linear(x, *self._v).view(B, T, self.n_kv_heads, self.head_dim)
        q = apply_rope(q, plan.freqs)
        k = apply_rope(k, plan.freqs)
        k = k.transpose(1, 2)
        v = v.transpose(1, 2)
        cache = plan.cache
        if cache is not None:
            ck, cv = cache.k[layer_id], cache.v[layer_id]
            ck[:, :, plan.start : plan.end] = k
            cv[:, :, plan.start : plan.end] = v
            k = ck[:, :, : plan.end]
            v = cv[:, :, : plan.end]
        if T == 1 and self.n_rep > 1:
            # Decode step: fold the query heads sharing a kv head into the query-length axis, so
            # the cache is read once per kv head without repeat_interleave copies.
            q = q.view(B, self.n_kv_heads, self.n_rep, self.head_dim)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=plan.mask)
            out = out.reshape(B, 1, self.n_heads * self.head_dim)
        else:
            q = q.transpose(1, 2)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=plan.mask, is_causal=plan.is_causal, enable_gqa=self.n_rep > 1
            )
            out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        if adapter is not None:
            out = out + adapter
        return linear(out, *self._o)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x), every projection with a bias and a LoRA branch."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        hidden = cfg.hidden_dim
        self.w1 = nn.Linear(cfg.dim, hidden, bias=True)
        self.w2 = nn.Linear(hidden, cfg.dim, bias=True)
        self.w3 = nn.Linear(cfg.dim, hidden, bias=True)
        r, scale = cfg.lora_rank, cfg.lora_scale
        self._1 = make_lora(self, "w1", self.w1, r, scale)
        self._2 = make_lora(self, "w2", self.w2, r, scale)
        self._3 = make_lora(self, "w3", self.w3, r, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(F.silu(linear(x, *self._1)) * linear(x, *self._3), *self._2)


class TransformerBlock(nn.Module):
    def __init__(self, cfg: LlamaConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(cfg, adapter=layer_id >= cfg.first_adapter_layer)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(
        self, x: torch.Tensor, plan: Plan, adapter: Optional[torch.Tensor]
    ) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), plan, self.layer_id, adapter)
        return h + self.feed_forward(self.ffn_norm(h))


# ---------------------------------------------------------------------------------------------
# The model


class Transformer(nn.Module):
    """LLaMA-2 with LoRA / bias / norm tuning, gated single-token adapters and new-token rows.

    `forward(tokens, modality_features=None, cache=None, start_pos=None, attention_mask=None,
    return_hidden=False, last_only=False)` returns float logits (B, T, vocab) — or
    (logits, hidden) with hidden the final-norm output — where vocab includes rows added by
    `add_tokens`.
    """

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.config = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.prefix_query = nn.Embedding(cfg.n_adapter_layers, cfg.dim)
        self.register_parameter("new_tok_embeddings", None)
        self.register_parameter("new_output", None)
        # RoPE tables per device, float32 complex, outside state_dict and immune to .to(dtype).
        self._rope: dict[torch.device, torch.Tensor] = {}
        self.reset_peft_parameters()

    # -- initialisation / sizes -----------------------------------------------------------

    @torch.no_grad()
    def reset_peft_parameters(self) -> None:
        """Zero every bias, LoRA up matrix and gate, so the tuned model starts equal to the base."""
        for name, p in self.named_parameters():
            if name.endswith(".bias") or "_l2." in name or name.endswith(".gate"):
                p.zero_()

    @property
    def base_vocab_size(self) -> int:
        return self.tok_embeddings.num_embeddings

    @property
    def n_new_tokens(self) -> int:
        return 0 if self.new_tok_embeddings is None else self.new_tok_embeddings.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.base_vocab_size + self.n_new_tokens

    @property
    def device(self) -> torch.device:
        return self.tok_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.tok_embeddings.weight.dtype

    @torch.no_grad()
    def add_tokens(self, n: int) -> list[int]:
        """Append n vocabulary rows (embedding and LM head), each the mean of the base rows.

        The rows are separate parameters so that only they train; returns the new token ids.
        """
        if n < 1:
            raise ValueError(f"add_tokens needs n >= 1, got {n}")
        first = self.vocab_size
        emb, out = self.tok_embeddings.weight, self.output.weight
        new_emb = emb.float().mean(0, keepdim=True).to(emb.dtype).expand(n, -1).clone()
        new_out = out.float().mean(0, keepdim=True).to(out.dtype).expand(n, -1).clone()
        if self.new_tok_embeddings is not None:
            new_emb = torch.cat([self.new_tok_embeddings.detach(), new_emb])
            new_out = torch.cat([self.new_output.detach(), new_out])
        self.new_tok_embeddings = nn.Parameter(new_emb)
        self.new_output = nn.Parameter(new_out)
        return list(range(first, first + n))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        """Create the new-token parameters on demand when a state dict carries them."""
        shapes = {
            n: state_dict[prefix + n].shape for n in NEW_TOKEN_PARAMS if prefix + n in state_dict
        }
        if shapes and self.new_tok_embeddings is None:
            if len(shapes) != 2 or shapes[NEW_TOKEN_PARAMS[0]][0] != shapes[NEW_TOKEN_PARAMS[1]][0]:
                error_msgs.append(f"new-token rows are inconsistent in the state dict: {shapes}")
            else:
                for name, shape in shapes.items():
                    empty = torch.empty(shape, dtype=self.dtype, device=self.device)
                    setattr(self, name, nn.Parameter(empty))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def new_cache(self, batch_size: int, max_len: Optional[int] = None) -> KVCache:
        """A KV cache on this model's device/dtype; max_len defaults to config.max_seq_len."""
        return KVCache(
            self.config, batch_size, max_len or self.config.max_seq_len, self.dtype, self.device
        )

    # -- pieces of the forward pass ---------------------------------------------------------

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, T, dim); ids >= base_vocab_size read the new-token rows."""
        w = self.tok_embeddings.weight
        if self.new_tok_embeddings is None:
            return F.embedding(tokens, w)
        base = self.base_vocab_size
        is_new = tokens >= base
        old = F.embedding(tokens.clamp(max=base - 1), w)
        new = F.embedding((tokens - base).clamp(min=0), cast_to(self.new_tok_embeddings, w.dtype))
        return torch.where(is_new[..., None], new, old)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden states -> float logits over base + new vocabulary."""
        out = linear(h, self.output, None, None)  # no bias; may be int8 (llama.quantize)
        if self.new_output is not None:
            out = torch.cat([out, F.linear(h, cast_to(self.new_output, h.dtype)).to(out.dtype)],
                            dim=-1)
        return out.float()

    def adapter_tokens(
        self, modality_features: Optional[torch.Tensor], batch_size: int
    ) -> list[torch.Tensor]:
        """One adapter token (b, 1, dim) per adapter layer, in layer order.

        Layer j of the adapter block belongs to modality j // adapter_layers_per_modality and gets
        features[:, m] + prefix_query[j]; without features it gets the prefix alone (b = 1).
        """
        cfg = self.config
        prefix = self.prefix_query.weight
        if cfg.n_adapter_layers == 0:
            return []
        if modality_features is None:
            return [prefix[j].view(1, 1, -1) for j in range(cfg.n_adapter_layers)]
        n_mod = len(cfg.modalities)
        if modality_features.dim() != 3 or modality_features.shape[1:] != (n_mod, cfg.dim):
            raise ValueError(
                f"modality_features must be (batch, {n_mod}, {cfg.dim}) for modalities "
                f"{cfg.modalities}; got {tuple(modality_features.shape)}"
            )
        if modality_features.shape[0] not in (1, batch_size):
            raise ValueError(
                f"modality_features batch {modality_features.shape[0]} != token batch {batch_size}"
            )
        feats = modality_features.to(prefix.dtype)
        per = cfg.adapter_layers_per_modality
        return [
            (feats[:, j // per] + prefix[j]).unsqueeze(1) for j in range(cfg.n_adapter_layers)
        ]

    def _freqs(self, device: torch.device, length: int) -> torch.Tensor:
        table = self._rope.get(device)
        if table is None or table.shape[0] < length:
            size = max(self.config.max_seq_len, 1 << max(length - 1, 1).bit_length())
            # A normal tensor even when first built under inference_mode, so training can use it.
            with torch.inference_mode(False), torch.no_grad():
                table = rope_frequencies(
                    self.config.head_dim, size, self.config.rope_theta, device
                )
            self._rope[device] = table
        return table

    # -- forward --------------------------------------------------------------------------

    def forward(
        self,
        tokens: torch.Tensor,
        modality_features: Optional[torch.Tensor] = None,
        cache: Optional[KVCache] = None,
        start_pos: Optional[int] = None,
        attention_mask: Optional[torch.Tensor] = None,
        return_hidden: bool = False,
        last_only: bool = False,
        pre_norm_hidden: bool = False,
        logit_rows: Optional[torch.Tensor] = None,
    ):
        """tokens (B, T) long -> float logits (B, T, vocab) [, final-norm hidden (B, T, dim)].

        modality_features: (B, n_modalities, dim), zeros for an absent modality; None = prefix only.
        cache / start_pos: with a cache, keys/values are appended at start_pos (default: the cache
        length); attention_mask (B, start_pos + T) marks real tokens (1) and padding (0).
        last_only: compute logits (and hidden) for the last position only (generation).
        logit_rows: a (B, T) bool mask; logits are computed only where it is True and returned
        as (n, vocab), in row-major order (training: the vocabulary head is then paid only for
        the positions that have a target; the hidden states stay whole).
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, seq), got shape {tuple(tokens.shape)}")
        return self.forward_embeddings(
            self.embed(tokens),
            modality_features=modality_features,
            cache=cache,
            start_pos=start_pos,
            attention_mask=attention_mask,
            return_hidden=return_hidden,
            last_only=last_only,
            pre_norm_hidden=pre_norm_hidden,
            logit_rows=logit_rows,
        )

    def forward_embeddings(
        self,
        h: torch.Tensor,
        modality_features: Optional[torch.Tensor] = None,
        cache: Optional[KVCache] = None,
        start_pos: Optional[int] = None,
        attention_mask: Optional[torch.Tensor] = None,
        return_hidden: bool = False,
        last_only: bool = False,
        pre_norm_hidden: bool = False,
        logit_rows: Optional[torch.Tensor] = None,
    ):
        """Same as `forward`, starting from input embeddings h (B, T, dim).

        pre_norm_hidden: the returned hidden states are the last layer's output before the final
        norm (what the published output projector read) instead of the final-norm output.
        """
        B, T, _ = h.shape
        if T == 0:
            raise ValueError("forward needs at least one token per row")
        plan = forward_plan(B, T, h.device, cache, start_pos, attention_mask,
                            lambda length: self._freqs(h.device, length))
        first = self.config.first_adapter_layer
        adapters: Optional[list[Optional[torch.Tensor]]] = cache.adapters if cache else None
        if adapters is None and self.config.n_adapter_layers:
            tokens = self.adapter_tokens(modality_features, B)
            adapters = [None] * first + [
                layer.attention.adapter_output(tok)
                for layer, tok in zip(self.layers[first:], tokens)
            ]
            if cache is not None:
                cache.adapters = adapters
        for i, layer in enumerate(self.layers):
            h = layer(h, plan, adapters[i] if adapters is not None else None)
        pre = h
        h = self.norm(h)
        if last_only:
            h, pre = h[:, -1:], pre[:, -1:]
        if logit_rows is not None:
            if last_only or logit_rows.shape != h.shape[:2]:
                raise ValueError(f"logit_rows must be a {tuple(h.shape[:2])} mask of the full "
                                 f"sequence, got {tuple(logit_rows.shape)}")
            logits = self.logits(h[logit_rows.to(h.device)])
        else:
            logits = self.logits(h)
        if not return_hidden:
            return logits
        return logits, (pre if pre_norm_hidden else h)


# ---------------------------------------------------------------------------------------------
# State-dict helpers for the separate new-token rows


def merge_new_tokens(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> dict:
    """Fold `new_tok_embeddings` / `new_output` into grown tok_embeddings / output matrices.

    For export to layouts that hold one (base + new) x dim matrix (Meta, HF, the published
    checkpoint). Keys outside `prefix` are passed through unchanged.
    """
    sd = dict(state_dict)
    emb, out = prefix + "tok_embeddings.weight", prefix + "output.weight"
    new_emb, new_out = prefix + NEW_TOKEN_PARAMS[0], prefix + NEW_TOKEN_PARAMS[1]
    if (new_emb in sd) != (new_out in sd):
        raise ValueError(f"state dict has only one of {new_emb!r} / {new_out!r}")
    if new_emb in sd:
        for base_key, new_key in ((emb, new_emb), (out, new_out)):
            if base_key not in sd:
                raise ValueError(f"state dict has {new_key!r} but no {base_key!r} to merge into")
            sd[base_key] = torch.cat([sd[base_key], sd.pop(new_key).to(sd[base_key].dtype)])
    return sd


def split_new_tokens(
    state_dict: Mapping[str, torch.Tensor], base_vocab_size: int, prefix: str = ""
) -> dict:
    """Inverse of `merge_new_tokens`: rows past base_vocab_size become the new-token parameters."""
    sd = dict(state_dict)
    emb, out = prefix + "tok_embeddings.weight", prefix + "output.weight"
    rows = {k: sd[k].shape[0] for k in (emb, out) if k in sd}
    if len(rows) != 2:
        raise ValueError(f"state dict lacks {emb!r} or {out!r}")
    if rows[emb] != rows[out]:
        raise ValueError(f"{emb} has {rows[emb]} rows but {out} has {rows[out]}")
    if rows[emb] < base_vocab_size:
        raise ValueError(
            f"{emb} has {rows[emb]} rows, fewer than the base vocabulary {base_vocab_size}"
        )
    if rows[emb] > base_vocab_size:
        for key, new_key in ((emb, NEW_TOKEN_PARAMS[0]), (out, NEW_TOKEN_PARAMS[1])):
            full = sd[key]
            sd[key] = full[:base_vocab_size]
            sd[prefix + new_key] = full[base_vocab_size:]
    return sd


__all__ = [
    "RMSNorm",
    "Transformer",
    "apply_rope",
    "merge_new_tokens",
    "rope_frequencies",
    "split_new_tokens",
]
