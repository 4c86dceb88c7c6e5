"""Shared CLI of MUImage and MUVideo: caption the media, build the instruction pool, write the
instructions (the MuMu-LLaMA v2 procedure).

    python -m DataSet.muimage caption --media_dir MUImage/images --out ImageCaptions.json --model M
    python -m DataSet.muimage pool --out ImagePool.json [--writer llm --model LLM --size 500]
    python -m DataSet.muimage instruct --media_captions ImageCaptions.json \
        --music_captions MusicCaptions.json [--tags TAGS.json] [--pool ImagePool.json] \
        --out MUImage/MUImageInstructions.json [--writer llm --model LLM]
(`muvideo` alike with videos). Music captions come from `python -m DataSet.mucaps caption`.

The human turn is an instruction drawn from a pool of phrasings of "Generate a music to match
the image." (published: 500 LLM rephrasings per modality, kept when they start with "Generate"
and hold no line break, digit or parenthesis; ours: `pool`, or a built-in pool of hand-written
phrasings). It never contains the target music's caption: the model has to get the music from
the image. The draw is seeded per item. The gpt turn is "Here is a music for the image that is
..." written from the music caption, the media caption and the clip's AudioSet tags (minus the
uninformative "Music" and "Musical instrument", as published).

Media and music are paired by file stem (x.png <-> x.wav: the frame / video and the music of the
same source clip). The item's input_file is the MEDIA file and output_file the MUSIC file (the
published v1 MUImage step had them swapped). Tags (`--tags`, e.g. from `DataSet.sources
audioset --labels`) are keyed by file name or stem.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from DataSet.captioners import add_vision_captioner_args, caption_folder
from DataSet.common import Manifest, StepError, finish, open_step, run_cli, run_items
from DataSet.instructions import TEMPLATE_POOL, Request, TemplateWriter
from DataSet.writing import (
    Spec,
    add_writer_args,
    write_conversations,
    writer_from_args,
    writer_settings,
)
from util.atomic import write_json
from util.hashing import stable_int

#: AudioSet labels the published step removed before listing a clip's tags.
UNINFORMATIVE_TAGS = ("music", "musical instrument")


def _load_json_object(path: str, what: str) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise StepError(f"{path}: expected a JSON object file -> {what}")
    return data


def pair_by_stem(media: dict[str, str], music: dict[str, str]) -> tuple[list[tuple[str, str]],
                                                                        list[str]]:
    """([(media name, music name)], media names without music). Several music files with one
    stem would make the pairing ambiguous: that is an error."""
    by_stem: dict[str, str] = {}
    for name in music:
        stem = Path(name).stem
        if stem in by_stem:
            raise StepError(f"two music files share the stem {stem!r}: {by_stem[stem]}, {name}")
        by_stem[stem] = name
    pairs, unmatched = [], []
    for name in sorted(media):
        m = by_stem.get(Path(name).stem)
        if m is None:
            unmatched.append(name)
        else:
            pairs.append((name, m))
    return pairs, unmatched


def tag_text(tags: dict[str, Any], music_name: str) -> str:
    """The clip's tags joined, without the uninformative ones; "" when it has none."""
    found = tags.get(music_name, tags.get(Path(music_name).stem, []))
    if not isinstance(found, list):
        raise StepError(f"tags of {music_name!r} must be a list of strings, got {found!r}")
    return ", ".join(str(t) for t in found if str(t).strip().lower() not in UNINFORMATIVE_TAGS)


def draw(pool: Sequence[str], key: str, seed: int) -> str:
    """The pool entry of an item: a seeded draw that depends on nothing but the item."""
    return pool[stable_int(f"{seed}:{key}") % len(pool)]


def specs_for(modality: str, media_caps: dict[str, str], music_caps: dict[str, str],
              pool: Sequence[str], tags: dict[str, Any], seed: int
              ) -> tuple[list[tuple[str, Spec]], list[str]]:
    pairs, unmatched = pair_by_stem(media_caps, music_caps)
    specs = []
    for media_name, music_name in pairs:
        mc, uc = media_caps[media_name].strip(), music_caps[music_name].strip()
        fields = {"modality": modality, "Modality": modality.capitalize(), "music": uc,
                  "vision": mc, "tags": tag_text(tags, music_name)}
        specs.append((media_name, Spec(
            input_file=media_name, output_file=music_name, input_modality=modality,
            input_caption=mc, output_caption=uc, human=draw(pool, media_name, seed),
            gpt=Request(f"{modality}:{media_name}:gpt", "response", fields))))
    return specs, unmatched


