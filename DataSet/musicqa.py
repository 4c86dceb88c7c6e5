"""MusicQA: question-answer pairs about music clips, written from their captions or tags.

    python -m DataSet.musicqa write --captions CAPS.json [--tags TAGS.json] --out MusicQA.json \
        [--writer llm --model LLM] [--questions_per_clip N]

Per clip: the four published captioning questions ("Describe the audio", ...) and N questions
from a fixed bank about tempo, mood, instruments, genre and use, each answered by the writer
from the clip's description (its caption, else its tags joined). Output, the published schema:
[{"audio_name": file, "conversation": [{"from": "human", "value": q},
{"from": "gpt", "value": a}]}, ...] (one item per question, as published).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from DataSet.common import Manifest, StepError, finish, open_step, run_cli, run_items
from DataSet.instructions import Request
from DataSet.writing import add_writer_args, writer_from_args, writer_settings
from util.atomic import write_json
from util.hashing import stable_int

#: The published captioning questions (MusicQA generate_dataset.py).
CAPTION_QUESTIONS = ("Describe the audio", "Describe the audio in detail",
                     "What do you hear in the audio?", "What can be inferred from the audio?")
QUESTION_BANK = ("What is the tempo of the music?", "What mood does the music convey?",
                 "Which instruments can be heard in the music?", "What genre is this music?",
                 "Where could this music be used?", "Is the music fast or slow?",
                 "How would you describe the melody?", "What is the overall feeling of the piece?")


def descriptions(captions: dict[str, Any], tags: dict[str, Any]) -> dict[str, str]:
    """File -> description: the caption, else the tags joined ("tags: a, b, c")."""
    out = {k: v.strip() for k, v in captions.items() if isinstance(v, str) and v.strip()}
    for k, v in tags.items():
        if k not in out and isinstance(v, list) and v:
            out[k] = "tags: " + ", ".join(str(t) for t in v)
    return out


def questions_for(name: str, n_extra: int) -> list[str]:
    start = stable_int(name) % len(QUESTION_BANK)
    extra = [QUESTION_BANK[(start + i) % len(QUESTION_BANK)] for i in range(n_extra)]
    return list(CAPTION_QUESTIONS) + extra


def _main(args: argparse.Namespace) -> int:
    caps = json.loads(Path(args.captions).read_text(encoding="utf-8")) if args.captions else {}
    tags = json.loads(Path(args.tags).read_text(encoding="utf-8")) if args.tags else {}
    if not isinstance(caps, dict) or not isinstance(tags, dict):
        raise StepError("--captions and --tags must be JSON objects keyed by file name")
    desc = descriptions(caps, tags)
    if not desc:
        raise StepError("no clip has a caption or tags")
    n_extra = min(args.questions_per_clip, len(QUESTION_BANK))
    items = [(f"{name}#{i}", (name, q)) for name in sorted(desc)
             for i, q in enumerate(questions_for(name, n_extra))]
    writer = writer_from_args(args)
    manifest = Manifest(Path(args.out).stem, {**writer_settings(args), "n_extra": n_extra},
                        [writer.identity], seed=args.seed)
    progress = open_step(manifest, Path(args.out).parent, restart=args.restart)

    def work(batch: Sequence[tuple[str, str]]) -> list[Any]:
        reqs = [Request(f"musicqa:{n}:{q}", "musicqa_answer",
                        f"Description: {desc[n]}\nQuestion: {q}") for n, q in batch]
        answers = writer.write(reqs)
        return [a if isinstance(a, Exception) else
                {"audio_name": n, "conversation": [{"from": "human", "value": q},
                                                   {"from": "gpt", "value": a}]}
                for (n, q), a in zip(batch, answers)]

    report = run_items("musicqa", items, work, progress, batch_size=args.batch_size,
                       retry_failed=args.retry_failed, show_progress=not args.no_progress)
    out = [progress.done[k] for k, _ in items if k in progress.done]
    write_json(Path(args.out), out)
    print(f"{len(out)} question-answer items -> {args.out}", file=sys.stderr)
    return finish(report)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m DataSet.musicqa", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write MusicQA.json from captions / tags")
    w.add_argument("--captions", help="caption JSON {file: caption}")
    w.add_argument("--tags", help="tag JSON {file: [tag, ...]}")
    w.add_argument("--out", required=True)
    w.add_argument("--questions_per_clip", type=int, default=2,
                   help="questions from the bank, beyond the four captioning ones")
    add_writer_args(w)
    w.set_defaults(func=_main)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
