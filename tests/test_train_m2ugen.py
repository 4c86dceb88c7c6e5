"""One training stage end to end on tiny synthetic data: resume, stage chaining, bad files."""

import json
import shutil

import pytest
import torch

import train_m2ugen
from llama import checkpoint as ckpt


def _run(data, out, cache, *extra):
    argv = ["--stage", "1", "--preset", "tiny", "--data_root", str(data), "--output_dir", str(out),
            "--epochs", "2", "--batch_size", "4", "--lr", "1e-3", "--warmup_epochs", "0.5",
            "--feature_cache", str(cache), "--seed", "3", *extra]
    return train_m2ugen.main(argv)


def test_killed_run_resumes_to_the_same_weights(small_synthetic, tmp_path):
    cache = tmp_path / "cache"
    crop = ("--audio_crop", "0.5")  # random crops too must replay exactly after a resume
    assert _run(small_synthetic, tmp_path / "full", cache, *crop) == 0
    assert _run(small_synthetic, tmp_path / "cut", cache, *crop, "--stop_after_steps", "4") == 0
    cut = ckpt.read_config(tmp_path / "cut")
    assert cut["step"] == 4 and not cut["complete"] and cut["batch_in_epoch"] > 0
    assert _run(small_synthetic, tmp_path / "cut", cache, *crop, "--resume") == 0
    full_w, cut_w = ckpt.read_weights(tmp_path / "full"), ckpt.read_weights(tmp_path / "cut")
    assert full_w.keys() == cut_w.keys()
    for name in full_w:
        torch.testing.assert_close(cut_w[name], full_w[name], rtol=1e-5, atol=1e-6, msg=name)
    # Only tuned parameters are stored: no frozen base weights, encoders or decoders.
    assert not any(n.startswith(("backbone.tok_embeddings", "backbone.output.")) for n in full_w)
    assert any(n.startswith("bridges.audio") for n in full_w)
    size = sum(t.numel() for t in full_w.values())
    assert size < 2_000_000
    # Training changed the stage-1 set and nothing else.
    assert ckpt.read_config(tmp_path / "full")["complete"]


@pytest.mark.parametrize("fraction", ["0", "1.5"])
def test_audio_crop_outside_0_1_is_refused(small_synthetic, tmp_path, fraction, capsys):
    with pytest.raises(SystemExit) as exc:
        _run(small_synthetic, tmp_path / "out", tmp_path / "cache", "--audio_crop", fraction)
    assert exc.value.code == 2 and "--audio_crop" in capsys.readouterr().err


def test_next_stage_starts_from_previous_output(small_synthetic, tmp_path):
    cache = tmp_path / "cache"
    assert _run(small_synthetic, tmp_path / "s1", cache, "--epochs", "1") == 0
    s1 = ckpt.read_weights(tmp_path / "s1")
    argv = ["--stage", "2", "--init_from", str(tmp_path / "s1"), "--data_root",
            str(small_synthetic), "--output_dir", str(tmp_path / "s2"), "--epochs", "1",
            "--batch_size", "4", "--feature_cache", str(cache)]
    assert train_m2ugen.main(argv) == 0
    s2 = ckpt.read_weights(tmp_path / "s2")
    # Bridges are frozen in stage 2: carried over unchanged from stage 1; the projector trained.
    bridge = next(n for n in s1 if n.startswith("bridges.audio"))
    assert torch.equal(s1[bridge], s2[bridge])
    proj = next(n for n in s1 if n.startswith("projector.") and n.endswith("weight"))
    assert not torch.equal(s1[proj], s2[proj])


def test_unreadable_file_fails_naming_it_or_is_skipped_and_counted(small_synthetic, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(small_synthetic, data)
    captions = json.loads((data / "MUCaps" / "MUCapsCaptions.json").read_text())
    train = set(json.loads((data / "split.json").read_text())["train"])
    victim = next(name for name in captions if f"MUCaps/audios/{name}" in train)
    (data / "MUCaps" / "audios" / victim).write_bytes(b"not a wav file at all")
    with pytest.raises(Exception, match=victim):
        _run(data, tmp_path / "strict", tmp_path / "cache", "--epochs", "1")
    assert _run(data, tmp_path / "skip", tmp_path / "cache", "--epochs", "1",
                "--on_error", "skip") == 0
    out = capsys.readouterr().out
    assert "1" in out and "unreadable" in out and victim in out
