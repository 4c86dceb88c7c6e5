"""MUEdit pair matching (tempo/loudness) and the instruction JSON read by `data`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ds_audio import chord_pulses, write

from data.schemas import TASK_MUSIC_EDIT, parse_any_to_music
from DataSet import matching, muedit
from DataSet.muedit_instruct import pitch_change, speed_change


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("MUEdit") / "audios"
    sr = 16000
    write(r / "src" / "a.wav", chord_pulses(sr, bpm=120, beats=8), sr)
    write(r / "src" / "b.wav", chord_pulses(sr, bpm=120, beats=8,
                                             freqs=(220.0, 277.18, 329.63)), sr)
    write(r / "src" / "c.wav", chord_pulses(sr, bpm=80, beats=6), sr)  # other tempo
    quiet = chord_pulses(sr, bpm=120, beats=8) * np.float32(0.05)  # same tempo, -26 dB
    write(r / "src" / "d.wav", quiet, sr)
    return r


@pytest.fixture(scope="module")
def pairs_file(root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pairs") / "pairs.json"
    assert muedit.main(["match", "--audio_dir", str(root / "src"), "--out", str(out),
                        "--no_progress"]) == 0
    return out


def test_match_pairs_similar_tempo_and_loudness_only(pairs_file):
    pairs = json.loads(pairs_file.read_text())
    got = {(p["input_file"], p["output_file"]) for p in pairs}
    assert got == {("a.wav", "b.wav"), ("b.wav", "a.wav")}
    assert all(p["input_file"] != p["output_file"] for p in pairs)


def test_pair_score_terms():
    a = {"tempo": 120.0, "loudness": -20.0}
    t, lo = matching.pair_score(a, {"tempo": 125.0, "loudness": -21.5}, 0.05, 3.0)
    assert t < 1 and lo == pytest.approx(0.5)
    t2, _ = matching.pair_score(a, {"tempo": 90.0, "loudness": -20.0}, 0.05, 3.0)
    assert t2 > 1


def test_edit_texts_say_direction_degree_and_amount():
    texts = {f: speed_change(f)[0] for f in (0.5, 0.7, 1.3, 1.5)}
    assert len(set(texts.values())) == 4  # every factor its own instruction
    assert texts[1.5] == "Make this music much slower, at 0.67x its original tempo."  # longer
    assert texts[1.3] == "Make this music slightly slower, at 0.77x its original tempo."
    assert texts[0.7] == "Make this music slightly faster, at 1.43x its original tempo."
    assert texts[0.5] == "Make this music much faster, at 2x its original tempo."
    assert speed_change(1.3)[2] == "Played slightly slower, at 0.77x the original tempo."
    cents = {c: pitch_change(c)[0] for c in (-500, -100, 100, 200, 50)}
    assert len(set(cents.values())) == 5
    assert cents[-500] == "Lower the pitch of this music by five semitones (500 cents)."
    assert cents[200] == "Raise the pitch of this music by two semitones (200 cents)."
    assert cents[50] == "Raise the pitch of this music by a quarter tone (50 cents)."
    assert pitch_change(-100)[1] == "one semitone (100 cents) lower in pitch"
    with pytest.raises(ValueError):
        speed_change(1.0)


def test_instructions_from_edits_and_pairs_are_read_by_data(root, pairs_file, tmp_path):
    src = str(root / "src")
    assert muedit.main(["speed", "--audio_dir", src, "--out_dir", str(root), "--factors",
                        "0.7,1.0,1.5", "--no_progress"]) == 0
    assert muedit.main(["pitch", "--audio_dir", src, "--out_dir", str(root), "--cents",
                        "-500,500", "--no_progress"]) == 0
    pairs = pairs_file
    caps = {"a.wav": "A bright major chord pulse.", "b.wav": "A warm chord pulse.",
            "c.wav": "A slow chord pulse."}  # d.wav has no caption: listed as failures
    (tmp_path / "caps.json").write_text(json.dumps(caps))
    out = root.parent / "MUEditInstructions.json"
    rc = muedit.main(["instruct", "--audio_root", str(root), "--captions",
                      str(tmp_path / "caps.json"), "--edits", str(root / "speed.json"),
                      str(root / "pitch.json"), "--pairs", str(pairs), "--pairs_dir", src,
                      "--out", str(out), "--no_progress"])
    assert rc == 1  # d.wav's edits have no caption: counted and listed
    items = json.loads(out.read_text())
    # 3 captioned clips x (2 speed edits without the identity + 2 pitch edits) + 2 pairs
    assert len(items) == 3 * 4 + 2
    samples = parse_any_to_music(out, root, root, source="MUEdit", task=TASK_MUSIC_EDIT,
                                 default_modality="audio")
    assert len(samples) == len(items)
    for s in samples:
        assert Path(s.media["audio"]).is_file() and Path(s.output_music).is_file()
        assert s.music_caption
    by_out = {i["output_file"]: i for i in items}
    slow = by_out["1_5/a.wav"]["conversation"]
    assert slow[0]["value"] == "Make this music much slower, at 0.67x its original tempo."
    assert slow[0]["caption"] == caps["a.wav"]
    assert slow[1]["value"] == "Here is a music that is much slower, at 0.67x the original tempo."
    assert slow[1]["caption"] == ("A bright major chord pulse. Played much slower, at 0.67x the "
                                  "original tempo.")
    fast = by_out["0_7/a.wav"]["conversation"][0]["value"]
    assert fast == "Make this music slightly faster, at 1.43x its original tempo."
    assert by_out["up_500/b.wav"]["input_file"] == "src/b.wav"
    pair = next(i for i in items if i["output_file"] == "src/b.wav")
    assert pair["input_file"] == "src/a.wav"
    assert pair["conversation"][1]["caption"] == caps["b.wav"]
    assert pair["conversation"][0]["value"] == ("Change this music from a bright major chord "
                                                "pulse into a warm chord pulse.")


def test_pair_instructions_name_the_instrument_and_genre(root, pairs_file, tmp_path):
    caps = {n: f"Clip {n}." for n in ("a.wav", "b.wav")}
    (tmp_path / "caps.json").write_text(json.dumps(caps))
    attrs = {"a.wav": {"instrument": "piano", "genre": "jazz"},
             "b.wav": {"instrument": "guitar", "genre": "jazz"}}
    (tmp_path / "attrs.json").write_text(json.dumps(attrs))
    out = tmp_path / "MUEditInstructions.json"
    assert muedit.main(["instruct", "--audio_root", str(root), "--captions",
                        str(tmp_path / "caps.json"), "--pairs", str(pairs_file), "--pairs_dir",
                        str(root / "src"), "--attributes", str(tmp_path / "attrs.json"),
                        "--out", str(out), "--no_progress"]) == 0
    human = {i["output_file"]: i["conversation"][0]["value"] for i in json.loads(out.read_text())}
    assert human == {"src/b.wav": "Replace the piano with guitar.",
                     "src/a.wav": "Replace the guitar with piano."}


@pytest.mark.usefixtures("one_thread")
def test_llm_rephrasings_are_seeded_per_item_and_must_keep_the_amount(root, tmp_path):
    from tiny_models import tiny_chat_llm

    model = tiny_chat_llm(tmp_path / "llm", words_only=True)
    caps = {n: f"Clip {n}." for n in ("a.wav", "b.wav")}
    (tmp_path / "caps.json").write_text(json.dumps(caps))
    speed = root / "speed_small.json"
    records = [r for r in json.loads((root / "speed.json").read_text())
               if r["input_file"] in ("src/a.wav", "src/b.wav")]
    speed.write_text(json.dumps(records))
    runs = []
    for bs in ("1", "3"):
        out = tmp_path / f"bs{bs}" / "MUEditInstructions.json"
        rc = muedit.main(["instruct", "--audio_root", str(root), "--captions",
                          str(tmp_path / "caps.json"), "--edits", str(speed), "--out", str(out),
                          "--writer", "llm", "--model", str(model), "--max_new_tokens", "6",
                          "--retries", "1", "--batch_size", bs, "--no_progress"])
        prog = [json.loads(x) for x in out.with_suffix(".progress.jsonl").read_text().splitlines()]
        runs.append({p["key"]: p.get("reason", p.get("record")) for p in prog})
        # a random model never repeats the edit's amount: every rephrasing is refused, listed
        assert rc == 1 and len(prog) == 4 and all(p["status"] == "failed" for p in prog)
        assert all("lost the amount" in p["reason"] for p in prog)
    assert runs[0] == runs[1]  # same texts whatever the batch size
    man = json.loads((tmp_path / "bs1" / "MUEditInstructions.manifest.json").read_text())
    assert man["settings"]["sampling"]["edit_rephrase"]["temperature"] == 1.9
