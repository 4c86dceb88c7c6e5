"""Read and write LLaMA base weights in Meta's and Hugging Face's layouts.

The name/config translation between the layouts is `llama.hf_meta`; this module does the file
side. Meta folders: `params.json` + `consolidated.NN.pth` shards (merged on load, split on save).
HF folders: `config.json` + `model.safetensors`, sharded safetensors with an index, or
`pytorch_model*.bin`.

Memory: the model is built on the meta device and the checkpoint tensors (memory-mapped, not read)
are assigned to it, so a same-dtype CPU load keeps no second copy. Multi-shard merges and dtype
conversions copy tensors group by group, re-opening the shards per group so at most one group of the
mapped pages stays resident. Parameters absent from base checkpoints (LoRA, biases, gates, adapter
prefix) get the backbone's own initial values.

Writing: every file is written atomically (`util.atomic`), weight files first and the layout's
config file last, so a crash never leaves a half-written file and a folder whose config is present
holds all of its weight files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Optional

import torch

from llama.config import LlamaConfig
from llama.hf_meta import (
    DERIVED_KEY_RE,
    SHARD_DIM,
    WeightsError,
    base_weight_shapes,
    config_from_hf,
    config_from_params,
    hf_config_dict,
    hf_name_to_meta,
    hf_to_meta_state_dict,
    meta_params_dict,
    meta_to_hf_state_dict,
    permute_hf_to_meta,
    permuted_heads,
)
from util.atomic import atomic_path, write_text

# (Meta name, tensor as read) -> tensor to keep; see load_base_state_dict.
Transform = Callable[[str, torch.Tensor], torch.Tensor]

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
]

META_SHARD_RE = re.compile(r"^consolidated\.(\d+)\.pth$")
HF_SAFE_INDEX = "model.safetensors.index.json"
HF_BIN_INDEX = "pytorch_model.bin.index.json"
# Merge/convert this many bytes of tensors per group (bounds the transiently mapped pages).
_GROUP_BYTES = 512 * 2**20
# With a transform (int8 at load, llama.quantize) the result is 4x smaller than the mapped input,
# so a group's mapped pages would dominate the peak: groups of about one 7B matrix instead.
_TRANSFORM_GROUP_BYTES = 64 * 2**20


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


def read_config(path: str | os.PathLike) -> tuple[str, LlamaConfig]:
    """(layout, LlamaConfig) of a weight folder; Meta's vocab_size -1 is read from the embedding."""
    folder = Path(path)
    layout = detect_layout(folder)
    if layout == "hf":
        conf = folder / "config.json"
        return layout, config_from_hf(_read_json(conf), str(conf))
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


def _groups(names: Iterable[str], nbytes: Mapping[str, int],
            limit: int = _GROUP_BYTES) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    size = 0
    for name in names:
        if groups[-1] and size + nbytes[name] > limit:
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


