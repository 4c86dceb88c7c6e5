"""Do the media controls separate a model that listens from one that does not?

Runs MusicQA and a MuChoMusic-format test on the held-out split of a `data.synthetic` dataset for
a trained tiny checkpoint and for its gate-0 stand-in (the same weights with every adapter gate
set to 0, as in the released M2UGen / MU-LLaMA checkpoints), each under every media control, and
prints the report's tables (identical answers, deltas with 95% intervals). Everything goes
through the public CLIs (`python -m Evaluation.musicqa|muchomusic|report`), in subprocesses.

    OMP_NUM_THREADS=1 python benchmarks/bench_media_controls.py --model OUT/stage3 \
        --data_root DATA --out DIR [--max_new_tokens 48]

Inputs built in DIR: `EvalMusicQA.json` (every question/answer pair of the held-out MusicQA
tracks, one item each, as the published EvalMusicQA lists them) and `muchomusic.csv` (the
held-out instrument questions in the benchmark's CSV layout: the true instrument and the three
others as distractors, the clips linked under MusicCaps file names in `audio/`), then
`gate0/checkpoint/` and the predictions and score JSONs per model. `DIR/report/report.md` and
`report.png` hold the result. docs/EVALUATION.md shows the table this printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

CONTROLS = ("none", "silence", "noise", "shuffled")
INSTRUMENTS = ("flute", "organ", "guitar", "piano")


def held_out(data_root: Path) -> list[dict]:
    test = set(json.loads((data_root / "split.json").read_text())["test"])
    items = json.loads((data_root / "MusicQA" / "MusicQA.json").read_text())
    return [it for it in items if f"MusicQA/audios/{it['audio_name']}" in test]


def write_musicqa(items: list[dict], out: Path) -> Path:
    rows = [{"audio_name": it["audio_name"], "conversation": [q, a]}
            for it in items for q, a in zip(it["conversation"][::2], it["conversation"][1::2])]
    path = out / "EvalMusicQA.json"
    path.write_text(json.dumps(rows, indent=1))
    return path


def write_muchomusic(items: list[dict], data_root: Path, out: Path) -> Path:
    attributes = json.loads((data_root / "attributes.json").read_text())
    audio = out / "audio"
    audio.mkdir(exist_ok=True)
    rows = []
    for it in items:
        key = f"MusicQA/audios/{it['audio_name']}"
        ytid = Path(it["audio_name"]).stem
        link = audio / f"[{ytid}]-[0-10].wav"
        if not link.exists():
            os.symlink((data_root / key).resolve(), link)
        true = attributes[key]["instrument"]
        for q in it["conversation"][::2]:
            if "instrument" in q["value"]:
                rows.append([len(rows) + 1, q["value"], "musiccaps", true,
                             *(i for i in INSTRUMENTS if i != true), f"{ytid}_0.json",
                             "synthetic", "['instrumentation']", ""])
    path = out / "muchomusic.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question_id", "question", "dataset", "correct_answer",
                    "distractor_1_answer", "distractor_2_answer", "distractor_3_answer",
                    "dataset_identifier", "genre", "music_knowledge", "music_reasoning"])
        w.writerows(rows)
    return path


def gate_zero_copy(model: Path, out: Path) -> Path:
    """The checkpoint with every adapter gate at 0 (config and weights only)."""
    from safetensors.torch import load_file, save_file

    src = model / "checkpoint" if (model / "checkpoint").is_dir() else model
    dst = out / "gate0" / "checkpoint"
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", dst / "config.json")
    weights = load_file(str(src / "model.safetensors"))
    gates = [k for k in weights if k.endswith(".gate")]
    if not gates:
        raise SystemExit(f"{src}: no adapter gates in model.safetensors")
    for k in gates:
        weights[k] = weights[k].clone().zero_()
    save_file(weights, str(dst / "model.safetensors"))
    return dst.parent


def controls_arg(folder: Path, prefix: str, ext: str) -> str:
    """silence=<folder>/<prefix>silence<ext>,noise=...,shuffled=..."""
    return ",".join(f"{c}={folder / (prefix + c + ext)}" for c in CONTROLS[1:])


def run(*argv: str) -> str:
    done = subprocess.run([sys.executable, *argv], check=True, capture_output=True, text=True)
    return done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="trained tiny checkpoint (OUT/stage3)")
    ap.add_argument("--data_root", required=True, help="the data.synthetic dataset it learnt")
    ap.add_argument("--out", required=True)
    ap.add_argument("--max_new_tokens", default="48")
    args = ap.parse_args()
    out, root = Path(args.out), Path(args.data_root)
    out.mkdir(parents=True, exist_ok=True)
    items = held_out(root)
    qa_refs = write_musicqa(items, out)
    mc_data = out / "muchomusic_q.json"
    run("-m", "Evaluation.muchomusic", "prepare", "--csv", str(write_muchomusic(items, root, out)),
        "--audio_dir", str(out / "audio"), "--out", str(mc_data))
    models = {"trained": Path(args.model), "gate0": gate_zero_copy(Path(args.model), out)}
    results = []
    for name, model in models.items():
        res = out / name
        res.mkdir(exist_ok=True)
        common = ["--model", str(model), "--max_new_tokens", args.max_new_tokens]
        for c in CONTROLS:
            run("-m", "Evaluation.musicqa", "generate", *common, "--references", str(qa_refs),
                "--media_dir", str(root / "MusicQA" / "audios"), "--out", str(res / f"qa_{c}.json"),
                "--media_control", c)
            run("-m", "Evaluation.muchomusic", "generate", *common, "--data", str(mc_data),
                "--audio_dir", str(out / "audio"), "--out", str(res / f"mc_{c}.jsonl"),
                "--media_control", c)
        qa = run("-m", "Evaluation.musicqa", "score", "--references", str(qa_refs),
                 "--predictions", str(res / "qa_none.json"),
                 "--control_predictions", controls_arg(res, "qa_", ".json"))
        mc = run("-m", "Evaluation.muchomusic", "score", "--data", str(mc_data), "--predictions",
                 str(res / "mc_none.jsonl"),
                 "--control_predictions", controls_arg(res, "mc_", ".jsonl"))
        for task, text in (("musicqa", qa), ("muchomusic", mc)):
            (res / f"{task}.json").write_text(text)
            results.append(f"{name}={res / f'{task}.json'}")
    run("-m", "Evaluation.report", *results, "--out", str(out / "report"))
    print((out / "report" / "report.md").read_text())


if __name__ == "__main__":
    main()
