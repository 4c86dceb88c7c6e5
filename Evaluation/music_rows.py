"""The rows of the four music-generation evaluations and their predictions: reference files
parsed into `MusicRow`s, the `TaskSpec` naming a task's reference format and input modality, and
the prediction manifest (or folder) read back into {row key: audio file}.

- text2music: MUCaps eval captions {file: caption}; the caption is the prompt and the CLAP text,
  the file is the reference music;
- image2music / video2music / editing: published any-to-music instruction lists ({"input_file",
  "output_file", "conversation": [{"from": "human", "value": instruction, ...}, ..., {"from":
  "gpt", "caption": target caption, ...}]}); the first human turn is the prompt (as published),
  the last gpt turn's caption the CLAP text, output_file the reference music.

Both `Evaluation.music_tasks` (generate, CLI) and `Evaluation.music_scoring` (score) read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from Evaluation._common import EvalInputError, conversation, read_json

SHOW = 5  # how many offending names an error lists


@dataclass(frozen=True)
class MusicRow:
    """One generation request and its reference: `key` names the output WAV (unique per file)."""

    key: str
    prompt: str
    caption: str
    media: Optional[str]  # input file, relative to --media_dir (None for text-to-music)
    target: str  # reference music file, relative to the reference-music folder


@dataclass(frozen=True)
class TaskSpec:
    name: str
    modality: Optional[str]  # input modality fed to the model ("image", "video", "audio")
    load: Callable[[str | Path], list[MusicRow]]
    media_help: str
    targets_in_media_dir: bool  # reference music lives in --media_dir unless --target_dir
    published: tuple[str, ...]  # the metrics the published evaluate.py computed for this table


def unique_keys(names: list[str]) -> list[str]:
    """Output names from reference file names: the stem, "-2", "-3" ... on repeats."""
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        stem = Path(name).stem
        n = seen.get(stem.casefold(), 0) + 1
        seen[stem.casefold()] = n
        keys.append(stem if n == 1 else f"{stem}-{n}")
    return keys


def load_caption_rows(path: str | Path) -> list[MusicRow]:
    """MUCaps eval captions {file: caption}: prompt = caption, reference = file."""
    data = read_json(path, "references")
    if not isinstance(data, dict) or not data:
        raise EvalInputError(f"references {path}: expected a non-empty JSON object "
                             "{music file: caption} (MUCaps eval captions)")
    bad = [k for k, v in data.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise EvalInputError(f"references {path}: {len(bad)} captions are empty or not strings "
                             f"(first: {bad[:SHOW]})")
    names = list(data)
    return [MusicRow(k, data[n].strip(), data[n].strip(), None, n)
            for k, n in zip(unique_keys(names), names)]


def instruction_rows(modality: str) -> Callable[[str | Path], list[MusicRow]]:
    """Loader of a published any-to-music instruction list whose inputs are `modality`."""

    def load(path: str | Path) -> list[MusicRow]:
        data = read_json(path, "references")
        if not isinstance(data, list) or not data:
            raise EvalInputError(f"references {path}: expected a non-empty JSON list of "
                                 "instructions")
        parsed = [_instruction(item, f"references {path} item {i}", modality)
                  for i, item in enumerate(data)]
        keys = unique_keys([p[3] for p in parsed])
        return [MusicRow(k, *p) for k, p in zip(keys, parsed)]

    return load


def _instruction(item: Any, where: str, modality: str) -> tuple[str, str, str, str]:
    """(prompt, target caption, input file, output file) of one instruction item."""
    if not isinstance(item, dict):
        raise EvalInputError(f"{where}: not a JSON object")
    for field in ("input_file", "output_file"):
        if not isinstance(item.get(field), str) or not item[field]:
            raise EvalInputError(f"{where}: needs a string {field!r}")
    turns = conversation(item, where)
    given = turns[0].get("input_modality")
    if given is not None and given != modality:
        raise EvalInputError(f"{where}: input_modality is {given!r}, this task reads {modality}")
    prompt = turns[0]["value"].strip()
    caption = turns[-1].get("caption")
    if not prompt:
        raise EvalInputError(f"{where}: the first turn's 'value' (the instruction) is empty")
    if not isinstance(caption, str) or not caption.strip():
        raise EvalInputError(f"{where}: the last turn has no 'caption' (the target music text)")
    return prompt, caption.strip(), item["input_file"], item["output_file"]


# ---------------------------------------------------------------------------------------------
# Prediction manifest


def audio_dir_for(out: Path, given: Optional[str]) -> Path:
    return Path(given) if given else out.with_name(out.stem + "_audio")


def load_predictions(path: str | Path) -> dict[str, Optional[Path]]:
    """{row key: WAV path or None} from a manifest written by `generate`, or from a folder of
    audio files named after the reference music (other systems' published results folders)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir()
                       if f.suffix.lower() in (".wav", ".flac", ".mp3", ".ogg"))
        if not files:
            raise EvalInputError(f"predictions folder {p} holds no audio files")
        return dict(zip(unique_keys([f.name for f in files]), files))
    data = read_json(p, "predictions")
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, dict):
        raise EvalInputError(f"predictions {p}: expected a manifest with an 'items' object "
                             "(written by the generate verb) or a folder of audio files")
    out: dict[str, Optional[Path]] = {}
    for key, item in items.items():
        audio = item.get("audio") if isinstance(item, dict) else None
        out[key] = None if audio is None else (p.parent / audio)
    return out
