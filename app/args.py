"""The command-line flags shared by `inference.py`, `gradio_app.py` (and later tools).

Flag names follow the published code (--model --llama_dir --mert_path --vit_path --vivit_path
--music_decoder --music_decoder_path). Generation flags default to None, meaning "not given":
their defaults live in `llama.m2ugen.GenerationSettings` alone, and `--help` shows them from
there (filled in when help is printed, so parsing needs no torch import).
"""

from __future__ import annotations

import argparse
from typing import Any, Optional

from app.errors import EXIT_BAD_INPUT
from util import dtypes

PRESET_NAMES = (
    "tiny", "tiny-audioldm2", "m2ugen-musicgen-small", "m2ugen-musicgen-medium", "m2ugen-audioldm2",
)  # equal to llama.config.PRESETS (checked by a test); spelled out so --help needs no torch
DECODER_KINDS = ("musicgen", "audioldm2")
DTYPE_NAMES = (dtypes.AUTO, *dtypes.DTYPE_NAMES)  # util.dtypes: the one list of precisions
QUANTIZE_NAMES = ("none", "int8")  # equal to llama.quantize.QUANTIZE_MODES (checked by a test)
MUSIC_MODES = ("auto", "always", "never")
VIDEO_SAMPLINGS = ("uniform", "window")  # equal to data.media.SAMPLINGS (checked by a test)
DEFAULT_MAX_MEDIA_SECONDS = 600.0  # longer audio/video inputs are refused before decoding
DEFAULT_MARK = "{default}"  # in a generation flag's help: replaced by the library default


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as ONE line (no usage block) and exits with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")

    def format_help(self) -> str:
        _fill_default_help(self)
        return super().format_help()


def _fill_default_help(parser: argparse.ArgumentParser) -> None:
    """Write GenerationSettings' defaults into the help of the flags that carry DEFAULT_MARK."""
    marked = [a for a in parser._actions if a.help and DEFAULT_MARK in a.help]
    if not marked:
        return
    from app.settings import defaults

    values = vars(defaults())
    for action in marked:
        shown = values.get(action.dest)
        action.help = action.help.replace(
            DEFAULT_MARK, "unset" if shown is None else str(shown))


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Which model to load: checkpoint, preset, the published component-path flags, device."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="trained checkpoint folder, a released checkpoint.pth, or its hub repo "
                        "id (e.g. M2UGen/M2UGen-MusicGen-small) (default: ckpts/<preset>/stage3 "
                        "if it exists, else the preset's random tuned weights)")
    g.add_argument("--preset", default="tiny", choices=PRESET_NAMES,
                   help="configuration when no checkpoint is given (default: tiny)")
    g.add_argument("--llama_dir", default=None,
                   help="LLaMA-2 weights: the published layout <dir>/7B + <dir>/tokenizer.model, "
                        "a Meta folder, or a Hugging Face folder")
    g.add_argument("--tokenizer_path", default=None,
                   help="tokenizer.model or tokenizer folder (default: found from --llama_dir)")
    g.add_argument("--mert_path", default=None, help="MERT hub id or local folder")
    g.add_argument("--trust_remote_code", action="store_true",
                   help="run the MERT folder's own code (default: load it with transformers' "
                        "HuBERT classes, executing nothing from the folder)")
    g.add_argument("--vit_path", default=None, help="ViT hub id or local folder")
    g.add_argument("--vivit_path", default=None, help="ViViT hub id or local folder")
    g.add_argument("--music_decoder", default=None, choices=DECODER_KINDS,
                   help="decoder family (default: the preset's / checkpoint's)")
    g.add_argument("--music_decoder_path", default=None,
                   help="music decoder hub id or local folder (e.g. facebook/musicgen-medium)")
    add_published_arguments(g)
    add_device_arguments(g)


