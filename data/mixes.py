"""The per-stage training mixes of the published recipe and the held-out split.

Stage 1: captioning (music, image, video); stage 2: text -> music from the music captions;
stage 3: MusicQA, Alpaca and the any-to-music instructions. A sample is held out when any of its
files is in split.json's test list, so an input never leaks into training through a second sample.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional, Sequence

from data.paths import DataPaths
from data.schemas import (
    TASK_AUDIO_CAPTION,
    TASK_IMAGE_CAPTION,
    TASK_IMAGE_TO_MUSIC,
    TASK_MUSIC_EDIT,
    TASK_TEXT_TO_MUSIC,
    TASK_VIDEO_CAPTION,
    TASK_VIDEO_TO_MUSIC,
    DatasetError,
    ErrorPolicy,
    Sample,
    load_json,
    parse_alpaca,
    parse_any_to_music,
    parse_caption_file,
    parse_musicqa,
)
from util.hashing import stable_int

__all__ = ["STAGE2_REQUESTS", "Split", "Stage2Instruction", "filter_split", "load_test_files",
           "stage_samples"]

Split = Literal["train", "test", "all"]

STAGE2_REQUESTS: tuple[str, ...] = (
    "Generate music that sounds like this: {caption}",
    "Compose a song: {caption}",
    "Play music matching this description: {caption}",
    "Create a melody: {caption}",
    "Write a tune: {caption}",
    "Make music like this: {caption}",
)


Stage2Instruction = Literal["caption", "request", "mixed"]


def _stage2_sample(s: Sample, instruction: Stage2Instruction) -> Sample:
    """`instruction`: the human turn is the caption (as published), a request wrapping it, or
    ("mixed") the caption for half of the samples and a request for the others (fixed by each
    sample's id). Why requests: stage 2 (and its replay in stage 3) is where text-only music is
    learned, and a model that saw only bare captions there answered "Compose a slow piano melody"
    with a caption (docs/SYNTHETIC.md)."""
    caption = s.turns[0][1]
    pick = stable_int(s.id) % (2 * len(STAGE2_REQUESTS))
    if instruction == "caption" or (instruction == "mixed" and pick < len(STAGE2_REQUESTS)):
        prompt = caption
    else:
        prompt = STAGE2_REQUESTS[pick % len(STAGE2_REQUESTS)].format(caption=caption)
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
    stage2_instruction: Stage2Instruction = "caption",
) -> list[Sample]:
    """All samples of a stage's mix, in a fixed order (sources as listed below, file order within).

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
    data = load_json(paths.split)
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
