"""MuChoMusic (ISMIR 2024, arXiv 2408.01337): multiple-choice music understanding.

    python -m Evaluation.muchomusic prepare --csv muchomusic.csv --audio_dir DIR --out Q.json \
        [--seed 0] [--distractors incorrect_but_related,correct_but_unrelated,...]
    python -m Evaluation.muchomusic generate --data Q.json --audio_dir DIR --out P.jsonl \
        [--media_control none|silence|noise|shuffled] [model flags: --model --preset ...]
    python -m Evaluation.muchomusic score --data Q.json --predictions P.jsonl \
        [--control_predictions silence=S.jsonl,noise=N.jsonl,shuffled=X.jsonl] [--allow_missing]

`prepare` builds the benchmark's rows as its `prepare_prompts.py` does (one-shot example, (A)-(D)
options, all three distractors), options shuffled from --seed; each row keeps `question_id`.
`generate` writes one JSON line {"question_id", "output"} per row (resumable). `score` extracts
answers as the benchmark's `scoring.py` does and prints one JSON object. docs/EVALUATION.md says
what each number is comparable with.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

from Evaluation._common import EvalInputError, fail, print_json, read_json
from Evaluation.media_effect import DEFINITION as MEDIA_EFFECT_DEFINITION
from Evaluation.media_effect import control_effect, parse_control_predictions
from Evaluation.muchomusic_prompts import DISTRACTORS, prepare
from Evaluation.muchomusic_scoring import score_rows

ROW_FIELDS = ("question_id", "prompt", "answers", "answer_orders", "genre", "reasoning",
              "knowledge", "audio_path")
SHOW = 5

DEFINITIONS = {
    "accuracy": "share of rows whose extracted choice is the correct option (unanswered rows "
                "count as wrong), the benchmark's scoring.py",
    "ifr": "instruction-following rate: 1 - share of rows from which no option could be "
           "extracted (the published evaluate.py's IFR)",
    "knowledge.overall": "accuracy over the rows with a music-knowledge category",
    "knowledge.by_dimension": "accuracy over the rows tagged with that knowledge category",
    "reasoning.overall": "accuracy over the rows with a music-reasoning category",
    "reasoning.by_dimension": "accuracy over the rows tagged with that reasoning category",
    "by_genre": "accuracy over the rows of that genre (rows without a genre are in no genre)",
    "chance": "expected accuracy of a uniform random choice (1 / number of options, averaged)",
    "choice_counts": "how often each letter was extracted (a position bias shows here)",
    "media_effect": MEDIA_EFFECT_DEFINITION + "; metric: accuracy (per row 1 = correct)",
    "identical_choices": "per control: share of rows whose extracted option is unchanged",
}


# ---------------------------------------------------------------------------------------------
# Files


def load_rows(path: str | Path) -> list[dict]:
    """Prepared rows (the published JSON list plus question_id), checked field by field."""
    data = read_json(path, "MuChoMusic data")
    if not isinstance(data, list) or not data:
        raise EvalInputError(f"MuChoMusic data {path}: expected a non-empty JSON list of rows "
                             "(written by prepare)")
    seen = set()
    for i, row in enumerate(data):
        absent = [k for k in ROW_FIELDS if not isinstance(row, dict) or k not in row]
        if absent:
            raise EvalInputError(f"MuChoMusic data {path} row {i}: missing {absent}")
        order, answers = row["answer_orders"], row["answers"]
        if (not isinstance(answers, list) or not isinstance(order, list)
                or sorted(order) != list(range(len(answers))) or len(answers) < 2):
            raise EvalInputError(f"MuChoMusic data {path} row {i}: answer_orders must be a "
                                 "permutation of the answers' positions")
        key = _key(row["question_id"])
        if key in seen:
            raise EvalInputError(f"MuChoMusic data {path}: question_id {key} repeated")
        seen.add(key)
    return data


def _key(question_id: Any) -> str:
    """Predictions are matched on the id's JSON text (12 and "12" are different ids)."""
    return json.dumps(question_id)


def load_predictions(path: str | Path) -> dict[str, str]:
    """{question_id key: output} from a JSON-lines file of {"question_id", "output"}."""
    p = Path(path)
    if not p.is_file():
        raise EvalInputError(f"predictions file {p} does not exist")
    out: dict[str, str] = {}
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalInputError(f"predictions {p} line {n}: not JSON ({exc})") from exc
        if not isinstance(item, dict) or "question_id" not in item \
                or not isinstance(item.get("output"), str):
            raise EvalInputError(f"predictions {p} line {n}: expected {{\"question_id\", "
                                 "\"output\": string}")
        key = _key(item["question_id"])
        if key in out:
            raise EvalInputError(f"predictions {p} line {n}: question_id {key} repeated")
        out[key] = item["output"]
    return out


