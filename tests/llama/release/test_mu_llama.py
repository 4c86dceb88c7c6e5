"""MU-LLaMA releases (the captioner of the published datasets): the third layout of the key table,
checked against outputs of the published MU-LLaMA code itself at tiny size
(`mullama_reference/README.md`): logits within 1e-4 relative, identical greedy ids, for text +
music (with and without the kNN index) and text only, through the library and through
`inference.py --batch-file`."""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from llama.chat import MediaInput, answer_ids
from llama.chat_style import PUBLISHED_MU_LLAMA, UnsupportedModalityError
from llama.release.load import load_release
from llama.release.read import ReleaseFileError

pytestmark = pytest.mark.usefixtures("one_thread")

REF = Path(__file__).resolve().parent / "mullama_reference"
COMPONENTS = Path(__file__).resolve().parents[1] / "published_reference" / "components"
MERT = COMPONENTS / "mert"
REPO = Path(__file__).resolve().parents[3]
CASES = json.loads((REF / "reference.json").read_text())["cases"]
TENSORS = load_file(str(REF / "reference.safetensors"))
TOL = 1e-4


def rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


def load(**kw):
    return load_release(REF / "checkpoint.pth", llama_dir=str(COMPONENTS), mert_path=str(MERT),
                        **kw)


@pytest.fixture(scope="module")
def released():
    return load()


@pytest.fixture(scope="module")
def wave():
    data, sr = sf.read(REF / "audio.wav", dtype="float32")
    assert sr == 24000
    return data


def last_logits(model, ids: list[int], feats) -> torch.Tensor:
    """Last-position logits of the last 6 prompt prefixes (what the reference holds)."""
    toks = torch.tensor([ids])
    with torch.no_grad():
        return torch.stack([model.backbone(toks[:, :t], modality_features=feats)[0, -1]
                            for t in range(len(ids) - 5, len(ids) + 1)])


def test_layout_configuration_and_report(released):
    model, report = released
    assert report.layout == "mu-llama" and report.missing == []
    assert list(report.unused) == ["gates of layers without an adapter"]
    cfg = model.cfg
    assert cfg.chat_style == PUBLISHED_MU_LLAMA and model.backbone.n_new_tokens == 0
    assert (cfg.llama.modalities, cfg.llama.n_adapter_layers, cfg.llama.first_adapter_layer) == \
        (("audio",), 2, 2)  # the prefix rows: one per adapter layer, the last layers
    assert (cfg.llama.vocab_size, cfg.llama.max_seq_len) == (1000, 8192)
    assert (cfg.bridges.music_pooling, cfg.bridges.music_l2, cfg.bridges.block_hidden_dim) == \
        ("mean", "pooled", 128)  # MU-LLaMA's blocks are 4 x dim inside
    assert (cfg.knn.cache_size, cfg.knn.cache_t, cfg.knn.cache_weight) == (100, 20.0, 0.0)
    assert not report.gates_all_zero  # MU-LLaMA's adapter was trained: music matters
    for part in ("image", "video"):  # not in the release: zero, and refused by the chat style
        assert all(not p.any() for p in model.bridges[part].parameters())


def test_more_prefix_rows_than_layers_as_the_published_loop_ran_it(wave):
    """A MU-LLaMA built with its published query_layer (20) on fewer layers: every layer takes
    the adapter and only the first prefix rows are used."""
    deep = REF / "deep_prefix"
    model, report = load_release(deep / "checkpoint.pth", llama_dir=str(COMPONENTS),
                                 mert_path=str(MERT))
    assert (model.cfg.llama.n_adapter_layers, model.cfg.llama.first_adapter_layer) == (4, 0)
    assert report.unused == {"prefix rows past the last layer (never used by the published "
                             "loop)": ["prefix_query.weight[4:20]"]}
    case = json.loads((deep / "reference.json").read_text())["cases"]["music"]
    feats = model.media_vector(MediaInput(audio=wave))
    want = load_file(str(deep / "reference.safetensors"))["music.noknn.logits"]
    assert rel(last_logits(model, case["prompt_ids"], feats), want) <= TOL
    assert answer_ids(model, case["prompt_ids"], feats, 24) == case["noknn"]["greedy_ids"]


def test_the_prompt_is_the_published_one(released):
    model, _ = released
    for case in CASES.values():
        assert PUBLISHED_MU_LLAMA.format_prompt(case["question"]) == case["prompt"]
        assert model.build_prompt(case["question"], [("earlier", "turn")], 24)[0] == \
            case["prompt_ids"]  # every turn alone, as the published demo prompted it


