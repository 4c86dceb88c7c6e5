"""`Evaluation.editing`: resumable generate -> score with the unedited-source baseline."""

import json

import pytest

from Evaluation import editing as E
from Evaluation.music_tasks import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(argv):
    return main(E.SPEC, E.__doc__, argv)


def test_generate_resumes_then_score_has_source_baseline(small_synthetic, scoring_models,
                                                         tmp_path, capsys):
    d = small_synthetic / "MUEdit" / "audios"
    rows = json.loads((small_synthetic / "MUEdit" / "MUEditInstructions.json").read_text())[:3]
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps(rows[:2]))
    out = tmp_path / "pred.json"
    gen = ["generate", "--references", str(refs), "--media_dir", str(d), "--out", str(out),
           "--max_new_tokens", "4", "--audio_seconds", "1"]
    assert _run(gen) == 0
    first = {k: (tmp_path / v["audio"]).read_bytes()
             for k, v in json.loads(out.read_text())["items"].items()}
    refs.write_text(json.dumps(rows))
    capsys.readouterr()
    assert _run(gen) == 0
    said = capsys.readouterr().out
    assert "1 new clips" in said and "2 already present" in said
    items = json.loads(out.read_text())["items"]
    assert len(items) == 3 and all((tmp_path / items[k]["audio"]).read_bytes() == b
                                   for k, b in first.items())
    assert _run(gen[:-2] + ["--audio_seconds", "2"]) == 2  # other settings: never mixed in
    assert "written with another flags" in capsys.readouterr().err

    m = scoring_models
    assert _run(["score", "--predictions", str(out), "--references", str(refs), "--target_dir",
                 str(d), "--media_dir", str(d), "--fad_model", "encodec", "--fad_weights",
                 str(m["encodec"]), "--clap_model", str(m["clap"])]) == 0
    rep = json.loads(capsys.readouterr().out)
    src, pred = rep["baselines"]["source"], rep["systems"]["pred"]
    assert rep["models"]["fad"].startswith("encodec:")
    assert src["fad"] > 0 and pred["fad"] > 0 and src["fad"] != pred["fad"]
    assert -1 <= src["clap"] <= 1 and src["kl"] is None
    assert rep["published_metrics"] == [] and rep["not_computed"]["relevance"]