def add_published_arguments(g: Any) -> None:
    """The remaining flags of the published gradio_app usage (released checkpoints)."""
    g.add_argument("--llama_type", default=None,
                   help="subfolder of --llama_dir holding the weights, as published (e.g. 7B: "
                        "<llama_dir>/7B + <llama_dir>/tokenizer.model)")
    g.add_argument("--knn_dir", default=None,
                   help="folder with the faiss index knn.index (or the index file): mixes every "
                        "modality whose feature width matches the index with its neighbours")
    g.add_argument("--allow_partial", action="store_true",
                   help="load a released checkpoint.pth with missing/unknown learned tensors "
                        "(listed as warnings) instead of refusing it")


def add_device_arguments(g: Any) -> None:
    """Where and in what precision the model runs."""
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    g.add_argument("--dtype", default="auto", choices=DTYPE_NAMES,
                   help="dtype of the backbone's frozen weights, the encoders and the music "
                        "decoder (auto: float16 on GPU, float32 on CPU; on CPU prefer bfloat16: "
                        "float16 encoders run 4-12x slower there, see docs/MEMORY.md)")
    g.add_argument("--quantize", default="none", choices=QUANTIZE_NAMES,
                   help="int8: weight-only int8 for the backbone's linear layers (per-channel "
                        "scales; about half the memory of 16-bit and faster batch-1 decoding); "
                        "default: none")


def add_media_arguments(p: argparse.ArgumentParser) -> None:
    """Limits on the media a request may bring (checked from the file header, before decoding)."""
    g = p.add_argument_group("media")
    g.add_argument("--max_media_seconds", type=positive_seconds, default=DEFAULT_MAX_MEDIA_SECONDS,
                   help="refuse audio/video inputs longer than this many seconds "
                        f"(default {DEFAULT_MAX_MEDIA_SECONDS:g})")
    add_video_sampling_argument(g)


def add_video_sampling_argument(g: Any) -> None:
    """Which frames of a video input the video encoder sees (data.media.VideoSampling)."""
    g.add_argument("--video_sampling", default="uniform", choices=VIDEO_SAMPLINGS,
                   help="uniform: frames spread over the whole clip (default); window: "
                        "consecutive frames as the published demo read them, the window centred "
                        "or, when the command has a --seed, starting at a frame drawn from it")


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def add_generation_arguments(p: argparse.ArgumentParser, *, music_mode: bool = True) -> None:
    """Sampling and music-synthesis knobs; unset flags take GenerationSettings' defaults."""
    g = p.add_argument_group("generation")
    g.add_argument("--max_new_tokens", type=int, default=None, help="default: {default}")
    g.add_argument("--temperature", type=float, default=None,
                   help="0 = greedy (default: {default})")
    g.add_argument("--top_p", type=float, default=None, help="default: {default}")
    g.add_argument("--seed", type=int, default=None, help="seed for sampling and synthesis")
    g.add_argument("--audio_seconds", type=float, default=None,
                   help="length of generated music in seconds (default: {default})")
    g.add_argument("--guidance_scale", type=float, default=None,
                   help="classifier-free guidance, >= 1 (default: the decoder configuration's)")
    g.add_argument("--num_inference_steps", type=int, default=None,
                   help="AudioLDM2 diffusion steps (default: the decoder configuration's)")
    g.add_argument("--music_conditioning", default=None, choices=("projector", "text"),
                   help="condition the decoder on the output projector or, as the published "
                        "code did, re-prompt it with the answer text (default: {default})")
    if music_mode:
        g.add_argument("--music", default="auto", choices=MUSIC_MODES,
                       help="auto: music when the model emits [AUD] tokens; always: synthesize "
                            "music for every answer; never: text only")


def settings_values(args: argparse.Namespace,
                    overrides: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Generation setting values from parsed flags (None = not given), overrides applied."""
    from app.settings import setting_names

    values = {name: getattr(args, name, None) for name in setting_names()}
    values.update(overrides or {})
    return values
