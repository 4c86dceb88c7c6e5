"""Command-line inference for M2UGen: one request, or a batch of requests from a JSON-lines file.

    python inference.py --prompt "Compose a slow piano melody"       # text (+ music)
    python inference.py --prompt "Describe this music" --audio_file x.wav --json
    python inference.py --batch-file requests.jsonl --out_dir out/    # -> out/results.jsonl

Flags keep the published code's names (--model --llama_dir --mert_path --vit_path --vivit_path
--music_decoder --music_decoder_path --prompt --audio_file --image_file --video_file). Without
--model the trained checkpoint `ckpts/<preset>/stage3` is used when it exists; otherwise the
preset's random tuned weights are used and a notice says so on stderr (a fresh clone still runs).

Bad input (missing or corrupt media, invalid flag values, an empty prompt, a prompt longer than
the context) ends the program with exit status 2 and one line on stderr naming the problem. In
batch mode a bad request becomes an error result for its id and the other requests still run
(exit status 1 if any request failed).

The model-loading and turn helpers here (`add_model_arguments`, `load_model`, `stream_turn`,
`write_wav`) are shared with the web demo (`gradio_app.py`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import numpy as np

if TYPE_CHECKING:  # heavy imports (torch, transformers) wait until a model is really needed
    from llama.m2ugen import ChatReply, GenerationSettings, M2UGen, MediaInput

REPO = Path(__file__).resolve().parent
PROG = "inference.py"
PRESET_NAMES = (
    "tiny", "tiny-audioldm2", "m2ugen-musicgen-small", "m2ugen-musicgen-medium", "m2ugen-audioldm2",
)  # kept equal to llama.config.PRESETS (checked by the tests) so --help needs no torch import
DECODER_KINDS = ("musicgen", "audioldm2")
MUSIC_MODES = ("auto", "always", "never")
EXIT_BAD_INPUT = 2
EXIT_BATCH_FAILURES = 1
# Per-request settings a batch line may carry (defaults come from the command-line flags).
BATCH_SETTING_KEYS = (
    "max_new_tokens", "temperature", "top_p", "seed", "audio_seconds", "guidance_scale",
    "num_inference_steps", "music_conditioning", "music",
)
BATCH_KEYS = ("id", "prompt", "audio", "image", "video", "history") + BATCH_SETTING_KEYS

log = logging.getLogger("m2ugen.inference")


class InputError(ValueError):
    """A problem with what the user asked for (reported as one line, never a traceback)."""


# ---------------------------------------------------------------------------------------------
# Arguments shared by the CLI and the web demo


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as ONE line (no usage block) and exits with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Which model to load: checkpoint, preset, and the published component-path flags."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="trained checkpoint folder (default: ckpts/<preset>/stage3 if it exists, "
                        "else the preset's random tuned weights)")
    g.add_argument("--preset", default="tiny", choices=PRESET_NAMES,
                   help="configuration when no checkpoint is given (default: tiny)")
    g.add_argument("--llama_dir", default=None,
                   help="LLaMA-2 weights: the published layout <dir>/7B + <dir>/tokenizer.model, "
                        "a Meta folder, or a Hugging Face folder")
    g.add_argument("--tokenizer_path", default=None,
                   help="tokenizer.model or tokenizer folder (default: found from --llama_dir)")
    g.add_argument("--mert_path", default=None, help="MERT hub id or local folder")
    g.add_argument("--vit_path", default=None, help="ViT hub id or local folder")
    g.add_argument("--vivit_path", default=None, help="ViViT hub id or local folder")
    g.add_argument("--music_decoder", default=None, choices=DECODER_KINDS,
                   help="decoder family (default: the preset's / checkpoint's)")
    g.add_argument("--music_decoder_path", default=None,
                   help="music decoder hub id or local folder (e.g. facebook/musicgen-medium)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    g.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="backbone dtype (auto: float16 on GPU, float32 on CPU)")


def add_generation_arguments(p: argparse.ArgumentParser) -> None:
    """Sampling and music-synthesis knobs (defaults: llama.m2ugen.GenerationSettings)."""
    g = p.add_argument_group("generation")
    g.add_argument("--max_new_tokens", type=int, default=256)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--top_p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None, help="seed for sampling and synthesis")
    g.add_argument("--audio_seconds", type=float, default=5.0, help="length of generated music")
    g.add_argument("--guidance_scale", type=float, default=None,
                   help="MusicGen classifier-free guidance (default: the preset's, 3.5)")
    g.add_argument("--num_inference_steps", type=int, default=None,
                   help="AudioLDM2 diffusion steps (default: the preset's)")
    g.add_argument("--music_conditioning", default="projector", choices=("projector", "text"),
                   help="condition the decoder on the output projector (default) or, as the "
                        "published code did, re-prompt it with the answer text")
    g.add_argument("--music", default="auto", choices=MUSIC_MODES,
                   help="auto: music when the model emits [AUD] tokens; always: synthesize music "
                        "for every answer; never: text only")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description="M2UGen inference: answer a prompt about music/image/video, generate music.",
        epilog="Batch lines: {\"id\": ..., \"prompt\": ..., \"audio\"|\"image\"|\"video\": path "
               "(relative paths are relative to the batch file), optional \"history\": "
               "[[question, answer], ...] and any of " + ", ".join(BATCH_SETTING_KEYS) + "}.",
    )
    add_model_arguments(p)
    req = p.add_argument_group("request")
    req.add_argument("--prompt", default=None, help="the instruction / question")
    req.add_argument("--audio_file", default=None, help="music input (wav, flac, mp3, ...)")
    req.add_argument("--image_file", default=None, help="image input")
    req.add_argument("--video_file", default=None, help="video input")
    req.add_argument("--batch-file", "--batch_file", dest="batch_file", default=None,
                     help="JSON-lines file of requests; results go to OUT_DIR/results.jsonl")
    add_generation_arguments(p)
    out = p.add_argument_group("output")
    out.add_argument("--out_dir", default="output", help="where WAV files (and results) go")
    out.add_argument("--json", action="store_true", help="print the result as one JSON object")
    out.add_argument("--verbose", action="store_true",
                     help="show library warnings, progress, and tracebacks of errors")
    return p


# ---------------------------------------------------------------------------------------------
# Model loading


def default_checkpoint(preset: str) -> Optional[Path]:
    """`ckpts/<preset>/stage3` (the end of the three training stages) if a complete one exists."""
    folder = REPO / "ckpts" / preset / "stage3"
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / "config.json").is_file() and (candidate / "model.safetensors").is_file():
            return folder
    return None


def resolve_llama_dir(llama_dir: str) -> tuple[str, str]:
    """(weights folder, tokenizer path) for the published `<dir>/7B` layout or a plain folder."""
    root = Path(llama_dir)
    if not root.is_dir():
        raise InputError(f"--llama_dir {llama_dir}: no such folder")
    if (root / "7B").is_dir():
        return str(root / "7B"), str(root / "tokenizer.model")
    for tok in (root / "tokenizer.model", root.parent / "tokenizer.model"):
        if tok.is_file():
            return str(root), str(tok)
    return str(root), str(root)  # Hugging Face folder: tokenizer files live beside the weights


def model_overrides(args: argparse.Namespace) -> dict[str, str]:
    """Component paths given on the command line (only those actually set)."""
    o: dict[str, str] = {}
    if args.llama_dir:
        o["llama_path"], o["tokenizer_path"] = resolve_llama_dir(args.llama_dir)
    if args.tokenizer_path:
        o["tokenizer_path"] = args.tokenizer_path
    for flag, key in (("mert_path", "mert_path"), ("vit_path", "vit_path"),
                      ("vivit_path", "vivit_path"), ("music_decoder_path", "music_decoder_path")):
        if getattr(args, flag):
            o[key] = getattr(args, flag)
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


@dataclasses.dataclass
class ModelChoice:
    """What `load_model` will load, decided before any heavy import (and reported to the user)."""

    checkpoint: Optional[str]
    preset: str
    overrides: dict[str, str]
    device: str
    dtype: str

    @property
    def key(self) -> tuple:
        return (self.checkpoint, self.preset, tuple(sorted(self.overrides.items())),
                self.device, self.dtype)


def choose_model(args: argparse.Namespace) -> ModelChoice:
    preset = resolve_preset(args.preset, args.music_decoder)
    checkpoint = args.model
    if checkpoint is not None and not Path(checkpoint).is_dir():
        raise InputError(f"--model {checkpoint}: no such checkpoint folder")
    if checkpoint is None:
        found = default_checkpoint(preset)
        checkpoint = str(found) if found else None
    for flag in ("mert_path", "vit_path", "vivit_path", "music_decoder_path", "tokenizer_path"):
        value = getattr(args, flag)
        if value and _looks_local(value) and not Path(value).exists():
            raise InputError(f"--{flag} {value}: no such file or folder")
    return ModelChoice(checkpoint, preset, model_overrides(args), args.device, args.dtype)


def _looks_local(value: str) -> bool:
    """Clearly a filesystem path (absolute, ./ or ~/, or nested deeper than a hub "org/name");
    hub ids and the built-in names ("tiny", "tiny-audioldm2") are left to the loaders."""
    return value.startswith((".", "/", "~")) or value.count("/") >= 2


def load_model(choice: ModelChoice, cache: Optional[dict] = None) -> "M2UGen":
    """Load (or reuse from `cache`) the model; a notice on stderr when the weights are random."""
    if cache is not None and choice.key in cache:
        return cache[choice.key]
    import torch

    from llama.m2ugen import M2UGen

    device = choice.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise InputError(f"--device {device}: {one_line(err)}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine")
    dtype_name = choice.dtype
    if dtype_name == "auto":
        dtype_name = "float16" if str(device).startswith("cuda") else "float32"
    if choice.checkpoint is None:
        print(
            f"notice: no trained checkpoint (looked for ckpts/{choice.preset}/stage3; pass --model "
            f"DIR): using RANDOM tuned weights of preset '{choice.preset}', answers are "
            "meaningless. Train one with train.sh (`make demo` trains the tiny preset).",
            file=sys.stderr,
        )
    model = M2UGen.from_pretrained(
        choice.checkpoint,
        preset=choice.preset,
        overrides=choice.overrides,
        device=device,
        dtype=getattr(torch, dtype_name),
    )
    model.eval()
    if cache is not None:
        cache[choice.key] = model
    return model


def check_decoder_choice(model: "M2UGen", music_decoder: Optional[str]) -> None:
    """A checkpoint fixes the decoder family: refuse a contradicting --music_decoder."""
    if music_decoder is not None and model.cfg.decoder.kind != music_decoder:
        raise InputError(
            f"--music_decoder {music_decoder}: the checkpoint was trained with the "
            f"{model.cfg.decoder.kind} decoder"
        )


def describe_model(model: "M2UGen", choice: ModelChoice) -> str:
    source = choice.checkpoint or f"random tuned weights (preset {choice.preset})"
    return f"{model.cfg.name} ({model.cfg.decoder.kind} decoder) from {source}"


# ---------------------------------------------------------------------------------------------
# One turn (shared with the web demo)


def make_settings(**values: Any) -> "GenerationSettings":
    """GenerationSettings from keyword values, checked; a bad value raises InputError."""
    from llama.m2ugen import GenerationSettings

    known = {f.name for f in dataclasses.fields(GenerationSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"unknown setting(s) {unknown}")
    try:
        s = GenerationSettings(**values)
        s.validate()
    except (TypeError, ValueError) as err:
        raise InputError(str(err)) from None
    if not (isinstance(s.audio_seconds, (int, float)) and s.audio_seconds > 0):
        raise InputError(f"audio_seconds must be > 0, got {s.audio_seconds}")
    if s.guidance_scale is not None and s.guidance_scale < 0:
        raise InputError(f"guidance_scale must be >= 0, got {s.guidance_scale}")
    if s.num_inference_steps is not None and s.num_inference_steps < 1:
        raise InputError(f"num_inference_steps must be >= 1, got {s.num_inference_steps}")
    return s


def check_media_paths(media: dict[str, Optional[str]], label: str = "{modality}") -> None:
    """Fail early, naming the flag/field (`label` formatted with the modality), on missing files."""
    for modality, path in media.items():
        if path is None:
            continue
        if not Path(path).is_file():
            raise InputError(f"{label.format(modality=modality)} {path}: no such file")


def stream_turn(
    model: "M2UGen",
    prompt: str,
    *,
    history: Sequence[tuple[str, str]] = (),
    media: Optional["MediaInput"] = None,
    settings: "GenerationSettings",
    music: str = "auto",
) -> Iterator[Any]:
    """Text deltas, then the ChatReply; `music="always"` synthesizes even without [AUD] tokens."""
    if music not in MUSIC_MODES:
        raise InputError(f"music must be one of {MUSIC_MODES}, got {music!r}")
    if not prompt or not prompt.strip():
        raise InputError("the prompt is empty")
    from llama.m2ugen import ChatReply

    reply: Optional[ChatReply] = None
    for item in model.stream_chat(prompt, history=history, media=media, settings=settings,
                                  want_music=music != "never"):
        if isinstance(item, ChatReply):
            reply = item
        else:
            yield item
    assert reply is not None, "stream_chat ended without a ChatReply"
    if music == "always" and reply.music is None:
        # The model did not ask for music: append [AUD0..7] after its answer ourselves.
        ids, _ = model.build_prompt(prompt, history, settings.max_new_tokens)
        feats = model.media_vector(media)
        reply.music, reply.sample_rate = model.synthesize(
            ids + list(reply.token_ids), feats, reply.text, settings
        )
    yield reply


def run_turn(model: "M2UGen", prompt: str, **kwargs: Any) -> "ChatReply":
    reply = None
    for item in stream_turn(model, prompt, **kwargs):
        reply = item
    return reply  # type: ignore[return-value]


def history_answer(reply: "ChatReply") -> str:
    """How a past answer is fed back to the model: with [AUD0..7] if it produced music (training
    format), so a follow-up like "make it faster" sees that music was made."""
    from llama.config import AUD_TOKENS

    if reply.music is None:
        return reply.text
    return (reply.text + " " if reply.text else "") + "".join(AUD_TOKENS)


def write_wav(path: str | os.PathLike, wave: np.ndarray, sample_rate: int) -> Path:
    """Write 16-bit PCM WAV atomically (temp file + rename: a reader never sees half a file)."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(wave, dtype=np.float32)
    if data.ndim == 2 and data.shape[0] < data.shape[1]:
        data = data.T  # (channels, frames) -> (frames, channels)
    if data.ndim not in (1, 2) or data.size == 0:
        raise ValueError(f"cannot write {path}: waveform of shape {data.shape}")
    data = np.clip(np.nan_to_num(data), -1.0, 1.0)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".wav.tmp", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, data, int(sample_rate), subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def one_line(err: BaseException) -> str:
    """An exception as a single line (multi-line library messages are joined)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text


def input_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "bad input": checkpoint/media/prompt/setting problems, and weights
    that cannot be found or read (OSError: missing local folder, hub id unavailable offline)."""
    from data.media import MediaError

    return (InputError, MediaError, ValueError, OSError)


