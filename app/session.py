"""Model choice and loading, one chat turn, and a chat session with history.

`choose_model` decides from the flags what to load (checkpoint, preset, component paths) without
importing torch, so flag errors come back fast. `load_model` builds the model and one
`data.features.MediaFeatures` beside it: media paths become frozen-encoder features here, outside
the model package, with the in-RAM memo and optional disk cache shared by every turn. A component
that cannot be loaded becomes one `ModelLoadError` naming the component, where it was looked for
and why. `ChatSession` holds one user's state (history, last generated music, private folder);
the model itself holds none, so sessions never see each other's data.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Sequence

from app.args import DEFAULT_MAX_MEDIA_SECONDS, MUSIC_MODES
from app.errors import InputError, ModelLoadError, one_line

if TYPE_CHECKING:
    import torch

    from data.features import MediaFeatures
    from llama.m2ugen import ChatReply, GenerationSettings, M2UGen, MediaInput

REPO = Path(__file__).resolve().parents[1]
MODALITY_FLAGS = {"audio": "--mert_path", "image": "--vit_path", "video": "--vivit_path"}
ENCODER_NAMES = {"audio": "music encoder", "image": "image encoder", "video": "video encoder"}
# Errors a loader raises for what it was pointed at (missing/corrupt files, hub ids unavailable
# offline, mismatching configurations); the model package's typed load errors are among them.
_LOAD_ERROR_BASES: tuple[type[BaseException], ...] = (OSError, ValueError)


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
            "meaningless. Train one with train.sh (`make demo` trains the tiny preset).")


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


def resolve_dtype(name: str, device: str) -> "torch.dtype":
    """`auto` -> float16 on GPU, float32 on CPU."""
    import torch

    if name == "auto":
        name = "float16" if device.startswith("cuda") else "float32"
    return getattr(torch, name)


def load_model(choice: ModelChoice, cache: Optional[dict] = None) -> "LoadedModel":
    """Load (or reuse from `cache`) the model and its media-feature front end."""
    if cache is not None and choice.key in cache:
        return cache[choice.key]
    from data.features import MediaFeatures
    from llama.m2ugen import M2UGen

    device = resolve_device(choice.device)
    dtype = resolve_dtype(choice.dtype, device)
    check_precision(choice.quantize, device, dtype)
    try:
        if choice.release_file:
            model = _load_release(choice, device, dtype)
            prepare_precision(model, choice.quantize)
        elif _imported_release(choice.checkpoint):
            from llama.published import load_imported  # decoder loaded on first music

            model = load_imported(choice.checkpoint, overrides=choice.overrides, device=device,
                                  dtype=dtype)
            prepare_precision(model, choice.quantize)
            _finish_loaded(model, choice)
        else:
            model = M2UGen.from_pretrained(choice.checkpoint, preset=choice.preset,
                                           overrides=choice.overrides, device=device, dtype=dtype,
                                           quantize=choice.quantize)
            _finish_loaded(model, choice)
    except _LOAD_ERROR_BASES + _decoder_load_error() as err:
        raise ModelLoadError(describe_load_failure(err, choice)) from err
    model.eval()
    kind = model.cfg.decoder.kind
    if choice.music_decoder is not None and kind != choice.music_decoder:
        raise InputError(f"--music_decoder {choice.music_decoder}: the checkpoint was trained "
                         f"with the {kind} decoder")
    from data.media import VideoSampling

    video = VideoSampling(choice.video_sampling, choice.video_seed)
    loaded = LoadedModel(model, MediaFeatures(model, choice.feature_cache, video_sampling=video),
                         choice)
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


def prepare_precision(model: "M2UGen", quantize: str) -> None:
    """--quantize for a model whose loader cannot quantize while reading (released checkpoints):
    the backbone (already in the requested dtype) is converted one matrix at a time."""
    if quantize != "none":
        from llama.quantize import quantize_backbone_

        quantize_backbone_(model, quantize)


def _load_release(choice: ModelChoice, device: str, dtype: "torch.dtype") -> "M2UGen":
    """A released checkpoint.pth (llama.published): its LLaMA comes from the file, --llama_dir
    supplies the tokenizer; encoder flags pointing at weights replace the file's copies."""
    from llama.published import load_published_model

    o = choice.overrides
    tok = o.get("tokenizer_path") or choice.llama_dir
    return load_published_model(
        choice.checkpoint, llama_dir=tok, mert_path=o.get("mert_path"),
        vit_path=o.get("vit_path"), vivit_path=o.get("vivit_path"),
        music_decoder=choice.music_decoder, music_decoder_path=o.get("music_decoder_path"),
        knn_dir=choice.knn_dir, allow_partial=choice.allow_partial, device=device, dtype=dtype)


