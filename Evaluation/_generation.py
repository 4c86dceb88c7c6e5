"""The `generate` verb of the evaluation CLIs: run an M2UGen checkpoint over a reference set,
row by row, resumable (rows already in --out are skipped), saving atomically every batch."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

from Evaluation._common import EvalInputError, fail


def add_generate_parser(sub, run: Callable, media_help: str) -> argparse.ArgumentParser:
    g = sub.add_parser("generate", help="run a model over the references, write predictions")
    g.add_argument("--model", default=None,
                   help="trained checkpoint folder (OUT/stageN); omitted: --preset random weights")
    g.add_argument("--preset", default="tiny", help="preset when --model is omitted")
    g.add_argument("--references", required=True)
    g.add_argument("--media_dir", required=True, help=media_help)
    g.add_argument("--out", required=True, help="prediction file (resumed if it exists)")
    g.add_argument("--batch_size", type=int, default=10, help="rows between atomic saves")
    # published generation settings (MU-LLaMA / M2UGen demo): top_p 0.8, temperature 0.6, 512
    g.add_argument("--max_new_tokens", type=int, default=512)
    g.add_argument("--temperature", type=float, default=0.6)
    g.add_argument("--top_p", type=float, default=0.8)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cpu")
    g.set_defaults(run=run)
    return g


def _load_model(args: argparse.Namespace):
    import torch

    from llama.m2ugen import M2UGen

    torch.manual_seed(args.seed)
    return M2UGen.from_pretrained(args.model, preset=args.preset, device=args.device,
                                  load_decoder=False).eval()


def _save(path: Path, preds: dict) -> None:
    from util.atomic import write_text

    write_text(path, json.dumps(preds, indent=1, ensure_ascii=False))


def run_musicqa_generation(args: argparse.Namespace) -> int:
    """Answer every EvalMusicQA row; writes {audio_name: {question: answer}}."""
    from tqdm.auto import tqdm

    from data.media import MediaError, load_audio
    from Evaluation.musicqa import load_references
    from llama.m2ugen import GenerationSettings, MediaInput

    try:
        rows = load_references(args.references)
    except EvalInputError as exc:
        return fail(str(exc))
    out = Path(args.out)
    preds: dict[str, dict[str, str]] = json.loads(out.read_text()) if out.is_file() else {}
    todo = [r for r in rows if r.question not in preds.get(r.audio, {})]
    media = Path(args.media_dir)
    absent = [r.audio for r in todo if not (media / r.audio).is_file()]
    if absent:
        return fail(f"{len(absent)} audio files named in {args.references} are missing from "
                    f"{media} (first: {', '.join(sorted(set(absent))[:5])})")
    model = _load_model(args)
    sr = model.cfg.mert.sample_rate
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                  top_p=args.top_p, seed=args.seed)
    done = 0
    for r in tqdm(todo, desc="musicqa", unit="row", initial=len(rows) - len(todo), total=len(rows)):
        try:
            wave = load_audio(media / r.audio, sr)
        except MediaError as exc:
            _save(out, preds)
            return fail(f"{media / r.audio}: {exc}")
        reply = model.chat(r.question, media=MediaInput(audio=wave), settings=settings,
                           want_music=False)
        preds.setdefault(r.audio, {})[r.question] = reply.text
        done += 1
        if done % args.batch_size == 0:
            _save(out, preds)
    _save(out, preds)
    print(f"wrote {out}: {done} new rows, {len(rows) - len(todo)} already present")
    return 0
