"""Real multi-process training: `torchrun --nproc_per_node 2 train_m2ugen.py` on CPU (gloo).

What is checked: two processes form one group and train exactly what one process with the same
global batch trains; an uneven dataset (11 samples) finishes on both ranks with every sample used
once per epoch (the test fails on a timeout instead of hanging); a run killed mid-epoch and
resumed ends where an uninterrupted run ends, random audio crops included (per-rank RNG).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_m2ugen
from llama import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
TIMEOUT = 150  # seconds; a hang fails the test instead of blocking the suite

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _args(data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["--stage", "1", "--preset", "tiny", "--data_root", str(data),
            "--output_dir", str(out), "--lr", "1e-3", "--warmup_epochs", "0.5",
            "--feature_cache", str(cache), "--seed", "5", *extra]


def _torchrun(args: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    for var in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run([*TORCHRUN, str(REPO / "train_m2ugen.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = ckpt.read_weights(a), ckpt.read_weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=atol, msg=name)


def _samples(log: Path) -> dict[int, list[dict]]:
    """Per rank, the micro-batches it trained on (from the hidden --sample_log)."""
    return {r: [json.loads(line) for line in Path(f"{log}.rank{r}.jsonl").read_text().splitlines()]
            for r in range(2)}


@pytest.fixture(scope="module")
def eleven(small_synthetic, tmp_path_factory) -> list[str]:
    """--data overrides leaving 11 training samples: 10 audio captions + 1 image caption."""
    root = tmp_path_factory.mktemp("eleven")
    train = set(json.loads((small_synthetic / "split.json").read_text())["train"])
    coco = json.loads((small_synthetic / "COCO" / "CocoCaptions.json").read_text())
    name = next(n for n in sorted(coco) if f"COCO/images/{n}" in train)
    (root / "coco.json").write_text(json.dumps({name: coco[name]}))
    return ["--data", f"coco_captions={root / 'coco.json'}", "muvideo_captions="]


def test_two_processes_train_what_one_process_trains(small_synthetic, tmp_path):
    """30 samples: 2 x batch 3 == 1 x batch 6, to float tolerance (no random crops: those
    follow each process's own random stream)."""
    cache = tmp_path / "cache"
    common = ("--epochs", "1", "--audio_crop", "1")
    _torchrun(_args(small_synthetic, tmp_path / "ddp", cache, *common, "--batch_size", "3"))
    assert train_m2ugen.main(_args(small_synthetic, tmp_path / "one", cache, *common,
                                   "--batch_size", "6")) == 0
    assert ckpt.read_config(tmp_path / "ddp")["world_size"] == 2
    _assert_same_weights(tmp_path / "ddp", tmp_path / "one", atol=1e-5)
    # and training did move the weights (the comparison is not vacuous)
    first = ckpt.read_weights(tmp_path / "ddp")
    assert any(n.endswith("_l2.weight") and first[n].abs().max() > 0 for n in first)


def test_uneven_dataset_finishes_and_resumes_exactly(small_synthetic, tmp_path, eleven):
    """11 samples, batch 1 per rank: the last global batch has one sample, so rank 1 runs a
    weight-0 filler. Interrupted after 2 of 3 optimizer steps (mid-epoch), then resumed."""
    cache = tmp_path / "cache"
    common = ["--epochs", "1", "--batch_size", "1", "--accum_iter", "2", "--audio_crop", "0.5",
              *eleven]
    _torchrun(_args(small_synthetic, tmp_path / "full", cache, *common,
                    "--sample_log", str(tmp_path / "full.samples")))
    per_rank = _samples(tmp_path / "full.samples")
    assert len(per_rank[0]) == len(per_rank[1]) == 6  # same step count on both ranks
    used = [i for r in per_rank.values() for mb in r if mb["real"] for i in mb["items"]]
    assert sorted(used) == list(range(11))  # every sample exactly once in the epoch
    assert [mb["batch"] for mb in per_rank[1] if not mb["real"]] == [5]  # the one filler
    assert ckpt.read_config(tmp_path / "full")["complete"]

    _torchrun(_args(small_synthetic, tmp_path / "cut", cache, *common,
                    "--stop_after_steps", "2"))
    cut = ckpt.read_config(tmp_path / "cut")
    assert cut["step"] == 2 and cut["epoch"] == 0 and cut["batch_in_epoch"] == 4
    state = ckpt.read_training_state(ckpt.resolve_checkpoint(tmp_path / "cut"))
    rngs = state["rng_per_rank"]
    assert len(rngs) == 2 and not torch.equal(rngs[0]["torch"], rngs[1]["torch"])
    _torchrun(_args(small_synthetic, tmp_path / "cut", cache, *common, "--resume"))
    _assert_same_weights(tmp_path / "cut", tmp_path / "full", atol=1e-6)

