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
             "--kl_model", "passt", "--kl_weights", str(_tiny_passt(tmp_path)),
             "--clap_model", str(m["clap"])]
    assert _run(score) == 0
    rep = json.loads(capsys.readouterr().out)
    pred, ref = rep["systems"]["pred"], rep["systems"]["audios"]
    assert rep["models"]["kl"] == "passt:passt.pt" and rep["models"]["fad"].startswith("clap:")
    assert rep["audio_inputs"]["kl"]["sample_rate"] == 32000
    assert rep["audio_inputs"]["fad"]["sample_rate"] == 48000
    assert "soxr" in rep["audio_inputs"]["clap"]["resampler"]
    assert pred["rows_scored"] == 3 and pred["fad"] > 0 and pred["kl"] > 0
    assert set(pred["fad_inf"]) >= {"value", "slope", "r2"} and pred["fad_crop"] is None
    assert -1 <= pred["clap"] <= 1
    # the reference music scored as a system: distance 0 to itself, the reference CLAP score
    assert ref["fad"] == pytest.approx(0, abs=1e-4) and ref["kl"] == pytest.approx(0, abs=1e-3)
    assert ref["clap"] == pytest.approx(rep["references_clap"], abs=1e-9)
    assert rep["comparable_with_paper"]["kl"] is False
    assert rep["comparable_with_paper"]["fad"] is False  # clap embeddings, not VGGish
    assert "relevance" in rep["not_computed"] and np.isfinite(pred["clap"])


def _tiny_passt(tmp_path):
    """A random PaSST checkpoint (24 wide, 1 block, 12 heads) under the published names."""
    import torch

    from Evaluation.metrics.passt import Passt, PasstConfig

    torch.manual_seed(0)
    model = Passt(PasstConfig(embed_dim=24, depth=1))
    with torch.no_grad():
        for q in model.parameters():
            q.add_(torch.randn_like(q) * 0.5)
    torch.save(model.state_dict(), tmp_path / "passt.pt")
    return tmp_path / "passt.pt"


def test_kl_model_and_weights_go_together(small_synthetic, tmp_path, capsys):
    audios = small_synthetic / "MUCaps" / "audios"
    names = sorted(p.name for p in audios.iterdir())[:2]
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({n: "a calm piano piece" for n in names}))
    base = ["score", "--predictions", str(audios), "--references", str(refs),
            "--target_dir", str(audios), "--allow_missing"]
    assert _run(base + ["--kl_model", "passt"]) == 2
    assert "--kl_model passt needs --kl_weights" in capsys.readouterr().err
    assert _run(base + ["--kl_weights", str(_tiny_passt(tmp_path))]) == 2
    assert "use it with --kl_model passt" in capsys.readouterr().err


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
    for crop in ("first", "random"):  # clips under 16.4 s: both read them from the start
        seen.clear()
        emb, counts = Features(Scorers(fad=Stub(), fad_kind="vggish", fad_crop=crop),
                               batch_size=8).fad(clips)
        assert emb.shape == (20, 4) and seen == [26214] * 20
        # a 3 s clip fills chunk 1 and part of chunk 2; chunks 3-10 are the zero padding
        assert (emb[[0, 1, 10, 11]] > 0).all() and (emb[2:10] == 0).all()
        assert counts == {"files": 2, "longer_than_window": 0, "redrawn_in_file": 0,
                          "replaced_from_other_file": 0}
