"""Reading a release file: allow-listed unpickling only, canonical key names, one-line errors."""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path

import pytest
import torch

from llama.release.read import ReleaseFileError, read_release

REF = Path(__file__).resolve().parents[1] / "published_reference"


def test_reads_tensors_and_the_runs_flags_memory_mapped():
    path = (REF / "m2ugen" / "checkpoint.pth").resolve()
    state, args = read_release(path)
    assert "llama.tok_embeddings.weight" in state
    assert not any(k.startswith("module.") for k in state)  # the older release's DDP prefix
    assert isinstance(args, dict) and args  # the pickled argparse.Namespace, as a dict
    # The tensor's memory is a mapping of the file itself (no copy in RAM).
    ptr = state["llama.tok_embeddings.weight"].data_ptr()
    mapped = [tuple(int(x, 16) for x in line.split()[0].split("-"))
              for line in Path("/proc/self/maps").read_text().splitlines() if str(path) in line]
    assert any(lo <= ptr < hi for lo, hi in mapped)


def test_truncated_file(tmp_path):
    data = (REF / "m2ugen" / "checkpoint.pth").read_bytes()
    bad = tmp_path / "checkpoint.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReleaseFileError, match=str(bad)):
        read_release(bad)


def test_dict_without_model(tmp_path):
    bad = tmp_path / "checkpoint.pth"
    torch.save({"weights": {}}, bad)
    with pytest.raises(ReleaseFileError, match="'model'"):
        read_release(bad)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_global_outside_allow_list_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    bad = tmp_path / "checkpoint.pth"
    torch.save({"model": {}, "args": evil}, bad, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(ReleaseFileError, match="allow-list") as err:
        read_release(bad)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_older_vivit_rnn_names_are_renamed(tmp_path):
    """MuMu-LLaMA's loader renamed `iu_vit_rnn`/`iu_vit_attention` (keymap.LEGACY)."""
    state, args = read_release(REF / "mumu" / "checkpoint.pth")
    old = {k.replace("iu_vivit_rnn", "iu_vit_rnn").replace("iu_vivit_attention",
                                                             "iu_vit_attention"): v
           for k, v in state.items()}
    assert "iu_vit_rnn.weight_ih_l0" in old and "iu_vit_attention.weight" in old
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": old, "args": argparse.Namespace(**args)}, path)
    again, _ = read_release(path)
    assert set(again) == set(state)
