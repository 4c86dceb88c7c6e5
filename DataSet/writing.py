"""The last step of MUImage / MUVideo / MUEdit: conversations in the any-to-music schema.

Every item becomes exactly what `data` parses for stage 3 (`parse_any_to_music`):

    {"input_file": <name under the input media folder>, "output_file": <name under audios/>,
     "conversation": [
        {"from": "human", "value": instruction, "input_modality": m, "caption": input caption},
        {"from": "gpt", "value": answer, "output_modality": "audio", "caption": music caption}]}

The gpt turn's "caption" is the music target (its decoder embedding is the training target), so
it is always the caption of the OUTPUT music. Texts come from a writer (`DataSet.instructions`):
LLM or templates; fixed texts (e.g. exact speed edits) are passed through. Resumable per item.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from DataSet.common import (
    ItemError,
    StepError,
    Manifest,
    StepReport,
    add_common_args,
    open_step,
    run_items,
    torch_dtype,
)
from DataSet.instructions import Request, TemplateWriter, make_writer
from util.atomic import write_json


@dataclass
class Spec:
    """One conversation to write: a text is either fixed (str) or to be written (Request)."""

    input_file: str
    output_file: str
    input_modality: str
    input_caption: str
    output_caption: str
    human: str | Request
    gpt: str | Request


def conversation_item(spec: Spec, human: str, gpt: str) -> dict[str, Any]:
    return {
        "input_file": spec.input_file,
        "output_file": spec.output_file,
        "conversation": [
            {"from": "human", "value": human, "input_modality": spec.input_modality,
             "caption": spec.input_caption},
            {"from": "gpt", "value": gpt, "output_modality": "audio",
             "caption": spec.output_caption},
        ],
    }


def write_conversations(
    step: str,
    specs: Sequence[tuple[str, Spec]],
    out: Path,
    writer: Any,
    *,
    settings: dict[str, Any],
    batch_size: int = 8,
    seed: int = 0,
    restart: bool = False,
    retry_failed: bool = False,
    show_progress: bool = True,
) -> tuple[StepReport, list[dict]]:
    """Write every spec (keyed), then the final JSON list `out` in key order."""
    manifest = Manifest(step=out.stem, settings=settings, models=[writer.identity], seed=seed)
    progress = open_step(manifest, out.parent, restart=restart)

    def work(batch: Sequence[Spec]) -> list[Any]:
        requests = [t for s in batch for t in (s.human, s.gpt) if isinstance(t, Request)]
        written = dict(zip((id(r) for r in requests), writer.write(requests))) if requests else {}

        def text(t: str | Request) -> Any:
            return t if isinstance(t, str) else written[id(t)]

        results: list[Any] = []
        for s in batch:
            h, g = text(s.human), text(s.gpt)
            bad = next((x for x in (h, g) if isinstance(x, Exception)), None)
            results.append(bad if bad is not None else conversation_item(s, h, g))
        return results

    report = run_items(step, specs, work, progress, batch_size=batch_size,
                       retry_failed=retry_failed, show_progress=show_progress)
    items = [progress.done[k] for k, _ in specs if k in progress.done]
    write_json(out, items)
    return report, items


def lookup_caption(captions: dict[str, str], name: str) -> str:
    """Caption of a file by its relative name, else by its base name (caption files of the
    published pipelines are keyed by base name)."""
    for key in (name, Path(name).name):
        cap = captions.get(key)
        if isinstance(cap, str) and cap.strip():
            return cap.strip()
    raise ItemError(f"no caption for {name!r}")


def add_writer_args(p: argparse.ArgumentParser, default: str = "template") -> None:
    p.add_argument("--writer", default=default, choices=["template", "llm"],
                   help=f"who writes the texts (default: {default})")
    p.add_argument("--model", help="chat LLM for --writer llm: hub id or local folder")
    p.add_argument("--retries", type=int, default=3)
    for name, kind in (("temperature", float), ("top_p", float), ("top_k", int),
                       ("repetition_penalty", float), ("max_new_tokens", int)):
        p.add_argument(f"--{name}", type=kind, default=None,
                       help="default: what the published script used for the task")
    add_common_args(p, models=True)


def writer_from_args(args: argparse.Namespace) -> Any:
    from DataSet.common import apply_offline

    if args.writer == "template":
        return TemplateWriter()
    apply_offline(args)
    overrides = {k: getattr(args, k) for k in ("temperature", "top_p", "top_k",
                                               "repetition_penalty", "max_new_tokens")}
    try:
        return make_writer("llm", args.model, device=args.device, dtype=torch_dtype(args.dtype),
                           overrides=overrides, retries=args.retries, seed=args.seed,
                           allow_random_weights=args.allow_random_weights)
    except ValueError as e:
        raise StepError(str(e)) from e


def writer_settings(args: argparse.Namespace, writer: Any, tasks: Sequence[str]
                    ) -> dict[str, Any]:
    """The writer part of a manifest: the model as named and the sampling of every task."""
    return {"model": args.model if args.writer == "llm" else None, **writer.settings(tasks)}