def _imported_release(checkpoint: Optional[str]) -> bool:
    """A checkpoint folder written by `python -m llama.import_published`."""
    if checkpoint is None:
        return False
    from llama import checkpoint as ckpt

    try:
        return "published" in ckpt.read_config(checkpoint)
    except (OSError, ValueError):
        return False  # from_pretrained reports the unreadable folder with its reason


def _finish_loaded(model: "M2UGen", choice: ModelChoice) -> None:
    """Checkpoint-recorded compatibility values (imported releases) and --knn_dir."""
    if choice.checkpoint is not None:
        from llama import checkpoint as ckpt
        from llama.published import restore_compat

        restore_compat(model, ckpt.read_config(choice.checkpoint))
    if choice.knn_dir:
        from llama.published import attach_knn

        attach_knn(model, choice.knn_dir)


def is_published(model: Any) -> bool:
    """A released checkpoint (loaded or imported): it runs with the published generation."""
    return getattr(model, "published", None) is not None


def _decoder_load_error() -> tuple[type[BaseException], ...]:
    """The decoder package's own load error (a RuntimeError naming the decoder source)."""
    from llama.decoders import DecoderLoadError

    return (DecoderLoadError,)


# Which component a failure came from, by the model-package module that raised it.
_COMPONENT_MODULES = (
    ("llama.checkpoint", "checkpoint"), ("llama.published", "checkpoint"),
    ("llama.decoders", "decoder"), ("llama.tokenizer", "tokenizer"),
    ("llama.weights", "llama"), ("llama.hf_meta", "llama"), ("llama.convert", "llama"),
)


def _failing_component(err: BaseException) -> Optional[str]:
    """The deepest model-package frame of the traceback that belongs to a known component."""
    found = None
    tb = err.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        for prefix, component in _COMPONENT_MODULES:
            if module == prefix or module.startswith(prefix + "."):
                found = component
        tb = tb.tb_next
    return found


def _configured(choice: ModelChoice) -> Any:
    """The configuration `choice` loads (checkpoint's, else the preset's), paths overridden."""
    from llama import checkpoint as ckpt
    from llama.config import get_preset
    from llama.m2ugen import apply_path_overrides, config_from_dict

    cfg = None
    if choice.checkpoint is not None:
        try:
            cfg = config_from_dict(ckpt.read_config(choice.checkpoint)["m2ugen"])
        except (OSError, ValueError, KeyError):  # the failure being described may be this one
            cfg = None
    return apply_path_overrides(cfg or get_preset(choice.preset), choice.overrides)


def describe_load_failure(err: BaseException, choice: ModelChoice) -> str:
    """One line: which component could not be loaded, from where, and why."""
    component = _failing_component(err)
    if component == "checkpoint" and choice.checkpoint is not None:
        return f"cannot load the checkpoint {choice.checkpoint!r} (--model): {one_line(err)}"
    if component in (None, "checkpoint"):
        source = choice.checkpoint or f"preset {choice.preset}"
        return f"cannot load the model ({source}): {one_line(err)}"
    cfg = _configured(choice)
    what, source, flag = {
        "llama": ("LLaMA weights", cfg.llama_path, "--llama_dir"),
        "tokenizer": ("tokenizer", cfg.tokenizer_path, "--tokenizer_path"),
        "decoder": ("music decoder", cfg.decoder.path, "--music_decoder_path"),
    }[component]
    return f"cannot load the {what} {source!r} ({flag}): {one_line(err)}"


