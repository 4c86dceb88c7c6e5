import json
import os

import pytest

from util.atomic import atomic_path, write_json


def test_write_json_and_no_leftovers(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert os.listdir(tmp_path) == ["a.json"]


def test_failure_keeps_previous_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_append_jsonl_adds_whole_lines(tmp_path):
    from util.atomic import append_jsonl

    log = tmp_path / "sub" / "log.jsonl"
    append_jsonl(log, {"step": 1})
    append_jsonl(log, {"step": 2, "text": "é"})
    assert [json.loads(x) for x in log.read_text().splitlines()] == [
        {"step": 1}, {"step": 2, "text": "é"}]
    assert os.listdir(log.parent) == ["log.jsonl"]
