"""The step framework: append-only progress, torn lines, manifests, failure listing."""

from __future__ import annotations

import json

import pytest

from data.media import MediaError
from DataSet.common import (
    ItemError,
    Manifest,
    ModelInfo,
    Progress,
    StepError,
    open_step,
    resolve_revision,
    run_items,
)


def test_progress_survives_a_torn_last_line(tmp_path):
    p = Progress(tmp_path / "s.progress.jsonl")
    p.record("a", {"x": 1})
    p.fail("b", "bad")
    with open(p.path, "a") as fh:
        fh.write('{"key": "c", "status": "do')  # crash mid-append
    q = Progress(p.path)
    assert q.done == {"a": {"x": 1}} and q.failed == {"b": "bad"} and q.torn_lines == 1
    q.record("c", 3)
    r = Progress(p.path)
    assert r.done["c"] == 3 and r.torn_lines == 1  # the torn fragment stays isolated


def test_retry_failed_and_batch_fallback(tmp_path):
    prog = Progress(tmp_path / "p.jsonl")
    items = [(str(i), i) for i in range(5)]

    def worker(batch):
        if 3 in batch:
            raise ItemError("three is bad")
        return [i * 10 for i in batch]

    rep = run_items("t", items, worker, prog, batch_size=4, show_progress=False)
    assert rep.done == 4 and rep.failures == {"3": "ItemError: three is bad"}
    rep2 = run_items("t", items, lambda b: [0 for _ in b], Progress(prog.path),
                     show_progress=False)
    assert rep2.skipped_finished == 5 and rep2.done == 0 and "3" in rep2.failures
    rep3 = run_items("t", items, lambda b: [-1 for _ in b], Progress(prog.path),
                     retry_failed=True, show_progress=False)
    assert rep3.done == 1 and rep3.failures == {}


def test_worker_may_return_per_item_errors_and_bugs_propagate(tmp_path):
    prog = Progress(tmp_path / "p.jsonl")
    rep = run_items("t", [("a", 1), ("b", 2)],
                    lambda b: [MediaError("f.wav", "broken") if i == 2 else i for i in b], prog,
                    batch_size=2, show_progress=False)
    assert rep.done == 1 and "broken" in rep.failures["b"]
    with pytest.raises(ZeroDivisionError):  # a programming error is not an item failure
        run_items("t", [("c", 0)], lambda b: [1 / i for i in b], prog, show_progress=False)


def test_manifest_written_atomically_and_guards_resume(tmp_path):
    m = Manifest("step", {"a": 1}, [ModelInfo("x", "rev")], seed=3)
    prog = open_step(m, tmp_path)
    prog.record("k", 1)
    saved = json.loads((tmp_path / "step.manifest.json").read_text())
    assert saved["models"][0] == {"name": "x", "revision": "rev", "role": ""}
    assert saved["seed"] == 3 and saved["key"] == m.key()
    assert open_step(m, tmp_path).done == {"k": 1}  # same settings: resumes
    with pytest.raises(StepError, match="--restart"):
        open_step(Manifest("step", {"a": 2}), tmp_path)
    assert open_step(Manifest("step", {"a": 2}), tmp_path, restart=True).done == {}


def test_resolve_revision_local_and_missing(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"a": 1}')
    r1 = resolve_revision(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text('{"a": 2}')
    assert r1.startswith("local:") and resolve_revision(str(tmp_path / "m")) != r1
    with pytest.raises(StepError, match="neither a local folder"):
        resolve_revision("nobody/no-such-model-here")
