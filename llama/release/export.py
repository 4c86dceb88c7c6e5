"""A release as our checkpoint folder, so later loads read safetensors only, never pickle.

The folder holds the tuned weights (`model.safetensors`), `config.json` (the configuration with
the release's compatibility values and chat style under `m2ugen`, the release facts under
`release`) and what the file supplied that no flag points at elsewhere: the LLaMA base as an HF
folder (skipped when --llama_dir holds base weights), the MERT / ViT / ViViT weights and the
file's MusicGen as HF folders, the tokenizer. `python -m llama.import_published` is its CLI.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

from llama import checkpoint as ckpt
from llama.config import M2UGenConfig
from llama.release.components import has_weights
from llama.release.load import ReleaseReport, load_release


def import_release(src: str | os.PathLike, dst: str | os.PathLike, *,
                   llama_dir: Optional[str] = None, mert_path: Optional[str] = None,
                   vit_path: Optional[str] = None, vivit_path: Optional[str] = None,
                   allow_partial: bool = False) -> Path:
    """`checkpoint.pth` -> our checkpoint folder (see `write_imported`); tensors keep the dtype
    they have in the file, so nothing is converted or copied twice on the way."""
    model, report = load_release(src, llama_dir=llama_dir, mert_path=mert_path,
                                 vit_path=vit_path, vivit_path=vivit_path,
                                 allow_partial=allow_partial, dtype=None)
    return write_imported(model, report, dst, llama_dir)


def write_imported(model: Any, report: ReleaseReport, dst: str | os.PathLike,
                   llama_dir: Optional[str] = None) -> Path:
    """Write a loaded release as our checkpoint folder (atomically, `util.atomic.atomic_dir`)."""
    from safetensors.torch import save_file

    from llama.weights import detect_layout, save_hf
    from util.atomic import atomic_dir

    final = Path(dst).resolve()
    cfg = copy.deepcopy(model.cfg)
    with atomic_dir(final, ckpt.is_complete) as tmp:
        tmp = Path(tmp)
        base = llama_weights_dir(llama_dir)
        if base is None:
            save_hf(model.backbone, model.backbone.config, tmp / "llama", max_shard_bytes=2**30)
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
        save_file(weights, str(tmp / ckpt.WEIGHTS_FILE))
        del weights
        config = {"m2ugen": dataclasses.asdict(cfg), "release": report.to_dict()}
        (tmp / ckpt.CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return final


def llama_weights_dir(llama_dir: Optional[str]) -> Optional[str]:
    """The folder of LLaMA base weights under `llama_dir` (published `<dir>/7B` layout or the
    folder itself), or None when it holds only a tokenizer."""
    if llama_dir is None:
        return None
    for folder in (Path(llama_dir) / "7B", Path(llama_dir)):
        if (folder / "params.json").is_file() or (folder / "config.json").is_file():
            return str(folder.resolve())
    return None


def _write_encoders(model: Any, tmp: Path, final: Path, cfg: M2UGenConfig) -> None:
    """Encoders whose weights came from the release file become HF folders in the checkpoint."""
    for modality, part in (("audio", "mert"), ("image", "vit"), ("video", "vivit")):
        enc = model._encoders.get(modality)
        enc_cfg = getattr(cfg, part)
        from_file = enc_cfg.path.startswith("published") or not has_weights(enc_cfg.path)
        if enc is None or not from_file:
            continue
        enc.model.save_pretrained(str(tmp / part), safe_serialization=True)
        enc.processor.save_pretrained(str(tmp / part))
        setattr(cfg, part, dataclasses.replace(enc_cfg, path=str(final / part)))


def _write_musicgen(model: Any, tmp: Path, final: Path, cfg: M2UGenConfig) -> None:
    """A MusicGen taken from the release file becomes an HF folder (with its T5 tokenizer when
    one was found), so the imported checkpoint still needs no MusicGen download."""
    if model.decoder_factory is None:
        return
    dec = model.decoder
    dec.model.save_pretrained(str(tmp / "musicgen"), safe_serialization=True)
    if dec.tokenizer is not None:
        dec.tokenizer.save_pretrained(str(tmp / "musicgen"))
    cfg.decoder = dataclasses.replace(cfg.decoder, path=str(final / "musicgen"))
