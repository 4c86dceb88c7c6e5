"""How well, and how fast, does the documented command learn? Per data seed, then mean and min.

    python benchmarks/bench_learning.py --work DIR [--seeds 7 11 23] [--n N] [--reuse]
                                        [--train_args="--dtype int8"]

For each seed: `python -m data.synthetic --out DIR/seedS/data --seed S` (the defaults), then
`bash train.sh --preset tiny --data_root ... --output_dir DIR/seedS/out` (timed: wall clock and
the CPU seconds of the whole process tree), then `python -m Evaluation.synthetic` on the held-out
split. Prints one table row per seed, then the mean and the minimum of every metric; each seed's
metrics are kept in DIR/seedS/metrics.json. `--reuse` keeps finished data, training and metrics.
The machine's load is printed too: wall time on a shared machine is not the run's cost.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from util.atomic import write_text  # noqa: E402
COLUMNS = (  # (header, path into the metrics JSON)
    ("audio", ("audio_caption",)),
    ("instr", ("details", "audio_caption", "per_attribute", "instrument")),
    ("reg", ("details", "audio_caption", "per_attribute", "register")),
    ("tempo", ("details", "audio_caption", "per_attribute", "tempo")),
    ("silenced", ("audio_caption_silenced",)),
    ("image", ("image_caption",)),
    ("video", ("video_caption",)),
    ("qa", ("qa",)),
    ("proj", ("projector_cosine",)),
    ("proj_routed", ("projector_cosine_routed",)),
    ("proj_shuf", ("projector_cosine_shuffled",)),
    ("margin", ("projector_margin",)),  # proj_routed - proj_shuf, computed below
    ("retrieval", ("details", "music_requests", "retrieval")),
    ("named", ("details", "music_requests", "named", "combination")),
    ("route", ("aud_tokens_on_music_requests",)),
    ("q_aud", ("aud_tokens_on_questions",)),
    ("u_aud", ("aud_tokens_on_unseen_understanding",)),
    ("u_acc", ("understanding_accuracy",)),  # mean over modalities, computed below
    ("t_aud", ("aud_tokens_on_text_requests",)),
)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmd: Sequence[str], log: Path) -> tuple[float, float]:
    """Run `cmd` from the repository root with output to `log`; (wall s, CPU s) of its tree."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cpu0, t0 = _children_cpu(), time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.run(list(cmd), cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    wall, cpu = time.monotonic() - t0, _children_cpu() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"bench_learning: {' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return wall, cpu


def _stage3_complete(out: Path) -> bool:
    sys.path.insert(0, str(ROOT))
    from llama.checkpoint import CheckpointError, read_config

    try:
        return bool(read_config(out / "stage3").get("complete"))
    except CheckpointError:
        return False


def one_seed(work: Path, seed: int, n: Optional[int], reuse: bool,
             train_args: Sequence[str] = ()) -> dict[str, Any]:
    base = work / f"seed{seed}"
    base.mkdir(parents=True, exist_ok=True)
    data, out, result_file = base / "data", base / "out", base / "metrics.json"
    if reuse and result_file.is_file():
        return json.loads(result_file.read_text())
    py = sys.executable
    if not (reuse and (data / "split.json").is_file()):
        _run([py, "-m", "data.synthetic", "--out", str(data), "--seed", str(seed)]
             + (["--n", str(n)] if n else []), base / "data.log")
    timing: dict[str, float] = {}
    if not (reuse and _stage3_complete(out)):
        load0 = os.getloadavg()[0]
        wall, cpu = _run(["bash", "train.sh", "--preset", "tiny", "--data_root", str(data),
                          "--output_dir", str(out), *train_args], base / "train.log")
        timing = {"train_wall_min": wall / 60, "train_cpu_min": cpu / 60,
                  "load_at_start": load0, "load_at_end": os.getloadavg()[0]}
    wall, _ = _run([py, "-m", "Evaluation.synthetic", "--model", str(out / "stage3"),
                    "--data_root", str(data), "--feature_cache", str(out / "feature_cache"),
                    "--predictions", str(base / "predictions.jsonl"), "--output",
                    str(base / "eval.json")], base / "eval.log")
    metrics = json.loads((base / "eval.json").read_text())
    result = {"seed": seed, **timing, "eval_wall_min": wall / 60, "metrics": metrics}
    write_text(result_file, json.dumps(result, indent=1) + "\n")  # reused by a later run
    return result


def _get(metrics: dict, path: Sequence[str]) -> float:
    if path == ("projector_margin",):
        return _get(metrics, ("projector_cosine_routed",)) - _get(
            metrics, ("projector_cosine_shuffled",))
    if path == ("understanding_accuracy",):
        per = metrics.get("details", {}).get("understanding_requests", {}).get(
            "accuracy_per_modality", {})
        return sum(per.values()) / len(per) if per else float("nan")
    node: Any = metrics
    for key in path:
        node = node.get(key, float("nan")) if isinstance(node, dict) else float("nan")
    return float(node)


def table(results: list[dict[str, Any]]) -> str:
    heads = ["seed", "train min", "cpu min"] + [h for h, _ in COLUMNS]
    rows = []
    for r in results:
        rows.append([str(r["seed"]), f"{r.get('train_wall_min', float('nan')):.1f}",
                     f"{r.get('train_cpu_min', float('nan')):.1f}"]
                    + [f"{_get(r['metrics'], p):.3f}" for _, p in COLUMNS])
    for name, fn in (("mean", lambda v: sum(v) / len(v)), ("min", min)):
        cells = [name]
        for key in ("train_wall_min", "train_cpu_min"):
            vals = [r[key] for r in results if key in r]
            cells.append(f"{fn(vals):.1f}" if vals else "-")
        cells += [f"{fn([_get(r['metrics'], p) for r in results]):.3f}" for _, p in COLUMNS]
        rows.append(cells)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(heads)]
    lines = [" | ".join(h.rjust(w) for h, w in zip(heads, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="folder for data, checkpoints and metrics")
    p.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 23])
    p.add_argument("--n", type=int, default=None, help="data size (default: data.synthetic's)")
    p.add_argument("--reuse", action="store_true", help="keep finished data/training/metrics")
    p.add_argument("--train_args", default="",
                   help="extra train.sh flags, e.g. --train_args='--dtype int8'")
    args = p.parse_args(argv)
    work = Path(args.work).resolve()
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    results = []
    for seed in args.seeds:
        results.append(one_seed(work, seed, args.n, args.reuse, args.train_args.split()))
        print(table(results[-1:]).splitlines()[-3], flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
