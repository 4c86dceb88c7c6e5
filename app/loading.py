"""Which model to load, and loading it.

`choose_model` decides from the flags what to load (checkpoint, preset, component paths) without
importing torch, so flag errors come back fast. `load_model` builds the model and one
`data.features.MediaFeatures` beside it (media paths become frozen-encoder features outside the
model package) and returns an `app.engine.LoadedModel`.

Load failures: the model package raises a typed error per component (CheckpointError,
WeightsError, TokenizerError, EncoderLoadError, DecoderLoadError, KnnIndexError); each becomes
one `ModelLoadError` naming that component, where it was looked for, its flag and why (one line,
exit 2). An OSError (a file or hub id the system could not supply) that no component claims is
reported against the model as a whole. Every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from app.engine import LoadedModel
from app.errors import InputError, ModelLoadError, one_line
from util.dtypes import resolve_dtype

if TYPE_CHECKING:
    import torch

    from llama.m2ugen import M2UGen

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# What to load


@dataclasses.dataclass
class ModelChoice:
    """What `load_model` will load, decided before any heavy import (and reported to the user)."""

    checkpoint: Optional[str]
    preset: str
    overrides: dict[str, str] = dataclasses.field(default_factory=dict)
    device: str = "auto"
    dtype: str = "auto"
    music_decoder: Optional[str] = None  # a family the user insisted on (checked after loading)
    feature_cache: Optional[str] = None  # frozen-encoder feature cache folder
    knn_dir: Optional[str] = None  # faiss index folder (--knn_dir)
    llama_dir: Optional[str] = None  # as given: a release file takes only its tokenizer
    allow_partial: bool = False  # release files: load despite missing/unknown tensors
    quantize: str = "none"  # --quantize: "int8" = int8 weight-only backbone (llama.quantize)
    video_sampling: str = "uniform"  # --video_sampling (data.media.VideoSampling)
    video_seed: Optional[int] = None  # window only: its start drawn from --seed (None: centred)

    @property
    def key(self) -> tuple:
        return (self.checkpoint, self.preset, tuple(sorted(self.overrides.items())),
                self.device, self.dtype, self.music_decoder, self.feature_cache, self.knn_dir,
                self.llama_dir, self.allow_partial, self.quantize, self.video_sampling,
                self.video_seed)

    @property
    def release_file(self) -> bool:
        """--model names a released `checkpoint.pth` (a file, not our checkpoint folder)."""
        return self.checkpoint is not None and Path(self.checkpoint).is_file()


def default_checkpoint(preset: str) -> Optional[Path]:
    """`ckpts/<preset>/stage3` (the end of the three training stages) if a complete one exists."""
    folder = REPO / "ckpts" / preset / "stage3"
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / "config.json").is_file() and (candidate / "model.safetensors").is_file():
            return folder
    return None


def resolve_llama_dir(llama_dir: str, llama_type: Optional[str] = None) -> tuple[str, str]:
    """(weights folder, tokenizer path) for the published `<dir>/<llama_type>` layout (7B when
    that folder exists) or a plain folder."""
    root = Path(llama_dir)
    if not root.is_dir():
        raise InputError(f"--llama_dir {llama_dir}: no such folder")
    if llama_type and not (root / llama_type).is_dir():
        raise InputError(f"--llama_type {llama_type}: no folder {root / llama_type}")
    sub = root / (llama_type or "7B")
    if sub.is_dir():
        return str(sub), str(root / "tokenizer.model")
    for tok in (root / "tokenizer.model", root.parent / "tokenizer.model"):
        if tok.is_file():
            return str(root), str(tok)
    return str(root), str(root)  # Hugging Face folder: tokenizer files live beside the weights


def model_overrides(args: argparse.Namespace) -> dict[str, str]:
    """Component paths given on the command line (only those actually set)."""
    o: dict[str, str] = {}
    if args.llama_dir:
        o["llama_path"], o["tokenizer_path"] = resolve_llama_dir(
            args.llama_dir, getattr(args, "llama_type", None))
    if args.tokenizer_path:
        o["tokenizer_path"] = args.tokenizer_path
    for key in ("mert_path", "vit_path", "vivit_path", "music_decoder_path"):
        if getattr(args, key):
            o[key] = getattr(args, key)
    if getattr(args, "trust_remote_code", False):
        o["trust_remote_code"] = "true"
    return o


def resolve_preset(preset: str, music_decoder: Optional[str]) -> str:
    """The preset whose decoder family matches --music_decoder (as the published flag chose it)."""
    if music_decoder is None:
        return preset
    kind = "audioldm2" if "audioldm2" in preset else "musicgen"
    if kind == music_decoder:
        return preset
    if preset.startswith("tiny"):
        return "tiny-audioldm2" if music_decoder == "audioldm2" else "tiny"
    return "m2ugen-audioldm2" if music_decoder == "audioldm2" else "m2ugen-musicgen-small"


def _looks_local(value: str) -> bool:
    """Clearly a filesystem path (absolute, ./ or ~/, or nested deeper than a hub "org/name");
    hub ids and the built-in names ("tiny", "tiny-audioldm2") are left to the loaders."""
    return value.startswith((".", "/", "~")) or value.count("/") >= 2


def choose_model(args: argparse.Namespace) -> ModelChoice:
    """The model the flags ask for; missing local paths are reported before anything loads."""
    preset = resolve_preset(args.preset, args.music_decoder)
    checkpoint = args.model
    if checkpoint is not None and not Path(checkpoint).exists():
        checkpoint = resolve_hub_checkpoint(checkpoint)
    if checkpoint is None:
        found = default_checkpoint(preset)
        checkpoint = str(found) if found else None
    for flag in ("mert_path", "vit_path", "vivit_path", "music_decoder_path", "tokenizer_path"):
        value = getattr(args, flag)
        if value and _looks_local(value) and not Path(value).exists():
            raise InputError(f"--{flag} {value}: no such file or folder")
    knn_dir = getattr(args, "knn_dir", None)
    if knn_dir and not Path(knn_dir).exists():
        raise InputError(f"--knn_dir {knn_dir}: no such file or folder")
    quantize = getattr(args, "quantize", "none")
    precheck_quantize(quantize, args.device)
    sampling = getattr(args, "video_sampling", "uniform")
    return ModelChoice(checkpoint, preset, model_overrides(args), args.device, args.dtype,
                       music_decoder=args.music_decoder,
                       feature_cache=getattr(args, "feature_cache", None), knn_dir=knn_dir,
                       llama_dir=args.llama_dir, quantize=quantize,
                       allow_partial=bool(getattr(args, "allow_partial", False)),
                       video_sampling=sampling,
                       video_seed=getattr(args, "seed", None) if sampling == "window" else None)


def resolve_hub_checkpoint(model: str) -> str:
    """A hub repo id (e.g. M2UGen/M2UGen-MusicGen-small) -> its downloaded `checkpoint.pth`
    (the hub cache when offline); anything else that does not exist is an InputError."""
    if _looks_local(model) or model.count("/") != 1:
        raise InputError(f"--model {model}: no such checkpoint folder or file")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return hf_hub_download(model, "checkpoint.pth")
    except LocalEntryNotFoundError:
        raise InputError(f"--model {model}: no such checkpoint folder or file, and as a hub "
                         f"repo id its checkpoint.pth is not reachable (offline or "
                         f"HF_HUB_OFFLINE set, no cached copy): download it and pass its path"
                         ) from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise InputError(f"--model {model}: cannot download checkpoint.pth from the hub "
                         f"({one_line(err)})") from None


def precheck_quantize(quantize: str, device: str) -> None:
    """The torch-free part of `check_precision`: int8 needs a cpu or cuda device (the kernel
    probe itself runs in `load_model`)."""
    kind = device.split(":", 1)[0]
    if quantize != "none" and kind not in ("auto", "cpu", "cuda"):
        raise InputError(f"--quantize {quantize} runs on cpu or cuda devices, not {device!r}")


def random_weights_notice(choice: ModelChoice) -> Optional[str]:
    """What to tell the user when no trained checkpoint will be used (None when one will)."""
    if choice.checkpoint is not None:
        return None
    return (f"notice: no trained checkpoint (looked for ckpts/{choice.preset}/stage3; pass --model "
            f"DIR): using RANDOM tuned weights of preset '{choice.preset}', answers are "
            "meaningless. Train one with train.sh, or try --model assets/tiny_m2ugen (the "
            "trained tiny checkpoint `make demo` serves).")


# ---------------------------------------------------------------------------------------------
# Loading


def resolve_device(name: str) -> str:
    """`auto` -> cuda when available else cpu; an unusable device is an InputError."""
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise InputError(f"--device {device}: {one_line(err)}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine")
    return device


def load_model(choice: ModelChoice, cache: Optional[dict] = None) -> LoadedModel:
    """Load (or reuse from `cache`) the model and its media-feature front end."""
    if cache is not None and choice.key in cache:
        return cache[choice.key]
    from data.features import MediaFeatures

    device = resolve_device(choice.device)
    dtype = resolve_dtype(choice.dtype, device)
    check_precision(choice.quantize, device, dtype)
    try:
        model = _build(choice, device, dtype)
    except _component_errors() + (OSError,) as err:
        raise _load_error(err, choice) from err
    if choice.knn_dir:
        _attach_knn(model, choice.knn_dir)
    model.eval()
    kind = model.cfg.decoder.kind
    if choice.music_decoder is not None and kind != choice.music_decoder:
        raise InputError(f"--music_decoder {choice.music_decoder}: the checkpoint was trained "
                         f"with the {kind} decoder")
    from data.media import VideoSampling

    video = VideoSampling(choice.video_sampling, choice.video_seed)
    features = MediaFeatures(model, choice.feature_cache, video_sampling=video, pool_music=True)
    loaded = LoadedModel(model, features, choice)
    if cache is not None:
        cache[choice.key] = loaded
    return loaded


def check_precision(quantize: str, device: str, dtype: "torch.dtype") -> None:
    """An unsupported --quantize/--dtype/--device combination is bad input (one line, exit 2),
    found before anything is loaded."""
    from llama.quantize import QuantizationError, check_supported

    try:
        check_supported(quantize, device, dtype)
    except QuantizationError as err:
        raise InputError(one_line(err)) from None


def _build(choice: ModelChoice, device: str, dtype: "torch.dtype") -> "M2UGen":
    """The model of `choice`: a released file, an imported release folder, or our checkpoint
    folder / preset."""
    from llama.m2ugen import M2UGen

    if choice.release_file:
        model = _load_release(choice, device, dtype)
        prepare_precision(model, choice.quantize)
        return model
    if _imported_release(choice.checkpoint):
        from llama.release.load import load_imported  # decoder loaded on first music

        model = load_imported(choice.checkpoint, overrides=choice.overrides, device=device,
                              dtype=dtype)
        prepare_precision(model, choice.quantize)
        return model
    # A checkpoint's config carries everything it needs (its chat style included).
    return M2UGen.from_pretrained(choice.checkpoint, preset=choice.preset,
                                  overrides=choice.overrides, device=device, dtype=dtype,
                                  quantize=choice.quantize)


def prepare_precision(model: "M2UGen", quantize: str) -> None:
    """--quantize for a model whose loader cannot quantize while reading (released checkpoints):
    the backbone (already in the requested dtype) is converted one matrix at a time."""
    if quantize != "none":
        from llama.quantize import quantize_backbone_

        quantize_backbone_(model, quantize)


def _load_release(choice: ModelChoice, device: str, dtype: "torch.dtype") -> "M2UGen":
    """A released checkpoint.pth (llama.release): its LLaMA comes from the file, --llama_dir
    supplies the tokenizer; encoder flags pointing at weights replace the file's copies.
    --knn_dir is attached by `load_model`, as for every checkpoint."""
    from llama.release.load import load_release

    o = choice.overrides
    tok = o.get("tokenizer_path") or choice.llama_dir
    return load_release(
        choice.checkpoint, llama_dir=tok, mert_path=o.get("mert_path"),
        vit_path=o.get("vit_path"), vivit_path=o.get("vivit_path"),
        music_decoder=choice.music_decoder, music_decoder_path=o.get("music_decoder_path"),
        knn_dir=None, allow_partial=choice.allow_partial, device=device, dtype=dtype).model


def _imported_release(checkpoint: Optional[str]) -> bool:
    """A checkpoint folder written by `python -m llama.import_published`."""
    if checkpoint is None:
        return False
    from llama import checkpoint as ckpt

    try:
        saved = ckpt.read_config(checkpoint)
        return "release" in saved or "published" in saved  # "published": an older import
    except (OSError, ckpt.CheckpointError):
        return False  # from_pretrained reports the unreadable folder with its reason


def _attach_knn(model: "M2UGen", knn_dir: str) -> None:
    """--knn_dir: retrieval over the index in that folder (llama.knn.attach_knn)."""
    from llama.knn import KnnIndexError, attach_knn

    try:
        attach_knn(model, knn_dir)
    except (KnnIndexError, OSError) as err:
        raise ModelLoadError("knn", knn_dir, one_line(err)) from err


# ---------------------------------------------------------------------------------------------
# Load errors, by type


def _component_errors() -> tuple[type[BaseException], ...]:
    """The model package's typed load errors (and safetensors', raised by checkpoint reads)."""
    return tuple(_error_components())


def _error_components() -> dict[type[BaseException], str]:
    """Typed load error -> the component (app.errors.COMPONENTS key) it belongs to."""
    from safetensors import SafetensorError

    from llama.checkpoint import CheckpointError
    from llama.decoders import DecoderLoadError
    from llama.encoders import EncoderLoadError
    from llama.hf_meta import WeightsError
    from llama.knn import KnnIndexError
    from llama.tokenizer import TokenizerError

    # Safetensors files a load reads directly are the checkpoint's (llama.weights wraps the
    # LLaMA shards' own errors in WeightsError).
    return {CheckpointError: "checkpoint", SafetensorError: "checkpoint", WeightsError: "llama",
            TokenizerError: "tokenizer", EncoderLoadError: "encoder",
            DecoderLoadError: "decoder", KnnIndexError: "knn"}


def _load_error(err: BaseException, choice: ModelChoice) -> ModelLoadError:
    """`err` (a typed load error or an OSError) as one ModelLoadError naming its component."""
    component = next((c for t, c in _error_components().items() if isinstance(err, t)), None)
    reason = one_line(err)
    if component == "encoder":
        component = getattr(err, "modality", "audio")
    if component == "checkpoint" and choice.checkpoint is not None:
        return ModelLoadError("checkpoint", choice.checkpoint, reason)
    if component in (None, "checkpoint"):
        return ModelLoadError("model", choice.checkpoint or f"preset {choice.preset}", reason)
    return ModelLoadError(component, _source(component, choice), reason)


def _source(component: str, choice: ModelChoice) -> str:
    """Where `component` was looked for: the path the flags or the configuration give."""
    cfg = _configured(choice)
    return {"llama": cfg.llama_path, "tokenizer": cfg.tokenizer_path, "audio": cfg.mert.path,
            "image": cfg.vit.path, "video": cfg.vivit.path, "decoder": cfg.decoder.path,
            "knn": choice.knn_dir}[component]


def _configured(choice: ModelChoice) -> Any:
    """The configuration `choice` loads (checkpoint's, else the preset's), paths overridden."""
    from llama import checkpoint as ckpt
    from llama.config import get_preset
    from llama.m2ugen import apply_path_overrides, config_from_dict

    cfg = None
    if choice.checkpoint is not None and not choice.release_file:
        try:
            cfg = config_from_dict(ckpt.read_config(choice.checkpoint)["m2ugen"])
        except (OSError, ckpt.CheckpointError, KeyError):  # the failure being described
            cfg = None
    return apply_path_overrides(cfg or get_preset(choice.preset), choice.overrides)

