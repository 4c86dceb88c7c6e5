"""`Evaluation.text2music`: generate (reference lengths, decoder sample rate, resume) -> score."""

import json

import numpy as np
import pytest
import soundfile as sf

from Evaluation import text2music as T
from Evaluation.music_tasks import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(argv):
    return main(T.SPEC, T.__doc__, argv)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 3 clips, 8 dims
def test_generate_then_score(small_synthetic, scoring_models, tmp_path, capsys):
    audios = small_synthetic / "MUCaps" / "audios"
    caps = json.loads((small_synthetic / "MUCaps" / "MUCapsCaptions.json").read_text())
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps(dict(list(caps.items())[:3])))
    out = tmp_path / "pred.json"
    gen = ["generate", "--references", str(refs), "--media_dir", str(audios), "--out", str(out),
           "--max_new_tokens", "4"]
    assert _run(gen) == 0
    manifest = json.loads(out.read_text())
    assert manifest["task"] == "text2music" and len(manifest["items"]) == 3
    for name, item in manifest["items"].items():
        info = sf.info(str(out.parent / item["audio"]))
        assert info.samplerate == 32000  # the tiny MusicGen decoder's own rate
        assert info.duration == pytest.approx(sf.info(str(audios / f"{name}.wav")).duration,
                                              abs=0.05)  # as long as its reference (published)
    capsys.readouterr()
    assert _run(gen) == 0
    assert "0 new clips" in capsys.readouterr().out

    m = scoring_models
    score = ["score", "--predictions", str(out), str(audios), "--references", str(refs),
             "--target_dir", str(audios), "--fad_model", "clap", "--fad_weights", str(m["clap"]),
             "--kl_model", str(m["ast"]), "--clap_model", str(m["clap"])]
    assert _run(score) == 0
    rep = json.loads(capsys.readouterr().out)
    pred, ref = rep["systems"]["pred"], rep["systems"]["audios"]
    assert rep["models"]["kl"].startswith("ast:") and rep["models"]["fad"].startswith("clap:")
    assert pred["rows_scored"] == 3 and pred["fad"] > 0 and pred["kl"] > 0
    assert -1 <= pred["clap"] <= 1
    # the reference music scored as a system: distance 0 to itself, the reference CLAP score
    assert ref["fad"] == pytest.approx(0, abs=1e-4) and ref["kl"] == pytest.approx(0, abs=1e-3)
    assert ref["clap"] == pytest.approx(rep["references_clap"], abs=1e-9)
    assert rep["comparable_with_paper"]["kl"] is False
    assert rep["comparable_with_paper"]["fad"] is False  # clap embeddings, not VGGish
    assert "relevance" in rep["not_computed"] and np.isfinite(pred["clap"])


def test_missing_rows_are_an_error_unless_allowed(small_synthetic, tmp_path, capsys):
    audios = small_synthetic / "MUCaps" / "audios"
    names = sorted(p.name for p in audios.iterdir())[:3]
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({n: "a calm piano piece" for n in names}))
    folder = tmp_path / "system"
    folder.mkdir()
    (folder / names[0]).write_bytes((audios / names[0]).read_bytes())
    score = ["score", "--predictions", str(folder), "--references", str(refs),
             "--target_dir", str(audios)]
    assert _run(score) == 2
    assert "2 of 3 reference rows have no generated audio" in capsys.readouterr().err
    assert _run(score + ["--allow_missing"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["systems"]["system"]["rows_missing"] == 2
    assert rep["systems"]["system"]["fad"] is None and "fad" in rep["not_computed"]


def test_caption_references_are_checked(tmp_path):
    from Evaluation._common import EvalInputError

    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"a.wav": "piano", "b.wav": ""}))
    with pytest.raises(EvalInputError, match="1 captions are empty"):
        T.SPEC.load(refs)


def test_vggish_fad_uses_the_published_framing(small_synthetic):
    """fad-pytorch as published: every clip padded/cut to 2^18 samples at 16 kHz, 10 chunks of
    26214 samples, one VGGish embedding per chunk."""
    from Evaluation.music_scoring import Features, Scorers

    seen = []

    class Stub:
        sample_rate, identity = 16000, "vggish:stub"

        def embed(self, wave):
            seen.append(len(wave))
            return np.full((1, 4), float(np.abs(wave).sum()))

    clips = sorted((small_synthetic / "MUCaps" / "audios").iterdir())[:2]
    emb = Features(Scorers(fad=Stub(), fad_kind="vggish"), batch_size=8).fad(clips)
    assert emb.shape == (20, 4) and seen == [26214] * 20
    # a 3 s clip fills chunk 1 and part of chunk 2; chunks 3-10 are the zero padding
    assert (emb[[0, 1, 10, 11]] > 0).all() and (emb[2:10] == 0).all()