def load_pool(path: str | None, modality: str) -> list[str]:
    if path is None:
        return [p.format(m=modality) for p in TEMPLATE_POOL]
    data = _load_json_object(path, "pool")
    if data.get("modality") != modality or not data.get("instructions"):
        raise StepError(f"{path}: not a {modality} instruction pool (or an empty one)")
    return [str(x) for x in data["instructions"]]


def _instruct(modality: str, args: argparse.Namespace) -> int:
    pool = load_pool(args.pool, modality)
    tags = _load_json_object(args.tags, "tags") if args.tags else {}
    specs, unmatched = specs_for(modality, _load_json_object(args.media_captions, "caption"),
                                 _load_json_object(args.music_captions, "caption"), pool, tags,
                                 args.seed)
    if not specs:
        raise StepError("no media file has a music file of the same stem")
    writer = writer_from_args(args)
    settings = {**writer_settings(args, writer, ["response"]), "pool": pool,
                "media_captions": args.media_captions, "music_captions": args.music_captions,
                "tags": args.tags}
    report, items = write_conversations(
        f"{modality}-instruct", specs, Path(args.out), writer, settings=settings,
        batch_size=args.batch_size, seed=args.seed, restart=args.restart,
        retry_failed=args.retry_failed, show_progress=not args.no_progress)
    for name in unmatched:  # listed, never silently dropped
        report.failures[name] = "no music file with the same stem"
        report.total += 1
    print(f"{len(items)} instructions -> {args.out}", file=sys.stderr)
    return finish(report)


def _pool(modality: str, args: argparse.Namespace) -> int:
    """Write the pool: the built-in phrasings, or `--size` LLM rephrasings kept when they pass
    the published filters (rejected ones are listed as failures)."""
    out = Path(args.out)
    writer = writer_from_args(args)
    size = len(TEMPLATE_POOL) if isinstance(writer, TemplateWriter) else args.size
    manifest = Manifest(out.stem, {**writer_settings(args, writer, ["pool"]), "size": size,
                                   "modality": modality}, [writer.identity], seed=args.seed)
    progress = open_step(manifest, out.parent, restart=args.restart)
    items = [(f"{modality}:{i}", Request(f"pool:{modality}:{i}", "pool",
                                         {"modality": modality, "index": i}))
             for i in range(size)]
    report = run_items("pool", items, writer.write, progress, batch_size=args.batch_size,
                       retry_failed=args.retry_failed, show_progress=not args.no_progress)
    texts = list(dict.fromkeys(progress.done[k] for k, _ in items if k in progress.done))
    write_json(out, {"modality": modality, "instructions": texts})
    print(f"{len(texts)} distinct instructions -> {out}", file=sys.stderr)
    if not texts:
        raise StepError("no instruction passed the filters")
    return finish(report)


def build_parser(modality: str) -> argparse.ArgumentParser:
    ds = "muimage" if modality == "image" else "muvideo"
    ap = argparse.ArgumentParser(prog=f"python -m DataSet.{ds}", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("caption", help=f"caption every {modality} of a folder")
    c.add_argument("--media_dir", required=True)
    c.add_argument("--out", required=True, help="caption JSON {file: caption}")
    add_vision_captioner_args(c)
    c.set_defaults(func=lambda a: finish(caption_folder(modality, a)))
    p = sub.add_parser("pool", help="the pool of instructions the human turns are drawn from")
    p.add_argument("--out", required=True, help="pool JSON {modality, instructions}")
    p.add_argument("--size", type=int, default=500, help="LLM rephrasings to generate")
    add_writer_args(p)
    p.set_defaults(func=lambda a: _pool(modality, a))
    title = "MUImage" if modality == "image" else "MUVideo"
    i = sub.add_parser("instruct", help=f"write the {title} instruction JSON")
    i.add_argument("--media_captions", required=True)
    i.add_argument("--music_captions", required=True)
    i.add_argument("--tags", help="JSON {music file or stem: [AudioSet labels]}")
    i.add_argument("--pool", help="pool JSON from `pool` (default: the built-in phrasings)")
    i.add_argument("--out", required=True)
    add_writer_args(i)
    i.set_defaults(func=lambda a: _instruct(modality, a))
    return ap


def main(modality: str, argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(modality), argv)
