"""Batch runs: every line gets a result with token ids; WAV names never collide."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.batch import BatchRun, OutputNames, safe_name
from app.settings import make_settings
from llama.m2ugen import ChatReply


class FakeEngine:
    """Stands in for a LoadedModel: real settings validation, a canned reply with music."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def settings(self, values):
        return make_settings(values)

    def run_turn(self, prompt, **kwargs):
        self.calls.append({"prompt": prompt, **kwargs})
        if prompt == "crash":
            raise KeyError("a bug")
        wave = np.full(400, 0.1 * len(self.calls), np.float32)
        return ChatReply(text=f"answer {len(self.calls)}", music=wave, sample_rate=8000,
                         token_ids=[5, len(self.calls), 2])


def run_lines(tmp_path: Path, lines: list) -> tuple[list[dict], Path, FakeEngine]:
    batch = tmp_path / "b.jsonl"
    batch.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    engine = FakeEngine()
    out_dir = tmp_path / "out"
    summary = BatchRun(engine, out_dir, defaults={"temperature": 0.0}).run(batch)
    results = [json.loads(x) for x in summary.results.read_text().splitlines()]
    assert summary.ok + summary.failed == len(results)
    return results, out_dir, engine


def test_ids_that_sanitise_alike_get_distinct_files(tmp_path):
    ids = ["a/b", "a_b", "A_B", "../x", 7, "a_b-2"]
    results, out_dir, _ = run_lines(tmp_path, [{"id": i, "prompt": "p"} for i in ids])
    names = [Path(r["audio"]).name for r in results]
    assert names == ["a_b.wav", "a_b-2.wav", "A_B-3.wav", "x.wav", "7.wav", "a_b-2-2.wav"]
    # each file holds its own request's music (none was overwritten)
    levels = [float(sf.read(out_dir / n)[0][0]) for n in names]
    assert levels == pytest.approx([0.1 * k for k in range(1, 7)], abs=1e-6)


def test_duplicate_id_is_an_error_naming_both_lines(tmp_path):
    lines = [{"id": "a", "prompt": "p"}, {"id": 3, "prompt": "q"}, {"id": "a", "prompt": "r"},
             {"id": "3", "prompt": "s"}]
    results, _, engine = run_lines(tmp_path, lines)
    assert [r["error"] is None for r in results] == [True, True, False, False]
    assert "line 3: duplicate id 'a' (first used on line 1)" in results[2]["error"]
    assert "line 4: duplicate id '3' (first used on line 2)" in results[3]["error"]
    assert [c["prompt"] for c in engine.calls] == ["p", "q"]  # duplicates never ran


def test_every_line_has_token_ids_text_and_error(tmp_path):
    results, _, engine = run_lines(tmp_path, [
        {"id": "ok", "prompt": "p", "history": [["q1", "a1"]], "top_p": 0.5},
        {"id": True, "prompt": "p"},
        {"id": "x", "prompt": "p", "top_p": 3},
        {"id": "bug", "prompt": "crash"},
        "[1, 2]",
    ])
    ok, bad_id, bad_setting, bug, not_object = results
    assert ok["token_ids"] == [5, 1, 2] and ok["text"] == "answer 1" and ok["error"] is None
    assert engine.calls[0]["history"] == [("q1", "a1")]
    assert engine.calls[0]["settings"].top_p == 0.5
    assert "\"id\" must be a non-empty string or an integer" in bad_id["error"]
    assert bad_setting["error"].startswith("line 3: top_p")
    assert bug["error"].startswith("internal error: KeyError")  # a bug is not bad input
    assert not_object["line"] == 5 and "expected a JSON object" in not_object["error"]
    assert all(r["token_ids"] is None for r in results[1:])


def test_output_names_are_safe_file_names():
    names = OutputNames()
    got = [names.claim(i) for i in ("é/ü", "", "..", "con", "a" * 200)]
    assert len(set(got)) == len(got)
    assert all(set(n) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
               for n in got)
    assert safe_name("a" * 200) == "a" * 80 and safe_name("///") == "item"


def test_an_interrupted_batch_leaves_whole_result_lines(tmp_path):
    """results.jsonl is rewritten atomically after every request: a run stopped midway leaves the
    finished requests' lines, complete, and no temporary file."""

    class Interrupting(FakeEngine):
        def run_turn(self, prompt, **kwargs):
            if prompt == "stop":
                raise KeyboardInterrupt
            return super().run_turn(prompt, **kwargs)

    batch = tmp_path / "b.jsonl"
    lines = [{"id": 1, "prompt": "p"}, {"id": 2, "prompt": "q"}, {"id": 3, "prompt": "stop"}]
    batch.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out_dir = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        BatchRun(Interrupting(), out_dir, defaults={}).run(batch)
    results = [json.loads(x) for x in (out_dir / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == [1, 2] and all(r["error"] is None for r in results)
    assert sorted(p.name for p in out_dir.iterdir()) == ["1.wav", "2.wav", "results.jsonl"]
