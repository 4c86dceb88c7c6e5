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


def test_musicqa_needs_a_model_unless_templates_are_asked_for(tmp_path, capsys):
    (tmp_path / "caps.json").write_text(json.dumps({"a.wav": "A calm piano melody."}))
    rc = musicqa.main(["write", "--captions", str(tmp_path / "caps.json"), "--out",
                       str(tmp_path / "MusicQA.json"), "--no_progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--model" in err[0] and "--writer template" in err[0]
    assert not (tmp_path / "MusicQA.json").exists()


def test_musicqa_template_schema_read_by_data(tmp_path):
    (tmp_path / "caps.json").write_text(json.dumps({"a.wav": "A calm piano melody."}))
    (tmp_path / "tags.json").write_text(json.dumps({"b.wav": ["rock", "guitar", "fast"],
                                                    "a.wav": ["ignored: caption wins"]}))
    out = tmp_path / "MusicQA.json"
    assert musicqa.main(["write", "--writer", "template", "--captions",
                         str(tmp_path / "caps.json"), "--tags", str(tmp_path / "tags.json"),
                         "--out", str(out), "--questions_per_clip", "2", "--no_progress"]) == 0
    items = json.loads(out.read_text())
    assert len(items) == 2 * (4 + 2)
    a = [i for i in items if i["audio_name"] == "a.wav"]
    assert a[0]["conversation"] == [{"from": "human", "value": "Describe the audio"},
                                    {"from": "gpt", "value": "The music is a calm piano melody."}]
    assert any("rock, guitar, fast" in i["conversation"][1]["value"] for i in items
               if i["audio_name"] == "b.wav")
    samples = parse_musicqa(out, tmp_path / "audios")
    assert len(samples) == len(items) and samples[0].turns[0][0] == "Describe the audio"


def test_musicqa_llm_route_as_published(tmp_path, monkeypatch):
    """The LLM answers the four captioning questions in one numbered list and writes five
    question-answer pairs of its own; what does not parse is sampled again, then listed."""
    from DataSet.instructions import LLMWriter

    model = tiny_chat_llm(tmp_path / "llm")
    (tmp_path / "caps.json").write_text(json.dumps({"a.wav": "A calm piano melody.",
                                                    "b.wav": "A fast drum loop."}))
    (tmp_path / "tags.json").write_text(json.dumps({"c.wav": ["rock", "guitar"]}))
    seen = []

    def scripted(self, requests, attempt):
        seen.extend((r.task, r.fields["description"], attempt) for r in requests)
        if requests[0].fields["description"].startswith("A fast") and attempt < 9:
            return ["no list here"] * len(requests)  # b.wav never parses: listed as failed
        if requests[0].task.startswith("qa_caption"):
            return ["1. A calm tune.\n2. A calm piano tune.\n3. Piano.\n4. Rest."] * len(requests)
        return ["".join(f"{i}. Q{i}?\nAnswer: A{i}.\n" for i in range(1, 6))] * len(requests)

    monkeypatch.setattr(LLMWriter, "_generate", scripted)
    out = tmp_path / "MusicQA.json"
    rc = musicqa.main(["write", "--captions", str(tmp_path / "caps.json"), "--tags",
                       str(tmp_path / "tags.json"), "--out", str(out), "--model", str(model),
                       "--batch_size", "1", "--no_progress"])
    assert rc == 1
    items = json.loads(out.read_text())
    a = [i["conversation"] for i in items if i["audio_name"] == "a.wav"]
    assert [c[0]["value"] for c in a] == ["Describe the audio", "Describe the audio in detail",
                                          "What do you hear in the audio?",
                                          "What can be inferred from the audio?",
                                          "Q1?", "Q2?", "Q3?", "Q4?", "Q5?"]
    assert a[0][1]["value"] == "A calm tune." and a[8][1]["value"] == "A5."
    assert {i["audio_name"] for i in items} == {"a.wav", "c.wav"}
    assert ("qa_caption_tags", "rock, guitar", 0) in seen  # the tags variant of the prompt
    assert sum(1 for t, d, _ in seen if d.startswith("A fast") and t.startswith("qa_caption")) \
        == 5  # five attempts, as the published script allowed
    prog = (tmp_path / "MusicQA.progress.jsonl").read_text()
    assert '"b.wav"' in prog and "5 attempts rejected" in prog
    man = json.loads((tmp_path / "MusicQA.manifest.json").read_text())
    s = man["settings"]["sampling"]
    assert (s["qa_caption_caption"]["temperature"], s["qa_open_caption"]["temperature"]) == \
        (0.5, 0.4)
    assert s["qa_open_tags"]["top_k"] == 4 and man["models"][0]["name"] == str(model)


def test_musicqa_with_a_tiny_llm_records_every_clip(tmp_path):
    model = tiny_chat_llm(tmp_path / "llm")
    (tmp_path / "caps.json").write_text(json.dumps({"a.wav": "A calm piano melody."}))
    out = tmp_path / "MusicQA.json"
    rc = musicqa.main(["write", "--captions", str(tmp_path / "caps.json"), "--out", str(out),
                       "--model", str(model), "--max_new_tokens", "8", "--retries", "0",
                       "--no_progress"])
    prog = [json.loads(x) for x in (tmp_path / "MusicQA.progress.jsonl").read_text().splitlines()]
    assert len(prog) == 1  # a random model writes no numbered list: failed, with the reason
    assert rc == 1 and prog[0]["status"] == "failed" and "numbered" in prog[0]["reason"]


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
    labels = tmp_path / "class_labels_indices.csv"
    labels.write_text('index,mid,display_name\n0,/m/09x0r,"Speech"\n'
                      '137,/m/04rlf,"Music"\n138,/t/dd00088,"Guitar"\n6,/m/012xff,"Drum"\n')
    assert sources.main(["audioset", "--csv", str(csv), "--out_dir", str(tmp_path / "o"),
                         "--labels", str(labels)]) == 0
    segs = json.loads((tmp_path / "o" / "segments.json").read_text())
    assert segs == [{"ytid": "--PJHxphWEs", "start": 30.0, "end": 40.0},
                    {"ytid": "--ZhevVpy1s", "start": 50.0, "end": 60.0}]
    assert json.loads((tmp_path / "o" / "tags.json").read_text()) == {
        "--PJHxphWEs_30000": ["Speech", "Guitar"], "--ZhevVpy1s_50000": ["Drum"]}
    labels.write_text("index,mid,display_name\n0,/m/09x0r,Speech\n")
    assert sources.main(["audioset", "--csv", str(csv), "--out_dir", str(tmp_path / "o"),
                         "--labels", str(labels)]) == 2  # an unknown label id
    csv.write_text("abc, 10, 5\n")
    assert sources.main(["audioset", "--csv", str(csv), "--out_dir", str(tmp_path / "o")]) == 2
