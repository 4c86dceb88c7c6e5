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
from data.media import load_audio, load_image, load_video

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
    items = _load(ds / name)
    assert len(items) == count
    folder = Path(name).parent
    for item in items:
        src = f"{folder}/{in_dir}/{item['input_file']}"
        dst = f"{folder}/audios/{item['output_file']}"
        assert (ds / src).is_file() and (ds / dst).is_file()
        human, gpt = item["conversation"]
        assert human["from"] == "human" and human["input_modality"] == modality
        assert gpt["from"] == "gpt" and gpt["output_modality"] == "audio"
        assert _has_attrs(human["caption"], attrs[src])
        assert _has_attrs(gpt["caption"], attrs[dst])
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


def test_media_decode_with_the_project_loaders(ds: Path) -> None:
    attrs = _load(ds / "attributes.json")
    for rel in attrs:
        path = ds / rel
        if rel.endswith(".wav"):
            x = load_audio(path, syn.SAMPLE_RATE)
            assert x.shape == (int(syn.CLIP_SECONDS * syn.SAMPLE_RATE),) and np.abs(x).max() > 0.3
        elif rel.endswith(".png"):
            assert load_image(path).shape == (syn.IMAGE_SIZE, syn.IMAGE_SIZE, 3)
        else:
            v = load_video(path, syn.VIDEO_FRAMES)
            assert v.shape == (syn.VIDEO_FRAMES, syn.VIDEO_SIZE, syn.VIDEO_SIZE, 3)


def test_attributes_are_physically_present(ds: Path) -> None:
    """Colour dominates the object, brightness ramps the right way, register and tempo audible."""
    attrs = _load(ds / "attributes.json")
    channel = {"red": 0, "green": 1, "blue": 2}
    for rel, a in attrs.items():
        if rel.endswith(".mp4"):
            v = load_video(ds / rel, syn.VIDEO_FRAMES).astype(float)
            means = v.mean(axis=(1, 2, 3))
            assert (means[-1] > means[0]) == (a["brightness"] == "brightening"), rel
        if rel.endswith(".png") and a["colour"] in channel:
            img = load_image(ds / rel).astype(float)
            sat = img.max(-1) - img.min(-1)
            obj = img[sat > 80]
            assert len(obj) > 0 and obj.mean(0).argmax() == channel[a["colour"]], rel
    rng = np.random.default_rng(0)
    sr = syn.SAMPLE_RATE
    for inst in syn.INSTRUMENTS:
        def pitch(reg: str, inst: str = inst) -> float:
            """Median over loud 64 ms frames of the strongest frequency."""
            x = syn.synth_music({"instrument": inst, "register": reg, "tempo": "slow"}, rng)
            frames = np.lib.stride_tricks.sliding_window_view(x, 1024)[::512] * np.hanning(1024)
            spec = np.abs(np.fft.rfft(frames, axis=1))
            loud = spec.max(1) > 0.1 * spec.max()
            return float(np.median(np.argmax(spec[loud], 1) * sr / 1024))

        assert pitch("low") < 400 and pitch("high") > 500, inst

        def onsets(tempo: str, inst: str = inst) -> int:
            """Peaks of positive spectral flux (a plain note-onset detector)."""
            x = syn.synth_music({"instrument": inst, "register": "low", "tempo": tempo}, rng)
            frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::160] * np.hanning(512)
            log_spec = np.log1p(100 * np.abs(np.fft.rfft(frames, axis=1)))
            flux = np.maximum(log_spec[1:] - log_spec[:-1], 0).sum(1)
            thr = flux.mean() + flux.std()
            return sum(
                1
                for i in range(1, len(flux) - 1)
                if flux[i] > thr and flux[i] == flux[max(0, i - 5) : i + 6].max()
            )

        assert onsets("fast") > 2 * onsets("slow"), inst


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


def test_held_out_combinations_are_distinct_instruments_and_seeded() -> None:
    held = syn.held_out_combinations(3)
    assert len(held) == syn.HELD_OUT_COMBINATIONS
    assert len({h["instrument"] for h in held}) == len(held)
    assert held == syn.held_out_combinations(3)
    assert any(syn.held_out_combinations(s) != held for s in (4, 5, 6))


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
            request = item["conversation"][0]["value"]
            for word in syn.AUDIO_ATTRIBUTES.values():
                for value in word:
                    request = re.sub(rf"\b{value}\b", "*", request)
            phrasing[held].add(request)
        assert phrasing[True] and not phrasing[True] & phrasing[False], name


def test_held_out_phrasings_use_only_tokens_of_training_phrasings() -> None:
    """A model trained from scratch has never seen a token the training requests lack: the
    held-out phrasings recombine known tokens into new sentences (slots aside)."""
    from llama.tokenizer import load_tokenizer

    tok = load_tokenizer("tiny")

    def tokens(template: str) -> set[int]:
        return set(tok.encode(re.sub(r"\{[a-z]+\}", "", template)))

    def flat(groups) -> tuple[str, ...]:
        return tuple(t for g in (groups.values() if isinstance(groups, dict) else [groups])
                     for t in g)

    train = flat(syn._MUIMAGE_REQUESTS) + flat(syn._MUVIDEO_REQUESTS) + flat(syn._EDIT_REQUESTS)
    held = (flat(syn._MUIMAGE_REQUESTS_HELD_OUT) + flat(syn._MUVIDEO_REQUESTS_HELD_OUT)
            + flat(syn._EDIT_REQUESTS_HELD_OUT))
    known = set().union(*(tokens(t) for t in train))
    assert not set(held) & set(train)
    for template in held:
        unknown = tokens(template) - known
        assert not unknown, (template, [tok.decode([i]) for i in unknown])
        named = re.findall(r"\b(music|song|tune|melody|instrument|register|tempo)\b", template)
        assert named, f"{template!r} does not say what to make or change"


def test_default_size_is_the_one_the_tiny_recipe_is_measured_on() -> None:
    from llama.config import get_recipe

    assert syn.DEFAULT_N == get_recipe("tiny").data_n
    out = subprocess.run([sys.executable, "-m", "data.synthetic", "--help"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert f"default {syn.DEFAULT_N}" in " ".join(out.split())


def test_music_template_of_finds_the_template_whatever_fills_it() -> None:
    attrs = {"instrument": "flute", "register": "low", "tempo": "fast"}
    for k, caption in enumerate(syn.music_captions(attrs)):
        assert syn.music_template_of(f"Sure. {caption}") == k
        assert syn.music_template_of(caption.replace("flute", "banjo")) == k
    assert syn.music_template_of("A low register green") is None
