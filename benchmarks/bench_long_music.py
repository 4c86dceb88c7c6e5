"""Peak memory of encoding long music through a MERT-330M-shaped encoder (docs/MEMORY.md).

Random weights at MERT-v1-330M's full shape (24 layers, width 1024, 512-channel convolution front
end, stable layer norm, 60 s windows as the preset), one fresh subprocess per case so no case
inherits another's heap. Per case: RSS once the encoder is built, then the peak RSS while one clip
of N seconds of noise is encoded (the kernel's high-water mark, reset after loading via
/proc/self/clear_refs), the size of what the encode returns, and the process CPU time.

Modes: `bridge` = what the model does at inference (each window reduced to the music bridge's
state mix before the next one: (T, 1024) per clip); `stack` = what the feature cache stores (all
25 states of every frame, (25, T, 1024) float32, filled window by window in place).

    python benchmarks/bench_long_music.py [--seconds 30 120 600] [--dtypes float32 bfloat16]
        [--stack-seconds 30 120]

`--whole-path`: instead, the CLI's whole path (`inference.py --audio_file`: decode, resample,
encode, generate; the demo runs the same `app` engine) on a 10-minute 44.1 kHz stereo WAV, peak
RSS of the inference.py process (its `ru_maxrss`), for a checkpoint of the tiny preset and one
whose MERT is the 330M-shaped random encoder (everything else tiny), in each dtype.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
SR = 24000


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def mert_330m_random():
    """The preset's MERT-v1-330M configuration, built with random weights."""
    from llama import config as C

    return dataclasses.replace(C.mert_330m(), path="tiny", tiny_config=dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        conv_dim=(512,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, conv_bias=False))


def child(seconds: float, dtype_name: str, mode: str) -> dict:
    import numpy as np
    import torch

    from llama.bridges import MusicBridge
    from llama.encoders import load_music_encoder

    torch.set_num_threads(1)
    cfg = mert_330m_random()
    enc = load_music_encoder(cfg, dtype=getattr(torch, dtype_name))
    with torch.no_grad():
        reduction = (MusicBridge(cfg.hidden_size, cfg.num_hidden_states, 64).reduction()
                     if mode == "bridge" else None)
    clip = (np.random.default_rng(0).standard_normal(int(seconds * SR)) * 0.1).astype(np.float32)
    loaded = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    t0 = time.process_time()
    (out,) = enc.encode_items([clip], reduction=reduction)
    cpu = time.process_time() - t0
    return {"loaded_mb": loaded / 1024, "peak_mb": _status_kb("VmHWM") / 1024,
            "out_mb": out.numel() * out.element_size() / 2**20, "shape": list(out.shape),
            "cpu_s": cpu}


def run_case(seconds: float, dtype: str, mode: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--child", str(seconds), dtype, mode]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"case {seconds} s {dtype} {mode} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def make_inputs(folder: Path, seconds: float) -> tuple[Path, dict[str, Path]]:
    """A long 44.1 kHz stereo WAV and two checkpoint folders (tiny; tiny with MERT-330M)."""
    import numpy as np
    import soundfile as sf

    from llama import checkpoint as ckpt
    from llama.config import get_preset
    from llama.m2ugen import M2UGen

    wav = folder / "long.wav"
    rng = np.random.default_rng(0)
    n = int(seconds * 44100)
    with sf.SoundFile(wav, "w", samplerate=44100, channels=2, subtype="PCM_16") as f:
        for s in range(0, n, 44100 * 60):  # written a minute at a time
            m = min(44100 * 60, n - s)
            f.write((rng.standard_normal((m, 2)) * 0.1).astype(np.float32))
    models = {}
    for name in ("tiny", "tiny+MERT-330M"):
        cfg = get_preset("tiny")
        if name != "tiny":
            cfg = dataclasses.replace(cfg, mert=mert_330m_random())
        model = M2UGen(cfg)
        models[name] = ckpt.write_checkpoint(
            folder / name, weights=ckpt.tuned_state_dict(model, model.tuned_parameter_names()),
            config={"m2ugen": model.config_dict()})
    return wav, models


def whole_path(seconds: float, dtypes: Sequence[str]) -> None:
    import tempfile

    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as tmp:
        wav, models = make_inputs(Path(tmp), seconds)
        print(f"{'model':16s} {'dtype':9s} {'audio':>6s} {'peak RSS':>9s} {'wall s':>7s}  answer",
              flush=True)
        for name, folder in models.items():
            for dtype in dtypes:
                cmd = [sys.executable, "inference.py", "--model", str(folder), "--audio_file",
                       str(wav), "--prompt", "Describe this music", "--dtype", dtype,
                       "--max_media_seconds", str(seconds + 60), "--max_new_tokens", "8",
                       "--out_dir", str(Path(tmp) / "out"), "--json"]
                env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
                t0 = time.perf_counter()
                logs = Path(tmp) / "stdout", Path(tmp) / "stderr"
                with open(logs[0], "w") as out, open(logs[1], "w") as err:
                    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err)
                    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
                proc.returncode = os.waitstatus_to_exitcode(status)
                out, err = logs[0].read_text(), logs[1].read_text()
                wall = time.perf_counter() - t0
                if proc.returncode != 0:
                    raise RuntimeError(f"{name} {dtype}: exit {proc.returncode}\n{err[-2000:]}")
                answer = json.loads(out.strip().splitlines()[-1]).get("text", "")[:30]
                print(f"{name:16s} {dtype:9s} {seconds:5.0f}s {usage.ru_maxrss / 1024:7.0f}MB "
                      f"{wall:7.0f}  {answer!r}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, nargs="+", default=[30, 120, 600])
    ap.add_argument("--stack-seconds", type=float, nargs="*", default=[30, 120])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--whole-path", action="store_true")
    ap.add_argument("--whole-seconds", type=float, default=600)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.whole_path:
        whole_path(args.whole_seconds, args.dtypes)
        return
    if args.child:
        sys.path.insert(0, str(REPO))
        print(json.dumps(child(float(args.child[0]), args.child[1], args.child[2])))
        return
    cases = [(m, d, s) for d in args.dtypes
             for m, secs in (("bridge", args.seconds), ("stack", args.stack_seconds))
             for s in secs]
    print(f"{'mode':7s} {'dtype':9s} {'clip':>6s} {'RSS loaded':>11s} {'peak RSS':>9s} "
          f"{'peak-loaded':>11s} {'output':>9s} {'peak/30s':>8s} {'CPU s':>7s}", flush=True)
    first: dict[tuple[str, str], float] = {}
    for mode, dtype, seconds in cases:
        r = run_case(seconds, dtype, mode)
        base = first.setdefault((mode, dtype), r["peak_mb"])
        print(f"{mode:7s} {dtype:9s} {seconds:5.0f}s {r['loaded_mb']:9.0f}MB "
              f"{r['peak_mb']:7.0f}MB {r['peak_mb'] - r['loaded_mb']:9.0f}MB "
              f"{r['out_mb']:7.0f}MB {r['peak_mb'] / base:7.2f}x {r['cpu_s']:7.0f}", flush=True)


if __name__ == "__main__":
    main()
