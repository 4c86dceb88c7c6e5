"""The published README command lines work with inference.py on released checkpoint files.

`inference.py --model <release>/checkpoint.pth --batch-file F` must reproduce, in the `token_ids`
of results.jsonl, the greedy ids the published code itself produced (tests/llama/
published_reference, regenerated as its README says) for text, music and image inputs, and refuse
video for MuMu-LLaMA in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import inference
from data.media import write_wav
from llama.knn import KnnIndex

REF = Path(__file__).resolve().parents[1] / "llama" / "published_reference"
COMP = REF / "components"
MODEL_FLAGS = ["--llama_dir", str(COMP), "--mert_path", str(COMP / "mert"),
               "--vit_path", str(COMP / "vit"), "--vivit_path", str(COMP / "vivit")]
CACHE: dict = {}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """The reference inputs as files that decode back to exactly the same arrays."""
    folder = tmp_path_factory.mktemp("media")
    m = dict(np.load(REF / "media.npz"))
    write_wav(folder / "a.wav", m["audio"], 24000)
    Image.fromarray(m["image"]).save(folder / "i.png")
    with av.open(str(folder / "v.mkv"), "w") as c:  # ffv1: lossless, frames decode bit-exact
        s = c.add_stream("ffv1", rate=4)
        s.width, s.height, s.pix_fmt = 16, 16, "bgr0"
        for frame in m["video"]:
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return {"audio": folder / "a.wav", "image": folder / "i.png", "video": folder / "v.mkv"}


def _batch(tmp_path: Path, release: str, media: dict[str, Path], extra=()) -> list[dict]:
    ref = json.loads((REF / release / "reference.json").read_text())
    prompt = ref["prompt_text"].split("### Instruction:\n")[1].split("\n\n###")[0]
    lines = [{"id": kind, "prompt": prompt, "max_new_tokens": 24, "music": "never",
              **({} if kind == "text" else {kind: str(media[kind])})}
             for kind in ("text", "audio", "image", "video")]
    tmp_path.mkdir(parents=True, exist_ok=True)
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    argv = ["--model", str(REF / release / "checkpoint.pth"), *MODEL_FLAGS, "--device", "cpu",
            "--batch-file", str(batch), "--out_dir", str(out), *extra]
    inference.main(argv, model_cache=CACHE)
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("release", ["m2ugen", "mumu", "m2ugen_audioldm2"])
def test_batch_token_ids_match_the_published_greedy_ids(tmp_path, media, release):
    ref = json.loads((REF / release / "reference.json").read_text())
    results = {r["id"]: r for r in _batch(tmp_path, release, media)}
    for kind, expected in ref["kinds"].items():
        if expected["supported"]:
            assert results[kind]["error"] is None, results[kind]
            assert results[kind]["token_ids"] == expected["greedy_ids"], kind
        else:  # MuMu-LLaMA video: refused in one line, like the published code could not run it
            err = results[kind]["error"]
            assert "video input is not supported" in err and "\n" not in err


def test_hub_id_offline_is_one_line_exit_2(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = inference.main(["--model", "M2UGen/M2UGen-MusicGen-small", "--prompt", "hi"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "M2UGen/M2UGen-MusicGen-small" in err and "\n" not in err


def test_every_published_flag_is_accepted(tmp_path, media):
    """--llama_type selects <llama_dir>/<type>; --knn_dir enables retrieval for the modalities
    whose width matches the index (here ViT/ViViT: 16), which changes the image answer."""
    llama_dir = tmp_path / "LLaMA"
    (llama_dir / "7B").mkdir(parents=True)
    (llama_dir / "tokenizer.model").write_bytes((COMP / "tokenizer.model").read_bytes())
    knn = tmp_path / "knn"
    knn.mkdir()
    KnnIndex.build(np.random.default_rng(0).standard_normal((32, 16))).save(knn / "knn.index")
    plain = {r["id"]: r for r in _batch(tmp_path / "a", "m2ugen", media)}
    flags = ["--llama_type", "7B", "--knn_dir", str(knn)]
    ref = json.loads((REF / "m2ugen" / "reference.json").read_text())
    prompt = ref["prompt_text"].split("### Instruction:\n")[1].split("\n\n###")[0]
    batch = tmp_path / "b.jsonl"
    batch.write_text(json.dumps({"id": "image", "prompt": prompt, "max_new_tokens": 24,
                                 "music": "never", "image": str(media["image"])}) + "\n")
    argv = ["--model", str(REF / "m2ugen" / "checkpoint.pth"), "--llama_dir", str(llama_dir),
            *MODEL_FLAGS[2:], *flags, "--device", "cpu", "--batch-file", str(batch),
            "--out_dir", str(tmp_path / "o")]
    assert inference.main(argv) == 0
    knn_result = json.loads((tmp_path / "o" / "results.jsonl").read_text().splitlines()[0])
    assert knn_result["error"] is None
    assert knn_result["token_ids"] != plain["image"]["token_ids"]


def test_imported_folder_runs_with_the_published_semantics(tmp_path, media):
    from llama.import_published import main as import_main

    dst = tmp_path / "imported"
    assert import_main([str(REF / "mumu" / "checkpoint.pth"), str(dst), *MODEL_FLAGS]) == 0
    ref = json.loads((REF / "mumu" / "reference.json").read_text())
    prompt = ref["prompt_text"].split("### Instruction:\n")[1].split("\n\n###")[0]
    batch = tmp_path / "b.jsonl"
    batch.write_text(json.dumps({"id": "audio", "prompt": prompt, "max_new_tokens": 24,
                                 "music": "never", "audio": str(media["audio"])}) + "\n")
    argv = ["--model", str(dst), "--device", "cpu", "--batch-file", str(batch),
            "--out_dir", str(tmp_path / "o")]
    assert inference.main(argv) == 0
    got = json.loads((tmp_path / "o" / "results.jsonl").read_text().splitlines()[0])
    assert got["token_ids"] == ref["kinds"]["audio"]["greedy_ids"]
