"""MusicQA: question-answer pairs about music clips, written by a chat LLM from their captions
or tags (the published procedure, MU-LLaMA `MusicQA/*_process.py` with MPT-7B-chat).

    python -m DataSet.musicqa write --captions CAPS.json [--tags TAGS.json] --out MusicQA.json \
        --model LLM                        # the LLM route (default)
    python -m DataSet.musicqa write ... --writer template [--questions_per_clip N]

Per clip, as published: the LLM answers the four captioning questions ("Describe the audio",
...) in one numbered list from the clip's description, then writes five questions of its own
(tempo, mood, instruments, inference, ...) with long-form answers ("N. question" / "Answer:"
lines); an answer that does not parse is sampled again (`--retries`, published: 5 attempts).
The description is the caption, else the clip's tags joined (the MTT / MTG variant of the
prompts). The template writer (`--writer template`) needs no model: it restates the description
as the answer to every question (the four captioning ones and N from a fixed bank); it is for
offline tests, not for a dataset anyone should train on.

Output, the published schema: [{"audio_name": file, "conversation": [{"from": "human",
"value": q}, {"from": "gpt", "value": a}]}, ...], one item per question.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from DataSet.common import Manifest, StepError, finish, open_step, run_cli, run_items
from DataSet.instructions import QUESTION_BANK, Request
from DataSet.prompts import CAPTION_QUESTIONS
from DataSet.writing import add_writer_args, writer_from_args, writer_settings
from util.atomic import write_json

OPEN_QUESTIONS = 5  # what the published prompt asks for


def descriptions(captions: dict[str, Any], tags: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """File -> (source, description): the caption, else the tags joined."""
    out = {k: ("caption", v.strip()) for k, v in captions.items()
           if isinstance(v, str) and v.strip()}
    for k, v in tags.items():
        if k not in out and isinstance(v, list) and v:
            out[k] = ("tags", ", ".join(str(t) for t in v))
    return out


def qa_item(name: str, question: str, answer: str) -> dict[str, Any]:
    return {"audio_name": name, "conversation": [{"from": "human", "value": question.strip()},
                                                 {"from": "gpt", "value": answer.strip()}]}


def _main(args: argparse.Namespace) -> int:
    caps = json.loads(Path(args.captions).read_text(encoding="utf-8")) if args.captions else {}
    tags = json.loads(Path(args.tags).read_text(encoding="utf-8")) if args.tags else {}
    if not isinstance(caps, dict) or not isinstance(tags, dict):
        raise StepError("--captions and --tags must be JSON objects keyed by file name")
    desc = descriptions(caps, tags)
    if not desc:
        raise StepError("no clip has a caption or tags")
    if args.writer == "llm" and not args.model:
        raise StepError("MusicQA answers are written by a chat LLM (published: MPT-7B-chat): "
                        "pass --model HUB_ID_OR_FOLDER, or --writer template for offline "
                        "placeholder answers that restate the caption")
    n_open = (OPEN_QUESTIONS if args.writer == "llm"
              else max(0, min(args.questions_per_clip, len(QUESTION_BANK))))
    writer = writer_from_args(args)
    sources = sorted({s for s, _ in desc.values()})
    tasks = [f"qa_{kind}_{s}" for s in sources for kind in ("caption", "open")]
    manifest = Manifest(Path(args.out).stem, {**writer_settings(args, writer, tasks),
                                              "open_questions": n_open}, [writer.identity],
                        seed=args.seed)
    progress = open_step(manifest, Path(args.out).parent, restart=args.restart)

    def work(names: Sequence[str]) -> list[Any]:
        reqs = []
        for n in names:
            source, text = desc[n]
            fields = {"description": text, "n": n_open}
            reqs += [Request(f"musicqa:{n}:caption", f"qa_caption_{source}", fields),
                     Request(f"musicqa:{n}:open", f"qa_open_{source}", fields)]
        written = writer.write(reqs)
        out: list[Any] = []
        for i, n in enumerate(names):
            answers, open_qa = written[2 * i], written[2 * i + 1]
            bad = next((x for x in (answers, open_qa) if isinstance(x, Exception)), None)
            out.append(bad if bad is not None else
                       [qa_item(n, q, a) for q, a in zip(CAPTION_QUESTIONS, answers)]
                       + [qa_item(n, q, a) for q, a in open_qa[:n_open]])
        return out

    items = [(name, name) for name in sorted(desc)]
    report = run_items("musicqa", items, work, progress, batch_size=args.batch_size,
                       retry_failed=args.retry_failed, show_progress=not args.no_progress)
    out = [qa for k, _ in items if k in progress.done for qa in progress.done[k]]
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
    w.add_argument("--questions_per_clip", type=int, default=OPEN_QUESTIONS,
                   help="template writer: bank questions per clip beyond the four captioning "
                        "ones (the LLM writes five, as published)")
    add_writer_args(w, default="llm")
    w.set_defaults(retries=4)  # five attempts, as the published script allowed
    w.set_defaults(func=_main)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
