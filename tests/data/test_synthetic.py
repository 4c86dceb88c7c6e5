"""data.synthetic: schemas of every file, attribute coverage, captions, split, determinism."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data import synthetic as syn

N = 8
ROOT = Path(__file__).resolve().parents[2]
SPACES = {"wav": syn.AUDIO_ATTRIBUTES, "png": syn.IMAGE_ATTRIBUTES, "mp4": syn.VIDEO_ATTRIBUTES}


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "data"
    counts = syn.generate(out, seed=3, n=N)
    # music: MUCaps N, MusicQA N, MUImage and MUVideo targets N // 2 each, MUEdit 2 * (N // 2)
    assert counts == {"wav": 2 * N + 4 * (N // 2), "png": N + N // 2, "mp4": N}
    return out


def _load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _has_attrs(text: str, attrs: dict[str, str]) -> bool:
    return set(attrs.values()) <= _words(text)


def test_attributes_cover_exactly_the_media_files(ds: Path) -> None:
    attrs = _load(ds / "attributes.json")
    on_disk = {
        p.relative_to(ds).as_posix()
        for p in ds.rglob("*")
        if p.suffix in (".wav", ".png", ".mp4")
    }
    assert set(attrs) == on_disk
    for rel, a in attrs.items():
        space = SPACES[rel.rsplit(".", 1)[1]]
        assert set(a) == set(space), rel
        assert all(a[k] in space[k] for k in space), rel


def test_caption_files(ds: Path) -> None:
    attrs = _load(ds / "attributes.json")
    for caps, folder in [
        ("MUCaps/MUCapsCaptions.json", "MUCaps/audios"),
        ("COCO/CocoCaptions.json", "COCO/images"),
        ("MUVideo/MUVideoCaptions.json", "MUVideo/videos"),
    ]:
        data = _load(ds / caps)
        assert isinstance(data, dict) and len(data) == N
        assert set(data) == {p.name for p in (ds / folder).iterdir()}
        for name, caption in data.items():
            assert isinstance(caption, str) and _has_attrs(caption, attrs[f"{folder}/{name}"])
    assert len(set(_load(ds / "MUCaps/MUCapsCaptions.json").values())) > 1  # several templates


def test_musicqa(ds: Path) -> None:
    attrs = _load(ds / "attributes.json")
    items = _load(ds / "MusicQA/MusicQA.json")
    assert len(items) == N
    for item in items:
        a = attrs[f"MusicQA/audios/{item['audio_name']}"]
        conv = item["conversation"]
        assert len(conv) >= 2 and len(conv) % 2 == 0
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
        for q, ans in zip(conv[::2], conv[1::2]):
            asked = [k for k in a if k in q["value"].lower() or a[k] in ans["value"]]
            assert asked, q
            # every answer names the value of the attribute it is about
            assert _words(ans["value"]) & set(a.values()), ans


def test_alpaca(ds: Path) -> None:
    items = _load(ds / "Alpaca/alpaca_data.json")
    assert len(items) >= 10
    for item in items:
        conv = item["conversation"]
        assert [t["from"] for t in conv] == ["human", "gpt"] and all(t["value"] for t in conv)


def _instructions(ds: Path, name: str, in_dir: str, modality: str, count: int):
    attrs = _load(ds / "attributes.json")
    test = set(_load(ds / "split.json")["test"])
    items = _load(ds / name)
    assert len(items) == count
    folder = Path(name).parent
    for item in items:
        src = f"{folder}/{in_dir}/{item['input_file']}"
        dst = f"{folder}/audios/{item['output_file']}"
        assert (ds / src).is_file() and (ds / dst).is_file()
        conv = item["conversation"]
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
        assert len(conv) in (2, 4) and conv[0]["input_modality"] == modality
        assert _has_attrs(conv[0]["caption"], attrs[src])
        if len(conv) == 4:  # a question about the input first: answered from its attributes
            assert src not in test and conv[1]["value"] and "output_modality" not in conv[1]
            assert _words(conv[1]["value"]) & set(attrs[src].values()), conv[:2]
        human, gpt = conv[-2:]
        assert gpt["output_modality"] == "audio" and _has_attrs(gpt["caption"], attrs[dst])
        assert gpt["caption"] == syn.music_answer_caption(attrs[dst])
        assert gpt["caption"] in gpt["value"] and "[AUD" not in gpt["value"]
        yield attrs[src], attrs[dst], human["value"]


def test_muimage_targets_follow_the_image(ds: Path) -> None:
    for img, music, request in _instructions(
        ds, "MUImage/MUImageInstructions.json", "images", "image", N // 2
    ):
        assert music["instrument"] == syn.COLOUR_TO_INSTRUMENT[img["colour"]]
        assert music["register"] == syn.SIZE_TO_REGISTER[img["size"]]
        assert music["tempo"] in _words(request)


def test_muvideo_targets_follow_the_video(ds: Path) -> None:
    for vid, music, request in _instructions(
        ds, "MUVideo/MUVideoInstructions.json", "videos", "video", N // 2
    ):
        assert music["instrument"] == syn.COLOUR_TO_INSTRUMENT[vid["colour"]]
        assert music["tempo"] == syn.BRIGHTNESS_TO_TEMPO[vid["brightness"]]
        assert music["register"] in _words(request)


def test_muedit_pairs_differ_in_one_named_attribute(ds: Path) -> None:
    changed_kinds = set()
    for src, dst, request in _instructions(
        ds, "MUEdit/MUEditInstructions.json", "audios", "audio", N // 2
    ):
        diff = [k for k in src if src[k] != dst[k]]
        assert len(diff) == 1
        changed_kinds.add(diff[0])
        assert dst[diff[0]] in _words(request)
    assert len(changed_kinds) == 3


def test_split_disjoint_covering_and_pairs_together(ds: Path) -> None:
    split = _load(ds / "split.json")
    train, test = set(split["train"]), set(split["test"])
    assert not train & test
    assert train | test == set(_load(ds / "attributes.json"))
    assert 0.1 < len(test) / (len(train) + len(test)) < 0.35
    for name in ("MUImage/MUImageInstructions.json", "MUEdit/MUEditInstructions.json"):
        folder = Path(name).parent
        in_dir = "images" if "Image" in name else "audios"
        for item in _load(ds / name):
            a = f"{folder}/{in_dir}/{item['input_file']}"
            b = f"{folder}/audios/{item['output_file']}"
            assert (a in test) == (b in test)


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    syn.generate(tmp_path / "a", seed=7, n=4)
    proc = subprocess.run(
        [sys.executable, "-m", "data.synthetic", "--out", str(tmp_path / "b"), "--seed", "7",
         "--n", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert syn.dataset_digest(tmp_path / "a") == syn.dataset_digest(tmp_path / "b")
    syn.generate(tmp_path / "c", seed=8, n=4)
    assert syn.dataset_digest(tmp_path / "a") != syn.dataset_digest(tmp_path / "c")


def test_refuses_non_empty_output(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("keep me")
    assert syn.main(["--out", str(tmp_path), "--n", "1"]) == 2
    assert (tmp_path / "x").read_text() == "keep me"
    with pytest.raises(ValueError):
        syn.generate(tmp_path / "new", n=0)


def test_failed_generation_leaves_no_partial_dataset(tmp_path: Path, monkeypatch) -> None:
    def crash(w) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(syn, "_alpaca", crash)  # the last part written: everything else exists
    with pytest.raises(RuntimeError, match="disk full"):
        syn.generate(tmp_path / "data", n=1)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary one beside it


def _music_combo(attrs: dict[str, str]) -> dict[str, str]:
    return {k: attrs[k] for k in syn.AUDIO_ATTRIBUTES}


def test_held_out_music_combinations_never_occur_in_training(ds: Path) -> None:
    held = syn.held_out_combinations(3)
    attrs, split = _load(ds / "attributes.json"), _load(ds / "split.json")
    train = set(split["train"])
    music = {f: _music_combo(a) for f, a in attrs.items() if f.endswith(".wav")}
    assert not [f for f in train if f in music and music[f] in held]
    # every held-out music request asks for a held-out combination
    for name in ("MUImage/MUImageInstructions.json", "MUVideo/MUVideoInstructions.json",
                 "MUEdit/MUEditInstructions.json"):
        folder = Path(name).parent
        items = _load(ds / name)
        for item in items:
            out = f"{folder}/audios/{item['output_file']}"
            assert (out in split["test"]) == (music[out] in held), (name, out)
        assert any(f"{folder}/audios/{i['output_file']}" in split["test"] for i in items), name


def test_held_out_requests_use_phrasings_no_training_request_uses(ds: Path) -> None:
    split = _load(ds / "split.json")
    test = set(split["test"])
    for name in ("MUImage/MUImageInstructions.json", "MUVideo/MUVideoInstructions.json",
                 "MUEdit/MUEditInstructions.json"):
        folder = Path(name).parent
        phrasing: dict[bool, set[str]] = {True: set(), False: set()}
        for item in _load(ds / name):
            held = f"{folder}/audios/{item['output_file']}" in test
            request = item["conversation"][-2]["value"]
            for word in syn.AUDIO_ATTRIBUTES.values():
                for value in word:
                    request = re.sub(rf"\b{value}\b", "*", request)
            phrasing[held].add(request)
        assert phrasing[True] and not phrasing[True] & phrasing[False], name


def test_default_size_is_the_one_the_tiny_recipe_is_measured_on() -> None:
    from llama.config import get_recipe

    assert syn.DEFAULT_N == get_recipe("tiny").data_n
    out = subprocess.run([sys.executable, "-m", "data.synthetic", "--help"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert f"default {syn.DEFAULT_N}" in " ".join(out.split())


def test_most_training_instructions_first_ask_about_their_input() -> None:
    rng = np.random.default_rng(0)
    attrs = {"colour": "red", "size": "small"}
    leads = [syn._lead_turn("image", attrs, "A small red object.", rng) for _ in range(600)]
    asked = [lead for lead in leads if lead is not None]
    assert abs(len(asked) / len(leads) - syn.LEAD_FRACTION) < 0.06
    assert len({q for q, _ in asked}) > 20  # drawn from the grammar's many sentences
    for _, answer in asked:
        assert answer == "A small red object." or _words(answer) & set(attrs.values())
