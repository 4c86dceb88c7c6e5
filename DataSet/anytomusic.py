"""Shared CLI of MUImage and MUVideo: caption the media, then write the instructions.

    python -m DataSet.muimage caption --media_dir MUImage/images --out ImageCaptions.json --model M
    python -m DataSet.muimage instruct --media_captions ImageCaptions.json \
        --music_captions MusicCaptions.json --out MUImage/MUImageInstructions.json
(`muvideo` alike with videos). Music captions come from `python -m DataSet.mucaps caption`.

Media and music are paired by file stem (x.png <-> x.wav: the frame / video and the music of the
same source clip, as the published pipelines cut them from one AudioSet video). The instruction
item's input_file is the MEDIA file and output_file the MUSIC file (the published MUImage step
had them swapped).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from DataSet.captioners import add_vision_captioner_args, caption_folder
from DataSet.common import StepError, finish, run_cli
from DataSet.instructions import Request
from DataSet.writing import (
    Spec,
    add_writer_args,
    write_conversations,
    writer_from_args,
    writer_settings,
)


def _load_captions(path: str) -> dict[str, str]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise StepError(f"{path}: expected a JSON object file -> caption")
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


def specs_for(modality: str, media_caps: dict[str, str], music_caps: dict[str, str]
              ) -> tuple[list[tuple[str, Spec]], list[str]]:
    tag = "muimage" if modality == "image" else "muvideo"
    label = modality.capitalize()
    pairs, unmatched = pair_by_stem(media_caps, music_caps)
    specs = []
    for media_name, music_name in pairs:
        mc, uc = media_caps[media_name].strip(), music_caps[music_name].strip()
        context = f"Music: {uc}\n{label}: {mc}"
        specs.append((media_name, Spec(
            input_file=media_name, output_file=music_name, input_modality=modality,
            input_caption=mc, output_caption=uc,
            human=Request(f"{tag}:{media_name}:human", f"{tag}_human", context),
            gpt=Request(f"{tag}:{media_name}:gpt", f"{tag}_gpt", context))))
    return specs, unmatched


def _instruct(modality: str, args: argparse.Namespace) -> int:
    specs, unmatched = specs_for(modality, _load_captions(args.media_captions),
                                 _load_captions(args.music_captions))
    if not specs:
        raise StepError("no media file has a music file of the same stem")
    writer = writer_from_args(args)
    settings = {**writer_settings(args), "media_captions": args.media_captions,
                "music_captions": args.music_captions}
    report, items = write_conversations(
        f"{modality}-instruct", specs, Path(args.out), writer, settings=settings,
        batch_size=args.batch_size, seed=args.seed, restart=args.restart,
        retry_failed=args.retry_failed, show_progress=not args.no_progress)
    for name in unmatched:  # listed, never silently dropped
        report.failures[name] = "no music file with the same stem"
        report.total += 1
    print(f"{len(items)} instructions -> {args.out}", file=sys.stderr)
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
    title = "MUImage" if modality == "image" else "MUVideo"
    i = sub.add_parser("instruct", help=f"write the {title} instruction JSON")
    i.add_argument("--media_captions", required=True)
    i.add_argument("--music_captions", required=True)
    i.add_argument("--out", required=True)
    add_writer_args(i)
    i.set_defaults(func=lambda a: _instruct(modality, a))
    return ap


def main(modality: str, argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(modality), argv)
