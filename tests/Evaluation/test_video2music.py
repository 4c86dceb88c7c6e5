"""`Evaluation.video2music`: generate with the AudioLDM2 decoder (16 kHz) -> score."""

import json

import pytest
import soundfile as sf

from Evaluation import video2music as V
from Evaluation.music_tasks import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(argv):
    return main(V.SPEC, V.__doc__, argv)


def test_generate_then_score(small_synthetic, scoring_models, tmp_path, capsys):
    d = small_synthetic / "MUVideo"
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps(json.loads((d / "MUVideoInstructions.json").read_text())[:2]))
    out = tmp_path / "pred.json"
    assert _run(["generate", "--references", str(refs), "--media_dir", str(d / "videos"),
                 "--target_dir", str(d / "audios"), "--out", str(out), "--preset",
                 "tiny-audioldm2", "--num_inference_steps", "2", "--max_new_tokens", "4"]) == 0
    items = json.loads(out.read_text())["items"]
    for item in items.values():
        info = sf.info(str(tmp_path / item["audio"]))
        assert info.samplerate == item["sample_rate"] == 16000  # AudioLDM2's vocoder rate
        assert info.duration == pytest.approx(3.0, abs=0.1)  # the reference clip's length
    capsys.readouterr()
    m = scoring_models
    assert _run(["score", "--predictions", str(out), "--references", str(refs), "--target_dir",
                 str(d / "audios"), "--media_dir", str(d / "videos"), "--clap_model",
                 str(m["clap"]), "--captioner", str(m["blip"]), "--video_frames", "2",
                 "--kl_model", str(m["ast"])]) == 0
    rep = json.loads(capsys.readouterr().out)
    s = rep["systems"]["pred"]
    assert s["relevance"]["mrr"] == 1.0 and s["relevance"]["systems_ranked"] == 1
    assert s["kl"] > 0 and s["fad"] is None and rep["not_computed"]["fad"]
    assert rep["published_metrics"] == ["fad", "kl", "relevance"]


def test_generate_refuses_missing_inputs(small_synthetic, tmp_path, capsys):
    refs = tmp_path / "refs.json"
    item = json.loads((small_synthetic / "MUVideo" / "MUVideoInstructions.json").read_text())[0]
    refs.write_text(json.dumps([dict(item, input_file="nowhere.mp4")]))
    assert _run(["generate", "--references", str(refs), "--media_dir",
                 str(small_synthetic / "MUVideo" / "videos"), "--out",
                 str(tmp_path / "p.json")]) == 2
    assert "1 video inputs named in" in capsys.readouterr().err