@pytest.mark.parametrize("kind", ["noknn", "knn"])
def test_text_and_music_match_the_published_code(kind, wave):
    model, _ = load(knn_dir=str(REF / "knn.index")) if kind == "knn" else load()
    want = CASES["music"][kind]
    if kind == "knn":  # the published captioning step's settings (cache weight 0.3)
        assert model._knn is not None
        model._knn.keywords.update(k=want["cache_size"], t=want["cache_t"],
                                   weight=want["cache_weight"])
    feats = model.media_vector(MediaInput(audio=wave))
    ids = CASES["music"]["prompt_ids"]
    assert rel(last_logits(model, ids, feats), TENSORS[f"music.{kind}.logits"]) <= TOL
    assert answer_ids(model, ids, feats, 24) == want["greedy_ids"]


def test_text_only_llama_matches_the_published_transformer(released):
    """The published `generate` cannot run without music (recorded in the reference); its LLaMA
    forward (LoRA, biases, no adapter) can: ours with every adapter gate shut computes it."""
    model = copy.deepcopy(released[0])
    with torch.no_grad():
        for name, p in model.backbone.named_parameters():
            if name.endswith(".gate"):
                p.zero_()
    case = CASES["text"]
    assert "has no attribute 'device'" in case["generate_without_music"]
    assert rel(last_logits(model, case["prompt_ids"], None), TENSORS["text.logits"]) <= TOL
    assert answer_ids(model, case["prompt_ids"], None, 24) == case["greedy_ids"]


def test_the_chat_needs_music_and_makes_none(released, wave):
    model, _ = released
    with pytest.raises(UnsupportedModalityError, match="needs music"):
        model.chat("What is this?", media=None)
    with pytest.raises(UnsupportedModalityError, match="image input is not supported"):
        model.chat("What is this?", media=MediaInput(audio=wave, image=wave))
    with pytest.raises(UnsupportedModalityError, match="makes no music"):
        PUBLISHED_MU_LLAMA.check_modalities(["audio"], music="always")
    with pytest.raises(ReleaseFileError, match="makes no music"):
        load(music_decoder_path="facebook/musicgen-small")


def _llama_dir(tmp_path: Path) -> Path:
    """The published layout: <dir>/tokenizer.model + <dir>/7B/params.json (no weights needed)."""
    d = tmp_path / "LLaMA"
    (d / "7B").mkdir(parents=True)
    (d / "tokenizer.model").write_bytes((COMPONENTS / "tokenizer.model").read_bytes())
    (d / "7B" / "params.json").write_text(json.dumps(
        {"dim": 32, "multiple_of": 16, "n_heads": 4, "n_layers": 4, "norm_eps": 1e-5,
         "vocab_size": -1, "lora_rank": 4}))
    return d


def _inference(*args: str) -> subprocess.CompletedProcess:
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(REPO / "inference.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_inference_batch_file_gives_the_published_ids(tmp_path):
    rows = [{"id": "music", "prompt": CASES["music"]["question"], "audio": str(REF / "audio.wav")},
            {"id": "text", "prompt": CASES["text"]["question"]}]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = _inference("--model", str(REF / "checkpoint.pth"), "--llama_dir",
                     str(_llama_dir(tmp_path)), "--mert_path", str(MERT), "--batch-file",
                     str(tmp_path / "r.jsonl"), "--out_dir", str(tmp_path / "out"),
                     "--max_new_tokens", "24", "--temperature", "0")
    out = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").open())}
    assert out["music"]["error"] is None, res.stderr[-2000:]
    assert out["music"]["token_ids"] == CASES["music"]["noknn"]["greedy_ids"]
    assert out["music"]["audio"] is None
    assert "needs music" in out["text"]["error"]  # as the published CLI, which requires audio


class Foreign:  # any class outside the loader's allow-list
    pass


def _broken(kind: str, tmp_path: Path) -> Path:
    f = tmp_path / f"{kind}.pth"
    if kind == "truncated":
        data = (REF / "checkpoint.pth").read_bytes()
        f.write_bytes(data[: len(data) // 2])
        return f
    with torch.serialization.safe_globals([argparse.Namespace]):
        blob = torch.load(REF / "checkpoint.pth", weights_only=True)
    if kind == "foreign_global":
        blob["args"] = Foreign()
    elif kind == "missing_tensor":
        del blob["model"]["mu_mert_proj.bias"]
    elif kind == "wrong_shape":
        blob["model"]["mu_mert_f2_1.weight"] = torch.zeros(32, 64)  # f1 / f3 are 128 wide
    torch.save(blob, f)
    return f


@pytest.mark.parametrize("kind", ["truncated", "foreign_global", "missing_tensor", "wrong_shape"])
def test_hostile_or_broken_files_end_in_one_line(kind, tmp_path):
    f = _broken(kind, tmp_path)
    res = _inference("--model", str(f), "--llama_dir", str(_llama_dir(tmp_path)),
                     "--mert_path", str(MERT), "--prompt", "Describe the music",
                     "--audio_file", str(REF / "audio.wav"), "--max_new_tokens", "2")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and str(f) in lines[0], res.stderr[-1500:]
    assert "Traceback" not in res.stderr
