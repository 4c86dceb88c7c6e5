"""MusicQA writing (template and tiny LLM) and the sources step (videos -> frames + audio,
AudioSet segment lists)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from ds_audio import harmonic_tone
from tiny_models import tiny_chat_llm

from data.schemas import parse_musicqa
from DataSet import musicqa, sources

pytestmark = pytest.mark.usefixtures("one_thread")


def test_musicqa_template_schema_read_by_data(tmp_path):
    (tmp_path / "caps.json").write_text(json.dumps({"a.wav": "A calm piano melody."}))
    (tmp_path / "tags.json").write_text(json.dumps({"b.wav": ["rock", "guitar", "fast"],
                                                    "a.wav": ["ignored: caption wins"]}))
    out = tmp_path / "MusicQA.json"
    assert musicqa.main(["write", "--captions", str(tmp_path / "caps.json"), "--tags",
                         str(tmp_path / "tags.json"), "--out", str(out),
                         "--questions_per_clip", "2", "--no_progress"]) == 0
    items = json.loads(out.read_text())
    assert len(items) == 2 * (4 + 2)
    a = [i for i in items if i["audio_name"] == "a.wav"]
    assert a[0]["conversation"] == [{"from": "human", "value": "Describe the audio"},
                                    {"from": "gpt", "value": "The music is a calm piano melody."}]
    assert any("rock, guitar, fast" in i["conversation"][1]["value"] for i in items
               if i["audio_name"] == "b.wav")
    samples = parse_musicqa(out, tmp_path / "audios")
    assert len(samples) == len(items) and samples[0].turns[0][0] == "Describe the audio"


def test_musicqa_with_a_tiny_llm(tmp_path):
    model = tiny_chat_llm(tmp_path / "llm")
    (tmp_path / "caps.json").write_text(json.dumps({"a.wav": "A calm piano melody."}))
    out = tmp_path / "MusicQA.json"
    rc = musicqa.main(["write", "--captions", str(tmp_path / "caps.json"), "--out", str(out),
                       "--writer", "llm", "--model", str(model), "--max_new_tokens", "8",
                       "--retries", "1", "--questions_per_clip", "0", "--batch_size", "4",
                       "--no_progress"])
    items = json.loads(out.read_text())
    prog = [json.loads(x) for x in (tmp_path / "MusicQA.progress.jsonl").read_text().splitlines()]
    assert len(prog) == 4  # every question answered or listed as failed
    assert len(items) == sum(p["status"] == "done" for p in prog)
    assert rc == (1 if len(items) < 4 else 0)
    man = json.loads((tmp_path / "MusicQA.manifest.json").read_text())
    assert man["models"][0]["name"] == str(model) and man["settings"]["temperature"] == 0.5


def _mp4_with_audio(path: Path, seconds: float = 1.0, sr: int = 16000) -> None:
    with av.open(str(path), "w") as c:
        v = c.add_stream("mpeg4", rate=8)
        v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        a = c.add_stream("aac", rate=sr)
        a.layout = "mono"
        for i in range(int(8 * seconds)):
            img = np.full((32, 32, 3), 30 * i % 255, np.uint8)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        wave = harmonic_tone(330.0, seconds, sr)
        for start in range(0, len(wave), 1024):
            chunk = wave[start:start + 1024][None, :]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = sr, start, Fraction(1, sr)
            for p in a.encode(frame):
                c.mux(p)
        for s in (v, a):
            for p in s.encode(None):
                c.mux(p)


def test_split_videos_into_frames_and_audio(tmp_path):
    (tmp_path / "v").mkdir()
    _mp4_with_audio(tmp_path / "v" / "clip.mp4")
    from data.synthetic import write_mp4

    write_mp4(tmp_path / "v" / "silent.mp4", np.zeros((4, 32, 32, 3), np.uint8))
    rc = sources.main(["split-videos", "--video_dir", str(tmp_path / "v"), "--out_dir",
                       str(tmp_path / "o"), "--no_progress"])
    assert rc == 1  # the video without sound is listed as a failure, not dropped
    assert (tmp_path / "o" / "images" / "clip.png").is_file()
    y, sr = sf.read(tmp_path / "o" / "audios" / "clip.wav")
    assert sr == 16000 and abs(len(y) / sr - 1.0) < 0.1
    prog = (tmp_path / "o" / "split-videos.progress.jsonl").read_text()
    assert '"silent.mp4"' in prog and "no audio stream" in prog


def test_audioset_segments(tmp_path):
    csv = tmp_path / "seg.csv"
    csv.write_text("# Segments csv created Sun Mar  5 10:54:31 2017\n"
                   "# num_ytids=2\n# YTID, start_seconds, end_seconds, positive_labels\n"
                   '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"\n'
                   "--ZhevVpy1s, 50.000, 60.000, \"/m/012xff\"\n")
    assert sources.main(["audioset", "--csv", str(csv), "--out_dir", str(tmp_path / "o")]) == 0
    segs = json.loads((tmp_path / "o" / "segments.json").read_text())
    assert segs == [{"ytid": "--PJHxphWEs", "start": 30.0, "end": 40.0},
                    {"ytid": "--ZhevVpy1s", "start": 50.0, "end": 60.0}]
    csv.write_text("abc, 10, 5\n")
    assert sources.main(["audioset", "--csv", str(csv), "--out_dir", str(tmp_path / "o")]) == 2
