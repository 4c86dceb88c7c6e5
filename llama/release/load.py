"""A release file (or a folder imported from one) as an `M2UGen` computing what the published code
computed.

Loading a release: read it safely (`read`), find its layout and configuration (`infer`), build the
model on the meta device (so a 7B release never allocates a random copy first), sort every key by
the table (`keymap`) and assign the file's memory-mapped tensors; the frozen encoders and the
file's MusicGen come from the file unless a flag points at weights (`components`, `musicgen`).
Every key is used or reported with its reason; unknown or missing learned tensors are an error
naming the first keys (`allow_partial` downgrades it to a warning listing them).

The model's chat style (`cfg.chat_style`, from `keymap.LAYOUTS`) carries the published decoding
rules, so the one chat loop (`llama.chat`) reproduces the published greedy ids.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional

import torch

from llama.release import components, infer, keymap, musicgen
from llama.release.read import ReleaseFileError, read_release

log = logging.getLogger(__name__)


@dataclass
class ReleaseReport:
    """What loading found: the layout, and every key it did not use, with the reason."""

    path: str
    layout: str
    decoder_kind: str
    args: dict[str, Any] = field(default_factory=dict)
    unused: dict[str, list[str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    gates_all_zero: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The facts an imported folder records in its config.json (`release`)."""
        return {"source": self.path, "layout": self.layout, "decoder_kind": self.decoder_kind,
                "gates_all_zero": self.gates_all_zero, "missing": self.missing,
                "unused": {reason: len(keys) for reason, keys in self.unused.items()}}


class LoadedRelease(NamedTuple):
    model: Any  # llama.m2ugen.M2UGen
    report: ReleaseReport


def load_release(
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
) -> LoadedRelease:
    """The release at `path` as an M2UGen with the published behaviour, and what was found.

    `*_path` naming a folder with weights (or a hub id) supplies that frozen component; a folder
    with only config files, or None, builds it from that / the published configuration with the
    file's weights. `dtype` None keeps every tensor as stored (import)."""
    from llama.knn import attach_knn
    from llama.m2ugen import M2UGen

    path = Path(path)
    state, args = read_release(path)
    layout = infer.detect_layout(state, str(path))
    given = {"mert": mert_path, "vit": vit_path, "vivit": vivit_path,
             "music_decoder": music_decoder_path}
    cfg = infer.release_config(state, args, layout, path, llama_dir=llama_dir, paths=given,
                               music_decoder=music_decoder, norm_eps=norm_eps)
    # dtype None: the frozen LLaMA as stored (fp16 in the releases), encoders float32 as stored.
    enc_dtype = torch.float32 if dtype is None else dtype
    model_dtype = dtype or state["llama.layers.0.attention.wq.weight"].dtype
    with torch.device("meta"):
        model = M2UGen(cfg, device="meta", dtype=model_dtype, load_decoder=False)
    mapped = keymap.map_keys(state, cfg.llama.vocab_size, cfg.llama.first_adapter_layer)
    unused = dict(mapped.ignored)
    missing = _assign(model, mapped, path, allow_partial, dtype, device, unused)
    _finish(model, device)
    model.cfg.llama_path = f"published:{path}"
    _attach_encoders(model, mapped.components, path, unused, enc_dtype, device, given)
    model.decoder_factory, model.cfg.decoder = musicgen.decoder_factory(
        model.cfg.decoder, mapped.components[musicgen.PREFIX], str(path), args,
        music_decoder_path, enc_dtype, device, unused)
    model.trained = True
    report = ReleaseReport(path=str(path), layout=layout.name, decoder_kind=cfg.decoder.kind,
                           args=args, unused={k: v for k, v in unused.items() if v},
                           missing=missing, gates_all_zero=gates_all_zero(model))
    log_report(report, llama_dir)
    if knn_dir is not None:
        attach_knn(model, knn_dir)
    return LoadedRelease(model, report)


