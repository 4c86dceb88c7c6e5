"""MusicQA (music question answering and captioning): `generate` answers, `score` them.

    python -m Evaluation.musicqa generate --model M [model flags] --references EvalMusicQA.json \
        --media_dir MusicQA/audios --out predictions.json
    python -m Evaluation.musicqa score --predictions predictions.json \
        --references EvalMusicQA.json \
        [--bertscore_model DIR] [--clap_text_model laion/clap-htsat-unfused] [--allow_missing]

References: the published EvalMusicQA.json list of {"audio_name", "conversation": [{"from":
"human", "value": Q}, {"from": "gpt", "value": A}]}. Predictions: the published
{audio_name: {question: answer}}. Metric definitions: `Evaluation.metrics.text`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from Evaluation._common import EvalInputError, conversation, fail, print_json, read_json
from Evaluation.media_effect import DEFINITION as MEDIA_EFFECT_DEFINITION
from Evaluation.media_effect import parse_control_predictions

if TYPE_CHECKING:
    from Evaluation.metrics.clap_text import ClapText

# The four fixed captioning prompts every MusicQA track was asked (MU-LLaMA's dataset builder);
# every other question is a free-form QA pair.
CAPTION_PROMPTS = (
    "Describe the audio",
    "Describe the audio in detail",
    "What do you hear in the audio?",
    "What can be inferred from the audio?",
)
KINDS = ("captioning", "qa")
SHOW_MISSING = 5


@dataclass(frozen=True)
class QARow:
    audio: str
    question: str
    answer: str

    @property
    def kind(self) -> str:
        return "captioning" if self.question in CAPTION_PROMPTS else "qa"


@dataclass(frozen=True)
class BertSpec:
    """Which BERTScore model to run: hub id or local folder, hidden layer, batch size."""

    model: str
    num_layers: Optional[int]
    batch_size: int = 64


def load_references(path: str | Path) -> list[QARow]:
    """EvalMusicQA rows (first human turn = question, the gpt turn after it = answer)."""
    data = read_json(path, "references")
    if not isinstance(data, list):
        raise EvalInputError(f"references {path}: expected a JSON list of rows")
    rows = []
    for i, item in enumerate(data):
        where = f"references {path} row {i}"
        if not isinstance(item, dict) or not isinstance(item.get("audio_name"), str):
            raise EvalInputError(f"{where}: needs a string 'audio_name'")
        turns = conversation(item, where)
        rows.append(QARow(item["audio_name"], turns[0]["value"], turns[1]["value"]))
    if not rows:
        raise EvalInputError(f"references {path}: no rows")
    return rows


def load_predictions(path: str | Path) -> dict[str, dict[str, str]]:
    """The published prediction map {audio_name: {question: answer}}, type-checked."""
    data = read_json(path, "predictions")
    if not isinstance(data, dict):
        raise EvalInputError(f"predictions {path}: expected {{audio_name: {{question: answer}}}}")
    for audio, answers in data.items():
        if not isinstance(answers, dict) or not all(isinstance(v, str) for v in answers.values()):
            raise EvalInputError(f"predictions {path}[{audio!r}]: expected {{question: answer}} "
                                 "with string answers")
    return data


def align(rows: Sequence[QARow], preds: dict[str, dict[str, str]]
          ) -> tuple[list[QARow], list[str], list[QARow]]:
    """(rows that have a prediction, their candidates, rows without one), reference order kept."""
    scored, cands, missing = [], [], []
    for r in rows:
        answer = preds.get(r.audio, {}).get(r.question)
        if answer is None:
            missing.append(r)
        else:
            scored.append(r)
            cands.append(answer)
    return scored, cands, missing


def chance_candidates(rows: Sequence[QARow], seed: int) -> tuple[list[str], int]:
    """Each row answered with ANOTHER track's reference for the same question (seeded).

    A question only one track was asked falls back to another track's reference of the same
    kind; returns (candidates, number of such fallbacks).
    """
    rng = np.random.default_rng(seed)
    by_question: dict[str, list[int]] = {}
    by_kind: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_question.setdefault(r.question, []).append(i)
        by_kind.setdefault(r.kind, []).append(i)
    cands, fallbacks = [], 0
    for r in rows:
        pool = [j for j in by_question[r.question] if rows[j].audio != r.audio]
        if not pool:
            fallbacks += 1
            pool = [j for j in by_kind[r.kind] if rows[j].audio != r.audio]
        if not pool:
            raise EvalInputError(f"chance baseline: no other track for row {r.audio!r} / "
                                 f"{r.question!r} (a single-track reference set)")
        cands.append(rows[pool[int(rng.integers(len(pool)))]].answer)
    return cands, fallbacks


def _summaries(cands: list[str], refs: list[str], kinds: list[str],
               bert: Optional[BertSpec], clap_text: Optional["ClapText"] = None) -> dict:
    """published + standard over all rows and per kind, from one pass of per-row scores."""
    from Evaluation.metrics import text as T

    rs = T.row_scores(cands, refs)
    bert_rows = None
    if bert is not None:
        bert_rows = T.bert_scores(cands, refs, bert.model, bert.num_layers, bert.batch_size)
    clap_rows = None if clap_text is None else clap_text.rows(cands, refs)

    def summary(idx: list[int]) -> Optional[dict]:
        if not idx:
            return None
        pick = lambda a: a[idx]  # noqa: E731
        published = {
            "bleu": T.published_mean(pick(rs.bleu)),
            "bleu4": T.published_mean(pick(rs.bleu4)),
            "meteor": T.published_mean(pick(rs.meteor)),
            "rouge_l": T.published_mean(pick(rs.rouge_l_recall)),
            "bert_score": None if bert_rows is None else T.published_mean(pick(bert_rows[1])),
        }
        standard = {
            "sacrebleu": T.sacrebleu_corpus([cands[i] for i in idx], [refs[i] for i in idx]),
            "rouge_l_f1": float(np.mean(pick(rs.rouge_l_f1))),
            "meteor": float(np.mean(pick(rs.meteor))),
            "bert_score_f1": None if bert_rows is None else float(np.mean(pick(bert_rows[2]))),
            "clap_text": None if clap_rows is None else float(np.mean(pick(clap_rows))),
        }
        return {"published": published, "standard": standard, "rows": len(idx)}

    out = summary(list(range(len(cands))))
    assert out is not None
    out["by_kind"] = {k: summary([i for i, kk in enumerate(kinds) if kk == k]) for k in KINDS}
    return out


def published_rows(cands: list[str], refs: list[str], bert: Optional[BertSpec],
                   clap_text: Optional["ClapText"] = None) -> dict[str, np.ndarray]:
    """Per-row values of the published metrics (BERTScore recall only when `bert` is given) and
    of CLAPText when its model is given."""
    from Evaluation.metrics import text as T

    rs = T.row_scores(cands, refs)
    out = {"bleu": rs.bleu, "bleu4": rs.bleu4, "meteor": rs.meteor, "rouge_l": rs.rouge_l_recall}
    if bert is not None:
        out["bert_score"] = np.asarray(
            T.bert_scores(cands, refs, bert.model, bert.num_layers, bert.batch_size)[1])
    if clap_text is not None:
        out["clap_text"] = clap_text.rows(cands, refs)
    return out


def media_effect(scored: Sequence[QARow], cands: list[str], controls: dict[str, Path],
                 bert: Optional[BertSpec], seed: int,
                 clap_text: Optional["ClapText"] = None) -> dict:
    """`media_effect` of the report: each control's answers to the rows scored, against ours."""
    from Evaluation.media_effect import control_effect
    from Evaluation.metrics.text import published_mean

    refs = [r.answer for r in scored]
    main = published_rows(cands, refs, bert, clap_text)
    out = {}
    for name, path in controls.items():
        got, control_cands, absent = align(scored, load_predictions(path))
        if absent:
            first = "; ".join(f"{r.audio} / {r.question!r}" for r in absent[:SHOW_MISSING])
            raise EvalInputError(f"control {name}: {len(absent)} of the {len(scored)} rows scored "
                                 f"have no prediction in {path} (first: {first})")
        out[name] = control_effect(cands, control_cands, main,
                                   published_rows(control_cands, refs, bert, clap_text),
                                   seed, published_mean)
    return out


