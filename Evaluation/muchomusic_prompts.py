"""MuChoMusic evaluation rows from the benchmark CSV, built as the benchmark's own
`prepare_prompts.py` (mulab-mir/muchomusic, default config) builds them.

Per CSV row: the options are the correct answer followed by the chosen distractors (default all
three: incorrect-but-related, correct-but-unrelated, incorrect-and-unrelated), shuffled; the
prompt is the one-shot example, then "\\n Question: <q>\\n Options: " and "(A) <option> " for each
option, then "\\n The correct answer is: ". `answer_orders[k]` is the CSV position of the option
shown at position k (0 = the correct answer). The only difference: the shuffle is drawn from
`random.Random(seed)` (the same `sample` calls, row by row), where the published script used the
unseeded global generator.

CSV cells are read as pandas' `read_csv` reads them for the fields the rows use: the cells pandas
treats as missing (empty, "NA", "nan", "None", ...) become an empty genre, an empty category list,
or the text "nan" inside a prompt, exactly as the published script prints them.
"""

from __future__ import annotations

import ast
import csv
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from Evaluation._common import EvalInputError

# The benchmark's one-shot example (muchomusic_eval/configs/default.yaml), as the YAML parser
# reads it: folded lines, the escaped newlines kept.
ONE_SHOT_EXAMPLE = (
    "Question: What rhythm pattern do the digital drums primarily follow in this pop music piece? "
    "\n Options: (A) Four on the floor. (B) Off-beat syncopation. (C) Scat singing. "
    "(D) E-guitar playing a simple melody. \n The correct answer is: A"
)
LETTERS = ("A", "B", "C", "D")
# distractor kind -> CSV column, in the order the published loader appends them
DISTRACTORS = {
    "incorrect_but_related": "distractor_1_answer",
    "correct_but_unrelated": "distractor_2_answer",
    "incorrect_and_unrelated": "distractor_3_answer",
}
REQUIRED = ("question", "dataset", "dataset_identifier", "correct_answer", "genre",
            "music_knowledge", "music_reasoning")
# pandas.read_csv's default missing-value strings (pandas._libs.parsers.STR_NA_VALUES)
PANDAS_NA = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                       "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a",
                       "nan", "null"})
MUSICCAPS_SECONDS = 10  # every MusicCaps clip is 10 s: [ytid]-[start-(start+10)].wav


@dataclass(frozen=True)
class Question:
    """One CSV row as the published loader reads it."""

    question_id: Any
    question: str
    options: tuple[str, ...]  # correct answer first, then the distractors
    dataset: str
    audio_id: Any  # SDD: int track id; MusicCaps: the YouTube id
    identifier: str
    genre: str
    reasoning: tuple[str, ...]
    knowledge: tuple[str, ...]


def _text(cell: str) -> str:
    """A text cell as the published f-strings print it (pandas NaN -> "nan")."""
    return "nan" if cell in PANDAS_NA else cell


def _categories(cell: str, where: str) -> tuple[str, ...]:
    """`ast.literal_eval` of a category-list cell; missing cells are "[]" (published fillna)."""
    if cell in PANDAS_NA:
        return ()
    try:
        value = ast.literal_eval(cell)
    except (ValueError, SyntaxError) as exc:
        raise EvalInputError(f"{where}: {cell!r} is not a Python list literal") from exc
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EvalInputError(f"{where}: {cell!r} is not a list of category names")
    return tuple(value)


def _question_id(cell: str) -> Any:
    """An integer id stays an int (pandas reads an all-integer column as int64)."""
    try:
        return int(cell)
    except ValueError:
        return cell


def _audio_id(dataset: str, identifier: str, where: str) -> Any:
    """The published `load_questions_from_csv` id: SDD -> int(track id); MusicCaps -> the
    identifier without its last "_<start>" part."""
    ident = identifier.removesuffix(".json")
    if dataset == "sdd":
        try:
            return int(ident)
        except ValueError as exc:
            raise EvalInputError(f"{where}: SDD dataset_identifier {identifier!r} is not a "
                                 "track number") from exc
    return "_".join(ident.split("_")[:-1])


