"""`torchrun --nproc_per_node 2 inference.py --batch-file` writes what one process writes.

Two real CPU processes (gloo) against one, tiny preset: the same results.jsonl (ids, order, text,
token_ids, errors; WAV files with the same names and samples), run.json naming both processes,
and an interrupted run's finished request is not redone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _requests(tmp_path: Path) -> Path:
    t = np.arange(24000) / 24000
    sf.write(tmp_path / "tone.wav", (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 24000)
    rows = [
        {"id": "a", "prompt": "Describe the music", "audio": "tone.wav", "max_new_tokens": 6},
        {"id": "b", "prompt": "Compose a slow piano melody", "max_new_tokens": 6},
        {"id": "c", "prompt": "Write a poem", "temperature": 0.9, "max_new_tokens": 6},
        {"id": "d", "prompt": "Compose music", "music": "always", "max_new_tokens": 4,
         "audio_seconds": 0.5},
        {"id": "a", "prompt": "duplicate"},
        {"id": "e", "prompt": "Sample too", "temperature": 1.0, "top_p": 0.9, "max_new_tokens": 6},
    ]
    batch = tmp_path / "requests.jsonl"
    batch.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    return batch


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_two_processes_write_what_one_writes_and_resume(tmp_path):
    batch = _requests(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["inference.py", "--preset", "tiny", "--batch-file", str(batch)]
    single = _run([sys.executable, *args, "--out_dir", str(one)])
    assert single.returncode == 1, single.stderr[-3000:]  # two bad lines -> exit 1
    # an interrupted two-process run had finished request "b" (line 2, item 1) on rank 1
    two.mkdir()
    fake = {"id": "b", "text": "from the interrupted run", "token_ids": [1], "audio": None,
            "error": None}
    (two / "results.jsonl.part1.jsonl").write_text(json.dumps({"index": 1, "row": fake}) + "\n")
    sharded = _run([*TORCHRUN, *args, "--out_dir", str(two)])
    assert sharded.returncode == 1, sharded.stderr[-3000:]

    rows1 = [json.loads(x) for x in (one / "results.jsonl").read_text().splitlines()]
    rows2 = [json.loads(x) for x in (two / "results.jsonl").read_text().splitlines()]
    assert rows2[1] == fake  # not redone
    rows2[1] = rows1[1]
    for r in rows1 + rows2:
        r["audio"] = r["audio"] and Path(r["audio"]).name
    assert rows2 == rows1
    assert [r.get("id") for r in rows1] == ["a", "b", "c", "d", "a", "e", None]
    assert rows1[3]["audio"] == "d.wav" and rows1[4]["error"] and rows1[6]["error"]
    assert all(r["token_ids"] for r in rows1 if r["error"] is None)
    np.testing.assert_array_equal(sf.read(one / "d.wav")[0], sf.read(two / "d.wav")[0])

    record = json.loads((two / "run.json").read_text())
    assert record["world_size"] == 2 and len(record["per_rank"]) == 2
    assert min(record["per_rank"]) >= 1 and sum(record["per_rank"]) == 6  # 7 lines, 1 resumed
    assert record["resumed"] == 1
    assert json.loads((one / "run.json").read_text())["world_size"] == 1
    assert not list(two.glob("*.part*"))