DEFINITIONS = {
    "published.bleu": "mean over rows of nltk sentence_bleu([ref], cand) on raw strings "
                      "(character n-grams), weights 0.25x4, no smoothing",
    "published.bleu4": "as published.bleu with weights (0, 0, 0, 1)",
    "published.meteor": "mean of nltk meteor_score([wordpunct_tokenize(ref)], "
                        "wordpunct_tokenize(cand)), WordNet 3.0",
    "published.rouge_l": "mean of rouge-score RougeScorer(['rougeL'], use_stemmer=True) recall",
    "published.bert_score": "mean of bert_score.score(cands, refs) recall, no idf, no rescaling",
    "standard.sacrebleu": "sacrebleu corpus_bleu (word-level, 13a tokenizer), 0-100",
    "standard.rouge_l_f1": "mean of the same ROUGE-L F-measure",
    "standard.meteor": "same as published.meteor (nltk's METEOR is the standard one)",
    "standard.bert_score_f1": "mean of bert_score F1 with the same model and layer",
    "standard.clap_text": "CLAPText (arXiv 2511.05550): mean over rows of the cosine between "
                          "the CLAP text embeddings of answer and reference (models.clap_text)",
    "chance": "published metrics when each row is answered with another track's reference "
              "for the same question (seeded)",
    "media_effect": MEDIA_EFFECT_DEFINITION,
}


