"""The training dataset: normalised samples -> token ids, labels and media, ready to collate.

Pipeline:  annotation JSON --`data.schemas` parsers--> Sample --`data.mixes` (stage mix, split
filter)--> `M2UGenDataset` (file check) --__getitem__--> token ids + labels + media (lazy, via a
loader callback) --> `data.collate.Collator` pads a batch.

Tokenisation follows `llama.prompt` in the model's chat style (the same layout the model sees at
inference; pass `style=model.cfg.chat_style`, default: the default style): loss on answers only,
each answer ending with EOS, a music answer ending with [AUD0..7]. Problems follow the error
policy of `data.schemas` (raise, or skip and count).
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import torch
from torch.utils.data import Dataset

from data.mixes import Split, Stage2Instruction, filter_split, stage_samples
from data.paths import DataPaths
from data.schemas import DatasetError, ErrorPolicy, OnError, Sample, SkipLog
from llama.chat_style import ChatStyle
from llama.config import AUD_TOKENS
from llama.prompt import encode_turns

__all__ = [
    "M2UGenDataset",
    "MediaLoader",
    "PerModalityLoader",
    "RawMediaLoader",
    "SampleTooLongError",
    "TokenizedSample",
    "build_stage_dataset",
    "default_read_errors",
    "tokenize_sample",
]

# (modality, path) -> loaded media or cached features. Raw loading: `RawMediaLoader(...)`.
MediaLoader = Callable[[str, str], Any]

N_AUD = len(AUD_TOKENS)


class SampleTooLongError(DatasetError):
    """A sample cannot fit `max_words` without cutting its last answer, [AUD] tokens or EOS."""


@dataclass
class TokenizedSample:
    """Token ids with their labels (IGNORE_INDEX outside assistant answers) and [AUD] positions."""

    input_ids: list[int]
    labels: list[int]
    aud_positions: Optional[list[int]]  # 8 indices into input_ids, or None without music output
    dropped_turns: int = 0  # earlier turns removed to fit max_words
    instruction_truncated: bool = False


# ---------------------------------------------------------------------------------------------
# Tokenisation


def tokenize_sample(sample: Sample, tokenizer: Any, max_words: int,
                    style: Optional[ChatStyle] = None) -> TokenizedSample:
    """Token ids + labels for one sample in `style`; loss only on answers (each ending with EOS).

    Truncation to `max_words` keeps the last answer whole (with its [AUD0..7] and EOS): first the
    earliest turns are dropped, then the last instruction is shortened. If even an empty last
    instruction does not fit, a DatasetError names the sample.
    """
    turns = list(sample.turns)
    music = sample.has_music_output
    if len(tokenizer.aud_ids) != N_AUD:
        raise ValueError(f"tokenizer has {len(tokenizer.aud_ids)} [AUD] ids, expected {N_AUD}")
    dropped = 0
    ids, labels = encode_turns(tokenizer, turns, music=music, style=style)
    while len(ids) > max_words and len(turns) > 1:
        turns.pop(0)
        dropped += 1
        ids, labels = encode_turns(tokenizer, turns, music=music, style=style)
    truncated = False
    if len(ids) > max_words:
        q, a = turns[0]
        q_ids = tokenizer.encode(q)

        def fit(k: int) -> tuple[list[int], list[int]]:
            text = tokenizer.decode(q_ids[:k]) if k else ""
            return encode_turns(tokenizer, [(text, a)], music=music, style=style)

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
        if ids[start : start + N_AUD] != list(tokenizer.aud_ids):  # an invariant of encode_turns
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
    from data.media import MediaError  # lazily: the media libraries are heavy to import

    return (OSError, EOFError, ValueError, MediaError)


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
        style: Optional[ChatStyle] = None,
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
        self.style = style  # the model's chat style (None: the default style)
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
            tok = tokenize_sample(self.samples[idx], self.tokenizer, self.max_words, self.style)
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
    stage2_instruction: Stage2Instruction = "caption",
    tasks: Optional[Iterable[str]] = None,
    style: Optional[ChatStyle] = None,
) -> M2UGenDataset:
    """The dataset of one training stage (`data.mixes`), split-filtered, files checked.

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
        style=style,
    )
