"""Loaders for every published M2UGen data schema, the per-stage mixes, and their tokenisation.

Why this module exists: the published schemas (SPEC section 6) differ per dataset; training wants
one normalised record (`Sample`) and one tokenisation rule for all of them, so that the loss masks,
EOS, [AUD] tokens and truncation behave the same in every stage.

Pipeline:  annotation JSON --parse_*--> Sample --(stage mix, split filter, file check)-->
`M2UGenDataset` --__getitem__--> token ids + labels + media (lazy, via a loader callback) -->
`data.collate.Collator` pads a batch.

Schemas accepted unchanged (file layout under a root: docs/INTERFACES.md, `DataPaths`):
- caption files (MUCaps, COCO, MUVideo captions): {"file name": "caption", ...};
- MusicQA: [{"audio_name", "conversation" | "conversations": [{"from", "value"}, ...]}];
- Alpaca converted: [{"conversation": [{"value"}, ...]}] and Stanford
  [{"instruction", "input", "output"}];
- any-to-music instructions (MUImage, MUVideo, MUEdit): [{"input_file", "output_file",
  "conversation" | "conversations": [{"from": "human", "value", "input_modality", "caption"},
  {"from": "gpt", "value", "output_modality", "caption"}, ...]}].

Error policy (`on_error`): "raise" stops with a message naming the file / item and the reason;
"skip" drops the sample and records it in `dataset.skipped` (reasons counted, `dataset.report()`).
Nothing is dropped silently. A missing or malformed annotation JSON always raises: it is a
configuration error (disable that source with `DataPaths(..., field=None)` instead).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Optional, Sequence

import torch
from torch.utils.data import Dataset

from llama.config import AUD_TOKENS, MODALITIES

OnError = Literal["raise", "skip"]
Split = Literal["train", "test", "all"]
# (modality, path) -> loaded media or cached features. Raw loading: `RawMediaLoader(...)`.
MediaLoader = Callable[[str, str], Any]

IGNORE_INDEX = -100
N_AUD = len(AUD_TOKENS)
AUD_SUFFIX = " " + "".join(AUD_TOKENS)  # the string form of a music answer's ending

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


class SampleTooLongError(DatasetError):
    """A sample cannot fit `max_words` without cutting its last answer, [AUD] tokens or EOS."""


# ---------------------------------------------------------------------------------------------
# Records


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


@dataclass
class TokenizedSample:
    """Token ids with their labels (IGNORE_INDEX outside assistant answers) and [AUD] positions."""

    input_ids: list[int]
    labels: list[int]
    aud_positions: Optional[list[int]]  # 8 indices into input_ids, or None without music output
    dropped_turns: int = 0  # earlier turns removed to fit max_words
    instruction_truncated: bool = False


# ---------------------------------------------------------------------------------------------
# Where the data lives


@dataclass
class DataPaths:
    """Every annotation file and media folder; `None` disables a source.

    `DataPaths.from_root(root)` fills the layout of docs/INTERFACES.md; pass keyword overrides
    (or `parse_overrides(["field=path", ...])` from a command line) for data stored elsewhere.
    """

    mucaps_captions: Optional[Path] = None
    mucaps_audio: Optional[Path] = None
    coco_captions: Optional[Path] = None
    coco_images: Optional[Path] = None
    muvideo_captions: Optional[Path] = None
    muvideo_videos: Optional[Path] = None
    musicqa: Optional[Path] = None
    musicqa_extra: tuple[Path, ...] = ()  # e.g. the ChatGPT variant of MusicQA, same audio folder
    musicqa_audio: Optional[Path] = None
    alpaca: Optional[Path] = None
    muimage_instructions: Optional[Path] = None
    muimage_images: Optional[Path] = None
    muimage_audio: Optional[Path] = None
    muvideo_instructions: Optional[Path] = None
    muvideo_instruction_videos: Optional[Path] = None
    muvideo_audio: Optional[Path] = None
    muedit_instructions: Optional[Path] = None
    muedit_audio: Optional[Path] = None
    split: Optional[Path] = None  # split.json; its paths are relative to `split_root`
    split_root: Optional[Path] = None

    @classmethod
    def from_root(cls, root: str | os.PathLike, **overrides: Any) -> "DataPaths":
        r = Path(root)
        paths = cls(
            mucaps_captions=r / "MUCaps/MUCapsCaptions.json",
            mucaps_audio=r / "MUCaps/audios",
            coco_captions=r / "COCO/CocoCaptions.json",
            coco_images=r / "COCO/images",
            muvideo_captions=r / "MUVideo/MUVideoCaptions.json",
            muvideo_videos=r / "MUVideo/videos",
            musicqa=r / "MusicQA/MusicQA.json",
            musicqa_audio=r / "MusicQA/audios",
            alpaca=r / "Alpaca/alpaca_data.json",
            muimage_instructions=r / "MUImage/MUImageInstructions.json",
            muimage_images=r / "MUImage/images",
            muimage_audio=r / "MUImage/audios",
            muvideo_instructions=r / "MUVideo/MUVideoInstructions.json",
            muvideo_instruction_videos=r / "MUVideo/videos",
            muvideo_audio=r / "MUVideo/audios",
            muedit_instructions=r / "MUEdit/MUEditInstructions.json",
            muedit_audio=r / "MUEdit/audios",
            split=r / "split.json",
            split_root=r,
        )
        return paths.replace(**overrides)

    def replace(self, **overrides: Any) -> "DataPaths":
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown DataPaths field(s) {unknown}; known: {sorted(names)}")
        fixed: dict[str, Any] = {}
        for k, v in overrides.items():
            if k == "musicqa_extra":
                fixed[k] = tuple(Path(p) for p in (v or ()))
            else:
                fixed[k] = None if v in (None, "") else Path(v)
        return dataclasses.replace(self, **fixed)

    def parse_overrides(self, items: Iterable[str]) -> "DataPaths":
        """Apply command-line style overrides `field=path` (`field=` disables the source;
        `musicqa_extra=a.json,b.json` takes a comma-separated list)."""
        changes: dict[str, Any] = {}
        for item in items:
            if "=" not in item:
                raise ValueError(f"data path override {item!r} is not of the form field=path")
            k, v = item.split("=", 1)
            k = k.strip()
            changes[k] = [p for p in v.split(",") if p] if k == "musicqa_extra" else v.strip()
        return self.replace(**changes)


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


def _load_json(path: Path) -> Any:
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
    data = _require_list(_load_json(path), path)
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
    data = _load_json(path)
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


# ---------------------------------------------------------------------------------------------
# Stage mixes

STAGE2_REQUESTS: tuple[str, ...] = (
    "Generate music that sounds like this: {caption}",
    "Compose a song: {caption}",
    "Play music matching this description: {caption}",
    "Create a melody: {caption}",
)


def _stage2_sample(s: Sample, instruction: Literal["caption", "request"]) -> Sample:
    caption = s.turns[0][1]
    if instruction == "caption":
        prompt = caption
    else:
        templates = STAGE2_REQUESTS
        prompt = templates[zlib.crc32(s.id.encode()) % len(templates)].format(caption=caption)
    return Sample(
        id=s.id,
        task=TASK_TEXT_TO_MUSIC,
        turns=((prompt, caption),),
        media={},
        music_caption=caption,
        output_music=s.media.get("audio"),
    )


def _need(paths: DataPaths, *names: str) -> list[Path]:
    vals = [getattr(paths, n) for n in names]
    missing = [n for n, v in zip(names, vals) if v is None]
    if missing:
        raise DatasetError(f"DataPaths fields {missing} must be set together with {names[0]}")
    return vals


def stage_samples(
    stage: int,
    paths: DataPaths,
    *,
    policy: Optional[ErrorPolicy] = None,
    stage2_instruction: Literal["caption", "request"] = "caption",
) -> list[Sample]:
    """All samples of a stage's mix, in a fixed order (sources in SPEC order, file order within).

    Stage 1: MUCaps audio, COCO image, MUVideo video captioning (empty instruction).
    Stage 2: MUCaps captions as text -> music (answer = caption + [AUD0..7]).
    Stage 3: MusicQA (+extra files), Alpaca, MUImage, MUVideo, MUEdit instructions.
    Sources whose annotation path is None are left out.
    """
    policy = policy or ErrorPolicy()
    out: list[Sample] = []
    if stage == 1:
        for cap, media, src, mod, task in (
            ("mucaps_captions", "mucaps_audio", "MUCaps", "audio", TASK_AUDIO_CAPTION),
            ("coco_captions", "coco_images", "COCO", "image", TASK_IMAGE_CAPTION),
            ("muvideo_captions", "muvideo_videos", "MUVideoCaptions", "video", TASK_VIDEO_CAPTION),
        ):
            if getattr(paths, cap) is not None:
                j, d = _need(paths, cap, media)
                out += parse_caption_file(j, d, source=src, modality=mod, task=task, policy=policy)
    elif stage == 2:
        if paths.mucaps_captions is None:
            raise DatasetError("stage 2 needs DataPaths.mucaps_captions (MUCaps captions)")
        j, d = _need(paths, "mucaps_captions", "mucaps_audio")
        caps = parse_caption_file(
            j, d, source="MUCaps", modality="audio", task=TASK_AUDIO_CAPTION, policy=policy
        )
        out += [_stage2_sample(s, stage2_instruction) for s in caps]
    elif stage == 3:
        qa_files = [paths.musicqa] if paths.musicqa is not None else []
        qa_files += list(paths.musicqa_extra)
        for k, qa in enumerate(qa_files):
            if paths.musicqa_audio is None:
                raise DatasetError("DataPaths.musicqa_audio must be set to use MusicQA")
            src = "MusicQA" if k == 0 and paths.musicqa is not None else f"MusicQA[{qa.stem}]"
            out += parse_musicqa(qa, paths.musicqa_audio, source=src, policy=policy)
        if paths.alpaca is not None:
            out += parse_alpaca(paths.alpaca, policy=policy)
        for ins, inp, aud, src, task, mod in (
            ("muimage_instructions", "muimage_images", "muimage_audio", "MUImage",
             TASK_IMAGE_TO_MUSIC, "image"),
            ("muvideo_instructions", "muvideo_instruction_videos", "muvideo_audio", "MUVideo",
             TASK_VIDEO_TO_MUSIC, "video"),
            ("muedit_instructions", "muedit_audio", "muedit_audio", "MUEdit",
             TASK_MUSIC_EDIT, "audio"),
        ):
            if getattr(paths, ins) is not None:
                j, d_in, d_out = _need(paths, ins, inp, aud)
                out += parse_any_to_music(
                    j, d_in, d_out, source=src, task=task, default_modality=mod, policy=policy
                )
    else:
        raise ValueError(f"stage must be 1, 2 or 3, got {stage!r}")
    return out


def _norm(p: str | os.PathLike) -> str:
    return os.path.normpath(os.path.abspath(p))


def load_test_files(paths: DataPaths) -> Optional[set[str]]:
    """Normalised absolute paths of the held-out files, or None when there is no split.json."""
    if paths.split is None or not paths.split.is_file():
        return None
    data = _load_json(paths.split)
    if not isinstance(data, dict) or not isinstance(data.get("test", []), list):
        raise DatasetError(f"{paths.split}: expected {{'train': [...], 'test': [...]}}")
    root = paths.split_root if paths.split_root is not None else paths.split.parent
    return {_norm(root / p) for p in data.get("test", [])}


def filter_split(samples: Sequence[Sample], split: Split, paths: DataPaths) -> list[Sample]:
    """Keep the samples of `split`. A sample is held out ("test") when ANY of its files (inputs
    or output music) is in split.json's test list; all other samples (incl. text-only) are train.
    Without split.json every sample is train and asking for "test" is an error."""
    if split == "all":
        return list(samples)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    test = load_test_files(paths)
    if test is None:
        if split == "test":
            raise DatasetError(f"split 'test' requested but {paths.split} does not exist")
        return list(samples)
    want_test = split == "test"
    return [s for s in samples if any(_norm(f) in test for f in s.files()) == want_test]


# ---------------------------------------------------------------------------------------------
# Tokenisation


def _templates() -> tuple[Callable[..., str], Callable[[str], str]]:
    # Imported here so parsing works without the tokenizer module (it is only needed to tokenise).
    from llama.tokenizer import format_followup, format_prompt

    return format_prompt, format_followup


def encode_prompt(
    tokenizer: Any, instruction: str, history: Sequence[tuple[str, str]] = ()
) -> list[int]:
    """Prompt ids exactly as training builds them (BOS, template, earlier answers each + EOS):
    use this at inference so that a multi-turn chat sees the token layout it was trained on."""
    ids, _ = _encode_turns(tokenizer, [*history, (instruction, "")], music=False, answer_last=False)
    return ids


def _encode_turns(
    tokenizer: Any, turns: Sequence[tuple[str, str]], *, music: bool, answer_last: bool = True
) -> tuple[list[int], list[int]]:
    format_prompt, format_followup = _templates()
    ids: list[int] = []
    labels: list[int] = []
    for i, (q, a) in enumerate(turns):
        prompt = format_prompt(q) if i == 0 else format_followup(q)
        p_ids = tokenizer.encode(prompt, bos=(i == 0))
        ids += p_ids
        labels += [IGNORE_INDEX] * len(p_ids)
        last = i == len(turns) - 1
        if last and not answer_last:
            break
        a_ids = list(tokenizer.encode(a)) if a else []
        if last and music:
            a_ids += list(tokenizer.aud_ids)
        a_ids.append(tokenizer.eos_id)
        ids += a_ids
        labels += a_ids
    return ids, labels


def tokenize_sample(sample: Sample, tokenizer: Any, max_words: int) -> TokenizedSample:
    """Token ids + labels for one sample; loss only on answers (each ending with EOS).

    Truncation to `max_words` keeps the last answer whole (with its [AUD0..7] and EOS): first the
    earliest turns are dropped, then the last instruction is shortened. If even an empty last
    instruction does not fit, a DatasetError names the sample.
    """
    turns = list(sample.turns)
    music = sample.has_music_output
    if len(tokenizer.aud_ids) != N_AUD:
        raise ValueError(f"tokenizer has {len(tokenizer.aud_ids)} [AUD] ids, expected {N_AUD}")
    dropped = 0
    ids, labels = _encode_turns(tokenizer, turns, music=music)
    while len(ids) > max_words and len(turns) > 1:
        turns.pop(0)
        dropped += 1
        ids, labels = _encode_turns(tokenizer, turns, music=music)
    truncated = False
    if len(ids) > max_words:
        q, a = turns[0]
        q_ids = tokenizer.encode(q)

        def fit(k: int) -> tuple[list[int], list[int]]:
            text = tokenizer.decode(q_ids[:k]) if k else ""
            return _encode_turns(tokenizer, [(text, a)], music=music)

        lo, hi = 0, len(q_ids)  # largest k whose encoding fits
        best = fit(0)
        if len(best[0]) > max_words:
            raise SampleTooLongError(
                f"{sample.id}: cannot fit into max_words={max_words}: the answer alone needs "
                f"{len(best[0])} tokens with the template (raise --max_words or shorten the answer)"
            )
        while lo < hi:
            mid = (lo + hi + 1) // 2
            cand = fit(mid)
            if len(cand[0]) <= max_words:
                lo, best = mid, cand
            else:
                hi = mid - 1
        ids, labels = best
        truncated = True
    aud_positions = None
    if music:
        start = len(ids) - 1 - N_AUD
        aud_positions = list(range(start, start + N_AUD))
        if ids[start : start + N_AUD] != list(tokenizer.aud_ids):  # an invariant of _encode_turns
            raise RuntimeError(f"{sample.id}: [AUD] ids not found before the final EOS")
    return TokenizedSample(ids, labels, aud_positions, dropped, truncated)


# ---------------------------------------------------------------------------------------------
# Media loading


@dataclass(frozen=True)
class RawMediaLoader:
    """Loader callback reading raw media with `data.media` (audio mono at `sample_rate`, images
    RGB uint8, `num_frames` video frames). A feature cache supplies its own callback instead.
    A class rather than a closure so DataLoader workers can pickle it under any start method."""

    sample_rate: int = 24000
    num_frames: int = 32

    def __call__(self, modality: str, path: str) -> Any:
        from data import media

        if modality == "audio":
            return media.load_audio(path, self.sample_rate)
        if modality == "image":
            return media.load_image(path)
        if modality == "video":
            return media.load_video(path, self.num_frames)
        raise ValueError(f"unknown modality {modality!r} for {path}")


@dataclass(frozen=True)
class PerModalityLoader:
    """Adapts one `path -> value` callback per modality (e.g. `FeatureCache.loader(...)` of
    data/features.py) to the dataset's `(modality, path)` loader signature."""

    loaders: Mapping[str, Callable[[str], Any]]

    def __call__(self, modality: str, path: str) -> Any:
        fn = self.loaders.get(modality)
        if fn is None:  # a configuration bug, not an unreadable file: never skipped
            raise KeyError(f"no loader for modality {modality!r} (needed for {path})")
        return fn(path)


