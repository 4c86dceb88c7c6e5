"""train.sh / train_tiny.sh and the stage CLI's recipe: the documented command is the recipe,
works from any directory, and a three-stage chain resumes where it stopped."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

import train_m2ugen
from llama import checkpoint as ckpt
from llama.config import TRAIN_SETTING_FIELDS, TrainSettings, get_recipe

ROOT = Path(__file__).resolve().parents[1]


def _parse(*extra: str):
    return train_m2ugen.parse_args(["--data_root", "d", "--output_dir", "o", *extra])


def test_unset_flags_come_from_the_stage_recipe_and_given_flags_win():
    args = _parse("--stage", "3", "--init_from", "nowhere", "--lr", "0.01")
    expected = get_recipe("tiny").for_stage(3)
    assert args.preset == "tiny" and args.lr == 0.01
    assert args.settings == dataclasses.replace(expected, lr=0.01)
    for flag in TRAIN_SETTING_FIELDS:  # the resolved values stay on args (config.json "args")
        assert getattr(args, flag) == getattr(args.settings, flag), flag
    line = train_m2ugen.describe_settings(args)
    assert "lr*=0.01" in line and f"replay={expected.replay}" in line


def test_a_preset_without_tuned_numbers_gets_the_published_defaults():
    args = _parse("--stage", "1", "--preset", "m2ugen-musicgen-small")
    assert args.settings == TrainSettings()


def test_resolved_values_are_still_validated(capsys):
    with pytest.raises(SystemExit) as exc:
        _parse("--stage", "1", "--epochs", "0")
    assert exc.value.code == 2 and "--epochs" in capsys.readouterr().err


def _state(folder: Path) -> str:
    try:
        return "complete" if ckpt.read_config(folder).get("complete") else "partial"
    except ckpt.CheckpointError:
        return "none"


@pytest.mark.slow
def test_chain_from_another_directory_stops_and_resumes(small_synthetic, tmp_path):
    """Relative paths from the caller's directory; stage 2 is cut after one step, then
    `--resume` (through the train_tiny.sh alias) skips stage 1, finishes stage 2, runs stage 3."""
    (tmp_path / "data").symlink_to(small_synthetic, target_is_directory=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHON": sys.executable, "STAGE3_ARGS": "--projector_refit_steps 20"}
    flags = ["--epochs", "1", "--batch_size", "8", "--replay", "0"]
    cut = subprocess.run(
        ["bash", str(ROOT / "train.sh"), "--preset", "tiny", "--data_root", "data",
         "--output_dir", "out", *flags], cwd=tmp_path, capture_output=True, text=True,
        env={**env, "STAGE2_ARGS": "--stop_after_steps 1"}, timeout=900)
    assert cut.returncode == 3, cut.stderr[-3000:]
    assert "--resume" in cut.stderr
    out = tmp_path / "out"
    assert [_state(out / f"stage{k}") for k in (1, 2, 3)] == ["complete", "partial", "none"]
    assert (out / "feature_cache").is_dir()  # the default cache lives in the output folder
    stage1 = (out / "stage1" / "checkpoint" / "model.safetensors").read_bytes()

    done = subprocess.run(["bash", str(ROOT / "train_tiny.sh"), "data", "out", *flags,
                           "--resume"], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stage 1" in done.stderr and "skipped" in done.stderr and "(resumed)" in done.stderr
    assert [_state(out / f"stage{k}") for k in (1, 2, 3)] == ["complete"] * 3
    assert (out / "stage1" / "checkpoint" / "model.safetensors").read_bytes() == stage1
    assert "settings (recipe of preset tiny" in done.stdout
    # stage 3 ends with the recipe's projector refit (here shortened to 20 steps)
    assert ckpt.read_config(out / "stage3")["projector_refit"]["steps"] == 20
    assert "projector refit done" in done.stdout


def test_train_tiny_alias_needs_data_and_output(tmp_path):
    res = subprocess.run(["bash", str(ROOT / "train_tiny.sh"), "only-one"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert res.returncode == 2 and "usage" in res.stderr
