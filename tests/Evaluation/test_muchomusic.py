"""`Evaluation.muchomusic`: prepare and score agree with the benchmark's own code (reference
outputs in muchomusic_reference/, regenerated as its README says); generate writes resumable
JSON lines; errors name the file and row."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from Evaluation import muchomusic as MC
from Evaluation.muchomusic_prompts import LETTERS, audio_name, read_questions
from Evaluation.muchomusic_scoring import extract_choice

REF = Path(__file__).resolve().parent / "muchomusic_reference"
CSV = REF / "muchomusic_fixture.csv"
PREDICTIONS = REF / "predictions.jsonl"
VARIANTS = {"four_options": "incorrect_but_related,correct_but_unrelated,incorrect_and_unrelated",
            "two_options": "incorrect_but_related"}


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    """Empty files at the places the published layout puts the fixture's audio."""
    root = tmp_path_factory.mktemp("muchomusic_audio")
    for q in read_questions(CSV, ["incorrect_but_related"]):
        sub = f"sdd/audio/{q.audio_id % 100:02d}" if q.dataset == "sdd" else "musiccaps/audio"
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub / audio_name(q)).touch()
    return root


def _prepare(tmp_path: Path, audio_dir: Path, variant: str, seed: int = 0) -> Path:
    out = tmp_path / f"{variant}_{seed}.json"
    assert MC.main(["prepare", "--csv", str(CSV), "--audio_dir", str(audio_dir), "--out",
                    str(out), "--seed", str(seed), "--distractors", VARIANTS[variant]]) == 0
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_prepare_equals_the_published_script_seeded(tmp_path, audio_dir, variant):
    ours = json.loads(_prepare(tmp_path, audio_dir, variant).read_text())
    theirs = json.loads((REF / variant / "prepared_seed0.json").read_text())
    assert len(ours) == len(theirs) == 20
    for o, t in zip(ours, theirs):
        for key in ("id", "prompt", "answers", "answer_orders", "dataset", "genre", "reasoning",
                    "knowledge"):
            assert o[key] == t[key] and type(o[key]) is type(t[key]), (o["question_id"], key)
        assert "data/" + o["audio_path"] == t["audio_path"]
    with CSV.open(newline="") as f:
        ids = [int(r["question_id"]) for r in csv.DictReader(f)]
    assert [o["question_id"] for o in ours] == ids


def test_other_seed_other_order_same_rows(tmp_path, audio_dir, capsys):
    a = json.loads(_prepare(tmp_path, audio_dir, "four_options", 0).read_text())
    b = json.loads(_prepare(tmp_path, audio_dir, "four_options", 1).read_text())
    assert [r["answer_orders"] for r in a] != [r["answer_orders"] for r in b]
    for x, y in zip(a, b):
        assert sorted(x["answers"]) == sorted(y["answers"])
        correct = lambda r: r["answers"][r["answer_orders"].index(0)]  # noqa: E731
        assert correct(x) == correct(y)
        assert x["prompt"].split("\n Options: ")[0] == y["prompt"].split("\n Options: ")[0]
    shutil.rmtree(audio_dir / "musiccaps")
    try:
        _prepare(tmp_path, audio_dir, "four_options", 2)
        assert "10 of 20 audio files are not under" in capsys.readouterr().err
    finally:
        for q in read_questions(CSV, ["incorrect_but_related"]):
            if q.dataset != "sdd":
                (audio_dir / "musiccaps" / "audio").mkdir(parents=True, exist_ok=True)
                (audio_dir / "musiccaps" / "audio" / audio_name(q)).touch()


def _outputs() -> list[str]:
    return [json.loads(line)["output"] for line in PREDICTIONS.read_text().splitlines()]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_extraction_equals_the_published_per_row_choices(variant):
    rows = json.loads((REF / variant / "prepared_seed0.json").read_text())
    theirs = json.loads((REF / variant / "choices.json").read_text())
    assert [extract_choice(o, r["answers"]) for o, r in zip(_outputs(), rows)] == theirs