def _assign(model: torch.nn.Module, mapped: keymap.KeyMap, path: Path, allow_partial: bool,
            dtype: Optional[torch.dtype], device: str, unused: dict[str, list[str]]
            ) -> list[str]:
    """Assign the mapped tensors to the meta-built model; returns the missing names."""
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    targets = {**buffers, **params}
    unknown = list(mapped.unknown) + [mapped.source[k] for k in mapped.ours if k not in targets]
    if unknown and not allow_partial:
        raise ReleaseFileError(f"{path}: {len(unknown)} unknown key(s), e.g. {unknown[:3]}")
    if unknown:
        unused["unknown (allow_partial)"] = unknown
    ours = {k: v for k, v in mapped.ours.items() if k in targets}
    for name, value in ours.items():
        if tuple(targets[name].shape) != tuple(value.shape):
            raise ReleaseFileError(f"{path}: {mapped.source[name]} -> {name} has shape "
                                   f"{tuple(value.shape)}, the model expects "
                                   f"{tuple(targets[name].shape)}")
    missing = sorted(n for n in params if n not in ours)
    if missing and not allow_partial:
        raise ReleaseFileError(f"{path}: {len(missing)} learned tensor(s) missing, e.g. "
                               f"{missing[:3]} (allow_partial loads the rest)")
    # Each tensor in the dtype the model declares (frozen: `dtype`; tuned: float32): a tensor
    # already in that dtype stays the memory-mapped one, so no second copy is made.
    # `dtype` None (import): every tensor exactly as stored (the writer converts nothing).
    full = {n: v.to(device=device, dtype=v.dtype if dtype is None else targets[n].dtype)
            for n, v in ours.items()}
    for n in missing:
        full[n] = torch.zeros(params[n].shape, dtype=params[n].dtype, device=device)
    for n, b in buffers.items():
        if n not in full:
            full[n] = torch.zeros(b.shape, dtype=b.dtype, device=device)
    model.load_state_dict(full, strict=True, assign=True)
    return missing


def _finish(model: Any, device: str) -> None:
    """Point the meta-built model's bookkeeping at the real device."""
    model.device_ = torch.device(device)
    model.aud_ids = torch.tensor(model.tokenizer.aud_ids, device=device)
    model.backbone._rope = {}


def _attach_encoders(model: Any, parts: Mapping[str, Mapping[str, torch.Tensor]], path: Path,
                     unused: dict[str, list[str]], dtype: torch.dtype, device: str,
                     given: Mapping[str, Optional[str]]) -> None:
    """Each frozen encoder from the file, unless its flag names weights (then its keys are
    reported as superseded)."""
    for modality, prefix in components.PREFIX.items():
        part = components.PART[modality]
        folder, state = given[part], parts[prefix]
        if folder is not None and components.has_weights(folder):
            if state:
                unused[f"{prefix}* (superseded by {folder})"] = list(state)
            continue
        if not state:
            raise ReleaseFileError(f"{path}: no {prefix}* weights and no weights folder "
                                   f"given for the {modality} encoder")
        enc, enc_cfg, extra = components.build_encoder(
            modality, getattr(model.cfg, part), folder, state, str(path), dtype)
        setattr(model.cfg, part, enc_cfg)
        model._encoders[modality] = enc.to(device)
        if extra:
            unused[f"{prefix}* not used by our encoder"] = extra


def gates_all_zero(model: Any) -> bool:
    """True when no adapter gate is open: media then cannot change an answer."""
    gates = [p for n, p in model.backbone.named_parameters() if n.endswith(".gate")]
    return all(bool((g == 0).all()) for g in gates)


def warn_closed_gates(source: str) -> None:
    log.warning(
        "%s: every adapter gate is 0 (the published trainer never trained them): music, image "
        "and video inputs cannot change this model's answers; `python -m Evaluation.sensitivity` "
        "measures it", source)


def log_report(report: ReleaseReport, llama_dir: Optional[str]) -> None:
    for reason, keys in report.unused.items():
        log.info("%s: %d key(s) not used: %s (e.g. %s)", report.path, len(keys), reason, keys[:2])
    if report.missing:
        log.warning("%s: %d learned tensor(s) missing, set to zero (allow_partial): %s",
                    report.path, len(report.missing), report.missing[:5])
    if llama_dir is not None:
        weights = [p for p in Path(llama_dir).rglob("*") if p.suffix in (".pth", ".safetensors")]
        if weights:
            log.info("%s: LLaMA base weights taken from the checkpoint; %s is used for the "
                     "tokenizer only", report.path, llama_dir)
    if report.gates_all_zero:
        warn_closed_gates(report.path)


def load_imported(folder: str | os.PathLike, *, overrides: Optional[dict[str, str]] = None,
                  device: str = "cpu", dtype: torch.dtype = torch.float32,
                  load_decoder: bool = False) -> Any:
    """A folder written by `python -m llama.import_published`: our checkpoint loader (its
    config.json carries the release's chat style and compatibility values; a folder imported
    before chat styles were stored says `published` instead of `release`), the decoder loaded
    on first use, and the release's closed-gate warning repeated."""
    from llama import checkpoint as ckpt
    from llama.m2ugen import M2UGen

    model = M2UGen.from_pretrained(str(folder), overrides=overrides, device=device, dtype=dtype,
                                   load_decoder=load_decoder)
    saved = ckpt.read_config(folder)
    if (saved.get("release") or saved.get("published") or {}).get("gates_all_zero"):
        warn_closed_gates(str(folder))
    return model
