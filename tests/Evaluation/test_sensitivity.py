"""Evaluation.sensitivity tells a live multimodal path (nonzero gates) from an inert one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from Evaluation import sensitivity
from data.media import write_wav
from llama.release.read import read_release

REF = Path(__file__).resolve().parents[1] / "llama" / "published_reference"
COMP = REF / "components"
FLAGS = ["--llama_dir", str(COMP), "--mert_path", str(COMP / "mert"), "--vit_path",
         str(COMP / "vit"), "--vivit_path", str(COMP / "vivit"), "--device", "cpu"]


def _media(folder: Path) -> list[str]:
    m = dict(np.load(REF / "media.npz"))
    write_wav(folder / "a.wav", m["audio"], 24000)
    write_wav(folder / "b.wav", m["audio"][::-1].copy() * 0.5, 24000)
    Image.fromarray(m["image"]).save(folder / "i.png")
    Image.fromarray(255 - m["image"]).save(folder / "j.png")
    return ["--audio", str(folder / "a.wav"), str(folder / "b.wav"),
            "--image", str(folder / "i.png"), str(folder / "j.png")]


def _run(ckpt: Path, media: list[str], capsys) -> list[dict]:
    code = sensitivity.main(["--model", str(ckpt), *FLAGS, *media, "--max_new_tokens", "6",
                             "--json"])
    assert code == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]


def test_open_gates_media_matter_zero_gates_media_inert(tmp_path, capsys):
    media = _media(tmp_path)
    rows = _run(REF / "m2ugen" / "checkpoint.pth", media, capsys)
    assert {r["modality"] for r in rows} == {"audio", "image"} and len(rows) == 4
    assert all(r["removed_kl_first"] > 1e-6 and r["swapped_tv_mean"] > 1e-6 for r in rows)

    state, args = read_release(REF / "m2ugen" / "checkpoint.pth")
    state = {k: (torch.zeros_like(v) if k.endswith(".attention.gate") else v.clone())
             for k, v in state.items()}
    closed = tmp_path / "closed.pth"
    torch.save({"model": state, "args": argparse.Namespace(**args)}, closed)
    rows = _run(closed, media, capsys)
    for r in rows:
        for key, value in r.items():
            if key.endswith(("_first", "_mean")):
                assert value == 0.0, (r["item"], key)
            if key.endswith("answer_changed"):
                assert value is False