def test_documented_quirks():
    options = ["Choir", "Clean acoustic guitar", "Distorted electric guitar", "Brass section"]
    assert extract_choice("Distorted electric guitar", options) == LETTERS.index("D")
    assert extract_choice("Answer: C", options) == -1  # the A of "Answer" is a second letter
    assert extract_choice("The correct answer is: A. The correct answer is: b", options) == -1
    assert extract_choice("clean acoustic guitar", options) == 1
    assert extract_choice("choir or brass section", options) == 0  # first option shown wins


def _title(genre: str) -> str:
    """The published results.csv column name of a genre."""
    return "_".join("".join("_".join(genre.split(", ")).split("& ")).split(" "))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_score_equals_every_published_number(tmp_path, audio_dir, capsys, variant):
    data = _prepare(tmp_path, audio_dir, variant)
    capsys.readouterr()
    assert MC.main(["score", "--data", str(data), "--predictions", str(PREDICTIONS)]) == 0
    ours = json.loads(capsys.readouterr().out)
    with (REF / variant / "results.csv").open(newline="") as f:
        header, values = list(csv.reader(f))
    csv_row = dict(zip(header[5:], map(float, values[5:])))
    # columns 1-4: accuracy, unanswered rate, then knowledge and reasoning (header swapped)
    assert ours["accuracy"] == float(values[1])
    assert ours["ifr"] == 1.0 - float(values[2])
    assert ours["knowledge"]["overall"] == float(values[3])
    assert ours["reasoning"]["overall"] == float(values[4])
    expected = {**{_title(g): v for g, v in ours["by_genre"].items()},
                **ours["knowledge"]["by_dimension"], **ours["reasoning"]["by_dimension"]}
    assert expected == csv_row
    printed = json.loads((REF / variant / "evaluate_stdout.json").read_text())
    assert round(ours["accuracy"], 2) == printed["accuracy"]
    assert round(ours["ifr"], 2) == printed["IFR"]
    for dim in ("knowledge", "reasoning"):
        assert round(ours[dim]["overall"], 2) == printed[dim]["overall"]
        assert {k: round(v, 2) for k, v in ours[dim]["by_dimension"].items()} == \
            printed[dim]["finegrained"]
    n_options = 4 if variant == "four_options" else 2
    assert ours["chance"] == 1 / n_options and ours["rows_scored"] == 20
    unanswered = json.loads((REF / variant / "choices.json").read_text()).count(-1)
    assert ours["rows_unanswered"] == unanswered == ours["choice_counts"]["unanswered"]
    assert "Rock" in ours["by_genre"] and "" not in ours["by_genre"]


def _write_predictions(path: Path, items: list[tuple]) -> Path:
    path.write_text("".join(json.dumps({"question_id": q, "output": o}) + "\n" for q, o in items))
    return path


