"""A DataSet step that runs a model (`DataSet.mucaps caption`) under torchrun.

Two real CPU processes (gloo) against one, tiny preset: the same caption JSON, every outcome in
the step's progress file (no per-process file left), `<step>.run.json` naming both processes; an
interrupted sharded run's finished item is not redone.
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


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_music_captions_two_processes_equal_one_and_resume(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        t = np.arange(int((0.6 + 0.2 * i) * 24000)) / 24000
        wave = 0.3 * np.sin(2 * np.pi * (220 + 60 * i) * t) + 0.02 * rng.standard_normal(t.size)
        sf.write(clips / f"c{i}.wav", wave.astype(np.float32), 24000)
    args = ["-m", "DataSet.mucaps", "caption", "--audio_dir", str(clips), "--preset", "tiny",
            "--device", "cpu", "--batch_size", "1", "--max_new_tokens", "6", "--no_progress",
            "--allow_random_weights"]
    one, two = tmp_path / "one" / "caps.json", tmp_path / "two" / "caps.json"
    _run([sys.executable, *args, "--out", str(one)])
    # an interrupted two-process run: rank 1 had captioned c1.wav
    two.parent.mkdir()
    (two.parent / "caps.progress.rank1.jsonl").write_text(json.dumps(
        {"key": "c1.wav", "status": "done", "record": "from the interrupted run"}) + "\n")
    sharded = _run([*TORCHRUN, *args, "--out", str(two)])

    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert b.pop("c1.wav") == "from the interrupted run" and a.pop("c1.wav")
    assert b == a and len(a) == 4
    assert not list(two.parent.glob("*.rank*"))  # folded into the step's progress file
    progress = [json.loads(x)
                for x in (two.parent / "caps.progress.jsonl").read_text().splitlines()]
    assert sorted(p["key"] for p in progress) == [f"c{i}.wav" for i in range(5)]
    record = json.loads((two.parent / "caps.run.json").read_text())
    assert record["world_size"] == 2 and sorted(record["per_rank"]) == [2, 2]  # 4 left
    assert sharded.stderr.count("items,") == 1  # rank 0 alone prints the report
