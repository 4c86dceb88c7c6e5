"""Is a checkpoint's multimodal path alive? How much do the media change its answers?

    python -m Evaluation.sensitivity --model ckpts/M2UGen-MusicGen/checkpoint.pth \\
        --llama_dir ckpts/LLaMA-2 --data_root data/        # or --audio a.wav b.wav --image x.png

For every media item the same prompt is run three ways: with the item, without media, and with
another item of the same modality swapped in. Reported per item: KL(with || without) and total
variation of the next-token distribution at the answer's first position, their mean over the
greedy answer (teacher-forced, so every position is compared on the same prefix), and whether
the greedy answer changed (removed / swapped). All zeros mean the media cannot influence the
model, which is what the released checkpoints' zero adapter gates imply. Works on our checkpoint
folders, released checkpoint.pth files and imported releases (model flags as inference.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from app import args as app_args
from app.errors import InputError, bad_input_errors, fail
from app.loading import choose_model, load_model

PROG = "python -m Evaluation.sensitivity"
MODALITIES = ("audio", "image", "video")


def build_parser() -> argparse.ArgumentParser:
    p = app_args.OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    app_args.add_model_arguments(p)
    p.add_argument("--data_root", default=None, help="folder searched for media files")
    for m in MODALITIES:
        p.add_argument(f"--{m}", nargs="*", default=[], help=f"{m} files")
    p.add_argument("--per_modality", type=int, default=4, help="items per modality from data_root")
    p.add_argument("--prompt", default="Describe this input in detail.")
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    return p


def _items(args: argparse.Namespace, engine: Any) -> dict[str, list[str]]:
    from data.features import discover_media

    items = {m: [str(x) for x in getattr(args, m)] for m in MODALITIES}
    if args.data_root:
        for m in MODALITIES:
            if not items[m]:
                items[m] = [str(x) for x in discover_media(args.data_root, m)[: args.per_modality]]
    accepted = engine.model.cfg.chat_style.modalities  # a release may refuse some media
    return {m: v for m, v in items.items() if v and m in accepted}


def _dists(model, ids: list[int], answer: list[int], feats) -> torch.Tensor:
    """Next-token log-probabilities at the answer's positions (first = after the prompt)."""
    tokens = torch.tensor([ids + answer], device=model.device_)
    with torch.no_grad():
        logits = model.backbone(tokens, modality_features=feats)[0].float()
    return torch.log_softmax(logits[len(ids) - 1: len(ids) - 1 + max(len(answer), 1)], dim=-1)


def _compare(p: torch.Tensor, q: torch.Tensor) -> tuple[float, float, float, float]:
    """(KL first, TV first, KL mean, TV mean) of log-prob rows p (reference) and q."""
    kl = (p.exp() * (p - q)).sum(-1).clamp_min(0)
    tv = 0.5 * (p.exp() - q.exp()).abs().sum(-1)
    return float(kl[0]), float(tv[0]), float(kl.mean()), float(tv.mean())


def _greedy(model, ids: list[int], feats, n: int) -> list[int]:
    """The greedy answer, ended as the model's chat style says (the one decoding loop)."""
    from llama.chat import answer_ids

    return answer_ids(model, ids, feats, n)


def measure(engine: Any, items: dict[str, list[str]], prompt: str, max_new_tokens: int
            ) -> list[dict[str, Any]]:
    """One row per media item (see the module docstring)."""
    model = engine.model
    ids, _ = model.build_prompt(prompt, [], max_new_tokens)
    none_answer = _greedy(model, ids, None, max_new_tokens)
    rows = []
    for modality, paths in items.items():
        feats = [model.media_vector(engine.media_input({modality: p})) for p in paths]
        for i, path in enumerate(paths):
            answer = _greedy(model, ids, feats[i], max_new_tokens)
            ref = _dists(model, ids, answer, feats[i])
            row: dict[str, Any] = {"modality": modality, "item": Path(path).name}
            kl, tv, kl_m, tv_m = _compare(ref, _dists(model, ids, answer, None))
            row.update(removed_kl_first=kl, removed_tv_first=tv, removed_kl_mean=kl_m,
                       removed_tv_mean=tv_m, removed_answer_changed=answer != none_answer)
            if len(paths) > 1:
                j = (i + 1) % len(paths)
                other = _greedy(model, ids, feats[j], max_new_tokens)
                kl, tv, kl_m, tv_m = _compare(ref, _dists(model, ids, answer, feats[j]))
                row.update(swapped_kl_first=kl, swapped_tv_first=tv, swapped_kl_mean=kl_m,
                           swapped_tv_mean=tv_m, swapped_answer_changed=answer != other)
            rows.append(row)
    return rows


def _print_table(rows: list[dict[str, Any]]) -> None:
    cols = ["removed_kl_first", "removed_tv_first", "removed_kl_mean", "removed_answer_changed",
            "swapped_kl_first", "swapped_tv_first", "swapped_kl_mean", "swapped_answer_changed"]
    print("| modality | item | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    for r in rows:
        vals = [r.get(c, "-") for c in cols]
        shown = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in vals]
        print(f"| {r['modality']} | {r['item']} | " + " | ".join(shown) + " |")
    alive = any(r["removed_tv_first"] > 0 for r in rows)
    print("media influence the answer: " + ("yes" if alive else "NO (multimodal path inert)"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        choice = choose_model(args)
        engine = load_model(choice)
        items = _items(args, engine)
        if not items:
            raise InputError("no media: give --data_root or --audio/--image/--video")
        rows = measure(engine, items, args.prompt, args.max_new_tokens)
    except bad_input_errors() as err:
        return fail(PROG, err)
    if args.json:
        print(json.dumps({"rows": rows}))
    else:
        _print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
