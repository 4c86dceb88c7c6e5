"""Trainable-only checkpoints: atomic swaps, strict loading."""

import os

import pytest
import torch
from torch import nn

from llama import checkpoint as ckpt


def _weights(v: float) -> dict[str, torch.Tensor]:
    return {"a.weight": torch.full((2, 3), v), "b": torch.full((4,), v)}


def test_write_then_read_roundtrip(tmp_path):
    folder = ckpt.write_checkpoint(tmp_path / "c", weights=_weights(1.0), config={"stage": 1},
                                   training_state={"step": 3, "t": torch.ones(2)})
    assert ckpt.read_config(folder) == {"stage": 1}
    assert torch.equal(ckpt.read_weights(folder)["b"], torch.ones(4))
    assert ckpt.read_training_state(folder)["step"] == 3


def test_rewrite_replaces_and_leaves_no_temporaries(tmp_path):
    ckpt.write_checkpoint(tmp_path / "c", weights=_weights(1.0), config={"v": 1})
    ckpt.write_checkpoint(tmp_path / "c", weights=_weights(2.0), config={"v": 2})
    assert ckpt.read_config(tmp_path / "c") == {"v": 2}
    assert sorted(os.listdir(tmp_path)) == ["c"]


def test_crash_during_write_keeps_last_good_state(tmp_path, monkeypatch):
    ckpt.write_checkpoint(tmp_path / "c", weights=_weights(1.0), config={"v": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", boom)
    with pytest.raises(OSError):
        ckpt.write_checkpoint(tmp_path / "c", weights=_weights(2.0), config={"v": 2})
    assert ckpt.read_config(tmp_path / "c") == {"v": 1}
    assert sorted(os.listdir(tmp_path)) == ["c"]


def test_old_twin_is_used_when_the_swap_was_interrupted(tmp_path):
    ckpt.write_checkpoint(tmp_path / "c", weights=_weights(1.0), config={"v": 1})
    os.replace(tmp_path / "c", tmp_path / "c.old")  # crash between the two renames
    assert ckpt.read_config(tmp_path / "c") == {"v": 1}


def test_two_crashes_in_a_row_during_the_swap_keep_a_complete_checkpoint(tmp_path, monkeypatch):
    ckpt.write_checkpoint(tmp_path / "c", weights=_weights(1.0), config={"v": 1})
    real_replace = os.replace
    renames = []

    def first_rename_then_crash(src, dst):
        if renames:
            raise OSError("power cut")
        renames.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", first_rename_then_crash)
    for version in (2, 3):  # crash 1: after c -> c.old; crash 2: with only c.old on disk
        with pytest.raises(OSError, match="power cut"):
            ckpt.write_checkpoint(tmp_path / "c", weights=_weights(version), config={"v": version})
    monkeypatch.setattr(os, "replace", real_replace)
    assert renames == [(tmp_path / "c", tmp_path / "c.old")]
    assert ckpt.resolve_checkpoint(tmp_path / "c") == tmp_path / "c.old"
    assert ckpt.read_config(tmp_path / "c") == {"v": 1}
    assert torch.equal(ckpt.read_weights(tmp_path / "c")["b"], torch.ones(4))
    ckpt.write_checkpoint(tmp_path / "c", weights=_weights(4.0), config={"v": 4})
    assert ckpt.read_config(tmp_path / "c") == {"v": 4}
    assert sorted(os.listdir(tmp_path)) == ["c"]


def test_stage_output_folder_resolves_to_its_checkpoint(tmp_path):
    ckpt.write_checkpoint(tmp_path / "stage1" / "checkpoint", weights=_weights(1.0),
                          config={"v": 7})
    assert ckpt.read_config(tmp_path / "stage1") == {"v": 7}


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="not a checkpoint folder"):
        ckpt.read_config(tmp_path / "nothing")


def test_load_refuses_unknown_names_and_wrong_shapes():
    model = nn.Linear(3, 2)
    with pytest.raises(ckpt.CheckpointError, match="unknown parameter"):
        ckpt.load_tuned_weights(model, {"nope": torch.zeros(1)})
    with pytest.raises(ckpt.CheckpointError, match="has shape"):
        ckpt.load_tuned_weights(model, {"weight": torch.zeros(3, 3)})
    ckpt.load_tuned_weights(model, {"bias": torch.tensor([1.0, 2.0])})
    assert torch.equal(model.bias.detach(), torch.tensor([1.0, 2.0]))