# ---------------------------------------------------------------------------------------------
# One turn


def check_media_paths(media: Mapping[str, Any], label: str = "{modality}") -> None:
    """Fail early, naming the flag/field (`label` formatted with the modality), on missing files."""
    for modality, path in media.items():
        if isinstance(path, (str, os.PathLike)) and not Path(path).is_file():
            raise InputError(f"{label.format(modality=modality)} {path}: no such file")


def history_answer(reply: "ChatReply") -> str:
    """How a past answer is fed back to the model: with [AUD0..7] if it produced music (training
    format), so a follow-up like "make it faster" sees that music was made."""
    from llama.config import AUD_TOKENS

    if reply.music is None:
        return reply.text
    return (reply.text + " " if reply.text else "") + "".join(AUD_TOKENS)


def check_media_length(media: Mapping[str, Any], max_seconds: Optional[float],
                       label: str = "{modality}") -> None:
    """Refuse audio/video files longer than `max_seconds` (None: no limit), from the container
    header -- or, when it declares no length, by demuxing only up to the limit -- so a long
    upload costs neither decoding time nor memory. Unreadable files pass: their loader says why."""
    if max_seconds is None:
        return
    from data.media import media_duration

    for modality, path in media.items():
        if modality not in ("audio", "video") or not isinstance(path, (str, os.PathLike)):
            continue
        seconds = media_duration(path, limit=max_seconds)
        if seconds is not None and seconds > max_seconds:
            raise InputError(f"{label.format(modality=modality)} {path}: the {modality} lasts "
                             f"at least {seconds:.1f} s, more than the limit of {max_seconds:g} s "
                             "(--max_media_seconds)")


