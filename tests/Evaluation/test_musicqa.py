"""`Evaluation.musicqa`: score JSON, missing-row errors, chance baseline, generate -> score."""

import json

import pytest

from Evaluation import musicqa as M


def _refs(path, rows):
    path.write_text(json.dumps([{"audio_name": a, "conversation": [
        {"from": "human", "value": q}, {"from": "gpt", "value": ans}]} for a, q, ans in rows]))
    return path


ROWS = [("1.wav", "Describe the audio", "A slow piano melody in a low register."),
        ("2.wav", "Describe the audio", "A fast flute tune, high and bright."),
        ("1.wav", "What is the tempo of the music?", "The tempo is slow."),
        ("2.wav", "What is the tempo of the music?", "The tempo is fast.")]


def test_score_json_shape_and_values(tmp_path, capsys):
    refs = _refs(tmp_path / "refs.json", ROWS)
    preds = {"1.wav": {"Describe the audio": "A slow piano melody.",
                       "What is the tempo of the music?": "The tempo is slow."},
             "2.wav": {"Describe the audio": "A flute tune.",
                       "What is the tempo of the music?": "It is slow."}}
    (tmp_path / "p.json").write_text(json.dumps(preds))
    assert M.main(["score", "--predictions", str(tmp_path / "p.json"),
                   "--references", str(refs)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["published"]) == {"bleu", "bleu4", "meteor", "rouge_l", "bert_score"}
    assert out["published"]["bert_score"] is None
    assert out["rows_scored"] == 4 and out["rows_missing"] == 0
    assert out["by_kind"]["captioning"]["rows"] == 2 and out["by_kind"]["qa"]["rows"] == 2
    assert out["by_kind"]["qa"]["published"]["rouge_l"] == pytest.approx((1.0 + 1 / 4) / 2)
    # chance answers row 1 with track 2's reference for the same question
    assert out["chance"]["published"]["rouge_l"] < out["published"]["rouge_l"]


def test_missing_rows_are_an_error_unless_allowed(tmp_path, capsys):
    refs = _refs(tmp_path / "refs.json", ROWS)
    (tmp_path / "p.json").write_text(json.dumps({"1.wav": {"Describe the audio": "piano"},
                                                 "2.wav": {"Describe the audio": "flute"}}))
    args = ["score", "--predictions", str(tmp_path / "p.json"), "--references", str(refs)]
    assert M.main(args) == 2
    assert "2 of 4 reference rows have no prediction" in capsys.readouterr().err
    assert M.main(args + ["--allow_missing"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["rows_scored"], out["rows_missing"]) == (2, 2)


def test_chance_uses_another_track_for_the_same_question():
    rows = [M.QARow(a, q, ans) for a, q, ans in ROWS]
    cands, fallbacks = M.chance_candidates(rows, seed=0)
    assert cands == [ROWS[1][2], ROWS[0][2], ROWS[3][2], ROWS[2][2]] and fallbacks == 0


def test_generate_then_score_on_synthetic_data(small_synthetic, tmp_path, capsys):
    qa = json.loads((small_synthetic / "MusicQA" / "MusicQA.json").read_text())[:2]
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps(qa))
    out = tmp_path / "pred.json"
    args = ["generate", "--references", str(refs), "--media_dir",
            str(small_synthetic / "MusicQA" / "audios"), "--out", str(out),
            "--max_new_tokens", "4", "--temperature", "0"]
    assert M.main(args) == 0
    preds = json.loads(out.read_text())
    assert sum(len(v) for v in preds.values()) == len({(r["audio_name"],
               r["conversation"][0]["value"]) for r in qa})
    assert M.main(args) == 0  # resumed: nothing left to do
    assert "0 new rows" in capsys.readouterr().out
    assert M.main(["score", "--predictions", str(out), "--references", str(refs)]) == 0
    assert json.loads(capsys.readouterr().out)["rows_missing"] == 0


def test_score_reports_clap_text_beside_the_chance_baseline(tmp_path, capsys, clap_text_dir):
    refs = _refs(tmp_path / "refs.json", ROWS)
    preds = {"1.wav": {"Describe the audio": "A slow piano melody in a low register.",
                       "What is the tempo of the music?": "The tempo is slow."},
             "2.wav": {"Describe the audio": "A flute tune.",
                       "What is the tempo of the music?": "It is slow."}}
    (tmp_path / "p.json").write_text(json.dumps(preds))
    assert M.main(["score", "--predictions", str(tmp_path / "p.json"), "--references", str(refs),
                   "--clap_text_model", str(clap_text_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["models"]["clap_text"] == f"clap_text:{clap_text_dir}"
    assert -1 <= out["standard"]["clap_text"] <= 1 and -1 <= out["chance"]["clap_text"] <= 1
    qa, cap = out["by_kind"]["qa"]["standard"], out["by_kind"]["captioning"]["standard"]
    # two rows per kind: the overall mean is the mean of the two kinds
    assert (qa["clap_text"] + cap["clap_text"]) / 2 == pytest.approx(
        out["standard"]["clap_text"], abs=1e-12)
    assert out["comparable_with_paper"]["clap_text"] is False
    assert out["comparable_with_paper"]["bert_score"] is False


def test_control_predictions_add_media_effect_per_metric(tmp_path, capsys, clap_text_dir):
    refs = _refs(tmp_path / "refs.json", ROWS)
    main = {a: {} for a, *_ in ROWS}
    silent = {a: {} for a, *_ in ROWS}
    for a, q, ans in ROWS:
        main[a][q] = ans
        silent[a][q] = "Nothing is heard." if q == "Describe the audio" else ans
    (tmp_path / "main.json").write_text(json.dumps(main))
    (tmp_path / "silence.json").write_text(json.dumps(silent))
    (tmp_path / "same.json").write_text(json.dumps(main))
    args = ["score", "--predictions", str(tmp_path / "main.json"), "--references", str(refs),
            "--clap_text_model", str(clap_text_dir), "--control_predictions",
            f"silence={tmp_path / 'silence.json'},same={tmp_path / 'same.json'}"]
    assert M.main(args) == 0
    effect = json.loads(capsys.readouterr().out)["media_effect"]
    assert effect["silence"]["identical_answers"] == 0.5
    assert set(effect["silence"]) == {"identical_answers", "bleu", "bleu4", "meteor",
                                      "rouge_l", "clap_text"}
    assert effect["silence"]["rouge_l"]["delta"] > 0  # the references beat "Nothing is heard."
    for metric in ("bleu", "bleu4", "meteor", "rouge_l", "clap_text"):
        assert effect["same"][metric] == {"delta": 0.0, "ci95": [0.0, 0.0]}
    (tmp_path / "part.json").write_text(json.dumps({"1.wav": main["1.wav"]}))
    assert M.main(args[:-1] + [f"silence={tmp_path / 'part.json'}"]) == 2
    assert "control silence: 2 of the 4 rows scored have no prediction" in \
        capsys.readouterr().err
