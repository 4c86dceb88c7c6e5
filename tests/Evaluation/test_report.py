"""`Evaluation.report`: score JSONs of several tasks and models -> report.md and report.png (read
back: one equal-width panel per task, none blank, titles in the PNG's text chunk)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from Evaluation import muchomusic as MC
from Evaluation import musicqa as QA
from Evaluation import report as R
from Evaluation.report_figure import PANEL_PIXELS

REF = Path(__file__).resolve().parent / "muchomusic_reference"
QA_ROWS = [("1.wav", "Describe the audio", "A slow piano melody in a low register."),
           ("2.wav", "Describe the audio", "A fast flute tune, high and bright."),
           ("1.wav", "What is the tempo of the music?", "The tempo is slow."),
           ("2.wav", "What is the tempo of the music?", "The tempo is fast.")]


def _musicqa(tmp_path: Path, capsys, answers: list[str], control: list[str]) -> Path:
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps([{"audio_name": a, "conversation": [
        {"from": "human", "value": q}, {"from": "gpt", "value": r}]} for a, q, r in QA_ROWS]))
    files = []
    for name, cands in (("main", answers), ("silence", control)):
        preds: dict = {}
        for (a, q, _), c in zip(QA_ROWS, cands):
            preds.setdefault(a, {})[q] = c
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(preds))
    capsys.readouterr()
    assert QA.main(["score", "--references", str(refs), "--predictions", str(files[0]),
                    "--control_predictions", f"silence={files[1]}"]) == 0
    out = tmp_path / "musicqa.json"
    out.write_text(capsys.readouterr().out)
    return out


def _muchomusic(tmp_path: Path, capsys) -> Path:
    audio = tmp_path / "audio"
    audio.mkdir()
    data = tmp_path / "q.json"
    assert MC.main(["prepare", "--csv", str(REF / "muchomusic_fixture.csv"), "--audio_dir",
                    str(audio), "--out", str(data)]) == 0
    preds = REF / "predictions.jsonl"
    capsys.readouterr()
    assert MC.main(["score", "--data", str(data), "--predictions", str(preds),
                    "--control_predictions", f"noise={preds}"]) == 0
    out = tmp_path / "mc.json"
    out.write_text(capsys.readouterr().out)
    return out


def _text2music(tmp_path: Path) -> Path:
    out = tmp_path / "t2m.json"
    out.write_text(json.dumps({
        "task": "text2music", "systems": {
            "m2ugen": {"fad": 5.1, "kl": 1.2, "clap": 0.21, "relevance": None, "rows_scored": 3},
            "musicgen": {"fad": 4.2, "kl": 1.0, "clap": 0.25, "relevance": None,
                         "rows_scored": 3}},
        "references_clap": 0.31, "comparable_with_paper": {"fad": True, "kl": False,
                                                           "clap": True}}))
    return out


@pytest.fixture
def results(tmp_path, capsys) -> list[str]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    listening = _musicqa(tmp_path / "a", capsys, [r for *_, r in QA_ROWS], ["It is quiet."] * 4)
    deaf = _musicqa(tmp_path / "b", capsys, ["piano", "flute", "slow", "fast"],
                    ["piano", "flute", "slow", "fast"])
    return [f"listening={listening}", f"deaf={deaf}", f"tiny={_muchomusic(tmp_path, capsys)}",
            str(_text2music(tmp_path))]


def test_report_markdown_and_figure(tmp_path, results, capsys):
    out = tmp_path / "report"
    assert R.main([*results, "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    for title in ("## MusicQA", "## MuChoMusic", "## Text-to-music (MUCaps)",
                  "### Media controls", "chance (listening)", "| deaf | silence | 1.000 |",
                  "+0.0000 [+0.0000, +0.0000]", "CLAP of the reference music itself",
                  "| musicgen |", "0.2500"):
        assert title in md, title
    assert "KL" in md and "1.2000" + R.NOT_COMPARABLE in md  # KL is not comparable: marked
    line = next(x for x in md.splitlines() if x.startswith("| listening | silence |"))
    delta, lo, hi = (float(v) for v in line.split("|")[4].replace("[", " ").replace("]", " ")
                     .replace(",", " ").split())
    assert delta > 0 and lo <= delta <= hi  # the real references beat "It is quiet."

    im = Image.open(out / "report.png")
    assert im.size == (3 * PANEL_PIXELS[0], PANEL_PIXELS[1])
    assert im.text["Panels"] == "MusicQA | MuChoMusic | Text-to-music (MUCaps)"
    pixels = np.asarray(im.convert("L"), dtype=np.float64)
    width = pixels.shape[1] // 3
    for k in range(3):
        panel = pixels[:, k * width:(k + 1) * width]
        assert (panel < 250).mean() > 0.02, f"panel {k} is blank"
        # bars are filled areas: some columns of each panel hold long runs of coloured pixels
        assert (panel < 200).sum(axis=0).max() > 40


def test_one_task_one_panel(tmp_path, results):
    out = tmp_path / "one"
    assert R.main([results[-1], "--out", str(out)]) == 0
    im = Image.open(out / "report.png")
    assert im.size == PANEL_PIXELS
    assert im.text["Panels"] == "Text-to-music (MUCaps)"


def test_bad_inputs_are_named(tmp_path, results, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"accuracy": 0.5}))
    assert R.main([str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "bad.json: 'task' is None" in capsys.readouterr().err
    same = results[0].split("=", 1)[1]
    assert R.main([same, same, "--out", str(tmp_path / "y")]) == 2
    assert "label them NAME=FILE" in capsys.readouterr().err
