"""Inference precision for the backbone: half-precision casting and int8 weight-only quantization.

Why weight-only int8: batch-1 decoding reads every weight once per token, so it runs at memory
bandwidth; storing the seven projections of each layer and the LM head as int8 (one float scale per
output channel) reads about half the bytes of bf16 and a quarter of fp32.

Kernel: PyTorch's own `torch._weight_int8pack_mm` (ATen; registered for CPU, CUDA, XPU and MPS,
lowered by inductor, the kernel torchao's and gpt-fast's CPU int8 paths call). torchao 0.18 installs
and runs with torch 2.13, but its eager int8 weight-only linear dequantizes the whole matrix on
every call (`w.to(dtype)` then `mm`), which on this CPU is >10x slower than the fused ATen kernel;
it only pays off under `torch.compile`. So no extra dependency. The CPU kernel is fast only for
bfloat16 activations (float32/float16 fall to a scalar path), so the activations are cast to
bfloat16 for the int8 matmul and the result is cast back: every other part of the backbone keeps
the model's float dtype.

What stays float (exact, applied on top of the int8 base output): LoRA branches, biases, norms,
the adapter gates and prefix table, the new-token rows, the embedding table; outside the backbone
the bridges and the output projector are untouched. LoRA is not merged: merging would change the
quantized weights and the tuned parameters would no longer load by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from util.dtypes import UnsupportedDtype, resolve_dtype

__all__ = [
    "KERNEL_DTYPE",
    "QUANTIZE_MODES",
    "Int8Linear",
    "QuantizationError",
    "StreamingQuantizer",
    "backbone_of",
    "cast_for_inference",
    "check_supported",
    "load_quantized",
    "prepare_for_inference",
    "quantize_backbone_",
    "quantize_weight",
    "save_quantized",
    "weight_nbytes",
]

QUANTIZE_MODES: tuple[str, ...] = ("none", "int8")
# Activation dtype of the int8 matmul: the CPU kernel's vectorised path; scales are stored in it.
KERNEL_DTYPE = torch.bfloat16
# Backbone projections quantized per layer (attribute of the block's sub-module, weight name).
_LAYER_LINEARS: tuple[tuple[str, str], ...] = (
    ("attention", "wq"), ("attention", "wk"), ("attention", "wv"), ("attention", "wo"),
    ("feed_forward", "w1"), ("feed_forward", "w2"), ("feed_forward", "w3"),
)
_FORMAT = "m2ugen-int8-backbone-v1"


class QuantizationError(ValueError):
    """An unsupported precision request (mode, dtype or device); the message is one line."""


# ---------------------------------------------------------------------------------------------
# Requests


def check_supported(mode: str, device: str | torch.device, dtype: str | torch.dtype) -> None:
    """Raise QuantizationError unless `mode` can run on `device` with float parts in `dtype`.

    int8 needs the ATen kernel on that device type: it is probed with a 1x1 call, so a torch build
    or device without it fails here with one line instead of deep inside the first forward.
    """
    try:
        resolve_dtype(dtype)
    except UnsupportedDtype as err:
        raise QuantizationError(str(err)) from None
    if mode not in QUANTIZE_MODES:
        raise QuantizationError(
            f"--quantize {mode!r} is not supported; choose one of {list(QUANTIZE_MODES)}"
        )
    if mode == "none":
        return
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise QuantizationError(
            f"--quantize int8 runs on cpu or cuda devices, not {dev.type!r}"
        )
    try:
        x = torch.ones(1, 1, dtype=KERNEL_DTYPE, device=dev)
        w = torch.ones(1, 1, dtype=torch.int8, device=dev)
        torch._weight_int8pack_mm(x, w, torch.ones(1, dtype=KERNEL_DTYPE, device=dev))
    except (RuntimeError, NotImplementedError, AssertionError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise QuantizationError(
            f"--quantize int8: torch {torch.__version__} has no int8 weight-only matmul on "
            f"{dev} ({first})"
        ) from None


# ---------------------------------------------------------------------------------------------
# The quantized projection


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: (qweight int8 (out, in), scales KERNEL_DTYPE (out,)).

    Each scale is rounded UP to a KERNEL_DTYPE value, so the kernel uses it exactly and
    |w / scale| <= 127 still holds (no clipping): w ~= qweight * scale[:, None].
    """
    if w.dim() != 2:
        raise QuantizationError(f"quantize_weight needs a 2-D weight, got shape {tuple(w.shape)}")
    w = w.detach()
    q = torch.empty(w.shape, dtype=torch.int8, device=w.device)
    scales = []
    # Row blocks of ~_BLOCK_ELEMENTS: the float32 temporaries stay ~16 MB whatever the matrix
    # (a 7B LM head in one piece would need ~2 GB of them), so loading peaks at int8 + one layer.
    rows = max(1, _BLOCK_ELEMENTS // max(1, w.shape[1]))
    for start in range(0, w.shape[0], rows):
        block = w[start:start + rows].to(torch.float32, copy=True)  # never the caller's
        stored = _row_scales(block)
        block.div_(stored.float()[:, None]).round_().clamp_(-127, 127)
        q[start:start + rows] = block.to(torch.int8)
        scales.append(stored)
    return q, torch.cat(scales)


_BLOCK_ELEMENTS = 1 << 22


def _row_scales(w32: torch.Tensor) -> torch.Tensor:
    """max|row| / 127 per row, as KERNEL_DTYPE values rounded up (never below the exact scale)."""
    scale = w32.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero rows stay zero
    stored = scale.to(KERNEL_DTYPE)
    low = stored.float() < scale
    if bool(low.any()):
        up = torch.nextafter(stored, torch.full_like(stored, float("inf")))
        stored = torch.where(low, up, stored)
    return stored


class Int8Linear(nn.Module):
    """y = (x @ dequant(qweight).T) + bias with int8 weights and per-channel scales.

    Buffers `qweight` (int8) and `scales` (KERNEL_DTYPE) replace the frozen float weight; `bias`
    stays a float Parameter under its old name, so tuned checkpoints load unchanged.
    """

    def __init__(
        self,
        qweight: torch.Tensor,
        scales: torch.Tensor,
        bias: Optional[torch.Tensor] = None,
        float_dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        # dtype of the float model around it (what `.weight` dequantizes to)
        self.float_dtype = float_dtype or (bias.dtype if bias is not None else torch.float32)
        if qweight.dtype != torch.int8 or qweight.dim() != 2:
            raise QuantizationError(f"qweight must be 2-D int8, got {qweight.dtype} "
                                    f"{tuple(qweight.shape)}")
        if scales.shape != qweight.shape[:1]:
            raise QuantizationError(f"scales {tuple(scales.shape)} do not match qweight "
                                    f"{tuple(qweight.shape)}")
        self.out_features, self.in_features = qweight.shape
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales", scales)
        if bias is None:
            self.register_parameter("bias", None)
        else:
            trainable = isinstance(bias, nn.Parameter) and bias.requires_grad
            self.bias = nn.Parameter(bias.detach(), requires_grad=trainable)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        q, s = quantize_weight(linear.weight)
        return cls(q, s, linear.bias, float_dtype=linear.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(KERNEL_DTYPE).contiguous()
        scales = self.scales if self.scales.dtype == KERNEL_DTYPE else self.scales.to(KERNEL_DTYPE)
        y = torch._weight_int8pack_mm(x2, self.qweight, scales)
        y = y.view(*lead, self.out_features).to(x.dtype)
        if self.bias is None:
            return y
        # A tuned bias kept float32 beside half-precision activations must not promote them.
        return y + (self.bias if self.bias.dtype == y.dtype else self.bias.to(y.dtype))

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return (self.qweight.float() * self.scales.float()[:, None]).to(dtype)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight, for rare whole-matrix reads (e.g. `add_tokens`' row mean).

        The forward path never uses it; it costs a full float copy.
        """
        return self.dequantize(self.float_dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, int8 per-channel")


# ---------------------------------------------------------------------------------------------
# Whole-model operations


def backbone_of(model: nn.Module) -> nn.Module:
    """The `llama.backbone.Transformer` of a backbone or of a composed model (its `.backbone`)."""
    from llama.backbone import Transformer

    if isinstance(model, Transformer):
        return model
    inner = getattr(model, "backbone", None)
    if isinstance(inner, Transformer):
        return inner
    raise QuantizationError(
        f"expected a llama Transformer or a model with a .backbone, got {type(model).__name__}"
    )


def _quantizable(backbone: nn.Module) -> Iterator[tuple[nn.Module, str]]:
    """(parent module, attribute) of every projection that int8 mode quantizes."""
    for layer in backbone.layers:
        for sub, name in _LAYER_LINEARS:
            yield getattr(layer, sub), name
    yield backbone, "output"


def _swap(parent: nn.Module, name: str, new: nn.Module) -> None:
    """Replace parent.<name>, re-pointing the (base, lora_l1, lora_l2) tuples the blocks cache."""
    old = getattr(parent, name)
    setattr(parent, name, new)
    for key, value in list(vars(parent).items()):
        if isinstance(value, tuple) and value and value[0] is old:
            setattr(parent, key, (new, *value[1:]))


@torch.no_grad()
def quantize_backbone_(model: nn.Module, mode: str = "int8") -> int:
    """Quantize the backbone's projections and LM head in place, one matrix at a time.

    Works on a `Transformer` or a composed `M2UGen` (its `.backbone`); "none" is a no-op.
    Already-quantized projections are left alone. Returns the number of matrices converted.
    Peak extra memory is one float32 copy of the largest matrix.
    """
    backbone = backbone_of(model)
    check_supported(mode, backbone.device, backbone.dtype)
    if mode == "none":
        return 0
    n = 0
    for parent, name in _quantizable(backbone):
        module = getattr(parent, name)
        if isinstance(module, Int8Linear):
            continue
        _swap(parent, name, Int8Linear.from_linear(module))
        n += 1
    return n


@torch.no_grad()
def cast_for_inference(model: nn.Module, dtype: str | torch.dtype) -> nn.Module:
    """Cast the backbone's float parameters to `dtype` (int8 buffers untouched); returns model.

    The backbone computes in one dtype (its RMSNorm, RoPE and logits already run in float32
    internally), so every float parameter of it follows, the small tuned ones included. Bridges
    and the projector of a composed model stay float32 (they are small, and their inputs/outputs
    are cast at the boundaries). The frozen encoders and decoders are not touched here.
    """
    target = resolve_dtype(dtype)
    backbone = backbone_of(model)
    for module in backbone.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if p.is_floating_point() and p.dtype != target:
                setattr(module, name, nn.Parameter(p.to(target), requires_grad=p.requires_grad))
        if isinstance(module, Int8Linear):
            module.float_dtype = target
    if hasattr(model, "dtype_"):
        model.dtype_ = target
    return model


def prepare_for_inference(
    model: nn.Module, dtype: str | torch.dtype = "float32", quantize: str = "none"
) -> nn.Module:
    """What `--dtype D --quantize Q` does to a loaded model: validate, cast, then quantize.

    Raises QuantizationError (a ValueError; one line) for an unsupported combination before
    changing anything.
    """
    backbone = backbone_of(model)
    check_supported(quantize, backbone.device, dtype)
    cast_for_inference(model, dtype)
    quantize_backbone_(model, quantize)
    return model


def weight_nbytes(model: nn.Module, read_per_token: bool = False) -> int:
    """Bytes of the backbone's parameters and buffers (RoPE tables excluded).

    read_per_token: only what a decode step reads (the embedding table, new-token embedding rows
    and adapter prefix are looked up once per token or per prompt, not streamed).
    """
    skip = ("tok_embeddings.weight", "new_tok_embeddings", "prefix_query.weight")
    backbone = backbone_of(model)
    total = 0
    for name, t in [*backbone.named_parameters(), *backbone.named_buffers()]:
        if read_per_token and name in skip:
            continue
        total += t.numel() * t.element_size()
    return total


# ---------------------------------------------------------------------------------------------
# Quantizing while the base weights stream in (used by llama.weights.load_backbone)


class StreamingQuantizer:
    """Quantizes base weights one tensor at a time as the loader materialises them.

    `transform(name, tensor)` is handed every base weight (Meta name, still memory-mapped or just
    merged): projections come back as int8 (their scales are kept here), everything else as
    `dtype` on `device`. `install(model, state_dict)` then swaps the meta-device projections of
    the freshly built backbone for Int8Linear modules and removes their weights from the state
    dict, so no float copy of a projection ever exists beyond the one being converted.
    """

    def __init__(
        self, mode: str, dtype: Optional[torch.dtype], device: str | torch.device
    ) -> None:
        """dtype: of the float parts; None keeps the checkpoint's."""
        self.device = torch.device(device)
        check_supported(mode, self.device, dtype or torch.float32)
        if mode != "int8":
            raise QuantizationError(f"StreamingQuantizer needs mode 'int8', got {mode!r}")
        self.dtype = dtype
        self.scales: dict[str, torch.Tensor] = {}

    @staticmethod
    def is_projection(name: str) -> bool:
        if name == "output.weight":
            return True
        parts = name.split(".")
        return (len(parts) == 5 and parts[0] == "layers" and parts[-1] == "weight"
                and (parts[2], parts[3]) in _LAYER_LINEARS)

    @torch.no_grad()
    def transform(self, name: str, t: torch.Tensor) -> torch.Tensor:
        if not self.is_projection(name):
            return t.to(device=self.device, dtype=self.dtype or t.dtype)
        q, s = quantize_weight(t)
        self.scales[name] = s.to(self.device)
        return q.to(self.device)

    def install(self, model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
        backbone = backbone_of(model)
        for parent, attr in _quantizable(backbone):
            prefix = _module_name(backbone, parent)
            key = f"{prefix}{attr}.weight"
            if key not in self.scales:
                raise QuantizationError(f"no quantized weight was loaded for {key}")
            # The bias is still on the meta device: the loader fills it (zeros) afterwards.
            bias = getattr(parent, attr).bias
            q, s = state_dict.pop(key), self.scales.pop(key)
            float_dtype = self.dtype or state_dict["norm.weight"].dtype
            _swap(parent, attr, Int8Linear(q, s, bias, float_dtype=float_dtype))


def _module_name(root: nn.Module, target: nn.Module) -> str:
    for name, module in root.named_modules():
        if module is target:
            return f"{name}." if name else ""
    raise QuantizationError("module is not part of the backbone")


# ---------------------------------------------------------------------------------------------
# A quantized backbone on disk (quantize once, load many times)


def save_quantized(model: nn.Module, dst: str | Path) -> Path:
    """Write the quantized backbone to `dst` (a .safetensors file; its config in the metadata)."""
    import dataclasses

    from safetensors.torch import save_file

    from util.atomic import atomic_path

    backbone = backbone_of(model)
    if not any(isinstance(m, Int8Linear) for m in backbone.modules()):
        raise QuantizationError("save_quantized: the backbone has no int8 projections")
    state = {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}
    meta = {"format": _FORMAT, "config": json.dumps(dataclasses.asdict(backbone.config))}
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return dst


def load_quantized(src: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A backbone written by `save_quantized`, built on the meta device and filled by assignment."""
    from safetensors import SafetensorError, safe_open

    from llama.backbone import Transformer
    from llama.config import LlamaConfig

    src = Path(src)
    try:
        with safe_open(str(src), framework="pt", device=str(torch.device(device))) as f:
            meta: dict[str, Any] = f.metadata() or {}
            if meta.get("format") != _FORMAT:
                raise QuantizationError(f"{src}: not a quantized backbone ({_FORMAT})")
            # Copied out of the file mapping: the CPU kernel's vector loads may run a few bytes
            # past a weight's end, which faults when that end is the end of a mapped file.
            state = {k: f.get_tensor(k).clone() for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise QuantizationError(f"{src}: cannot read safetensors ({err})") from err
    fields = json.loads(meta["config"])
    fields["modalities"] = tuple(fields["modalities"])
    cfg = LlamaConfig(**fields)
    with torch.device("meta"):
        model = Transformer(cfg)
    for parent, attr in _quantizable(model):
        old = getattr(parent, attr)
        shape = (old.out_features, old.in_features)
        q = torch.empty(shape, dtype=torch.int8, device="meta")
        s = torch.empty(shape[:1], dtype=KERNEL_DTYPE, device="meta")
        _swap(parent, attr, Int8Linear(q, s, old.bias, float_dtype=state["norm.weight"].dtype))
    # New-token rows in the file are created by the backbone's own state-dict hook.
    model.load_state_dict(state, strict=True, assign=True)
    for p in model.parameters():
        p.requires_grad_(False)  # an inference artefact: nothing in it trains
    return model