def score(references: str | Path, predictions: str | Path, *, bert: Optional[BertSpec] = None,
          allow_missing: bool = False, seed: int = 0,
          clap_text: Optional["ClapText"] = None,
          controls: Optional[dict[str, Path]] = None) -> dict:
    """The JSON report of `score` (see DEFINITIONS); raises EvalInputError on missing rows.
    `controls` ({name: predictions made under a media control}) adds `media_effect`."""
    rows = load_references(references)
    scored, cands, missing = align(rows, load_predictions(predictions))
    if missing and not allow_missing:
        first = "; ".join(f"{r.audio} / {r.question!r}" for r in missing[:SHOW_MISSING])
        raise EvalInputError(
            f"{len(missing)} of {len(rows)} reference rows have no prediction in {predictions} "
            f"(first: {first}); pass --allow_missing to score the rest")
    if not scored:
        raise EvalInputError(f"no reference row of {references} has a prediction in {predictions}")
    refs = [r.answer for r in scored]
    kinds = [r.kind for r in scored]
    from Evaluation.metrics.text import bertscore_matches_paper

    report = _summaries(cands, refs, kinds, bert, clap_text)
    chance_cands, fallbacks = chance_candidates(scored, seed)
    chance = _summaries(chance_cands, refs, kinds, bert, clap_text)
    return {
        "task": "musicqa",
        "published": report["published"],
        "standard": report["standard"],
        "by_kind": report["by_kind"],
        "rows_scored": len(scored),
        "rows_missing": len(missing),
        "chance": {"published": chance["published"],
                   "by_kind": {k: v and v["published"] for k, v in chance["by_kind"].items()},
                   "clap_text": chance["standard"]["clap_text"],
                   "seed": seed, "rows_without_same_question": fallbacks},
        "models": {"bert_score": None if bert is None else
                   {"model": bert.model, "num_layers": bert.num_layers,
                    "prefix_space": "byte-level BPE tokenizers load with add_prefix_space=True"},
                   "clap_text": None if clap_text is None else clap_text.identity},
        "comparable_with_paper": {
            "bleu": True, "bleu4": True, "meteor": True, "rouge_l": True,
            "bert_score": bert is not None and bertscore_matches_paper(bert.model,
                                                                       bert.num_layers),
            "clap_text": False,  # not in the paper: arXiv 2511.05550's metric
        },
        "media_effect": None if not controls else media_effect(scored, cands, controls, bert,
                                                               seed, clap_text),
        "definitions": DEFINITIONS,
    }


