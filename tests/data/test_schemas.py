"""The published annotation schemas of data/schemas.py and the error policy applied to them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dataset_fixtures import WordTokenizer, write_json

from data.dataset import build_stage_dataset
from data.mixes import stage_samples
from data.paths import DataPaths
from data.schemas import DatasetError, ErrorPolicy, SkipLog, pair_turns, parse_alpaca


def test_every_schema_parses(root: Path) -> None:
    paths = DataPaths.from_root(root)
    s3 = {s.id: s for s in stage_samples(3, paths)}
    qa = s3["MusicQA:0"]
    assert qa.turns == (("What instrument plays?", "A piano."), ("Is it fast?", "No, slow."))
    assert s3["MusicQA:1"].turns == (("Tempo?", "Fast."),)  # "conversations" key
    assert s3["Alpaca:0"].turns == (("Name a colour.", "Red."),) and s3["Alpaca:0"].media == {}
    img = s3["MUImage:0"]
    assert img.media == {"image": str(root / "MUImage/images/a.png")}
    assert img.music_caption == "bright piano"
    assert img.turns[-1][1] == "Here it is."  # literal [AUDk] text never reaches the tokens
    assert img.output_music == str(root / "MUImage/audios/a.wav")
    assert s3["MUVideo:1"].media == {"video": str(root / "MUVideo/videos/b.mp4")}
    edit = s3["MUEdit:0"]
    assert edit.media == {"audio": str(root / "MUEdit/audios/a.wav")}
    assert edit.music_caption == "the same melody on a flute"
    assert {s.task for s in s3.values()} == {
        "music_qa", "alpaca", "image_to_music", "video_to_music", "music_edit"
    }


def test_stanford_alpaca(tmp_path: Path) -> None:
    p = tmp_path / "alpaca.json"
    write_json(p, [{"instruction": "Add.", "input": "1 and 2", "output": "3"},
                   {"instruction": "Say hi.", "input": "", "output": "Hi."}])
    assert [s.turns for s in parse_alpaca(p)] == [
        (("Add.\n\n1 and 2", "3"),), (("Say hi.", "Hi."),)
    ]


def test_pair_turns_roles_and_aud_text() -> None:
    conv = [{"from": "user", "value": " Q "}, {"from": "assistant", "value": "A [AUD0][AUD7] "}]
    assert pair_turns(conv) == [("Q", "A")]
    assert pair_turns([{"value": "q"}, {"value": "a"}]) == [("q", "a")]  # alternating, no roles
    with pytest.raises(ValueError, match="unknown role 'narrator'"):
        pair_turns([{"from": "narrator", "value": "q"}, {"from": "gpt", "value": "a"}])
    with pytest.raises(ValueError, match="expected human,gpt"):
        pair_turns([{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}])


def test_skip_log_counts_once_per_sample() -> None:
    log = SkipLog()
    log.add("A:0", "schema", "bad")
    log.merge([("A:0", "schema", "bad again"), ("B:1", "missing file", "x.wav")])
    assert len(log) == 2 and log.counts() == {"schema": 1, "missing file": 1}
    assert "skipped 2 samples" in log.report() and "B:1: x.wav" in log.report()


def test_schema_errors_follow_policy(root: Path) -> None:
    tok = WordTokenizer()
    bad = root / "MusicQA/MusicQA.json"
    items = json.loads(bad.read_text())
    items.append({"audio_name": "a.wav", "conversation": [{"from": "human", "value": "odd"}]})
    items.append("not an object")
    write_json(bad, items)
    paths = DataPaths.from_root(root)
    with pytest.raises(DatasetError, match=r"MusicQA.json item 2: conversation has an odd number"):
        build_stage_dataset(3, paths, tok, split="all")
    ds = build_stage_dataset(3, paths, tok, split="all", on_error="skip")
    assert ds.skipped.counts() == {"schema": 2}
    assert {"MusicQA:2", "MusicQA:3"} == {k for k, _, _ in ds.skipped.records()}
    (root / "Alpaca/alpaca_data.json").write_text("{broken")
    with pytest.raises(DatasetError, match="alpaca_data.json is not valid JSON"):
        build_stage_dataset(3, paths, tok, split="all", on_error="skip")


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="on_error"):
        ErrorPolicy("ignore")  # type: ignore[arg-type]
