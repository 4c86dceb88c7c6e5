"""Small generated datasets in the published M2UGen layouts, for tests, the demo and learning
measurements.

    python -m data.synthetic --out DIR --seed S [--n N]   (default N: the tiny recipe's size)

writes (layout of docs/DATA.md) MUCaps, COCO, MUVideo captions, MusicQA, Alpaca, MUImage,
MUVideo and MUEdit instructions, plus `attributes.json` (ground truth of every media file) and
`split.json` (about 80/20 train/test over media files, so learning is measured on held-out items).
Same seed and N -> byte-identical files (no timestamps in WAV/PNG/MP4; see `write_mp4`). The
folder is built aside and swapped in (`util.atomic.atomic_dir`): it is complete or absent.

Design (the reasons and the measured numbers: docs/SYNTHETIC.md). The parts live by concern:
`data.synthetic_attributes` (the attribute words, the cross-modal maps, the held-out
combinations), `data.synthetic_media` (music, images, videos and their writers) and
`data.synthetic_text` (captions, questions, answers, request phrasings); this module assembles
the dataset files and is the command line.

- MUCaps, COCO, MUVideo captions: every attribute value named, in one of several templates.
- MusicQA: questions about one attribute each, and requests for a description, about a clip.
- MUImage / MUVideo / MUEdit: a request for music whose target follows from the input (colour ->
  instrument, size -> register, brightness -> tempo; an edit changes one named attribute); the
  answer restates what it was made from, then names the music in one caption template. A third
  of the training items first ask about their input (a description or a question).

Held out (`split.json` "test"), so the metrics measure generalisation and not recall:
- three music attribute combinations (`held_out_combinations(seed)`, one per instrument) never
  occur in training: no training clip, caption, answer or request target has them. Every held-out
  music request (MUImage, MUVideo, MUEdit test items) asks for one of them; MUCaps and MusicQA
  hold the other 13 combinations (20% of their items held out at random);
- held-out music requests are phrased with request templates that no training item uses, and
  `Evaluation.synthetic` asks the held-out media understanding requests in phrasings no training
  item uses (`data.synthetic_text.UNDERSTANDING_REQUESTS_HELD_OUT`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from data.synthetic_attributes import (
    AUDIO_ATTRIBUTES,
    BRIGHTNESS,
    BRIGHTNESS_TO_TEMPO,
    COLOUR_TO_INSTRUMENT,
    COLOURS,
    HELD_OUT_COMBINATIONS,
    IMAGE_ATTRIBUTES,
    INSTRUMENT_TO_COLOUR,
    INSTRUMENTS,
    REGISTER_TO_SIZE,
    REGISTERS,
    SIZE_TO_REGISTER,
    SIZES,
    TEMPO_TO_BRIGHTNESS,
    TEMPOS,
    VIDEO_ATTRIBUTES,
    Attrs,
    balanced,
    held_out_combinations,
    music_combos,
    seeded_rng,
    shuffled_attrs,
)
from data.synthetic_media import (
    SAMPLE_RATE,
    draw_image,
    render_video,
    synth_music,
    write_mp4,
    write_music,
    write_png,
)
from data.synthetic_text import (
    ALPACA,
    EDIT_REQUESTS,
    EDIT_REQUESTS_HELD_OUT,
    MUIMAGE_REQUESTS,
    MUIMAGE_REQUESTS_HELD_OUT,
    MUVIDEO_REQUESTS,
    MUVIDEO_REQUESTS_HELD_OUT,
    UNDERSTANDING,
    fill,
    image_caption,
    music_answer,
    music_answer_caption,
    music_caption,
    music_captions,
    music_template_of,
    understanding_turn,
    video_caption,
)
from llama.config import get_recipe
from util.atomic import atomic_dir, write_text
from util.hashing import sha256_file, sha256_json

__all__ = [
    "HELD_OUT_COMBINATIONS",
    "held_out_combinations",
    "INSTRUMENTS",
    "REGISTERS",
    "TEMPOS",
    "COLOURS",
    "SIZES",
    "BRIGHTNESS",
    "AUDIO_ATTRIBUTES",
    "IMAGE_ATTRIBUTES",
    "VIDEO_ATTRIBUTES",
    "COLOUR_TO_INSTRUMENT",
    "SIZE_TO_REGISTER",
    "BRIGHTNESS_TO_TEMPO",
    "SAMPLE_RATE",
    "generate",
    "synth_music",
    "draw_image",
    "render_video",
    "write_music",
    "write_png",
    "write_mp4",
    "music_caption",
    "music_captions",
    "music_template_of",
    "image_caption",
    "video_caption",
    "dataset_digest",
    "main",
]

TEST_FRACTION = 0.2
LEAD_FRACTION = 0.5  # training MUImage / MUVideo / MUEdit items that first ask about the input
DESCRIBE_FRACTION = 0.5  # MusicQA items that also ask for a description
DEFAULT_N = get_recipe("tiny").data_n  # the size the tiny training recipe is measured on


# ---------------------------------------------------------------------------------------------
# Dataset assembly


@dataclass
class _Writer:
    """Collects attributes, split membership and the files written below `root`; `held_out` are
    the music attribute combinations that only test items may have."""

    root: Path
    attributes: dict[str, Attrs]
    train: list[str]
    test: list[str]
    held_out: list[Attrs]

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def assign(self, paths: Iterable[Path], is_test: bool) -> None:
        (self.test if is_test else self.train).extend(self.rel(p) for p in paths)


def _request_targets(
    held_out: list[Attrs], test: np.ndarray, rng: np.random.Generator
) -> list[Attrs]:
    """Music targets of requests: held-out combinations for test items, the others for train."""
    pools = {
        held: iter(balanced(music_combos(held_out, held), int((test == held).sum()), rng))
        for held in (True, False)
    }
    return [next(pools[bool(t)]) for t in test]


def _test_mask(count: int, rng: np.random.Generator) -> np.ndarray:
    n_test = int(round(count * TEST_FRACTION))
    mask = np.zeros(count, dtype=bool)
    mask[rng.permutation(count)[:n_test]] = True
    return mask


def _json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def _music_clip(w: _Writer, path: Path, attrs: Attrs, rng: np.random.Generator) -> str:
    write_music(path, synth_music(attrs, rng))
    w.attributes[w.rel(path)] = dict(attrs)
    return music_caption(attrs, rng)


def _mucaps(w: _Writer, n: int, seed: int) -> None:
    rng = seeded_rng(seed, "MUCaps")
    folder = w.root / "MUCaps" / "audios"
    folder.mkdir(parents=True)
    captions: dict[str, str] = {}
    test = _test_mask(n, rng)
    for i, a in enumerate(balanced(music_combos(w.held_out, False), n, rng)):
        path = folder / f"mucaps_{i:05d}.wav"
        captions[path.name] = _music_clip(w, path, a, rng)
        w.assign([path], bool(test[i]))
    _json(w.root / "MUCaps" / "MUCapsCaptions.json", captions)


def _coco(w: _Writer, n: int, seed: int) -> None:
    rng = seeded_rng(seed, "COCO")
    folder = w.root / "COCO" / "images"
    folder.mkdir(parents=True)
    captions: dict[str, str] = {}
    test = _test_mask(n, rng)
    for i, a in enumerate(shuffled_attrs(IMAGE_ATTRIBUTES, n, rng)):
        path = folder / f"coco_{i:05d}.png"
        write_png(path, draw_image(a, rng))
        w.attributes[w.rel(path)] = a
        captions[path.name] = image_caption(a, rng)
        w.assign([path], bool(test[i]))
    _json(w.root / "COCO" / "CocoCaptions.json", captions)


def _muvideo(w: _Writer, n: int, n_instr: int, seed: int) -> None:
    """MUVideo: n captioned videos; the first n_instr also get a music-generation instruction,
    whose music target fixes the video (colour <- instrument, brightness <- tempo)."""
    rng = seeded_rng(seed, "MUVideo")
    videos = w.root / "MUVideo" / "videos"
    audios = w.root / "MUVideo" / "audios"
    videos.mkdir(parents=True)
    audios.mkdir(parents=True)
    captions: dict[str, str] = {}
    items: list[dict[str, Any]] = []
    test = np.concatenate([_test_mask(n_instr, rng), _test_mask(n - n_instr, rng)])
    targets = _request_targets(w.held_out, test[:n_instr], rng)
    plain = shuffled_attrs(VIDEO_ATTRIBUTES, n - n_instr, rng)
    # the instructions' words have a stream of their own: rephrasing them leaves the captions
    # (stage 1's data) as they are
    words_rng = seeded_rng(seed, "MUVideo instruction words")
    for i in range(n):
        if i < n_instr:
            target = targets[i]
            a = {"colour": INSTRUMENT_TO_COLOUR[target["instrument"]],
                 "brightness": TEMPO_TO_BRIGHTNESS[target["tempo"]]}
        else:
            a = plain[i - n_instr]
        vpath = videos / f"muvideo_{i:05d}.mp4"
        write_mp4(vpath, render_video(a, rng))
        w.attributes[w.rel(vpath)] = a
        vcap = video_caption(a, rng)
        captions[vpath.name] = vcap
        files = [vpath]
        if i < n_instr:
            apath = audios / f"muvideo_{i:05d}.wav"
            _music_clip(w, apath, target, rng)
            templates = MUVIDEO_REQUESTS_HELD_OUT if test[i] else MUVIDEO_REQUESTS
            request = fill(templates, {"register": target["register"]}, words_rng)
            lead = None if test[i] else _lead_turn("video", a, vcap, words_rng)
            items.append(_any_to_music(vpath.name, apath.name, "video", request, vcap, a,
                                       target, lead))
            files.append(apath)
        w.assign(files, bool(test[i]))
    _json(w.root / "MUVideo" / "MUVideoCaptions.json", captions)
    _json(w.root / "MUVideo" / "MUVideoInstructions.json", items)


def _muimage(w: _Writer, n: int, seed: int) -> None:
    """MUImage: the music target fixes the image (colour <- instrument, size <- register); the
    tempo is named in the request."""
    rng = seeded_rng(seed, "MUImage")
    images = w.root / "MUImage" / "images"
    audios = w.root / "MUImage" / "audios"
    images.mkdir(parents=True)
    audios.mkdir(parents=True)
    items: list[dict[str, Any]] = []
    test = _test_mask(n, rng)
    for i, target in enumerate(_request_targets(w.held_out, test, rng)):
        a = {"colour": INSTRUMENT_TO_COLOUR[target["instrument"]],
             "size": REGISTER_TO_SIZE[target["register"]]}
        ipath = images / f"muimage_{i:05d}.png"
        write_png(ipath, draw_image(a, rng))
        w.attributes[w.rel(ipath)] = a
        apath = audios / f"muimage_{i:05d}.wav"
        _music_clip(w, apath, target, rng)
        templates = MUIMAGE_REQUESTS_HELD_OUT if test[i] else MUIMAGE_REQUESTS
        request = fill(templates, {"tempo": target["tempo"]}, rng)
        icap = image_caption(a, rng)
        lead = None if test[i] else _lead_turn("image", a, icap, rng)
        items.append(_any_to_music(ipath.name, apath.name, "image", request, icap, a, target,
                                   lead))
        w.assign([ipath, apath], bool(test[i]))
    _json(w.root / "MUImage" / "MUImageInstructions.json", items)


def _edit_source(b: Attrs, first: int, held_out: list[Attrs], rng: np.random.Generator
                 ) -> tuple[str, Attrs]:
    """The edit's input: `b` with one attribute changed (trying attribute `first` first), never a
    held-out combination (so a training input never has one either)."""
    names = list(AUDIO_ATTRIBUTES)
    for k in range(len(names)):
        changed = names[(first + k) % len(names)]
        choices = [dict(b, **{changed: v}) for v in AUDIO_ATTRIBUTES[changed] if v != b[changed]]
        choices = [c for c in choices if c not in held_out]
        if choices:
            return changed, choices[int(rng.integers(0, len(choices)))]
    raise AssertionError(f"no edit source for {b}: every neighbour is held out")


def _muedit(w: _Writer, n: int, seed: int) -> None:
    """n pairs: input and output music differing in exactly one attribute; held-out pairs ask for
    a held-out combination."""
    rng = seeded_rng(seed, "MUEdit")
    audios = w.root / "MUEdit" / "audios"
    audios.mkdir(parents=True)
    items: list[dict[str, Any]] = []
    test = _test_mask(n, rng)
    for i, b in enumerate(_request_targets(w.held_out, test, rng)):
        changed, a = _edit_source(b, i % len(AUDIO_ATTRIBUTES), w.held_out, rng)
        src, dst = audios / f"muedit_{i:05d}_in.wav", audios / f"muedit_{i:05d}_out.wav"
        cap_in = _music_clip(w, src, a, rng)
        _music_clip(w, dst, b, rng)
        templates = EDIT_REQUESTS_HELD_OUT if test[i] else EDIT_REQUESTS
        request = fill(templates[changed], b, rng)
        lead = None if test[i] else _lead_turn("audio", a, cap_in, rng)
        items.append(_any_to_music(src.name, dst.name, "audio", request, cap_in, a, b, lead))
        w.assign([src, dst], bool(test[i]))
    _json(w.root / "MUEdit" / "MUEditInstructions.json", items)


def _musicqa(w: _Writer, n: int, seed: int) -> None:
    rng = seeded_rng(seed, "MusicQA")
    audios = w.root / "MusicQA" / "audios"
    audios.mkdir(parents=True)
    items: list[dict[str, Any]] = []
    test = _test_mask(n, rng)
    for i, a in enumerate(balanced(music_combos(w.held_out, False), n, rng)):
        path = audios / f"musicqa_{i:05d}.wav"
        caption = _music_clip(w, path, a, rng)
        asked: list[str | None] = [
            str(x) for x in rng.permutation(list(AUDIO_ATTRIBUTES))[: int(rng.integers(1, 4))]]
        conversation: list[dict[str, str]] = []
        if rng.random() < DESCRIBE_FRACTION:
            asked.append(None)
        for attr in asked:
            q, ans = understanding_turn("audio", attr, a, caption, rng)
            conversation += [{"from": "human", "value": q}, {"from": "gpt", "value": ans}]
        items.append({"audio_name": path.name, "conversation": conversation})
        w.assign([path], bool(test[i]))
    _json(w.root / "MusicQA" / "MusicQA.json", items)


def _alpaca(w: _Writer) -> None:
    folder = w.root / "Alpaca"
    folder.mkdir(parents=True)
    items = [
        {"conversation": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
        for q, a in ALPACA
    ]
    _json(folder / "alpaca_data.json", items)


def _any_to_music(
    input_file: str,
    output_file: str,
    modality: str,
    request: str,
    input_caption: str,
    basis: Attrs,
    music: Attrs,
    lead: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """One instruction item; the answer restates the input's attributes (`basis`), then writes
    the music's caption in the answer template (`data.synthetic_text.music_answer`).
    `lead`: an understanding turn (question, answer) about the input, asked first."""
    caption = music_answer_caption(music)
    answer = music_answer(basis, modality, music)
    turns: list[dict[str, str]] = []
    if lead is not None:
        turns += [{"from": "human", "value": lead[0]}, {"from": "gpt", "value": lead[1]}]
    turns += [
        {"from": "human", "value": request},
        {"from": "gpt", "value": answer, "output_modality": "audio", "caption": caption},
    ]
    turns[0].update(input_modality=modality, caption=input_caption)
    return {"input_file": input_file, "output_file": output_file, "conversation": turns}


def _lead_turn(modality: str, attrs: Attrs, caption: str, rng: np.random.Generator
               ) -> tuple[str, str] | None:
    """An understanding turn about an input for LEAD_FRACTION of the training items (None for
    the rest): a question about one of its attributes, or a request for its description."""
    if rng.random() >= LEAD_FRACTION:
        return None
    topics = list(UNDERSTANDING[modality])
    asked = topics[int(rng.integers(0, len(topics)))]
    return understanding_turn(modality, asked, attrs, caption, rng)


def generate(out: str | os.PathLike, seed: int = 0, n: int = DEFAULT_N) -> dict[str, int]:
    """Write the whole synthetic dataset below `out` (must be absent or empty).

    `n` = number of items per modality in the captioning sets (MUCaps clips, COCO images, MUVideo
    videos) and MusicQA clips; MUImage, MUVideo instructions and MUEdit get n // 2 items each (at
    least 1). MusicQA is the larger instruction set because answering questions about held-out
    clips is the hardest stage-3 skill (measured: held-out QA 0.90 with n // 2 clips).
    Returns counts of written files per kind.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    root = Path(out)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root}: exists and is not an empty folder")
    half = max(1, n // 2)
    with atomic_dir(root) as tmp:  # a crash leaves no half-written dataset behind
        w = _Writer(root=tmp, attributes={}, train=[], test=[],
                    held_out=held_out_combinations(seed))
        _mucaps(w, n, seed)
        _coco(w, n, seed)
        _muvideo(w, n, min(half, n), seed)
        _muimage(w, half, seed)
        _musicqa(w, n, seed)
        _muedit(w, half, seed)
        _alpaca(w)
        _json(tmp / "attributes.json", dict(sorted(w.attributes.items())))
        _json(tmp / "split.json", {"train": sorted(w.train), "test": sorted(w.test)})
    counts = {"wav": 0, "png": 0, "mp4": 0}
    for rel in w.attributes:
        counts[rel.rsplit(".", 1)[1]] += 1
    return counts


def dataset_digest(root: str | os.PathLike) -> str:
    """SHA-256 over every file's relative path and content hash (for determinism checks)."""
    base = Path(root)
    files = sorted(q for q in base.rglob("*") if q.is_file())
    return sha256_json({p.relative_to(base).as_posix(): sha256_file(p) for p in files})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.synthetic", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="output folder (absent or empty)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=DEFAULT_N,
                        help=f"items per modality (default {DEFAULT_N}: the size the tiny "
                             f"preset's training recipe is measured on)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        counts = generate(args.out, seed=args.seed, n=args.n)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    took = time.perf_counter() - start
    print(
        f"wrote {counts['wav']} wav, {counts['png']} png, {counts['mp4']} mp4 to {args.out} "
        f"in {took:.1f} s; digest {dataset_digest(args.out)[:16]}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