def _score_main(args: argparse.Namespace) -> int:
    bert = None
    if args.bertscore_model:
        bert = BertSpec(args.bertscore_model, args.bertscore_layers, args.bertscore_batch_size)
    try:
        controls = None
        if args.control_predictions:
            controls = parse_control_predictions(args.control_predictions)
        clap_text = None
        if args.clap_text_model:
            from Evaluation.metrics.clap_text import ClapText

            clap_text = ClapText(args.clap_text_model)
        report = score(args.references, args.predictions, bert=bert,
                       allow_missing=args.allow_missing, seed=args.seed, clap_text=clap_text,
                       controls=controls)
    except (OSError, ValueError) as exc:  # bad inputs (EvalInputError), files, model folders
        return fail(str(exc))
    print_json(report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from app.args import OneLineParser

    ap = OneLineParser(prog="python -m Evaluation.musicqa", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True)
    s = sub.add_parser("score", help="score predictions against EvalMusicQA (prints JSON)")
    s.add_argument("--predictions", required=True)
    s.add_argument("--references", required=True)
    s.add_argument("--bertscore_model", default=None,
                   help="hub id or local folder (paper: roberta-large); omitted: bert_score null")
    s.add_argument("--bertscore_layers", type=int, default=17,
                   help="hidden layer BERTScore reads (17 = bert_score's roberta-large default)")
    s.add_argument("--bertscore_batch_size", type=int, default=64)
    s.add_argument("--clap_text_model", default=None,
                   help="CLAPText's text tower: ClapModel folder or hub id (laion/clap-htsat-"
                        "unfused); omitted: standard.clap_text null")
    s.add_argument("--allow_missing", action="store_true",
                   help="score the rows that have predictions instead of failing")
    s.add_argument("--seed", type=int, default=0,
                   help="seed of the chance baseline and of the media-effect bootstrap")
    s.add_argument("--control_predictions", default=None, metavar="NAME=FILE[,NAME=FILE...]",
                   help="predictions of the same rows made with generate --media_control "
                        "(e.g. silence=s.json,noise=n.json,shuffled=x.json): adds media_effect")
    s.set_defaults(run=_score_main)
    from Evaluation._generation import add_generate_parser

    add_generate_parser(sub, _generate_main, media_help="folder holding the audio_name files",
                        media_control=True)
    return ap


def _generate_main(args: argparse.Namespace) -> int:
    """Answer every EvalMusicQA row; writes {audio_name: {question: answer}}."""
    from tqdm.auto import tqdm

    from app.errors import bad_input_errors, one_line
    from Evaluation._generation import (load_engine, media_control_for, read_previous, save_json,
                                        settings_for)

    try:
        rows = load_references(args.references)
        out = Path(args.out)
        preds: dict[str, dict[str, str]] = read_previous(out, "predictions") or {}
    except EvalInputError as exc:
        return fail(str(exc))
    todo = [r for r in rows if r.question not in preds.get(r.audio, {})]
    media = Path(args.media_dir)
    absent = [r.audio for r in todo if not (media / r.audio).is_file()]
    if absent:
        return fail(f"{len(absent)} audio files named in {args.references} are missing from "
                    f"{media} (first: {', '.join(sorted(set(absent))[:5])})")
    try:
        engine = load_engine(args)
        settings = settings_for(engine, args)
        control = media_control_for(args, engine, [{"audio": str(media / r.audio)} for r in rows])
    except (EvalInputError, *bad_input_errors()) as exc:
        return fail(one_line(exc))
    done = 0
    for r in tqdm(todo, desc="musicqa", unit="row", initial=len(rows) - len(todo), total=len(rows)):
        try:
            row_media = control.apply(f"{r.audio}\0{r.question}", {"audio": str(media / r.audio)})
            reply = engine.run_turn(r.question, media=row_media, settings=settings, music="never")
        except bad_input_errors() as exc:
            save_json(out, preds)
            return fail(f"{media / r.audio}: {one_line(exc)}")
        preds.setdefault(r.audio, {})[r.question] = reply.text
        done += 1
        if done % args.batch_size == 0:
            save_json(out, preds)
    save_json(out, preds)
    print(f"wrote {out}: {done} new rows, {len(rows) - len(todo)} already present"
          + ("" if args.media_control == "none" else f" (media control: {args.media_control})"))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