def default_read_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "this file cannot be read" (others are bugs and always propagate)."""
    errs: list[type[BaseException]] = [OSError, EOFError, ValueError]
    try:
        from data.media import MediaError
    except ImportError:
        pass
    else:
        errs.append(MediaError)
    return tuple(errs)


# ---------------------------------------------------------------------------------------------
# Dataset


class M2UGenDataset(Dataset):
    """Map-style dataset over normalised samples; items are ready for `data.collate.Collator`.

    Item keys: "id", "task", "input_ids" (T,) long, "labels" (T,) long, "media_paths"
    {modality: path}, "media" {modality: loaded value} (empty without a `media_loader`),
    "music_caption" str|None, "output_music" str|None, "aud_positions" (8,) long or None.
    A sample skipped under on_error="skip" yields {"skipped": (id, category, detail)} instead;
    the collator drops it and carries the record in batch["skipped"] (merge it with
    `record_skips` when DataLoader workers are used).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        tokenizer: Any,
        *,
        max_words: int = 512,
        media_loader: Optional[MediaLoader] = None,
        on_error: Optional[OnError] = None,
        check_files: bool = True,
        policy: Optional[ErrorPolicy] = None,
        read_errors: Optional[tuple[type[BaseException], ...]] = None,
        stage: Optional[int] = None,
    ) -> None:
        if policy is None:
            policy = ErrorPolicy(on_error or "raise")
        elif on_error is not None and on_error != policy.on_error:
            raise ValueError(
                f"on_error={on_error!r} conflicts with policy.on_error={policy.on_error!r}"
            )
        self.policy = policy
        self.tokenizer = tokenizer
        self.max_words = int(max_words)
        self.media_loader = media_loader
        self.read_errors = read_errors or default_read_errors()
        self.stage = stage
        kept = []
        for s in samples:
            if check_files:
                missing = [p for p in s.media.values() if not os.path.isfile(p)]
                if missing:
                    self.policy.handle(s.id, "missing file", f"{missing[0]} does not exist")
                    continue
            kept.append(s)
        self.samples: list[Sample] = kept
        self._tokens: dict[int, TokenizedSample] = {}

    @property
    def on_error(self) -> OnError:
        return self.policy.on_error

    @property
    def skipped(self) -> SkipLog:
        return self.policy.skipped

    def report(self) -> str:
        """Human-readable summary of skipped samples and their reasons (print each epoch)."""
        return f"{self.__class__.__name__}(stage={self.stage}, {len(self)} samples): " + (
            self.skipped.report()
        )

    def record_skips(self, records: Iterable[Sequence[str]]) -> None:
        """Merge skip records that DataLoader workers returned in batches."""
        self.skipped.merge(records)

    def task_counts(self) -> dict[str, int]:
        return dict(collections.Counter(s.task for s in self.samples))

    def __len__(self) -> int:
        return len(self.samples)

    def tokenized(self, idx: int) -> TokenizedSample:
        tok = self._tokens.get(idx)
        if tok is None:
            tok = tokenize_sample(self.samples[idx], self.tokenizer, self.max_words)
            self._tokens[idx] = tok
        return tok

    def _skip(self, s: Sample, category: str, detail: str, exc: BaseException) -> dict:
        self.policy.handle(s.id, category, detail, exc)  # raises under on_error="raise"
        return {"skipped": (s.id, category, detail)}

    def __getitem__(self, idx: int) -> dict:
        s = self.samples[idx]
        try:
            tok = self.tokenized(idx)
        except SampleTooLongError as e:
            if self.on_error == "raise":
                raise
            return self._skip(s, "too long", str(e), e)
        media: dict[str, Any] = {}
        if self.media_loader is not None:
            for modality, path in s.media.items():
                try:
                    media[modality] = self.media_loader(modality, path)
                except self.read_errors as e:
                    return self._skip(
                        s, "unreadable file", f"cannot read {modality} file {path}: {e}", e
                    )
        return {
            "id": s.id,
            "task": s.task,
            "input_ids": torch.tensor(tok.input_ids, dtype=torch.long),
            "labels": torch.tensor(tok.labels, dtype=torch.long),
            "media_paths": dict(s.media),
            "media": media,
            "music_caption": s.music_caption,
            "output_music": s.output_music,
            "aud_positions": (
                torch.tensor(tok.aud_positions, dtype=torch.long)
                if tok.aud_positions is not None
                else None
            ),
        }


def build_stage_dataset(
    stage: int,
    paths: DataPaths,
    tokenizer: Any,
    *,
    split: Split = "train",
    max_words: int = 512,
    media_loader: Optional[MediaLoader] = None,
    on_error: OnError = "raise",
    check_files: bool = True,
    stage2_instruction: Literal["caption", "request"] = "caption",
    tasks: Optional[Iterable[str]] = None,
) -> M2UGenDataset:
    """The dataset of one training stage (SPEC section 6 mixes), split-filtered, files checked.

    `tasks` keeps only the named tasks (e.g. {"audio_caption"} for an audio-only evaluation).
    """
    policy = ErrorPolicy(on_error)
    samples = stage_samples(stage, paths, policy=policy, stage2_instruction=stage2_instruction)
    samples = filter_split(samples, split, paths)
    if tasks is not None:
        keep = set(tasks)
        samples = [s for s in samples if s.task in keep]
    return M2UGenDataset(
        samples,
        tokenizer,
        max_words=max_words,
        media_loader=media_loader,
        check_files=check_files,
        policy=policy,
        on_error=on_error,
        stage=stage,
    )
