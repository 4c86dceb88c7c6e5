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


def test_edit_texts_have_no_digits():
    for text in (*speed_change(0.5), *speed_change(1.3), *pitch_change(-500), *pitch_change(50)):
        assert not any(c.isdigit() for c in text), text
    assert speed_change(1.5)[0] == "Make this music slower."  # 1.5x longer = slower
    assert "much faster" in speed_change(0.5)[0]
    assert pitch_change(-500)[0] == "Transpose this music five semitones lower."


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
    assert slow[0]["value"] == "Make this music slower." and slow[0]["caption"] == caps["a.wav"]
    assert slow[1]["caption"].startswith("A bright major chord pulse. Played slower")
    assert by_out["up_500/b.wav"]["input_file"] == "src/b.wav"
    pair = next(i for i in items if i["output_file"] == "src/b.wav")
    assert pair["input_file"] == "src/a.wav"
    assert pair["conversation"][1]["caption"] == caps["b.wav"]
