"""benchmarks/bench_demo.py, small: 4 concurrent API sessions against the real demo process.

No timing is asserted (the benchmark's table is the measurement); what must hold under load is
that every turn is answered, no session sees another's history (each reply equals the one its
script got alone), and the server lets go of every session's files once they expire.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint (random weights: the replies are still deterministic when greedy)."""
    import torch

    from llama import checkpoint as ckpt
    from llama.config import get_preset
    from llama.m2ugen import M2UGen

    torch.manual_seed(0)
    model = M2UGen(get_preset("tiny"))
    return ckpt.write_checkpoint(
        tmp_path_factory.mktemp("bench_demo") / "stage3",
        weights=ckpt.tuned_state_dict(model, model.tuned_parameter_names()),
        config={"m2ugen": model.config_dict(), "stage": 3},
    )


def test_four_sessions_are_answered_apart_and_leave_nothing_behind(checkpoint, tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_demo.py"), "--model", str(checkpoint),
         "--sessions", "4", "--seconds", "10", "--concurrency", "2", "--session_ttl", "10",
         "--settle", "30", "--idle_wait", "0", "--work", str(tmp_path / "work"),
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["answers"] >= 4 and result["errors"] == 0, result["error_samples"]
    assert result["leaks"] == 0, result["leak_samples"]
    assert result["files_left"] == 0
    assert result["rss_peak_mb"] >= result["rss_idle_mb"] > 0
    assert len(result["rss_after_rounds_mb"]) == 1
    assert "answers (per minute)" in proc.stdout
