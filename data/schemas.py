"""The published M2UGen annotation schemas, parsed into one normalised record (`Sample`).

Why: the published JSON files (layout: docs/DATA.md) differ per dataset, while training
wants one record and one tokenisation rule for all of them. Schemas accepted unchanged:
- caption files (MUCaps, COCO, MUVideo captions): {"file name": "caption", ...};
- MusicQA: [{"audio_name", "conversation" | "conversations": [{"from", "value"}, ...]}];
- Alpaca converted: [{"conversation": [{"value"}, ...]}] and Stanford
  [{"instruction", "input", "output"}];
- any-to-music instructions (MUImage, MUVideo, MUEdit): [{"input_file", "output_file",
  "conversation" | "conversations": [{"from": "human", "value", "input_modality", "caption"},
  {"from": "gpt", "value", "output_modality", "caption"}, ...]}].

Error policy (`ErrorPolicy`, `on_error`): "raise" stops with a message naming the file / item and
the reason; "skip" drops the item and records it in a `SkipLog` (reasons counted, `report()`).
Nothing is dropped silently. A missing or malformed annotation JSON always raises: it is a
configuration error (disable that source with `DataPaths(..., field=None)` instead).
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Optional, Sequence

from llama.config import AUD_TOKENS, MODALITIES

__all__ = [
    "DatasetError",
    "ErrorPolicy",
    "OnError",
    "Sample",
    "SkipLog",
    "load_json",
    "pair_turns",
    "parse_alpaca",
    "parse_any_to_music",
    "parse_caption_file",
    "parse_musicqa",
    "strip_aud",
]

OnError = Literal["raise", "skip"]

# Task names carried by every sample (evaluation groups by them).
TASK_AUDIO_CAPTION = "audio_caption"
TASK_IMAGE_CAPTION = "image_caption"
TASK_VIDEO_CAPTION = "video_caption"
TASK_TEXT_TO_MUSIC = "text_to_music"
TASK_MUSIC_QA = "music_qa"
TASK_ALPACA = "alpaca"
TASK_IMAGE_TO_MUSIC = "image_to_music"
TASK_VIDEO_TO_MUSIC = "video_to_music"
TASK_MUSIC_EDIT = "music_edit"

HUMAN_ROLES = frozenset({"human", "user"})
GPT_ROLES = frozenset({"gpt", "assistant", "bot", "model"})


class DatasetError(RuntimeError):
    """A data problem that stops the run; the message names the file / item and the reason."""


# ---------------------------------------------------------------------------------------------
# The normalised record


@dataclass(frozen=True)
class Sample:
    """One normalised training example, independent of the schema it came from.

    `turns` are (human, gpt) pairs in order; the last answer is the one that produces music when
    `music_caption` is set (its tokens get [AUD0..7] appended; the caption is the decoder target).
    `media` maps a modality ("audio" | "image" | "video") to an input file path.
    """

    id: str
    task: str
    turns: tuple[tuple[str, str], ...]
    media: dict[str, str] = field(default_factory=dict)
    music_caption: Optional[str] = None
    output_music: Optional[str] = None

    @property
    def has_music_output(self) -> bool:
        return self.music_caption is not None

    def files(self) -> list[str]:
        """Every media file the sample refers to (inputs and the output music), for splitting."""
        out = list(self.media.values())
        if self.output_music:
            out.append(self.output_music)
        return out


# ---------------------------------------------------------------------------------------------
# Error policy


class SkipLog:
    """Skipped samples with their reasons. Recording is idempotent per sample id, so counts
    from DataLoader workers (carried back in batches) can be merged without double counting."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[str, str]] = {}

    def add(self, key: str, category: str, detail: str) -> None:
        self._items.setdefault(key, (category, detail))

    def merge(self, records: Iterable[Sequence[str]]) -> None:
        for key, category, detail in records:
            self.add(key, category, detail)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def counts(self) -> dict[str, int]:
        """Number of skipped samples per reason category."""
        return dict(collections.Counter(c for c, _ in self._items.values()))

    def records(self) -> list[tuple[str, str, str]]:
        return [(k, c, d) for k, (c, d) in self._items.items()]

    def report(self, max_examples: int = 3) -> str:
        if not self._items:
            return "skipped 0 samples"
        lines = [f"skipped {len(self._items)} samples:"]
        by_cat: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
        for k, (c, d) in self._items.items():
            by_cat[c].append((k, d))
        for c in sorted(by_cat):
            items = by_cat[c]
            lines.append(f"  {c}: {len(items)}")
            for k, d in items[:max_examples]:
                lines.append(f"    {k}: {d}")
        return "\n".join(lines)


