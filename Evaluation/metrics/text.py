"""Text metrics for music QA / captioning: the published MusicQA variants and standard ones.

Published variants (MU-LLaMA / M2UGen `evaluate.py`), each a per-row score averaged over rows:
- `bleu`: nltk `sentence_bleu([ref], cand)` on RAW STRINGS, so n-grams are CHARACTER n-grams,
  weights 0.25 x 4, no smoothing; `bleu4`: the same with weights (0, 0, 0, 1).
- `meteor`: nltk `meteor_score([wordpunct_tokenize(ref)], wordpunct_tokenize(cand))` (nltk
  lowercases inside; WordNet 3.0 synonyms).
- `rouge_l`: rouge-score `RougeScorer(['rougeL'], use_stemmer=True).score(ref, cand)` RECALL.
- `bert_score`: `bert_score.score(cands, refs)` RECALL (paper: roberta-large, layer 17, no idf,
  no baseline rescaling). bert_score asks RoBERTa / GPT-2 byte-level BPE tokenizers for a prefix
  space (`encode(..., add_prefix_space=True)`), which transformers 5 silently ignores; we load
  such tokenizers with `add_prefix_space=True` so every sentence's first word is encoded as the
  published environment encoded it (" The", not "The").
Nothing is lowercased or stripped beyond what those calls do; empty candidates are scored as the
libraries score them (0 for BLEU/METEOR/ROUGE), as the published script did.

Standard variants: sacrebleu corpus BLEU (word-level, 13a tokenizer, 0-100 as sacrebleu reports
it), ROUGE-L F1, METEOR (same call as above: it is already the standard nltk METEOR), BERTScore F1.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from Evaluation.metrics.wordnet import use_project_wordnet

BLEU_WEIGHTS = (0.25, 0.25, 0.25, 0.25)
BLEU4_WEIGHTS = (0.0, 0.0, 0.0, 1.0)
PAPER_BERTSCORE_MODEL = "roberta-large"
PAPER_BERTSCORE_LAYERS = 17  # bert_score's default layer for roberta-large (lang="en")


def _check_pairs(cands: Sequence[str], refs: Sequence[str]) -> None:
    if len(cands) != len(refs):
        raise ValueError(f"{len(cands)} candidates but {len(refs)} references")
    for i, (c, r) in enumerate(zip(cands, refs)):
        if not isinstance(c, str) or not isinstance(r, str):
            raise TypeError(f"row {i}: candidate and reference must be strings, got "
                            f"{type(c).__name__} / {type(r).__name__}")


def char_bleu(cand: str, ref: str, weights: Sequence[float] = BLEU_WEIGHTS) -> float:
    """Published BLEU of one row: nltk sentence BLEU over characters (strings are sequences)."""
    from nltk.translate.bleu_score import sentence_bleu

    with warnings.catch_warnings():  # nltk warns on every zero-overlap row; the 0 is the score
        warnings.simplefilter("ignore", UserWarning)
        return float(sentence_bleu([ref], cand, weights=tuple(weights)))


def meteor(cand: str, ref: str) -> float:
    """nltk METEOR on wordpunct tokens (the published call; WordNet from the project folder)."""
    from nltk.tokenize import wordpunct_tokenize
    from nltk.translate.meteor_score import meteor_score

    use_project_wordnet()
    return float(meteor_score([wordpunct_tokenize(ref)], wordpunct_tokenize(cand)))


_ROUGE = None


def rouge_l(cand: str, ref: str) -> tuple[float, float, float]:
    """rouge-score ROUGE-L with the Porter stemmer: (precision, recall, F1)."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    s = _ROUGE.score(ref, cand)["rougeL"]
    return float(s.precision), float(s.recall), float(s.fmeasure)


@dataclass(frozen=True)
class RowScores:
    """Per-row published scores (and the per-row parts of the standard ones)."""

    bleu: np.ndarray
    bleu4: np.ndarray
    meteor: np.ndarray
    rouge_l_recall: np.ndarray
    rouge_l_f1: np.ndarray


def row_scores(cands: Sequence[str], refs: Sequence[str]) -> RowScores:
    """Every per-row lexical score in one pass (float64 arrays, row order kept)."""
    _check_pairs(cands, refs)
    cols: dict[str, list[float]] = {k: [] for k in RowScores.__dataclass_fields__}
    for c, r in zip(cands, refs):
        cols["bleu"].append(char_bleu(c, r))
        cols["bleu4"].append(char_bleu(c, r, BLEU4_WEIGHTS))
        cols["meteor"].append(meteor(c, r))
        _, rec, f1 = rouge_l(c, r)
        cols["rouge_l_recall"].append(rec)
        cols["rouge_l_f1"].append(f1)
    return RowScores(**{k: np.asarray(v, dtype=np.float64) for k, v in cols.items()})


