"""Media controls tell a model that listens from one that does not.

A tiny release written by the published code (tests/llama/published_reference, gates nonzero)
answers MusicQA rows under every --media_control; with every adapter gate set to 0 in memory (as
in the real releases) the same commands must leave every answer unchanged and every delta
exactly 0, while with the trained gates silence and shuffling change answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data.media import write_wav
from Evaluation import _generation
from Evaluation import musicqa as M

pytestmark = pytest.mark.usefixtures("one_thread")

REF = Path(__file__).resolve().parents[1] / "llama" / "published_reference"
COMP = REF / "components"
MODEL = ["--model", str(REF / "m2ugen" / "checkpoint.pth"), "--llama_dir", str(COMP),
         "--mert_path", str(COMP / "mert"), "--vit_path", str(COMP / "vit"),
         "--vivit_path", str(COMP / "vivit"), "--device", "cpu"]
CONTROLS = ("silence", "noise", "shuffled")
QUESTIONS = ("Describe the audio", "What is the tempo of the music?")


@pytest.fixture(scope="module")
def musicqa_set(tmp_path_factory) -> tuple[Path, Path]:
    """Three distinct clips (the reference clip, its reverse, a chord) x two questions."""
    root = tmp_path_factory.mktemp("controls")
    audio = dict(np.load(REF / "media.npz"))["audio"]
    t = np.arange(audio.size) / 24000
    clips = {"a.wav": audio, "b.wav": audio[::-1].copy() * 0.5,
             "c.wav": (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 550 * t))}
    media = root / "audios"
    media.mkdir()
    for name, wave in clips.items():
        write_wav(media / name, wave.astype(np.float32), 24000)
    refs = root / "refs.json"
    refs.write_text(json.dumps([
        {"audio_name": name, "conversation": [{"from": "human", "value": q},
                                              {"from": "gpt", "value": f"{name} {q} answer"}]}
        for name in clips for q in QUESTIONS]))
    return refs, media


def _generate(refs: Path, media: Path, out: Path, control: str) -> dict:
    argv = ["generate", *MODEL, "--references", str(refs), "--media_dir", str(media),
            "--out", str(out), "--max_new_tokens", "8", "--media_control", control]
    assert M.main(argv) == 0
    return json.loads(out.read_text())


def _score(refs: Path, folder: Path, capsys) -> dict:
    controls = ",".join(f"{c}={folder / (c + '.json')}" for c in CONTROLS)
    capsys.readouterr()
    assert M.main(["score", "--references", str(refs), "--predictions",
                   str(folder / "none.json"), "--control_predictions", controls]) == 0
    return json.loads(capsys.readouterr().out)["media_effect"]


def _engine():
    (engine,) = _generation._MODEL_CACHE.values()
    return engine


@pytest.fixture
def closed_gates():
    """Every adapter gate of the cached release set to 0 for the test, restored afterwards."""
    saved = {}
    with torch.no_grad():
        for name, p in _engine().model.named_parameters():
            if name.endswith(".gate"):
                saved[name] = p.detach().clone()
                p.zero_()
    assert saved, "the release has no adapter gates"
    yield
    params = dict(_engine().model.named_parameters())
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)


def _run_all(musicqa_set, folder: Path) -> dict[str, dict]:
    refs, media = musicqa_set
    folder.mkdir()
    return {c: _generate(refs, media, folder / f"{c}.json", c) for c in ("none", *CONTROLS)}


@pytest.fixture(scope="module")
def open_run(musicqa_set, tmp_path_factory) -> Path:
    _generation._MODEL_CACHE.clear()
    folder = tmp_path_factory.mktemp("open") / "preds"
    _run_all(musicqa_set, folder)
    return folder


def test_open_gates_silence_and_shuffling_change_answers(musicqa_set, open_run, capsys):
    effect = _score(musicqa_set[0], open_run, capsys)
    assert set(effect) == set(CONTROLS)
    for control in ("silence", "shuffled"):
        assert effect[control]["identical_answers"] < 1.0, control
    for control in CONTROLS:
        block = effect[control]
        assert set(block) >= {"identical_answers", "bleu", "bleu4", "meteor", "rouge_l"}
        for metric in ("bleu", "bleu4", "meteor", "rouge_l"):
            lo, hi = block[metric]["ci95"]
            assert lo <= hi


def test_closed_gates_every_control_leaves_every_answer_unchanged(musicqa_set, open_run,
                                                                  tmp_path, capsys,
                                                                  closed_gates):
    preds = _run_all(musicqa_set, tmp_path / "closed")
    for control in CONTROLS:
        assert preds[control] == preds["none"], control
    effect = _score(musicqa_set[0], tmp_path / "closed", capsys)
    for control in CONTROLS:
        assert effect[control]["identical_answers"] == 1.0
        for metric in ("bleu", "bleu4", "meteor", "rouge_l"):
            assert effect[control][metric] == {"delta": 0.0, "ci95": [0.0, 0.0]}
    # the open-gate answers differ from these: the closed run really ran without the music
    open_none = json.loads((open_run / "none.json").read_text())
    assert open_none != preds["none"]


# ---------------------------------------------------------------------------------------------
# The controls themselves


def test_derangement_moves_every_item_and_is_fixed_by_the_seed():
    from Evaluation.media_control import MediaControlError, derangement

    for n in (2, 3, 7, 50):
        p = derangement(n, seed=0)
        assert sorted(p) == list(range(n)) and all(p[i] != i for i in range(n))
        assert derangement(n, seed=0) == p
    assert derangement(50, seed=0) != derangement(50, seed=1)
    with pytest.raises(MediaControlError, match="at least 2"):
        derangement(1, seed=0)


def _decoded(items: dict[str, np.ndarray]):
    return lambda modality, path: items[path].copy()


def test_silence_and_noise_keep_shape_and_loudness():
    from Evaluation.media_control import MediaControl

    rng = np.random.default_rng(5)
    wave = (0.3 * rng.standard_normal(48000)).astype(np.float32)
    image = rng.integers(40, 200, (32, 24, 3), dtype=np.uint8)
    items = {"w.wav": wave, "i.png": image}
    rows = [{"audio": "w.wav"}, {"image": "i.png"}]
    silent = MediaControl("silence", 0, rows, _decoded(items))
    noisy = MediaControl("noise", 0, rows, _decoded(items))
    s = silent.apply("r1", {"audio": "w.wav", "image": "i.png"})
    assert s["audio"].shape == wave.shape and s["audio"].dtype == wave.dtype
    assert not s["audio"].any() and not s["image"].any() and s["image"].shape == image.shape
    n = noisy.apply("r1", {"audio": "w.wav", "image": "i.png"})
    rms = lambda x: float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))  # noqa: E731
    assert n["audio"].shape == wave.shape and n["audio"].dtype == np.float32
    assert rms(n["audio"]) == pytest.approx(rms(wave), rel=0.02)
    assert np.corrcoef(n["audio"], wave)[0, 1] == pytest.approx(0.0, abs=0.03)
    assert n["image"].dtype == np.uint8
    assert n["image"].reshape(-1, 3).mean(0) == pytest.approx(image.reshape(-1, 3).mean(0),
                                                              abs=4)
    assert n["image"].reshape(-1, 3).std(0) == pytest.approx(image.reshape(-1, 3).std(0), rel=0.1)
    assert not np.array_equal(n["image"], image)


def test_noise_depends_on_seed_and_row_only():
    """Per-row seeding: the same row gets the same noise in any order, in any process."""
    from Evaluation.media_control import MediaControl

    items = {"w.wav": np.full(1000, 0.5, dtype=np.float32)}
    rows = [{"audio": "w.wav"}]
    first = MediaControl("noise", 3, rows, _decoded(items))
    second = MediaControl("noise", 3, rows, _decoded(items))
    a = first.apply("row-a", {"audio": "w.wav"})["audio"]
    b = first.apply("row-b", {"audio": "w.wav"})["audio"]
    assert np.array_equal(second.apply("row-b", {"audio": "w.wav"})["audio"], b)
    assert np.array_equal(second.apply("row-a", {"audio": "w.wav"})["audio"], a)
    assert not np.array_equal(a, b)
    other_seed = MediaControl("noise", 4, rows, _decoded(items)).apply("row-a", {"audio": "w.wav"})
    assert not np.array_equal(other_seed["audio"], a)


def test_shuffled_gives_each_row_another_file_of_its_modality():
    from Evaluation.media_control import MediaControl

    rows = [{"audio": f"{k}.wav"} for k in "abcab"] + [{"image": "x.png"}, {"image": "y.png"}]
    control = MediaControl("shuffled", 0, rows, decode=None)  # type: ignore[arg-type]
    seen = {}
    for i, row in enumerate(rows):
        got = control.apply(str(i), row)
        (modality, path), = row.items()
        assert got[modality] != path and got[modality].split(".")[1] == path.split(".")[1]
        seen.setdefault(path, set()).add(got[modality])
    assert all(len(v) == 1 for v in seen.values())  # a fixed map: same file, same replacement
    assert MediaControl("none", 0, rows, decode=None).apply("0", rows[0]) == rows[0]  # type: ignore[arg-type]