@dataclass
class ErrorPolicy:
    """Applies `on_error` to one problem: raise a DatasetError, or record the skip."""

    on_error: OnError = "raise"
    skipped: SkipLog = field(default_factory=SkipLog)

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")

    def handle(
        self, key: str, category: str, detail: str, exc: Optional[BaseException] = None
    ) -> None:
        if self.on_error == "raise":
            raise DatasetError(f"{key}: {category}: {detail}") from exc
        self.skipped.add(key, category, detail)


class _SchemaError(ValueError):
    """One annotation item does not follow its schema (caught per item, policy applied)."""


# ---------------------------------------------------------------------------------------------
# Parsers (one per published schema)


def load_json(path: Path) -> Any:
    """A JSON annotation file, or a DatasetError naming it and what is wrong."""
    if not path.is_file():
        raise DatasetError(
            f"annotation file {path} does not exist "
            "(fix the data root / path, or disable the source)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"annotation file {path} is not valid JSON: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"annotation file {path} cannot be read: {e}") from e


def _require_list(data: Any, path: Path) -> list:
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of items, got {type(data).__name__}")
    return data


def _text(item: dict, key: str) -> str:
    v = item.get(key)
    if not isinstance(v, str):
        raise _SchemaError(f"field {key!r} missing or not a string")
    return v.strip()


def _conversation(item: dict) -> list:
    conv = item.get("conversation", item.get("conversations"))
    if not isinstance(conv, list) or not conv:
        raise _SchemaError("'conversation'/'conversations' missing, not a list, or empty")
    for i, t in enumerate(conv):
        if not isinstance(t, dict):
            raise _SchemaError(f"conversation turn {i} is not an object")
    return conv


def pair_turns(conv: list[dict]) -> list[tuple[str, str]]:
    """(human, gpt) pairs from a conversation list. Roles come from "from" when present,
    otherwise turns alternate human/gpt (the converted Alpaca file has no "from")."""
    roles = []
    for i, t in enumerate(conv):
        role = t.get("from")
        if role is None:
            roles.append("human" if i % 2 == 0 else "gpt")
        elif str(role).lower() in HUMAN_ROLES:
            roles.append("human")
        elif str(role).lower() in GPT_ROLES:
            roles.append("gpt")
        else:
            raise _SchemaError(f"conversation turn {i} has unknown role {role!r}")
    if len(conv) % 2:
        raise _SchemaError(f"conversation has an odd number of turns ({len(conv)})")
    pairs = []
    for i in range(0, len(conv), 2):
        if roles[i] != "human" or roles[i + 1] != "gpt":
            raise _SchemaError(
                f"conversation turns {i},{i + 1} are {roles[i]},{roles[i + 1]}; expected human,gpt"
            )
        pairs.append((_text(conv[i], "value"), strip_aud(_text(conv[i + 1], "value"))))
    return pairs


def strip_aud(text: str) -> str:
    """Remove literal [AUDk] strings from an answer: the 8 [AUD] ids are added by the music rule
    only (at the end of a music answer), never taken from annotation text."""
    for t in AUD_TOKENS:
        text = text.replace(t, "")
    return text.strip()


def _items(
    path: Path, source: str, policy: ErrorPolicy, parse: Callable[[int, Any], Optional[Sample]]
) -> list[Sample]:
    data = _require_list(load_json(path), path)
    out = []
    for i, item in enumerate(data):
        key = f"{source}:{i}"
        try:
            if not isinstance(item, dict):
                raise _SchemaError(f"item is a {type(item).__name__}, not an object")
            s = parse(i, item)
        except _SchemaError as e:
            policy.handle(key, "schema", f"{path} item {i}: {e}", e)
            continue
        if s is not None:
            out.append(s)
    return out