# ---------------------------------------------------------------------------------------------
# CLI


def settings_from_args(
    args: argparse.Namespace, overrides: Optional[dict] = None
) -> "GenerationSettings":
    """Settings from the flags, with per-request overrides (batch lines) applied."""
    values = dict(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
        seed=args.seed, audio_seconds=args.audio_seconds, guidance_scale=args.guidance_scale,
        num_inference_steps=args.num_inference_steps, music_conditioning=args.music_conditioning,
    )
    values.update(overrides or {})
    return make_settings(**values)


def reply_record(reply: "ChatReply", audio: Optional[Path]) -> dict[str, Any]:
    seconds = None
    if reply.music is not None and reply.sample_rate:
        seconds = round(float(np.asarray(reply.music).shape[-1]) / reply.sample_rate, 3)
    return {
        "text": reply.text,
        "audio": str(audio) if audio else None,
        "sample_rate": reply.sample_rate if audio else None,
        "audio_seconds": seconds,
        "dropped_history_turns": reply.dropped_history_turns,
    }


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:80] or "item"


def run_single(args: argparse.Namespace, model: "M2UGen", choice: ModelChoice) -> int:
    from llama.m2ugen import MediaInput

    settings = settings_from_args(args)
    media = MediaInput(audio=args.audio_file, image=args.image_file, video=args.video_file)
    stream = not args.json
    reply = None
    printed = False
    for item in stream_turn(model, args.prompt, media=media, settings=settings, music=args.music):
        if isinstance(item, str):
            if stream:
                sys.stdout.write(item)
                sys.stdout.flush()
                printed = True
        else:
            reply = item
    assert reply is not None
    audio = None
    if reply.music is not None:
        name = f"m2ugen-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.wav"
        audio = write_wav(Path(args.out_dir) / name, reply.music, reply.sample_rate)
    record = reply_record(reply, audio)
    if args.json:
        record.update(model=describe_model(model, choice), trained=bool(model.trained))
        print(json.dumps(record, ensure_ascii=False))
    else:
        if printed:
            sys.stdout.write("\n")
        elif reply.text:
            print(reply.text)
        if audio:
            print(f"music: {audio} ({record['audio_seconds']} s at {reply.sample_rate} Hz)")
    return 0


