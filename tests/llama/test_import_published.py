"""`python -m llama.import_published`: a release becomes our checkpoint folder that reproduces the
published forward without pickle; bad files are one line naming the file, exit status 2."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from llama import chat_style
from llama.chat import MediaInput, answer_ids
from llama.import_published import main
from llama.release.load import load_imported

REF = Path(__file__).parent / "published_reference"
COMP = REF / "components"
FLAGS = ["--llama_dir", str(COMP), "--mert_path", str(COMP / "mert"), "--vit_path",
         str(COMP / "vit"), "--vivit_path", str(COMP / "vivit")]


def test_imported_folder_reproduces_the_published_greedy_ids(tmp_path, monkeypatch):
    dst = tmp_path / "imported"
    assert main([str(REF / "m2ugen" / "checkpoint.pth"), str(dst), *FLAGS]) == 0
    saved = json.loads((dst / "config.json").read_text())
    assert saved["release"]["layout"] == "m2ugen"
    stored = chat_style.ChatStyle.from_dict(saved["m2ugen"]["chat_style"])
    assert stored == chat_style.PUBLISHED_M2UGEN
    assert saved["m2ugen"]["llama"]["adapter_uses_lora"] is False
    assert saved["m2ugen"]["projector"]["input"] == "pre_norm_predicting"

    def no_pickle(*a, **k):
        raise AssertionError("a later load must not unpickle anything")

    monkeypatch.setattr(torch, "load", no_pickle)
    model = load_imported(dst)
    assert model.cfg.chat_style == chat_style.PUBLISHED_M2UGEN
    ref = json.loads((REF / "m2ugen" / "reference.json").read_text())
    media = dict(np.load(REF / "media.npz"))
    for kind in ("text", "audio", "image", "video"):
        feats = model.media_vector(MediaInput(**({} if kind == "text" else {kind: media[kind]})))
        ids = answer_ids(model, ref["prompt_ids"], feats, 24)
        assert ids == ref["kinds"][kind]["greedy_ids"], kind


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_bad_files_exit_2_with_one_line(tmp_path, capsys):
    data = (REF / "m2ugen" / "checkpoint.pth").read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    no_model = tmp_path / "no_model.pth"
    torch.save({"weights": {}}, no_model)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {}, "args": _Evil(marker)}, evil, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    for bad, words in ((truncated, "truncated"), (no_model, "'model'"), (evil, "allow-list")):
        assert main([str(bad), str(tmp_path / "out"), *FLAGS]) == 2
        err = capsys.readouterr().err.strip()
        assert str(bad) in err and words in err and "\n" not in err
    assert not marker.exists() and not (tmp_path / "out").exists()