def published_mean(values: Sequence[float]) -> float:
    """The published averaging: a running Python sum divided by the row count."""
    if len(values) == 0:
        raise ValueError("no rows to average")
    total = 0.0
    for v in values:
        total += float(v)
    return total / len(values)


def sacrebleu_corpus(cands: Sequence[str], refs: Sequence[str]) -> float:
    """Standard corpus BLEU, one reference per row, sacrebleu defaults (0-100)."""
    import sacrebleu

    _check_pairs(cands, refs)
    return float(sacrebleu.corpus_bleu(list(cands), [list(refs)]).score)


def bert_scores(
    cands: Sequence[str],
    refs: Sequence[str],
    model: str = PAPER_BERTSCORE_MODEL,
    num_layers: Optional[int] = PAPER_BERTSCORE_LAYERS,
    batch_size: int = 64,
    device: Optional[str] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row BERTScore (P, R, F1) from `bert_score.score` (no idf, no rescaling).

    `model` is a hub id or a local transformers folder; `num_layers` the hidden layer used
    (17 for roberta-large, as bert_score picks for lang="en").
    """
    from bert_score import score

    _check_pairs(cands, refs)
    with _prefix_space_tokenizers(), _empty_sentences_encodable():
        p, r, f = score(list(cands), list(refs), model_type=str(model), num_layers=num_layers,
                    idf=False, rescale_with_baseline=False, batch_size=batch_size,
                    device=device or "cpu", verbose=False)
    return p.double().numpy(), r.double().numpy(), f.double().numpy()


@contextmanager
def _empty_sentences_encodable() -> Iterator[None]:
    """bert_score encodes an empty sentence with `tokenizer.build_inputs_with_special_tokens`,
    which transformers 5 tokenizers no longer have; give it the same ids (special tokens only,
    e.g. <s></s>) through the tokenizer's own call. Non-empty sentences are untouched."""
    import bert_score.utils as U

    original = U.sent_encode

    def sent_encode(tokenizer, sent):
        if sent.strip() == "" and not hasattr(tokenizer, "build_inputs_with_special_tokens"):
            return tokenizer("", add_special_tokens=True)["input_ids"]
        return original(tokenizer, sent)

    U.sent_encode = sent_encode
    try:
        yield
    finally:
        U.sent_encode = original


def is_byte_level_bpe(tokenizer) -> bool:
    """True for tokenizers whose pre-tokenizer is byte-level BPE (RoBERTa, GPT-2, BART...): the
    ones bert_score encodes with a prefix space."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    return '"ByteLevel"' in json.dumps(json.loads(backend.to_str()).get("pre_tokenizer"))


def _prefix_space_enabled(tokenizer) -> bool:
    state = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    parts = state.get("pretokenizers", [state])
    return any(p.get("type") == "ByteLevel" and p.get("add_prefix_space") for p in parts)


def load_bertscore_tokenizer(model: str, use_fast: bool = False):
    """bert_score's tokenizer for `model`, with the prefix space bert_score intends: a byte-level
    BPE tokenizer is reloaded with `add_prefix_space=True` (checked, since transformers ignores
    unknown keywords silently)."""
    from bert_score.utils import get_tokenizer
    from transformers import AutoTokenizer

    tokenizer = get_tokenizer(model, use_fast)
    if not is_byte_level_bpe(tokenizer):
        return tokenizer
    tokenizer = AutoTokenizer.from_pretrained(model, use_fast=use_fast, add_prefix_space=True)
    if not _prefix_space_enabled(tokenizer):
        raise RuntimeError(f"the byte-level BPE tokenizer of {model} did not accept "
                           "add_prefix_space=True: BERTScore would not be bert_score's")
    return tokenizer


@contextmanager
def _prefix_space_tokenizers() -> Iterator[None]:
    """Make `bert_score.score` load its tokenizer through `load_bertscore_tokenizer`."""
    import importlib

    module = importlib.import_module("bert_score.score")  # the module, not the function
    original = module.get_tokenizer
    module.get_tokenizer = load_bertscore_tokenizer
    try:
        yield
    finally:
        module.get_tokenizer = original


# roberta-large as bert_score's lang="en" default loads it (transformers config facts)
PAPER_BERTSCORE_SHAPE = {"model_type": "roberta", "num_hidden_layers": 24, "hidden_size": 1024,
                         "vocab_size": 50265}


def bertscore_matches_paper(model: str, num_layers: Optional[int]) -> bool:
    """True only for the paper's BERTScore: roberta-large (name and architecture) at layer 17."""
    from transformers import AutoConfig

    if Path(str(model)).name != PAPER_BERTSCORE_MODEL or num_layers != PAPER_BERTSCORE_LAYERS:
        return False
    cfg = AutoConfig.from_pretrained(str(model))
    return all(getattr(cfg, k, None) == v for k, v in PAPER_BERTSCORE_SHAPE.items())