def parse_batch_line(line: str, lineno: int, base: Path, args: argparse.Namespace) -> dict:
    """One request of a batch file, validated (raises InputError naming the line and the field)."""
    try:
        req = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"line {lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(req, dict):
        raise InputError(f"line {lineno}: expected a JSON object, got {type(req).__name__}")
    unknown = sorted(set(req) - set(BATCH_KEYS))
    if unknown:
        raise InputError(f"line {lineno}: unknown field(s) {unknown}; known: {list(BATCH_KEYS)}")
    if "id" not in req or req["id"] in (None, ""):
        raise InputError(f"line {lineno}: missing \"id\"")
    prompt = req.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"line {lineno}: \"prompt\" must be a non-empty string")
    media = {}
    for m in ("audio", "image", "video"):
        value = req.get(m)
        if value is None:
            media[m] = None
            continue
        if not isinstance(value, str):
            raise InputError(f"line {lineno}: \"{m}\" must be a path string")
        path = Path(value).expanduser()
        media[m] = str(path if path.is_absolute() else base / path)
    check_media_paths(media, label=f"line {lineno}: \"{{modality}}\"")
    history = req.get("history") or []
    if not (isinstance(history, list) and all(
            isinstance(t, (list, tuple)) and len(t) == 2 and all(isinstance(s, str) for s in t)
            for t in history)):
        raise InputError(f"line {lineno}: \"history\" must be a list of [question, answer] pairs")
    music = req.get("music", args.music)
    if music not in MUSIC_MODES:
        raise InputError(f"line {lineno}: \"music\" must be one of {list(MUSIC_MODES)}")
    try:
        settings = settings_from_args(
            args, {k: req[k] for k in BATCH_SETTING_KEYS if k in req and k != "music"}
        )
    except InputError as err:
        raise InputError(f"line {lineno}: {err}") from None
    return dict(id=req["id"], prompt=prompt, media=media, history=[tuple(t) for t in history],
                settings=settings, music=music)


