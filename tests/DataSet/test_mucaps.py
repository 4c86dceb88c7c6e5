"""MUCaps: the music filter (real VAD + quality measures) and batched music captions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from ds_audio import chord_pulses, harmonic_tone, real_recording, write

from DataSet import mucaps

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clips(tmp_path_factory, espeak_wav):
    d = tmp_path_factory.mktemp("clips")
    shutil.copy(espeak_wav, d / "speech.wav")
    shutil.copy(real_recording(), d / "cantina.wav")
    write(d / "chord.flac", chord_pulses(22050, beats=6), 22050)
    write(d / "silence.wav", np.zeros(32000, np.float32), 16000)
    clipped = np.clip(harmonic_tone(150.0, 2.0, 16000, amp=1.0) * 4.0, -1.0, 1.0)
    write(d / "clipped.wav", clipped, 16000)
    (d / "notes.txt").write_text("not audio")  # ignored: not an audio extension
    return d


@pytest.fixture(scope="module")
def decisions(clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("f") / "filter.json"
    assert mucaps.main(["filter", "--audio_dir", str(clips), "--out", str(out),
                        "--no_progress"]) == 0
    return json.loads(out.read_text()), out


def test_speech_rejected_music_kept(decisions):
    d, _ = decisions
    assert d["speech.wav"]["keep"] is False
    assert d["speech.wav"]["measures"]["speech_ratio"] > 0.5
    assert any("speech" in r for r in d["speech.wav"]["reasons"])
    for music in ("cantina.wav", "chord.flac"):
        assert d[music]["keep"] is True, d[music]
        assert d[music]["measures"]["speech_ratio"] <= 0.1


def test_quality_measures_recorded_and_used(decisions):
    d, _ = decisions
    assert set(d) == {"speech.wav", "cantina.wav", "chord.flac", "silence.wav", "clipped.wav"}
    silent = d["silence.wav"]
    assert not silent["keep"] and silent["measures"]["loudness_lufs"] is None
    assert silent["measures"]["silence_ratio"] == 1.0
    clipped = d["clipped.wav"]
    assert not clipped["keep"] and clipped["measures"]["clipping_ratio"] > 0.01
    assert any("clipping" in r for r in clipped["reasons"])
    m = d["cantina.wav"]["measures"]
    assert -40 < m["loudness_lufs"] < -5 and m["sample_rate"] == 22050


def test_thresholds_are_flags(clips, tmp_path):
    out = tmp_path / "f.json"
    assert mucaps.main(["filter", "--audio_dir", str(clips), "--out", str(out), "--no_progress",
                        "--max_speech_ratio", "1.0", "--max_clipping_ratio", "1.0"]) == 0
    d = json.loads(out.read_text())
    assert d["speech.wav"]["keep"] and d["clipped.wav"]["keep"]


def test_music_captions_refuse_random_weights(clips, decisions, tmp_path, capsys):
    _, filt = decisions
    out = tmp_path / "caps.json"
    rc = mucaps.main(["caption", "--audio_dir", str(clips), "--filter", str(filt), "--out",
                      str(out), "--preset", "tiny", "--device", "cpu", "--no_progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--allow_random_weights" in err[0]
    assert "no --model" in err[0] and not out.exists()


@pytest.mark.parametrize("temperature", ["0", "0.8"])
def test_music_captions_batched_with_a_tiny_checkpoint(clips, decisions, tmp_path, temperature):
    _, filt = decisions
    outs = []
    for bs in ("1", "3"):
        out = tmp_path / f"caps{bs}.json"
        rc = mucaps.main(["caption", "--audio_dir", str(clips), "--filter", str(filt),
                          "--out", str(out), "--preset", "tiny", "--device", "cpu",
                          "--batch_size", bs, "--max_new_tokens", "6", "--temperature",
                          temperature, "--allow_random_weights", "--no_progress"])
        assert rc == 0
        outs.append(json.loads(out.read_text()))
    assert set(outs[0]) == {"cantina.wav", "chord.flac"}  # only the kept clips
    assert all(isinstance(v, str) and v for v in outs[0].values())
    assert outs[0] == outs[1]  # batching does not change the captions (greedy or sampled)
    man = json.loads((tmp_path / "caps1.manifest.json").read_text())
    assert man["models"][0]["role"] == "music captioner"
    assert man["models"][0]["revision"] == "random-tuned-weights"
    s = man["settings"]
    assert s["question"].startswith("Describe the music in detail")
    assert s["random_weights"] == ["tuned weights (no --model: preset tiny)", "LLaMA", "MERT"]
    assert (s["temperature"], s["max_new_tokens"]) == (float(temperature), 6)
    assert "overridden" in s["source"]


MU_LLAMA = Path(__file__).resolve().parents[1] / "llama" / "release" / "mullama_reference"
COMPONENTS = Path(__file__).resolve().parents[1] / "llama" / "published_reference" / "components"


@pytest.fixture(scope="module")
def mu_llama_clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("mu_clips")
    for name in ("a.wav", "b.wav"):
        shutil.copy(MU_LLAMA / "audio.wav", d / name)
    return d


def _mu_llama_caption(clips, out, *extra):
    return mucaps.main(["caption", "--audio_dir", str(clips), "--out", str(out), "--model",
                        str(MU_LLAMA / "checkpoint.pth"), "--llama_dir", str(COMPONENTS),
                        "--mert_path", str(COMPONENTS / "mert"), "--device", "cpu",
                        "--no_progress", *extra])


def test_mu_llama_captions_with_the_published_settings(mu_llama_clips, tmp_path, capsys):
    """MU-LLaMA (a tiny release written by the published code) as the published captioner:
    its kNN index is required, greedy captions equal the published code's own ids."""
    assert _mu_llama_caption(mu_llama_clips, tmp_path / "x.json") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--knn_dir" in err[0] and "0.3" in err[0]
    out = tmp_path / "caps.json"
    assert _mu_llama_caption(mu_llama_clips, out, "--knn_dir", str(MU_LLAMA), "--temperature",
                             "0", "--max_new_tokens", "24", "--batch_size", "2") == 0
    from llama.tokenizer import load_tokenizer

    want = load_tokenizer(str(COMPONENTS / "tokenizer.model")).decode(
        json.loads((MU_LLAMA / "reference.json").read_text())["cases"]["music"]["knn"][
            "greedy_ids"]).strip()
    assert json.loads(out.read_text()) == {"a.wav": want, "b.wav": want}
    s = json.loads((tmp_path / "caps.manifest.json").read_text())["settings"]
    assert s["knn"] == {"cache_size": 100, "cache_t": 20.0, "cache_weight": 0.3,
                        "index": str(MU_LLAMA)}
    assert s["question"].startswith("Describe the music in detail including details")


def test_mu_llama_default_sampling_is_the_published_one(mu_llama_clips, tmp_path):
    runs = []
    for bs in ("1", "2"):
        out = tmp_path / f"caps{bs}.json"
        assert _mu_llama_caption(mu_llama_clips, out, "--knn_dir", str(MU_LLAMA),
                                 "--max_new_tokens", "8", "--batch_size", bs) == 0
        runs.append(json.loads(out.read_text()))
    assert runs[0] == runs[1]  # sampled per file: the batch size changes nothing
    assert runs[0]["a.wav"] != runs[0]["b.wav"]  # ... and each file has its own draw
    s = json.loads((tmp_path / "caps1.manifest.json").read_text())["settings"]
    assert (s["temperature"], s["top_p"], s["max_new_tokens"]) == (0.4, 1.0, 8)
    assert "qa_bot" in s["source"] and s["random_weights"] == []
