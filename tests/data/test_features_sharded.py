"""`torchrun --nproc_per_node 2 -m data.features` fills the cache one process fills.

Two real CPU processes (gloo) against one, tiny preset: the same entries (keys), identical
tensors and metadata, run.json naming both processes; a rerun reuses every entry.
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
from PIL import Image
from safetensors import safe_open

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _dataset(root: Path) -> None:
    rng = np.random.default_rng(0)
    audios, images = root / "set" / "audios", root / "set" / "images"
    audios.mkdir(parents=True)
    images.mkdir(parents=True)
    for i, seconds in enumerate((0.5, 1.0, 0.7, 1.3, 0.6)):
        wave = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
        sf.write(audios / f"a{i}.wav", wave, 16000)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)).save(
            images / f"i{i}.png")


def _entries(cache: Path) -> dict[str, tuple[dict, np.ndarray]]:
    out = {}
    for f in sorted((cache / "media").rglob("*.safetensors")):
        with safe_open(str(f), "np") as st:
            out[f.name] = (st.metadata(), st.get_tensor("features"))
    return out


def _run(cmd: list[str], threads: str = "1") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_processes_fill_the_cache_one_process_fills(tmp_path):
    data = tmp_path / "data"
    _dataset(data)
    args = ["-m", "data.features", "--data_root", str(data), "--preset", "tiny",
            "--batch_size", "2", "--no_progress"]
    one, two = tmp_path / "one", tmp_path / "two"
    # one process with 2 threads (torch's default here), two with 1 each (torchrun's default):
    # the features must not depend on the thread count
    single = _run([sys.executable, *args, "--cache_dir", str(one)], threads="2")
    sharded = _run([*TORCHRUN, *args, "--cache_dir", str(two)])

    a, b = _entries(one), _entries(two)
    assert len(a) == 8 and sorted(a) == sorted(b)
    for key in a:
        assert a[key][0] == b[key][0], key
        assert np.array_equal(a[key][1], b[key][1]), key
    assert "audio: 5 files, 5 computed, 0 reused, 0 failed" in single.stdout
    assert "audio: 5 files, 5 computed, 0 reused, 0 failed" in sharded.stdout
    assert sharded.stdout.count("image: 3 files") == 1  # rank 0 alone reports the totals

    record = json.loads((two / "run.json").read_text())
    # batches of 2: audio [a0 a1][a2 a3][a4] -> 3 + 2 files, images [i0 i1][i2] -> 2 + 1
    assert record["world_size"] == 2 and record["per_rank"] == [5, 3]
    assert record["files"] == {"audio": 5, "image": 3, "video": 0}
    assert json.loads((one / "run.json").read_text())["per_rank"] == [8]

    again = _run([*TORCHRUN, *args, "--cache_dir", str(two)])  # an interrupted run resumes
    assert "audio: 5 files, 0 computed, 5 reused, 0 failed" in again.stdout