def _peek_id(line: str) -> Any:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError:
        return None
    return raw.get("id") if isinstance(raw, dict) else None


def run_batch(args: argparse.Namespace, model: "M2UGen") -> int:
    """Every request gets a result line; failures are recorded per id and the rest still run."""
    from llama.m2ugen import MediaInput

    batch_file = Path(args.batch_file)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    expected = input_error_types()
    lines = batch_file.read_text(encoding="utf-8").splitlines()
    seen: set[str] = set()
    n_ok = n_failed = 0
    results_path = out_dir / "results.jsonl"
    with open(results_path, "w", encoding="utf-8") as results:
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            result: dict[str, Any] = {"id": None, "text": None, "audio": None, "error": None}
            result["id"] = _peek_id(line)  # so even a rejected request is reported by its id
            try:
                req = parse_batch_line(line, lineno, batch_file.parent, args)
                key = str(req["id"])
                if key in seen:
                    raise InputError(f"line {lineno}: duplicate id {req['id']!r}")
                seen.add(key)
                reply = run_turn(
                    model, req["prompt"], history=req["history"],
                    media=MediaInput(**req["media"]), settings=req["settings"], music=req["music"],
                )
                audio = None
                if reply.music is not None:
                    audio = write_wav(out_dir / f"{_safe_name(key)}.wav", reply.music,
                                      reply.sample_rate)
                result.update(reply_record(reply, audio))
                n_ok += 1
            except expected as err:
                result["error"] = one_line(err)
                n_failed += 1
            except Exception as err:  # noqa: BLE001 - one broken request must not stop the batch
                log.exception("request on line %d failed", lineno)
                result["error"] = f"internal error: {type(err).__name__}: {one_line(err)}"
                n_failed += 1
            if result["id"] is None:
                result["line"] = lineno
            results.write(json.dumps(result, ensure_ascii=False) + "\n")
            results.flush()
            status = "ok" if result["error"] is None else f"error: {result['error']}"
            print(f"[{lineno}/{len(lines)}] {result['id']}: {status}", file=sys.stderr)
    summary = f"{n_ok} ok, {n_failed} failed -> {results_path}"
    print(summary, file=sys.stderr)
    if args.json:
        print(json.dumps({"results": str(results_path), "ok": n_ok, "failed": n_failed}))
    return EXIT_BATCH_FAILURES if n_failed else 0