def _write_jsonl(path: Path, lines: list[dict]) -> None:
    from util.atomic import write_text

    write_text(path, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))


# ---------------------------------------------------------------------------------------------
# prepare


def _prepare_main(args: argparse.Namespace) -> int:
    from util.atomic import write_text

    distractors = [d.strip() for d in args.distractors.split(",") if d.strip()]
    try:
        rows, missing = prepare(args.csv, args.audio_dir, args.seed, distractors)
    except EvalInputError as exc:
        return fail(str(exc))
    write_text(Path(args.out), json.dumps(rows, indent=1, ensure_ascii=False))
    print(f"wrote {args.out}: {len(rows)} rows, {len(rows[0]['answers'])} options each, "
          f"seed {args.seed}")
    if missing:
        print(f"warning: {len(missing)} of {len(rows)} audio files are not under "
              f"{args.audio_dir} (first: {', '.join(missing[:SHOW])}); generate needs them",
              file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------
# generate


def _generate_main(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from app.errors import bad_input_errors, one_line
    from Evaluation._generation import load_engine, media_control_for, settings_for

    audio_dir = Path(args.audio_dir)
    out = Path(args.out)
    try:
        rows = load_rows(args.data)
        done = load_predictions(out) if out.is_file() else {}
    except EvalInputError as exc:
        return fail(str(exc))
    lines = [{"question_id": r["question_id"], "output": done[_key(r["question_id"])]}
             for r in rows if _key(r["question_id"]) in done]
    todo = [r for r in rows if _key(r["question_id"]) not in done]
    absent = sorted({r["audio_path"] for r in todo if not (audio_dir / r["audio_path"]).is_file()})
    if absent:
        return fail(f"{len(absent)} audio files named in {args.data} are missing from "
                    f"{audio_dir} (first: {', '.join(absent[:SHOW])})")
    try:
        engine = load_engine(args)
        settings = settings_for(engine, args)
        control = media_control_for(args, engine,
                                    [{"audio": str(audio_dir / r["audio_path"])} for r in rows])
    except (EvalInputError, *bad_input_errors()) as exc:
        return fail(one_line(exc))
    new = 0
    for r in tqdm(todo, desc="muchomusic", unit="row", initial=len(rows) - len(todo),
                  total=len(rows)):
        path = str(audio_dir / r["audio_path"])
        try:
            media = control.apply(_key(r["question_id"]), {"audio": path})
            reply = engine.run_turn(r["prompt"], media=media, settings=settings, music="never")
        except bad_input_errors() as exc:
            _write_jsonl(out, lines)
            return fail(f"{path}: {one_line(exc)}")
        lines.append({"question_id": r["question_id"], "output": reply.text})
        new += 1
        if new % args.batch_size == 0:
            _write_jsonl(out, lines)
    _write_jsonl(out, lines)
    print(f"wrote {out}: {new} new rows, {len(rows) - len(todo)} already present"
          + ("" if args.media_control == "none" else f" (media control: {args.media_control})"))
    return 0


# ---------------------------------------------------------------------------------------------
# score


def _aligned(rows: list[dict], preds: dict[str, str], path: Any,
             allow_missing: bool) -> tuple[list[dict], list[str], int]:
    known = {_key(r["question_id"]) for r in rows}
    stray = [k for k in preds if k not in known]
    if stray:
        raise EvalInputError(f"predictions {path}: {len(stray)} question_ids are not in the data "
                             f"(first: {', '.join(stray[:SHOW])})")
    have = [r for r in rows if _key(r["question_id"]) in preds]
    missing = len(rows) - len(have)
    if missing and not allow_missing:
        first = [_key(r["question_id"]) for r in rows if _key(r["question_id"]) not in preds]
        raise EvalInputError(f"{missing} of {len(rows)} rows have no prediction in {path} "
                             f"(first: {', '.join(first[:SHOW])}); pass --allow_missing to "
                             "score the rest")
    if not have:
        raise EvalInputError(f"no row has a prediction in {path}")
    return have, [preds[_key(r["question_id"])] for r in have], missing


def _media_effect(rows: list[dict], outputs: list[str], main: dict,
                  controls: dict[str, Path], seed: int) -> tuple[dict, dict]:
    """(media_effect, identical_choices): per control its block, and the share of rows whose
    extracted option is unchanged (kept apart so every media_effect entry is a metric)."""
    out, choices = {}, {}
    for name, path in controls.items():
        preds = load_predictions(path)
        absent = [_key(r["question_id"]) for r in rows if _key(r["question_id"]) not in preds]
        if absent:
            raise EvalInputError(f"control {name}: {len(absent)} of the {len(rows)} rows scored "
                                 f"have no prediction in {path} (first: "
                                 f"{', '.join(absent[:SHOW])})")
        ctrl_outputs = [preds[_key(r["question_id"])] for r in rows]
        ctrl = score_rows(rows, ctrl_outputs)
        block = control_effect(outputs, ctrl_outputs,
                               {"accuracy": [float(x) for x in main["_correct"]]},
                               {"accuracy": [float(x) for x in ctrl["_correct"]]}, seed,
                               lambda v: sum(v) / len(v))
        same = sum(a == b for a, b in zip(main["_choices"], ctrl["_choices"]))
        out[name] = block
        choices[name] = same / len(rows)
    return out, choices


def score(data: str | Path, predictions: str | Path, *, allow_missing: bool = False,
          controls: Optional[dict[str, Path]] = None, seed: int = 0) -> dict:
    """The JSON report of `score` (DEFINITIONS); raises EvalInputError on bad input."""
    rows = load_rows(data)
    scored, outputs, missing = _aligned(rows, load_predictions(predictions), predictions,
                                        allow_missing)
    result = score_rows(scored, outputs)
    effect, choices = _media_effect(scored, outputs, result, controls, seed) if controls \
        else (None, None)
    result.pop("_choices"), result.pop("_correct")
    options = sorted({len(r["answers"]) for r in scored})
    return {
        "task": "muchomusic",
        **result,
        "rows_scored": len(scored),
        "rows_missing": missing,
        "options_per_row": options[0] if len(options) == 1 else options,
        "media_effect": effect,
        "identical_choices": choices,
        "comparable_with_paper": {
            "accuracy": options == [4] and missing == 0,
            "ifr": options == [4] and missing == 0,
            "notes": "the benchmark's prompts, option labels and answer extraction; the option "
                     "order is drawn from prepare --seed (the published script's was unseeded), "
                     "and the paper's models were sampled with their own settings: read the "
                     "paper's numbers against ours +- the spread over seeds; comparable only on "
                     "the full benchmark with all three distractors (docs/EVALUATION.md)",
        },
        "definitions": DEFINITIONS,
    }


def _score_main(args: argparse.Namespace) -> int:
    try:
        controls = (parse_control_predictions(args.control_predictions)
                    if args.control_predictions else None)
        report = score(args.data, args.predictions, allow_missing=args.allow_missing,
                       controls=controls, seed=args.seed)
    except EvalInputError as exc:
        return fail(str(exc))
    print_json(report)
    return 0


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    from app.args import OneLineParser
    from Evaluation._generation import add_generate_parser

    ap = OneLineParser(prog="python -m Evaluation.muchomusic", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("prepare", help="build the evaluation rows from the benchmark CSV")
    p.add_argument("--csv", required=True, help="muchomusic.csv (Zenodo / Hugging Face)")
    p.add_argument("--audio_dir", required=True,
                   help="folder holding the SDD (<id>.2min.mp3) and MusicCaps "
                        "([ytid]-[start-end].wav) audio, in any subfolders")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0, help="seed of the option shuffle")
    p.add_argument("--distractors", default=",".join(DISTRACTORS),
                   help=f"comma-separated subset of {list(DISTRACTORS)} (default: all three, "
                        "as published)")
    p.set_defaults(run=_prepare_main)

    add_generate_parser(sub, _generate_main, media_help="", media_control=True,
                        inputs=_generate_inputs)

    s = sub.add_parser("score", help="score predictions (prints JSON)")
    s.add_argument("--data", required=True, help="rows written by prepare")
    s.add_argument("--predictions", required=True, help="JSON lines written by generate")
    s.add_argument("--control_predictions", default=None, metavar="NAME=FILE[,NAME=FILE...]",
                   help="predictions of the same rows made with generate --media_control: adds "
                        "media_effect")
    s.add_argument("--allow_missing", action="store_true",
                   help="score the rows that have predictions instead of failing")
    s.add_argument("--seed", type=int, default=0, help="seed of the media-effect bootstrap")
    s.set_defaults(run=_score_main)
    return ap


def _generate_inputs(group: Any) -> None:
    group.add_argument("--data", required=True, help="rows written by prepare")
    group.add_argument("--audio_dir", required=True,
                       help="the folder the rows' audio_path is relative to")


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