def parse_caption_file(
    path: Path,
    media_dir: Path,
    *,
    source: str,
    modality: str,
    task: str,
    policy: Optional[ErrorPolicy] = None,
) -> list[Sample]:
    """Caption JSON {"file": "caption"} -> captioning samples (empty instruction,
    answer = caption)."""
    policy = policy or ErrorPolicy()
    data = load_json(path)
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object mapping file -> caption")
    out = []
    for name, caption in data.items():
        key = f"{source}:{name}"
        if not isinstance(caption, str) or not caption.strip():
            policy.handle(key, "schema", f"{path}: caption of {name!r} is empty or not a string")
            continue
        out.append(
            Sample(
                id=key,
                task=task,
                turns=(("", caption.strip()),),
                media={modality: str(media_dir / name)},
            )
        )
    return out


def parse_musicqa(
    path: Path, audio_dir: Path, *, source: str = "MusicQA", policy: Optional[ErrorPolicy] = None
) -> list[Sample]:
    """MusicQA: every (question, answer) turn of a clip's conversation, text answers only."""
    policy = policy or ErrorPolicy()

    def parse(i: int, item: dict) -> Sample:
        name = _text(item, "audio_name")
        return Sample(
            id=f"{source}:{i}",
            task=TASK_MUSIC_QA,
            turns=tuple(pair_turns(_conversation(item))),
            media={"audio": str(audio_dir / name)},
        )

    return _items(path, source, policy, parse)


def parse_alpaca(
    path: Path, *, source: str = "Alpaca", policy: Optional[ErrorPolicy] = None
) -> list[Sample]:
    """Alpaca, converted ({"conversation": [...]}) or Stanford (instruction/input/output)."""
    policy = policy or ErrorPolicy()

    def parse(i: int, item: dict) -> Sample:
        if "conversation" in item or "conversations" in item:
            turns = pair_turns(_conversation(item))
        elif "instruction" in item and "output" in item:
            instruction = _text(item, "instruction")
            extra = item.get("input") or ""
            if not isinstance(extra, str):
                raise _SchemaError("field 'input' is not a string")
            if extra.strip():
                instruction = f"{instruction}\n\n{extra.strip()}"
            turns = [(instruction, _text(item, "output"))]
        else:
            raise _SchemaError("neither 'conversation' nor 'instruction'/'output' present")
        return Sample(id=f"{source}:{i}", task=TASK_ALPACA, turns=tuple(turns))

    return _items(path, source, policy, parse)


def parse_any_to_music(
    path: Path,
    input_dir: Path,
    audio_dir: Path,
    *,
    source: str,
    task: str,
    default_modality: str,
    policy: Optional[ErrorPolicy] = None,
) -> list[Sample]:
    """MUImage / MUVideo / MUEdit: input media + instruction -> answer + music (the target
    caption is the last gpt turn's "caption")."""
    policy = policy or ErrorPolicy()

    def parse(i: int, item: dict) -> Sample:
        conv = _conversation(item)
        turns = pair_turns(conv)
        modality = conv[0].get("input_modality") or default_modality
        if modality not in MODALITIES:
            raise _SchemaError(f"input_modality {modality!r} is not one of {MODALITIES}")
        media = {}
        input_file = item.get("input_file")
        if input_file:
            if not isinstance(input_file, str):
                raise _SchemaError("field 'input_file' is not a string")
            media[modality] = str(input_dir / input_file)
        output_file = item.get("output_file")
        music_caption = output_music = None
        last_gpt = conv[-1]
        if output_file or last_gpt.get("output_modality") == "audio":
            caption = last_gpt.get("caption")
            if not isinstance(caption, str) or not caption.strip():
                raise _SchemaError("the last gpt turn has no 'caption' (the music target text)")
            music_caption = caption.strip()
            if output_file:
                if not isinstance(output_file, str):
                    raise _SchemaError("field 'output_file' is not a string")
                output_music = str(audio_dir / output_file)
        return Sample(
            id=f"{source}:{i}",
            task=task,
            turns=tuple(turns),
            media=media,
            music_caption=music_caption,
            output_music=output_music,
        )

    return _items(path, source, policy, parse)