class LoadedModel:
    """A loaded model with its media-feature front end; holds no per-user state."""

    def __init__(self, model: "M2UGen", features: "MediaFeatures", choice: ModelChoice) -> None:
        self.model = model
        self.features = features
        self.choice = choice
        self._media_lock = threading.Lock()  # the feature memo and lazy encoders are shared
        # Longer audio/video inputs are refused before decoding (a serving policy, set by the CLIs).
        self.max_media_seconds: Optional[float] = DEFAULT_MAX_MEDIA_SECONDS

    @property
    def description(self) -> str:
        source = self.choice.checkpoint or f"random tuned weights (preset {self.choice.preset})"
        cfg = self.model.cfg
        return f"{cfg.name} ({cfg.decoder.kind} decoder) from {source}"

    def settings(self, values: Optional[Mapping[str, Any]] = None) -> "GenerationSettings":
        """Validated settings for this model's decoder (None values = defaults)."""
        from app.settings import make_settings

        if is_published(self.model) and (values or {}).get("music_conditioning") is None:
            # The releases' projector never trained (docs/MODEL.md section 7.1): music comes
            # from the answer text, as the published demo made it.
            values = {**(values or {}), "music_conditioning": "text"}
        return make_settings(values, decoder=self.model.cfg.decoder)

    def encoder(self, modality: str) -> Any:
        """The frozen encoder of `modality`, loaded on first use; failures name the flag."""
        try:
            return self.model.encoder(modality)
        except _LOAD_ERROR_BASES as err:
            enc_cfg = {"audio": self.model.cfg.mert, "image": self.model.cfg.vit,
                       "video": self.model.cfg.vivit}[modality]
            raise ModelLoadError(
                f"cannot load the {ENCODER_NAMES[modality]} {enc_cfg.path!r} "
                f"({MODALITY_FLAGS[modality]}): {one_line(err)}"
            ) from err

    def media_input(self, media: Optional[Mapping[str, Any]]) -> "MediaInput":
        """{modality: path, decoded array or None} -> the model's MediaInput of features."""
        from llama.m2ugen import MediaInput

        present = {m: v for m, v in (media or {}).items() if v is not None}
        unknown = sorted(set(present) - set(ENCODER_NAMES))
        if unknown:
            raise InputError(f"unknown modality {unknown}; known: {list(ENCODER_NAMES)}")
        check_media_paths(present)
        check_media_length(present, self.max_media_seconds)
        out: dict[str, Any] = {}
        with self._media_lock:
            for modality, item in present.items():
                self.encoder(modality)
                try:
                    out[modality] = self.features.item_features(modality, item)
                except ValueError as err:  # the encoder refused this item's content
                    name = Path(item).name if isinstance(item, (str, os.PathLike)) else "input"
                    raise InputError(f"{modality} {name}: {one_line(err)}") from None
        return MediaInput(**out)

    def stream_turn(
        self,
        prompt: str,
        *,
        history: Sequence[tuple[str, str]] = (),
        media: Optional[Mapping[str, Any]] = None,
        settings: "GenerationSettings",
        music: str = "auto",
    ) -> Iterator[Any]:
        """Text deltas, then the ChatReply; `music="always"` synthesizes even without [AUD]."""
        if music not in MUSIC_MODES:
            raise InputError(f"music must be one of {list(MUSIC_MODES)}, got {music!r}")
        if not prompt or not prompt.strip():
            raise InputError("the prompt is empty")
        try:
            yield from self._turn(prompt, history, media, settings, music)
        except _decoder_load_error() as err:  # the decoder is loaded on the first music
            raise ModelLoadError(f"cannot load the music decoder {self.model.cfg.decoder.path!r} "
                                 f"(--music_decoder_path): {one_line(err)}") from err

    def _turn(self, prompt: str, history: Sequence[tuple[str, str]],
              media: Optional[Mapping[str, Any]], settings: "GenerationSettings",
              music: str) -> Iterator[Any]:
        from llama.m2ugen import ChatReply

        model = self.model
        if is_published(model):
            yield from self._published_turn(prompt, history, media, settings, music)
            return
        media_in = self.media_input(media)
        reply: Optional[ChatReply] = None
        for item in model.stream_chat(prompt, history=history, media=media_in, settings=settings,
                                      want_music=music != "never"):
            if isinstance(item, ChatReply):
                reply = item
            else:
                yield item
        assert reply is not None, "stream_chat ended without a ChatReply"
        if music == "always" and reply.music is None:
            # The model did not ask for music: append [AUD0..7] after its answer ourselves.
            ids, _ = model.build_prompt(prompt, history, settings.max_new_tokens)
            feats = model.media_vector(media_in)
            reply.music, reply.sample_rate = model.synthesize(
                ids + list(reply.token_ids), feats, reply.text, settings)
            reply.generated_ids = list(reply.token_ids) + list(model.tokenizer.aud_ids)
        yield reply

    def _published_turn(self, prompt: str, history: Sequence[tuple[str, str]],
                        media: Optional[Mapping[str, Any]], settings: "GenerationSettings",
                        music: str) -> Iterator[Any]:
        """A released checkpoint's turn with the published generation (llama.published)."""
        from llama.published import published_chat

        info = self.model.published
        for modality, item in (media or {}).items():
            if item is not None and modality in info.unsupported_modalities:
                raise InputError(f"{modality} input is not supported by the {info.release} "
                                 f"release (its published {modality} path could not run, so "
                                 f"its weights were never trained for it)")
        media_in = self.media_input(media)
        reply = published_chat(self.model, prompt, history=history, media=media_in,
                               settings=settings, want_music=music != "never")
        if reply.text:
            yield reply.text
        if music == "always" and reply.music is None:
            ids, _ = self.model.build_prompt(prompt, history, settings.max_new_tokens)
            reply.music, reply.sample_rate = self.model.synthesize(
                ids + list(reply.token_ids), self.model.media_vector(media_in), reply.text,
                settings)
        yield reply

    def run_turn(self, prompt: str, **kwargs: Any) -> "ChatReply":
        """Blocking form of `stream_turn`."""
        reply = None
        for item in self.stream_turn(prompt, **kwargs):
            reply = item
        return reply  # type: ignore[return-value]