def validate_request_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before loading a model (fast feedback)."""
    if args.batch_file is not None:
        if args.prompt is not None or args.audio_file or args.image_file or args.video_file:
            raise InputError("--batch-file cannot be combined with --prompt/--audio_file/"
                             "--image_file/--video_file (put them in the batch lines)")
        if not Path(args.batch_file).is_file():
            raise InputError(f"--batch-file {args.batch_file}: no such file")
    else:
        if args.prompt is None:
            raise InputError("--prompt is required (or use --batch-file)")
        if not args.prompt.strip():
            raise InputError("--prompt is empty")
        check_media_paths(
            {"audio": args.audio_file, "image": args.image_file, "video": args.video_file},
            label="--{modality}_file",
        )
    settings_from_args(args)  # value checks without the model


def quiet_libraries() -> None:
    """Keep stderr for our own messages unless --verbose (library chatter hides the one line)."""
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("transformers", "diffusers", "huggingface_hub", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        import diffusers

        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
    except ImportError:
        pass


def main(argv: Optional[Sequence[str]] = None, *, model_cache: Optional[dict] = None) -> int:
    """Run the CLI; returns the exit status. `model_cache` lets callers reuse loaded models."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        validate_request_args(args)
        choice = choose_model(args)
    except InputError as err:
        return fail(err)
    if not args.verbose:
        quiet_libraries()
    expected = input_error_types()
    try:
        model = load_model(choice, model_cache)
        check_decoder_choice(model, args.music_decoder)
        if args.batch_file is not None:
            return run_batch(args, model)
        return run_single(args, model, choice)
    except expected as err:
        if args.verbose:  # the full story, for debugging what looked like bad input
            traceback.print_exc()
        return fail(err)


def fail(err: BaseException, prog: str = PROG) -> int:
    """Report a bad-input error as one line on stderr; returns the exit status."""
    from_prompt = type(err).__name__ == "PromptTooLong"
    prefix = "prompt too long: " if from_prompt else ""
    print(f"{prog}: error: {prefix}{one_line(err)}", file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
