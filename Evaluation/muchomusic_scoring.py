"""MuChoMusic answer extraction and accuracies, as the benchmark's own `scoring.py` and
`evaluate.py` (mulab-mir/muchomusic) compute them, quirks included (docs/EVALUATION.md lists
them):

- extraction: keep the text after the LAST "The correct answer is:" (stripped); if exactly one
  of the characters A, B, C, D occurs anywhere in it (case-sensitive, any position: "Distorted
  electric guitar" reads as D), that letter is the choice; otherwise the first option (in the
  order shown) whose lower-cased, stripped text is a substring of the lower-cased output;
  otherwise unanswered (-1);
- a row is correct when the choice is the position of the correct answer; unanswered rows count
  as wrong; accuracy = correct / rows; IFR (instruction-following rate) = 1 - unanswered / rows;
- knowledge / reasoning overall: the rows with a non-empty category list; per dimension: the
  rows whose list holds it; per genre: the rows with that (non-empty) genre.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

PREFIX = "The correct answer is:"
LETTERS = ("A", "B", "C", "D")
UNANSWERED = -1


def extract_choice(output: str, options: Sequence[str]) -> int:
    """The option index the benchmark reads from a model output (-1: unanswered)."""
    text = output.split(PREFIX)[-1].strip()
    letters = set(LETTERS).intersection(text)
    if len(letters) == 1:
        return LETTERS.index(letters.pop())
    lowered = text.lower().strip()
    for j, option in enumerate(options):
        if option.lower().strip() in lowered:
            return j
    return UNANSWERED


def accuracy(correct: Sequence[bool]) -> Optional[float]:
    """Share correct; None for no rows (the published code divides by zero there)."""
    return sum(correct) / len(correct) if correct else None


def score_rows(rows: Sequence[dict], outputs: Sequence[str]) -> dict[str, Any]:
    """The benchmark's numbers for `rows` (prepared rows) answered by `outputs`, plus the
    per-row choices and correctness (for the media effect)."""
    choices = [extract_choice(o, r["answers"]) for r, o in zip(rows, outputs)]
    correct = [c == r["answer_orders"].index(0) for c, r in zip(choices, rows)]
    unanswered = sum(c == UNANSWERED for c in choices)

    def subset(keep) -> Optional[float]:
        return accuracy([ok for ok, r in zip(correct, rows) if keep(r)])

    def dimension(field: str) -> dict[str, Any]:
        names = sorted({d for r in rows for d in r[field]})
        return {"overall": subset(lambda r: r[field] != []),
                "by_dimension": {d: subset(lambda r, d=d: d in r[field]) for d in names}}

    genres = sorted({r["genre"] for r in rows if r["genre"] != ""})
    counts = {letter: sum(c == k for c in choices) for k, letter in enumerate(LETTERS)}
    return {
        "accuracy": accuracy(correct),
        "ifr": 1.0 - unanswered / len(rows),
        "knowledge": dimension("knowledge"),
        "reasoning": dimension("reasoning"),
        "by_genre": {g: subset(lambda r, g=g: r["genre"] == g) for g in genres},
        "rows_unanswered": unanswered,
        "choice_counts": {**counts, "unanswered": unanswered},
        "chance": sum(1.0 / len(r["answers"]) for r in rows) / len(rows),
        "_choices": choices,
        "_correct": correct,
    }
