"""`Evaluation.image2music`: instruction rows, generate -> score with the relevance fallback."""

import json

import numpy as np
import pytest
import soundfile as sf

from Evaluation import image2music as I
from Evaluation._common import EvalInputError
from Evaluation.music_tasks import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(argv):
    return main(I.SPEC, I.__doc__, argv)


def _matching_relevance(monkeypatch, rows: list[dict], audio_dir):
    """Make the relevance model embed each input image as the CLAP audio embedding of that row's
    reference music: a system that outputs the reference music then matches every input."""
    from data.media import load_audio
    from Evaluation.relevance import CaptionClapRelevance

    target = {r["input_file"]: audio_dir / r["output_file"] for r in rows}
    assert len(target) == len(rows)  # one reference per input, so the match is unambiguous

    def media_embeddings(self, modality, paths):
        waves = [load_audio(target[p.name], self.clap.sample_rate) for p in paths]
        return np.stack([self.clap.audio([w])[0] for w in waves])

    monkeypatch.setattr(CaptionClapRelevance, "media_embeddings", media_embeddings)


def test_generate_then_score_ranks_the_matching_system_first(small_synthetic, scoring_models,
                                                             tmp_path, capsys, monkeypatch):
    """Two systems on three rows: the model's music and the reference music itself. With input
    embeddings equal to the reference music's, the reference system must win every row (rank 1,
    similarity 1) and the model's music must come second on every row."""
    d = small_synthetic / "MUImage"
    refs = tmp_path / "refs.json"
    rows = json.loads((d / "MUImageInstructions.json").read_text())[:3]
    refs.write_text(json.dumps(rows))
    out = tmp_path / "m2ugen.json"
    assert _run(["generate", "--references", str(refs), "--media_dir", str(d / "images"),
                 "--out", str(out), "--max_new_tokens", "4", "--audio_seconds", "1"]) == 0
    items = json.loads(out.read_text())["items"]
    assert sorted(items) == sorted(r["output_file"][:-4] for r in rows)
    assert {i["prompt"] for i in items.values()} == {r["conversation"][0]["value"] for r in rows}
    assert all(sf.info(str(tmp_path / i["audio"])).duration == pytest.approx(1.0, abs=0.05)
               for i in items.values())
    capsys.readouterr()
    _matching_relevance(monkeypatch, rows, d / "audios")
    m = scoring_models
    assert _run(["score", "--predictions", str(out), str(d / "audios"), "--references",
                 str(refs), "--target_dir", str(d / "audios"), "--media_dir", str(d / "images"),
                 "--clap_model", str(m["clap"]), "--captioner", str(m["blip"])]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert "NOT comparable" in rep["models"]["relevance"]
    assert rep["comparable_with_paper"]["relevance"] is False
    rel = {n: s["relevance"] for n, s in rep["systems"].items()}
    assert set(rel) == {"m2ugen", "audios"}
    assert all(r["rows_ranked"] == 3 and r["systems_ranked"] == 2 for r in rel.values())
    assert rel["audios"]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert rel["m2ugen"]["similarity"] < 0.99
    assert (rel["audios"]["mean_rank"], rel["audios"]["mrr"]) == (1.0, 1.0)
    assert (rel["m2ugen"]["mean_rank"], rel["m2ugen"]["mrr"]) == (2.0, 0.5)


def test_instruction_rows_follow_the_published_schema(tmp_path):
    item = {"input_file": "a.png", "output_file": "x.wav", "conversation": [
        {"from": "human", "value": "Compose for this", "input_modality": "image"},
        {"from": "gpt", "value": "Here", "caption": "A slow piano piece."}]}
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps([item, dict(item, input_file="b.png")]))
    rows = I.SPEC.load(refs)
    assert [r.key for r in rows] == ["x", "x-2"]  # repeated outputs never overwrite each other
    assert (rows[1].media, rows[0].caption, rows[0].prompt) == ("b.png", "A slow piano piece.",
                                                                "Compose for this")
    bad = dict(item, conversation=[dict(item["conversation"][0], input_modality="video"),
                                   item["conversation"][1]])
    refs.write_text(json.dumps([bad]))
    with pytest.raises(EvalInputError, match="input_modality is 'video'"):
        I.SPEC.load(refs)
    refs.write_text(json.dumps([dict(item, output_file=None)]))
    with pytest.raises(EvalInputError, match="item 0: needs a string 'output_file'"):
        I.SPEC.load(refs)
