"""The tiny model learns: three stages on synthetic data, then the held-out metrics.

This is the suite's long test (several minutes on 2 cores; the training time is printed, and
measured by `benchmarks/bench_learning.py`, never asserted here): it runs exactly what a user runs,
`train_tiny.sh` then `python -m Evaluation.synthetic`, and checks the numbers the training issue
asks for.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("learning")
    data, out = base / "data", base / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "data.synthetic", "--out", str(data), "--seed", "0",
                    "--n", os.environ.get("M2UGEN_LEARNING_N", "400")],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    start = time.monotonic()
    train = subprocess.run(["bash", "train_tiny.sh", str(data), str(out)], cwd=ROOT, env=env,
                           capture_output=True, text=True)
    minutes = (time.monotonic() - start) / 60
    assert train.returncode == 0, train.stderr[-3000:]
    ev = subprocess.run([sys.executable, "-m", "Evaluation.synthetic", "--model",
                         str(out / "stage3"), "--data_root", str(data), "--feature_cache",
                         str(out / "feature_cache"), "--predictions", str(base / "pred.jsonl")],
                        cwd=ROOT, env=env, capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr[-3000:]
    metrics = json.loads(ev.stdout)
    print(f"\ntraining took {minutes:.1f} min; metrics: "
          f"{json.dumps({k: v for k, v in metrics.items() if k != 'details'})}")
    return metrics, minutes, base / "pred.jsonl"


def test_predictions_file_has_one_line_per_item(trained):
    rows = [json.loads(line) for line in trained[2].read_text().splitlines()]
    assert rows and all(set(r) == {"file", "task", "prompt", "output"} for r in rows)


@pytest.mark.parametrize("task", ["audio_caption", "image_caption", "video_caption"])
def test_captions_name_the_attributes(trained, task):
    metrics = trained[0]
    assert metrics[task] >= 0.9
    assert min(metrics["details"][task]["per_attribute"].values()) >= 0.8


def test_silenced_music_falls_to_chance(trained):
    # chance for instrument / register / tempo is (0.25 + 0.5 + 0.5) / 3 = 0.42; a caption that
    # still named the right values without the audio would mean the text alone carries them
    assert trained[0]["audio_caption_silenced"] <= 0.6


def test_music_questions_are_answered_from_the_audio(trained):
    assert trained[0]["qa"] >= 0.9


def test_projector_matches_decoder_targets(trained):
    assert trained[0]["projector_cosine"] >= 0.9


def test_music_requests_route_to_aud_tokens_and_questions_do_not(trained):
    metrics = trained[0]
    assert metrics["aud_tokens_on_music_requests"] >= 0.9
    assert metrics["aud_tokens_on_questions"] <= 0.05