def write_music(path: str | os.PathLike, reply: "ChatReply") -> Path:
    """The reply's music as a WAV file (atomic, 32-bit float samples as generated).

    Non-finite samples are a numerical fault of the model, never the user's input: they raise
    RuntimeError (with its traceback), not a bad-input error."""
    from data.media import MediaError, write_wav

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_wav(path, reply.music, int(reply.sample_rate))
    except MediaError as err:
        raise RuntimeError(f"the generated music cannot be written: {err}") from err
    return path


def reply_record(reply: "ChatReply", audio: Optional[Path]) -> dict[str, Any]:
    """The JSON form of a reply (CLI --json output and batch result lines)."""
    import numpy as np

    seconds = None
    if reply.music is not None and reply.sample_rate:
        seconds = round(float(np.asarray(reply.music).shape[-1]) / reply.sample_rate, 3)
    return {
        "text": reply.text,
        "token_ids": [int(t) for t in (reply.generated_ids or reply.token_ids)],
        "audio": str(audio) if audio else None,
        "sample_rate": reply.sample_rate if audio else None,
        "audio_seconds": seconds,
        "dropped_history_turns": reply.dropped_history_turns,
    }


# ---------------------------------------------------------------------------------------------
# A chat session


@dataclasses.dataclass
class TurnResult:
    """A finished turn: the reply, and the WAV written for its music (if any)."""

    reply: "ChatReply"
    wav: Optional[Path]

    @property
    def note(self) -> str:
        n = self.reply.dropped_history_turns
        if not n:
            return ""
        return f"(the {n} oldest turn(s) no longer fit the context and were left out)"


class ChatSession:
    """One user's conversation: history as fed to the model, the last generated music, and a
    private folder for the WAV files (deleted by `close`). The history changes only when a turn
    succeeds."""

    def __init__(self, engine: LoadedModel, folder: str | os.PathLike) -> None:
        self.engine = engine
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.history: list[tuple[str, str]] = []
        self.last_music: Optional[Path] = None
        self.turns = 0

    def stream(
        self,
        text: str,
        *,
        media: Optional[Mapping[str, Any]] = None,
        settings: "GenerationSettings",
        music: str = "auto",
        edit_last_music: bool = False,
    ) -> Iterator[Any]:
        """Text deltas, then a TurnResult; `edit_last_music` feeds the last music back in."""
        if not text or not text.strip():
            raise InputError("the message is empty")
        media = dict(media or {})
        if edit_last_music:
            if media.get("audio"):
                raise InputError("either upload music or edit the last generated music, not both")
            if self.last_music is None or not self.last_music.is_file():
                raise InputError("there is no generated music to edit yet")
            media["audio"] = str(self.last_music)
        reply = None
        for item in self.engine.stream_turn(text, history=list(self.history), media=media,
                                            settings=settings, music=music):
            if isinstance(item, str):
                yield item
            else:
                reply = item
        assert reply is not None
        wav = None
        if reply.music is not None:
            self.turns += 1
            wav = write_music(self.folder / f"music-{self.turns}.wav", reply)
            self.last_music = wav
        self.history.append((text, history_answer(reply)))
        yield TurnResult(reply, wav)

    def reset(self) -> None:
        """Forget the conversation (files stay until `close`)."""
        self.history.clear()
        self.last_music = None

    def close(self) -> None:
        """Delete the session's folder and everything generated in it."""
        shutil.rmtree(self.folder, ignore_errors=True)