def test_score_errors_name_the_file_and_rows(tmp_path, audio_dir, capsys):
    data = _prepare(tmp_path, audio_dir, "four_options")
    preds = [(json.loads(x)["question_id"], json.loads(x)["output"])
             for x in PREDICTIONS.read_text().splitlines()]
    part = _write_predictions(tmp_path / "part.jsonl", preds[:15])
    args = ["score", "--data", str(data), "--predictions", str(part)]
    capsys.readouterr()
    assert MC.main(args) == 2
    assert "5 of 20 rows have no prediction in" in capsys.readouterr().err
    assert MC.main(args + ["--allow_missing"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["rows_scored"], out["rows_missing"]) == (15, 5)
    assert out["comparable_with_paper"]["accuracy"] is False
    stray = _write_predictions(tmp_path / "stray.jsonl", preds + [("999", "A")])
    assert MC.main(["score", "--data", str(data), "--predictions", str(stray)]) == 2
    assert '1 question_ids are not in the data (first: "999")' in capsys.readouterr().err
    twice = _write_predictions(tmp_path / "twice.jsonl", preds + preds[:1])
    assert MC.main(["score", "--data", str(data), "--predictions", str(twice)]) == 2
    assert "line 21: question_id 101 repeated" in capsys.readouterr().err


def test_score_media_effect_on_accuracy(tmp_path, audio_dir, capsys):
    data = _prepare(tmp_path, audio_dir, "four_options")
    rows = json.loads(data.read_text())
    right = [(r["question_id"], LETTERS[r["answer_orders"].index(0)]) for r in rows]
    wrong = [(q, "B" if a != "B" else "C") for q, a in right]
    main = _write_predictions(tmp_path / "main.jsonl", right)
    same = _write_predictions(tmp_path / "same.jsonl", right)
    half = _write_predictions(tmp_path / "half.jsonl", right[:10] + wrong[10:])
    capsys.readouterr()
    assert MC.main(["score", "--data", str(data), "--predictions", str(main),
                    "--control_predictions", f"silence={same},noise={half}"]) == 0
    report = json.loads(capsys.readouterr().out)
    effect = report["media_effect"]
    assert set(effect["silence"]) == {"identical_answers", "accuracy"}
    assert effect["silence"]["identical_answers"] == 1.0
    assert effect["silence"]["accuracy"] == {"delta": 0.0, "ci95": [0.0, 0.0]}
    assert effect["noise"]["identical_answers"] == 0.5
    assert report["identical_choices"] == {"silence": 1.0, "noise": 0.5}
    assert effect["noise"]["accuracy"]["delta"] == 0.5
    lo, hi = effect["noise"]["accuracy"]["ci95"]
    assert 0.2 < lo < 0.5 < hi <= 0.8


def test_generate_writes_resumable_json_lines(small_synthetic, tmp_path, capsys):
    """Three MusicCaps-style rows answered by the tiny model, resumed, then scored."""
    wavs = sorted((small_synthetic / "MusicQA" / "audios").glob("*.wav"))[:3]
    questions = read_questions(CSV, ["incorrect_but_related", "correct_but_unrelated",
                                     "incorrect_and_unrelated"])
    mc_rows = [q for q in questions if q.dataset == "musiccaps"]
    audio = tmp_path / "audio"
    audio.mkdir()
    names = []
    for q, wav in zip(mc_rows[::2], wavs):
        shutil.copy(wav, audio / audio_name(q))
        names.append(audio_name(q))
    data = tmp_path / "q.json"
    assert MC.main(["prepare", "--csv", str(CSV), "--audio_dir", str(audio), "--out",
                    str(data)]) == 0
    rows = [r for r in json.loads(data.read_text()) if r["audio_path"] in names][:4]
    data.write_text(json.dumps(rows))
    out = tmp_path / "p.jsonl"
    gen = ["generate", "--data", str(data), "--audio_dir", str(audio), "--out", str(out),
           "--max_new_tokens", "3", "--batch_size", "1"]
    assert MC.main(gen) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["question_id"] for x in lines] == [r["question_id"] for r in rows]
    assert all(set(x) == {"question_id", "output"} and isinstance(x["output"], str)
               for x in lines)
    out.write_text("".join(json.dumps(x) + "\n" for x in lines[:2]))
    capsys.readouterr()
    assert MC.main(gen) == 0
    assert "2 new rows, 2 already present" in capsys.readouterr().out
    assert [json.loads(x) for x in out.read_text().splitlines()] == lines
    shuffled = tmp_path / "shuffled.jsonl"
    assert MC.main(gen[:6] + [str(shuffled)] + gen[7:] + ["--media_control", "shuffled"]) == 0
    capsys.readouterr()
    assert MC.main(["score", "--data", str(data), "--predictions", str(out),
                    "--control_predictions", f"shuffled={shuffled}"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows_scored"] == 4 and set(report["media_effect"]) == {"shuffled"}
    assert 0.0 <= report["media_effect"]["shuffled"]["identical_answers"] <= 1.0
