"""`torchrun --nproc_per_node 2 -m Evaluation.<task> generate` writes what one process writes.

Two real CPU processes (gloo) against one, tiny preset, for a text task (MusicQA answers) and a
music task (text2music clips): the same --out (rows, order, text), the same WAV samples, the
`<out stem>.run.json` record; an interrupted run's finished row is not redone.
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


def _run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_musicqa_answers_two_processes_equal_one(small_synthetic, tmp_path):
    qa = json.loads((small_synthetic / "MusicQA" / "MusicQA.json").read_text())[:5]
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps(qa))
    args = ["-m", "Evaluation.musicqa", "generate", "--references", str(refs), "--media_dir",
            str(small_synthetic / "MusicQA" / "audios"), "--max_new_tokens", "6",
            "--temperature", "0.8"]  # sampled: each row's seed is its own, not the process's
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    _run([sys.executable, *args, "--out", str(one)])
    _run([*TORCHRUN, *args, "--out", str(two)])
    assert json.loads(two.read_text()) == json.loads(one.read_text())
    assert list(json.loads(two.read_text())) == list(json.loads(one.read_text()))  # order
    record = json.loads((tmp_path / "two.run.json").read_text())
    assert record["world_size"] == 2 and min(record["per_rank"]) >= 1
    assert json.loads((tmp_path / "one.run.json").read_text())["world_size"] == 1
    assert not list(tmp_path.glob("*.part*"))


def test_text2music_clips_two_processes_equal_one_and_resume(small_synthetic, tmp_path):
    audios = small_synthetic / "MUCaps" / "audios"
    caps = json.loads((small_synthetic / "MUCaps" / "MUCapsCaptions.json").read_text())
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps(dict(list(caps.items())[:4])))
    args = ["-m", "Evaluation.text2music", "generate", "--references", str(refs), "--media_dir",
            str(audios), "--max_new_tokens", "4", "--audio_seconds", "0.5"]
    one, two = tmp_path / "one" / "pred.json", tmp_path / "two" / "pred.json"
    _run([sys.executable, *args, "--out", str(one)])
    # an interrupted two-process run had finished row 1 on rank 1
    two.parent.mkdir()
    first = json.loads(one.read_text())
    key = list(first["items"])[1]
    fake = {**first["items"][key], "text": "from the interrupted run"}
    (two.parent / "pred.json.part1.jsonl").write_text(
        json.dumps({"index": 1, "row": [fake, False]}) + "\n")
    (two.parent / "pred_audio").mkdir()
    (two.parent / "pred_audio" / f"{key}.wav").write_bytes(
        (one.parent / "pred_audio" / f"{key}.wav").read_bytes())
    _run([*TORCHRUN, *args, "--out", str(two)])
    second = json.loads(two.read_text())
    assert second["items"][key]["text"] == "from the interrupted run"  # not redone
    second["items"][key]["text"] = first["items"][key]["text"]
    assert second == first
    for item in first["items"].values():
        a = sf.read(one.parent / item["audio"])[0]
        b = sf.read(two.parent / item["audio"])[0]
        np.testing.assert_array_equal(a, b)
    record = json.loads((two.parent / "pred.run.json").read_text())
    assert record["world_size"] == 2 and sum(record["per_rank"]) == 3  # 4 rows, 1 resumed
