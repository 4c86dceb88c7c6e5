"""The tiny model learns: three stages on synthetic data, then the held-out metrics.

This is the suite's long test (about 23 CPU-minutes of training on one thread; the time is
printed, and measured by `benchmarks/bench_learning.py`, never asserted here): it runs exactly
what a user runs, `python -m data.synthetic --out D --seed S` and `bash train.sh --preset tiny
--data_root D --output_dir O` with their defaults, then `python -m Evaluation.synthetic`, on data
seed 23 (the recipe was tuned on seeds 0 and 1). Each bar and the range every measured seed
reached (one seed, 17, misses the two projector bars): docs/SYNTHETIC.md, "What the learning test
asserts, against every measured seed". Training runs on one thread, as measured, so the numbers
do not depend on the machine's core count.
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
SEED = "23"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("learning")
    data, out = base / "data", base / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "data.synthetic", "--out", str(data), "--seed", SEED],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    start = time.monotonic()
    train = subprocess.run(["bash", "train.sh", "--preset", "tiny", "--data_root", str(data),
                            "--output_dir", str(out)], cwd=ROOT, env=env,
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


def test_projector_fits_the_targets_it_was_trained_on(trained):
    # teacher-forced on training-format answers: 0.949-0.999 measured after the refit
    assert trained[0]["details"]["projector_cosine_teacher_forced"]["cosine"] >= 0.9


def test_projector_on_its_own_aud_tokens_for_unseen_combinations(trained):
    metrics = trained[0]
    # unrouted requests count 0; measured 0.851-0.952 over eight runs of an older recipe (seed 17
    # below); 0.934-0.986 over 12 seeds with today's (seed 23: 0.986)
    assert metrics["projector_cosine"] >= 0.88
    # clearly above a shuffled target scored on the same answers: margins measured 0.026-0.109
    # over eight runs of an older recipe (seed 17's 0.026 below this bar); 0.085-0.168 over 12
    # seeds with today's (seed 23, run here: 0.134)
    margin = metrics["projector_cosine_routed"] - metrics["projector_cosine_shuffled"]
    assert margin >= 0.04, metrics["details"]["music_requests"]
    # the nearest of the 16 combinations' descriptions is the requested one: chance 1/16; with
    # the fresh-start mixup refit and 30 stage-3 epochs 0.47-0.88 over 12 seeds (seed 23: 0.883)
    assert metrics["details"]["music_requests"]["retrieval"] >= 0.125


def test_music_requests_route_to_aud_tokens_and_questions_do_not(trained):
    metrics = trained[0]
    assert metrics["aud_tokens_on_music_requests"] >= 0.9  # unseen phrasings: 0.933-1.0
    assert metrics["aud_tokens_on_questions"] <= 0.05
    # captioning and question requests in phrasings no training text uses: 0.000-0.062 over 12
    # seeds with 30 stage-3 epochs (0.000-0.133 with 20; seed 23: 0.017)
    assert metrics["aud_tokens_on_unseen_understanding"] <= 0.1
