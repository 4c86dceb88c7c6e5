"""LoRA branches and the parameter-efficient training set of the backbone (docs/MODEL.md, 2).

Kept apart from the model file (as litgpt keeps `lora.py`) so `backbone.py` reads as plain
LLaMA-2 and everything parameter-efficient tuning adds or selects is on one screen:

- LoRA: y = base(x) + (alpha / rank) * B(A(x)) with A (rank x in) random and B (out x rank)
  zero-initialised, so a fresh model equals its base. The published M2UGen applies no scaling;
  `LlamaConfig.lora_alpha = None` (the default) means alpha = rank, i.e. scale exactly 1.0, and
  the branch is then added without any multiply, bit for bit the published forward.
- The PEFT groups (LoRA, biases, norms, gates, prefix, new-token rows): which group a parameter
  name belongs to, freezing everything else, and keeping the tuned groups float32 when the frozen
  base weights are cast to bf16/fp16.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# Parameter groups that parameter-efficient tuning may train (see `set_trainable`).
PEFT_GROUPS: tuple[str, ...] = ("lora", "bias", "norms", "gates", "prefix", "new_tokens")
# The backbone's separate vocabulary rows for the added [AUD] tokens (`Transformer.add_tokens`).
NEW_TOKEN_PARAMS: tuple[str, str] = ("new_tok_embeddings", "new_output")


class LoraLinear(NamedTuple):
    """A frozen projection and its LoRA branch (l1 = A, l2 = B; None when rank is 0).

    A plain tuple held by the block (not a registered module) so the hot loop does no attribute
    look-ups by name and the parameters keep the published names `lora_<name>_l1/_l2`.
    """

    base: nn.Module
    l1: Optional[nn.Linear] = None
    l2: Optional[nn.Linear] = None
    scale: float = 1.0


def make_lora(module: nn.Module, name: str, base: nn.Linear, rank: int,
              scale: float = 1.0) -> LoraLinear:
    """Register lora_{name}_l1 (rank x in) and lora_{name}_l2 (out x rank) next to `base`;
    `scale` is alpha / rank (`LlamaConfig.lora_scale`)."""
    if rank <= 0:
        return LoraLinear(base)
    l1 = nn.Linear(base.in_features, rank, bias=False)
    l2 = nn.Linear(rank, base.out_features, bias=False)
    setattr(module, f"lora_{name}_l1", l1)
    setattr(module, f"lora_{name}_l2", l2)
    return LoraLinear(base, l1, l2, float(scale))


def cast_to(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """Cast a trainable float32 tensor (LoRA, bias, new rows) or an activation to the frozen
    weights' dtype, so bf16/fp16 frozen weights train without autocast; under autocast the
    matmul casts its inputs itself (and the cast's backward still feeds float32 gradients)."""
    if t is None or t.dtype == dtype or torch.is_autocast_enabled(t.device.type):
        return t
    return t.to(dtype)


def linear(x: torch.Tensor, base: nn.Module, l1: Optional[nn.Linear] = None,
           l2: Optional[nn.Linear] = None, scale: float = 1.0) -> torch.Tensor:
    """base(x) + scale * l2(l1(x)): a frozen projection plus its LoRA branch.

    `base` may be a drop-in replacement of nn.Linear (llama.quantize.Int8Linear): it is called,
    with the input in the float dtype it stands for (as nn.Linear's input is cast to its weight's).
    """
    if type(base) is nn.Linear:
        dtype = base.weight.dtype
        x = cast_to(x, dtype)
        y = F.linear(x, base.weight, cast_to(base.bias, dtype))
    else:
        x = cast_to(x, getattr(base, "float_dtype", x.dtype))
        y = base(x)
    if l1 is not None:
        branch = F.linear(F.linear(x, cast_to(l1.weight, x.dtype)), cast_to(l2.weight, x.dtype))
        # scale 1.0 (the published model): no multiply at all, so the forward is bit-identical
        y = y + (branch if scale == 1.0 else branch * scale)
    return y


# ---------------------------------------------------------------------------------------------
# The trainable set


def parameter_group(name: str) -> Optional[str]:
    """Which PEFT group a parameter name belongs to ("lora", "bias", ...), None for base weights."""
    leaf = name.rsplit(".", 1)[-1]
    if ".lora_" in name or name.startswith("lora_"):
        return "lora"
    if leaf == "bias":
        return "bias"
    if name == "norm.weight" or name.endswith(("attention_norm.weight", "ffn_norm.weight")):
        return "norms"
    if leaf == "gate":
        return "gates"
    if name == "prefix_query.weight":
        return "prefix"
    if name in NEW_TOKEN_PARAMS:
        return "new_tokens"
    return None


@torch.no_grad()
def keep_peft_float32(model: nn.Module) -> None:
    """Return every PEFT parameter to float32 after the model was cast (`.to(bf16/fp16)`), so the
    trainable parameters, their gradients and optimizer state stay float32 while the frozen base
    weights use the low-precision dtype (the forward casts them to the activation dtype)."""
    for name, p in model.named_parameters():
        if parameter_group(name) is not None and p.dtype != torch.float32:
            p.data = p.data.float()


def peft_parameter_names(model: nn.Module) -> list[str]:
    """Names of every parameter parameter-efficient tuning may train (all groups)."""
    return [n for n, _ in model.named_parameters() if parameter_group(n) is not None]


def set_trainable(
    model: nn.Module,
    lora: bool = True,
    bias: bool = True,
    norms: bool = True,
    gates: bool = True,
    prefix: bool = True,
    new_tokens: bool = True,
) -> list[str]:
    """Freeze everything except the chosen PEFT groups; returns the trainable parameter names."""
    wanted = {
        g
        for g, on in zip(PEFT_GROUPS, (lora, bias, norms, gates, prefix, new_tokens))
        if on
    }
    trainable = []
    for name, p in model.named_parameters():
        on = parameter_group(name) in wanted
        p.requires_grad_(on)
        if on:
            trainable.append(name)
    return trainable