def read_questions(path: str | Path, distractors: Sequence[str]) -> list[Question]:
    """The CSV rows in file order; errors name the file, row and column."""
    p = Path(path)
    if not p.is_file():
        raise EvalInputError(f"MuChoMusic CSV {p} does not exist")
    unknown = [d for d in distractors if d not in DISTRACTORS]
    if unknown or not distractors:
        raise EvalInputError(f"--distractors: unknown {unknown or distractors}; choose from "
                             f"{list(DISTRACTORS)}")
    with p.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        needed = [*REQUIRED, *(DISTRACTORS[d] for d in DISTRACTORS if d in distractors)]
        absent = [c for c in needed if c not in columns]
        if absent:
            raise EvalInputError(f"MuChoMusic CSV {p}: missing columns {absent}")
        has_ids = "question_id" in columns
        out = []
        for i, row in enumerate(reader):
            where = f"MuChoMusic CSV {p} row {i + 2}"  # line number, header = line 1
            options = [_text(row["correct_answer"])]
            options += [_text(row[DISTRACTORS[d]]) for d in DISTRACTORS if d in distractors]
            out.append(Question(
                question_id=_question_id(row["question_id"]) if has_ids else i,
                question=_text(row["question"]),
                options=tuple(options),
                dataset=row["dataset"],
                audio_id=_audio_id(row["dataset"], row["dataset_identifier"], where),
                identifier=row["dataset_identifier"],
                genre="" if row["genre"] in PANDAS_NA else row["genre"],
                reasoning=_categories(row["music_reasoning"], f"{where} music_reasoning"),
                knowledge=_categories(row["music_knowledge"], f"{where} music_knowledge"),
            ))
    if not out:
        raise EvalInputError(f"MuChoMusic CSV {p}: no rows")
    ids = [q.question_id for q in out]
    dup = sorted({str(x) for x in ids if ids.count(x) > 1})
    if dup:
        raise EvalInputError(f"MuChoMusic CSV {p}: question_id repeated ({dup[:5]})")
    return out


def shuffled_orders(n_rows: int, n_options: int, seed: int) -> list[list[int]]:
    """The published `_shuffle_answers` draws, from a seeded generator."""
    rng = random.Random(seed)
    return [rng.sample(range(n_options), k=n_options) for _ in range(n_rows)]


def prompt_text(question: str, options: Sequence[str],
                examples: Sequence[str] = (ONE_SHOT_EXAMPLE,)) -> str:
    """The published prompt layout (with in-context examples joined by spaces)."""
    head = (" ".join(examples) + "\n Question: ") if examples else "Question: "
    text = head + question + "\n Options: "
    for letter, option in zip(LETTERS, options):
        text += f"({letter}) {option} "
    return text + "\n The correct answer is: "


def audio_name(q: Question) -> str:
    """The file name the published layout gives this row's audio."""
    if q.dataset == "sdd":
        return f"{q.audio_id}.2min.mp3"
    start = q.identifier.removesuffix(".json").split("_")[-1]
    try:
        s = int(float(start))
    except ValueError:
        return f"{q.audio_id}.wav"
    return f"[{q.audio_id}]-[{s}-{s + MUSICCAPS_SECONDS}].wav"


def resolve_audio(questions: Sequence[Question], audio_dir: Path) -> tuple[list[str], list[str]]:
    """Each row's audio path relative to `audio_dir` (found anywhere below it by its published
    file name; the bare name when absent) and the names not found."""
    found: dict[str, str] = {}
    if audio_dir.is_dir():
        for f in sorted(audio_dir.rglob("*")):
            if f.is_file():
                found.setdefault(f.name, f.relative_to(audio_dir).as_posix())
    paths, missing = [], []
    for q in questions:
        name = audio_name(q)
        if name not in found:
            missing.append(name)
        paths.append(found.get(name, name))
    return paths, missing


def prepare(csv_path: str | Path, audio_dir: str | Path, seed: int,
            distractors: Sequence[str] = tuple(DISTRACTORS),
            examples: Optional[Sequence[str]] = None) -> tuple[list[dict], list[str]]:
    """(evaluation rows in the published JSON format plus `question_id`, missing audio names)."""
    questions = read_questions(csv_path, distractors)
    orders = shuffled_orders(len(questions), len(questions[0].options), seed)
    paths, missing = resolve_audio(questions, Path(audio_dir))
    shots = (ONE_SHOT_EXAMPLE,) if examples is None else tuple(examples)
    rows = []
    for q, order, path in zip(questions, orders, paths):
        options = [q.options[j] for j in order]
        rows.append({
            "question_id": q.question_id, "id": q.audio_id,
            "prompt": prompt_text(q.question, options, shots),
            "answers": options, "answer_orders": order, "dataset": q.dataset,
            "genre": q.genre, "reasoning": list(q.reasoning), "knowledge": list(q.knowledge),
            "audio_path": path,
        })
    return rows, missing