def _load_meta(folder: Path, cfg: LlamaConfig, dtype: Optional[torch.dtype], device: torch.device,
               transform: Optional[Transform] = None
               ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Merged Meta-named tensors and, for error messages, the file each came from."""
    conv = transform or (lambda _name, t: _convert(t, dtype, device))
    files = _meta_shard_files(folder)
    first = [_torch_load(f) for f in files]
    keys = [k for k in first[0] if not DERIVED_KEY_RE.search(k)]
    for f, sd in zip(files[1:], first[1:]):
        other = {k for k in sd if not DERIVED_KEY_RE.search(k)}
        if other != set(keys):
            diff = sorted(set(keys) ^ other)[:5]
            raise WeightsError(f"{f}: holds different tensors than {files[0].name} (e.g. {diff})")
    origin = {k: str(files[0]) if len(files) == 1 else f"{folder}/consolidated.*.pth" for k in keys}
    if (len(files) == 1 and transform is None
            and not _needs_copy((first[0][k] for k in keys), dtype, device)):
        return {k: first[0][k] for k in keys}, origin  # zero-copy: tensors stay memory-mapped
    nbytes = {k: sum(sd[k].numel() * sd[k].element_size() for sd in first) for k in keys}
    del first
    out: dict[str, torch.Tensor] = {}
    limit = _GROUP_BYTES if transform is None else _TRANSFORM_GROUP_BYTES
    for group in _groups(keys, nbytes, limit):
        shards = [_torch_load(f) for f in files]
        for k in group:
            parts = [sd[k] for sd in shards]
            t = conv(k, _merge(k, parts, files))
            mapped = {p.untyped_storage().data_ptr() for p in parts}
            # A result still viewing a shard would keep that shard's touched pages resident.
            out[k] = t.clone() if t.untyped_storage().data_ptr() in mapped else t
        del shards, parts  # unmaps this group's pages before the next group is touched
    return out, origin


def _merge(name: str, parts: list[torch.Tensor], files: list[Path]) -> torch.Tensor:
    if len(parts) == 1:
        return parts[0]
    leaf = name.split(".")[-2] if name.endswith(".weight") else name
    dim = SHARD_DIM.get(leaf)
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


def _load_hf(folder: Path, cfg: LlamaConfig, dtype: Optional[torch.dtype], device: torch.device,
             transform: Optional[Transform] = None
             ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    files, kind = _hf_weight_files(folder)
    conv = transform or (lambda _name, t: _convert(t, dtype, device))
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    shapes = base_weight_shapes(cfg)
    for f in files:
        raw: Optional[dict[str, torch.Tensor]] = _read_hf_file(f, kind)
        names = [n for n in raw if not DERIVED_KEY_RE.search(n)]
        groups = [names]
        if transform is not None:
            # The result is much smaller than the input (int8): re-map the file per group so
            # only one group's pages are resident, not a whole multi-GB shard file.
            nbytes = {n: raw[n].numel() * raw[n].element_size() for n in names}
            groups = _groups(names, nbytes, _TRANSFORM_GROUP_BYTES)
        for group in groups:
            raw = raw if raw is not None else _read_hf_file(f, kind)
            permuted = _load_hf_group(f, raw, group, cfg, shapes, conv, out, origin)
            raw = None  # unmaps the group's pages before the next mapping is touched
            if permuted:
                _load_permuted(f, kind, permuted, conv, out)
    if "output.weight" not in out and "tok_embeddings.weight" in out:
        tied = out["tok_embeddings.weight"]  # tie_word_embeddings
        out["output.weight"] = tied if transform is None else transform("output.weight", tied)
        origin["output.weight"] = origin["tok_embeddings.weight"]
    return out, origin


def _load_hf_group(f: Path, raw: dict[str, torch.Tensor], group: list[str], cfg: LlamaConfig,
                   shapes: Mapping[str, tuple[int, ...]], conv: Transform,
                   out: dict[str, torch.Tensor], origin: dict[str, str]
                   ) -> list[tuple[str, str, int]]:
    """Convert the tensors `group` of one HF file (`raw`: its mapping) into Meta-named `out`;
    returns the wq/wk tensors (HF name, Meta name, heads) still to be permuted."""
    permuted: list[tuple[str, str, int]] = []
    for name in group:
        t = raw[name]
        meta = hf_name_to_meta(name)
        if meta is None:
            raise WeightsError(f"{f}: unexpected weight {name!r} for a LLaMA model")
        if meta in out or any(meta == m for _, m, _ in permuted):
            raise WeightsError(f"{f}: weight {name!r} appears in more than one file")
        origin[meta] = str(f)
        heads = permuted_heads(meta, cfg)
        if heads:
            if tuple(t.shape) != shapes.get(meta):
                raise WeightsError(f"{f}: {name} has shape {tuple(t.shape)}, config.json "
                                   f"implies {shapes.get(meta)}")
            permuted.append((name, meta, heads))
        else:
            out[meta] = conv(meta, t)
    return permuted


def _load_permuted(f: Path, kind: str, permuted: list[tuple[str, str, int]], conv: Transform,
                   out: dict[str, torch.Tensor]) -> None:
    """wq/wk are re-ordered into new memory; reading them through a second mapping that is
    dropped afterwards keeps their original pages from staying resident as well."""
    again = _read_hf_file(f, kind)
    for name, meta, heads in permuted:
        out[meta] = conv(meta, permute_hf_to_meta(again[name], heads).contiguous())
    del again


def load_base_state_dict(path: str | os.PathLike, dtype: Optional[torch.dtype] = None,
                         device: str | torch.device = "cpu", cfg: Optional[LlamaConfig] = None,
                         transform: Optional[Transform] = None
                         ) -> tuple[LlamaConfig, dict[str, torch.Tensor], dict[str, str]]:
    """(config, Meta-named base weights, key -> source file) of a Meta or HF folder, validated.

    Every base weight must be present with the shape the config implies, and nothing else.
    `transform(name, tensor)`, when given, replaces the dtype/device conversion of each tensor
    as it is read (e.g. int8 quantization, llama.quantize.StreamingQuantizer); it must keep the
    shape.
    """
    folder = Path(path)
    layout, file_cfg = read_config(folder)
    cfg = cfg or file_cfg
    dev = torch.device(device)
    sd, origin = (_load_meta if layout == "meta" else _load_hf)(folder, cfg, dtype, dev, transform)
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
                  config_overrides: Optional[Mapping[str, Any]] = None,
                  quantize: Optional[str] = None):
    """Build the backbone of a Meta or HF folder and fill its base weights without a second copy.

    `dtype` None keeps the checkpoint's dtype; `config_overrides` replaces LlamaConfig fields
    (e.g. lora_rank, adapter_layers_per_modality, max_seq_len) before the model is built.
    `quantize="int8"` quantizes each projection as it is read (llama.quantize), so no float copy
    of the projections is ever held. The returned model carries its config at `.config`.
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
            raise WeightsError(
                f"{folder}: config_overrides give an invalid config ({err})"
            ) from err
    quantizer = None
    if quantize not in (None, "none"):
        from llama.quantize import StreamingQuantizer

        quantizer = StreamingQuantizer(quantize, dtype, device)
    cfg, sd, origin = load_base_state_dict(folder, dtype=dtype, device=device, cfg=cfg,
                                           transform=quantizer.transform if quantizer else None)
    dev = torch.device(device)
    with torch.device("meta"):
        model = Transformer(cfg)
    if quantizer is not None:
        quantizer.install(model, sd)  # int8 projections in; their entries leave `sd`
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
    dim = SHARD_DIM.get(leaf)
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
        raise WeightsError(
            f"{config.kv_heads} key/value heads cannot be split into {n_shards} shards"
        )
    dst.mkdir(parents=True, exist_ok=True)
    for rank in range(n_shards):
        shard = {k: _split(k, t, n_shards)[rank] if n_shards > 1 else t for k, t in sd.items()}
        with atomic_path(dst / f"consolidated.{rank:02d}.pth") as tmp:
            torch.save(shard, tmp)
        del shard
    write_text(dst / "params.json", json.dumps(meta_params_dict(config), indent=2) + "\n")
    return dst


def _shard_plan(sd: Mapping[str, torch.Tensor], max_shard_bytes: int
                ) -> tuple[list[str], list[list[str]], int]:
    """(file names, keys per file, total bytes): consecutive keys up to `max_shard_bytes` a file."""
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
    return names, shards, sum(sizes.values())


def save_hf(model_or_state_dict: Any, config: LlamaConfig, dst: str | os.PathLike,
            max_shard_bytes: int = 5 * 2**30) -> Path:
    """Write an HF LLaMA folder: config.json and safetensors (sharded with an index when large)."""
    from safetensors.torch import save_file

    dst = Path(dst)
    sd = meta_to_hf_state_dict(_base_state(model_or_state_dict, config), config)
    dtypes = {t.dtype for t in sd.values()}
    dst.mkdir(parents=True, exist_ok=True)
    names, shards, total = _shard_plan(sd, max_shard_bytes)
    for name, keys in zip(names, shards):
        with atomic_path(dst / name) as tmp:
            save_file({k: sd[k].contiguous() for k in keys}, str(tmp), metadata={"format": "pt"})
    if len(shards) > 1:
        index = {"metadata": {"total_size": total},
                 "weight_map": {k: n for n, keys in zip(names, shards) for k in keys}}
        write_text(dst / HF_SAFE_INDEX, json.dumps(index, indent=2) + "\n")
    config_json = hf_config_dict(config, next(iter(dtypes)))
    write_text(dst / "config.json", json.dumps(config_json, indent=2, default=str) + "\n")
    return dst
