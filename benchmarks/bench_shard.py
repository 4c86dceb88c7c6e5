"""Speed-up of `torchrun --nproc_per_node 2` over one process per sharded command (SHARDING.md).

Tiny preset, CPU, OMP_NUM_THREADS=1 in every process (so 2 processes use 2 cores, 1 uses one).
Per command the same inputs run with one process and with two, alternately, `--repeats` times;
the best wall time of each (model loading included) and their ratio are printed.

    python benchmarks/bench_shard.py [--repeats 2] [--requests 96] [--files 96] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]


def make_requests(folder: Path, n: int) -> Path:
    import soundfile as sf

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        row = {"id": i, "prompt": f"Describe this music, take {i}"}
        if i % 2 == 0:
            sf.write(folder / f"clip{i}.wav", (0.1 * rng.standard_normal(48000)).astype(np.float32),
                     24000)
            row["audio"] = f"clip{i}.wav"
        rows.append(row)
    path = folder / "requests.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_media(folder: Path, n: int) -> Path:
    import soundfile as sf

    rng = np.random.default_rng(1)
    audios = folder / "data" / "set" / "audios"
    audios.mkdir(parents=True)
    for i in range(n):
        sf.write(audios / f"a{i}.wav", (0.1 * rng.standard_normal(10 * 24000)).astype(np.float32),
                 24000)
    return folder / "data"


def make_musicqa(folder: Path, n: int) -> tuple[Path, Path]:
    """n EvalMusicQA-style rows over the clips make_media wrote."""
    audios = folder / "data" / "set" / "audios"
    rows = [{"audio_name": f"a{i % 16}.wav",
             "conversation": [{"from": "human", "value": f"What is played in take {i}?"},
                              {"from": "gpt", "value": "A piano."}]} for i in range(n)]
    refs = folder / "musicqa.json"
    refs.write_text(json.dumps(rows))
    return refs, audios


def timed(cmd: list[str], clean: Callable[[], None]) -> float:
    clean()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--files", type=int, default=96)
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per answer")
    ap.add_argument("--only", default=None, help="run only the commands containing this text")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        batch = make_requests(tmp, args.requests)
        data = make_media(tmp, args.files)
        refs, audios = make_musicqa(tmp, args.requests)
        out = tmp / "out"
        cases = {
            f"inference.py --batch-file ({args.requests} requests)":
                ["inference.py", "--preset", "tiny", "--batch-file", str(batch), "--out_dir",
                 str(out), "--max_new_tokens", str(args.tokens)],
            f"python -m data.features ({args.files} x 10 s audio)":
                ["-m", "data.features", "--data_root", str(data), "--preset", "tiny",
                 "--cache_dir", str(out), "--modalities", "audio", "--no_progress"],
            f"python -m Evaluation.musicqa generate ({args.requests} rows)":
                ["-m", "Evaluation.musicqa", "generate", "--preset", "tiny", "--references",
                 str(refs), "--media_dir", str(audios), "--out", str(out / "pred.json"),
                 "--max_new_tokens", str(args.tokens)],
            f"python -m DataSet.mucaps caption ({args.files} clips)":
                ["-m", "DataSet.mucaps", "caption", "--audio_dir", str(audios), "--preset",
                 "tiny", "--device", "cpu", "--out", str(out / "caps.json"),
                 "--allow_random_weights",
                 "--max_new_tokens", str(args.tokens), "--no_progress"],
        }

        def clean() -> None:
            shutil.rmtree(out, ignore_errors=True)

        print(f"{'command':48s} {'1 process':>10s} {'2 processes':>12s} {'speed-up':>9s}",
              flush=True)
        for name, cmd in cases.items():
            if args.only and args.only not in name:
                continue
            one, two = [], []
            for _ in range(args.repeats):
                one.append(timed([sys.executable, *cmd], clean))
                two.append(timed([*TORCHRUN, "2", *cmd], clean))
            print(f"{name:48s} {min(one):9.1f}s {min(two):11.1f}s {min(one) / min(two):8.2f}x",
                  flush=True)


if __name__ == "__main__":
    main()
