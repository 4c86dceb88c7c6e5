"""Feature cache: hits, misses, invalidation, atomic writes, the text store and the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import data.features as features
from data.features import FeatureCache, TextFeatureStore, discover_media, main


class CountingEncoder:
    """A stand-in frozen encoder: features = a function of the loaded array; counts calls."""

    def __init__(self, identity: str = "enc-A") -> None:
        self.identity = identity
        self.calls: list[int] = []

    def encode_items(self, batch):
        self.calls.append(len(batch))
        return [torch.tensor(np.asarray(x, np.float32)).reshape(1, -1) * 1.1 for x in batch]


def _load_npy(path: str) -> np.ndarray:
    return np.load(path)


def _write(path: Path, values) -> Path:
    np.save(path, np.asarray(values, np.float32))
    return path


@pytest.fixture()
def files(tmp_path):
    return [_write(tmp_path / f"x{i}.npy", [i, i + 0.5, 2.0]) for i in range(3)]


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.rglob("*.safetensors"))


def test_miss_then_hit(files, tmp_path):
    cache = FeatureCache(tmp_path / "c")
    enc = CountingEncoder()
    first = cache.get_or_compute(files, enc, _load_npy, batch_size=2)
    assert enc.calls == [2, 1] and cache.stats.computed == 3
    assert len(_entries(tmp_path / "c")) == 3
    again = FeatureCache(tmp_path / "c")  # a new run: nothing in memory
    second = again.get_or_compute(files, enc, _load_npy)
    assert enc.calls == [2, 1] and again.stats.reused == 3 and again.stats.computed == 0
    for a, b in zip(first, second):
        assert torch.equal(a, b) and a.dtype == torch.float32
    assert torch.allclose(first[1], torch.tensor([[1.1, 1.65, 2.2]]))


def test_changed_file_is_recomputed(files, tmp_path):
    cache = FeatureCache(tmp_path / "c")
    enc = CountingEncoder()
    cache.get_or_compute(files, enc, _load_npy)
    _write(files[0], [9.0, 9.0, 9.0])
    out = cache.get_or_compute(files, enc, _load_npy)
    assert enc.calls[-1] == 1  # only the edited file
    assert torch.allclose(out[0], torch.full((1, 3), 9.9))


def test_changed_file_with_preserved_mtime_is_recomputed(files, tmp_path):
    cache = FeatureCache(tmp_path / "c")
    enc = CountingEncoder()
    cache.get_or_compute(files[:1], enc, _load_npy)
    st = os.stat(files[0])
    _write(files[0], [7.0, 7.0, 7.0])  # same size
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    out = cache.get_or_compute(files[:1], enc, _load_npy)
    assert torch.allclose(out[0], torch.full((1, 3), 7.7))


def test_changed_encoder_or_params_miss(files, tmp_path):
    cache = FeatureCache(tmp_path / "c")
    a = CountingEncoder("enc-A")
    cache.get_or_compute(files, a, _load_npy, params={"sr": 24000})
    b = CountingEncoder("enc-B")
    cache.get_or_compute(files, b, _load_npy, params={"sr": 24000})
    assert b.calls == [3]
    cache.get_or_compute(files, a, _load_npy, params={"sr": 16000})
    assert a.calls == [3, 3]
    cache.get_or_compute(files, a, _load_npy, params={"sr": 24000})
    assert a.calls == [3, 3]  # the original entries are still valid


def test_float16_entries_are_read_by_a_float32_run(files, tmp_path):
    enc = CountingEncoder()
    half = FeatureCache(tmp_path / "c", dtype="float16")  # `data.features --dtype float16`
    written = half.get_or_compute(files, enc, _load_npy, params={"sr": 24000})
    assert torch.equal(written[1], torch.tensor([[1.1, 1.65, 2.2]]).half().float())
    training = FeatureCache(tmp_path / "c")  # what training opens (float32 default)
    out = training.get_or_compute(files, enc, _load_npy, params={"sr": 24000})
    assert enc.calls == [3] and training.stats.reused == 3 and training.stats.computed == 0
    assert all(o.dtype == torch.float32 for o in out) and torch.equal(out[1], written[1])


def test_corrupt_entry_is_a_miss(files, tmp_path):
    cache = FeatureCache(tmp_path / "c")
    enc = CountingEncoder()
    cache.get_or_compute(files[:1], enc, _load_npy)
    (entry,) = _entries(tmp_path / "c")
    entry.write_bytes(entry.read_bytes()[:20])  # truncated by someone else
    out = cache.get_or_compute(files[:1], enc, _load_npy)
    assert enc.calls == [1, 1] and torch.allclose(out[0], torch.tensor([[0.0, 0.55, 2.2]]))
    # an entry renamed to another key is not served either
    other = _write(tmp_path / "other.npy", [5.0, 5.0, 5.0])
    cache.get_or_compute([other], enc, _load_npy)
    src = [e for e in _entries(tmp_path / "c")]
    key0 = cache.key(files[0], enc.identity)
    target = cache.store.path(key0)
    moved = [e for e in src if e != target][0]
    os.replace(moved, target)
    assert cache.lookup(files[0], enc.identity) is None


def test_write_is_atomic(files, tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path / "c")
    enc = CountingEncoder()
    (good,) = cache.get_or_compute(files[:1], enc, _load_npy)
    entry = _entries(tmp_path / "c")[0]
    before = entry.read_bytes()
    real_save = features.save_file
    observed = []

    def crashing_save(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        observed.append(Path(filename).read_bytes() != before)
        with open(filename, "r+b") as fh:  # half written...
            fh.truncate(10)
        raise OSError("disk full")

    monkeypatch.setattr(features, "save_file", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        cache.put(files[0], enc.identity, torch.ones(1, 3))
    assert observed == [True]
    assert entry.read_bytes() == before  # the old entry survived intact
    assert _entries(tmp_path / "c") == [entry]
    assert not [p for p in (tmp_path / "c").rglob("*") if p.name.endswith(".tmp")]

    def checking_save(tensors, filename, metadata=None):
        assert Path(filename) != cache.store.path(cache.key(files[1], enc.identity))
        assert not cache.store.path(cache.key(files[1], enc.identity)).exists()
        real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(features, "save_file", checking_save)
    cache.get_or_compute(files[1:2], enc, _load_npy)
    assert cache.lookup(files[1], enc.identity) is not None
    assert torch.equal(cache.lookup(files[0], enc.identity), good)


def test_text_store(tmp_path):
    calls = []

    def compute(texts):
        calls.append(list(texts))
        return torch.stack([torch.full((2, 3), float(len(t))) for t in texts])

    store = TextFeatureStore(tmp_path / "c", identity="musicgen-tiny#1")
    out = store.get_or_compute(["a piano", "slow", "a piano"], compute)
    assert out.shape == (3, 2, 3) and calls == [["a piano", "slow", "a piano"]]
    out2 = store.get_or_compute(["slow", "a piano", "fast organ"], compute)
    assert calls[-1] == ["fast organ"]
    assert torch.equal(out2[0], out[1]) and out2[2].max() == 10
    other = TextFeatureStore(tmp_path / "c", identity="musicgen-tiny#2")
    other.get_or_compute(["slow"], compute)
    assert calls[-1] == ["slow"]  # another decoder never reuses these targets
    with pytest.raises(ValueError, match="rows"):
        other.get_or_compute(["x", "y"], lambda t: torch.zeros(1, 2))


def test_real_music_encoder_through_cache(tmp_path):
    from llama.config import get_preset
    from llama.encoders import load_music_encoder

    enc = load_music_encoder(get_preset("tiny").mert)
    paths = []
    for i, secs in enumerate((1.0, 2.0)):
        p = tmp_path / f"a{i}.wav"
        sf.write(p, np.random.default_rng(i).standard_normal(int(secs * 24000)) * 0.1, 24000)
        paths.append(p)
    load = lambda p: sf.read(p, dtype="float32")[0]  # noqa: E731
    cache = FeatureCache(tmp_path / "c")
    items = cache.get_or_compute(paths, enc, load, params={"sr": 24000})
    states, mask = enc.collate(items)
    direct = enc.encode([load(p) for p in paths])
    assert torch.allclose(states, direct.hidden_states, atol=1e-5)
    assert torch.equal(mask, direct.mask)
    reread = FeatureCache(tmp_path / "c").get_or_compute(paths, enc, load, params={"sr": 24000})
    assert all(torch.equal(a, b) for a, b in zip(items, reread))


# ---------------------------------------------------------------------------------------------
# CLI


def _dataset(root: Path) -> None:
    (root / "MUCaps" / "audios").mkdir(parents=True)
    (root / "COCO" / "images").mkdir(parents=True)
    (root / "MusicQA" / "audios").mkdir(parents=True)
    for i in range(2):
        sf.write(root / "MUCaps" / "audios" / f"m{i}.wav",
                 np.random.default_rng(i).standard_normal(12000 * (i + 1)) * 0.1, 24000)
        img = Image.fromarray(np.full((20, 30, 3), 60 * i, np.uint8))
        img.save(root / "COCO" / "images" / f"c{i}.png")
    sf.write(root / "MusicQA" / "audios" / "q.flac", np.zeros(16000), 16000)
    (root / "MUCaps" / "audios" / "notes.txt").write_text("not media")


def test_discover_media(tmp_path):
    _dataset(tmp_path)
    names = [p.name for p in discover_media(tmp_path, "audio")]
    assert names == ["m0.wav", "m1.wav", "q.flac"]
    assert [p.name for p in discover_media(tmp_path, "image")] == ["c0.png", "c1.png"]
    assert discover_media(tmp_path, "video") == []


def test_cli_counts_failures_and_reuse(tmp_path, capsys):
    root = tmp_path / "data"
    _dataset(root)
    bad = root / "MUCaps" / "audios" / "broken.wav"
    bad.write_bytes(b"RIFF not really a wav")
    argv = ["--data_root", str(root), "--preset", "tiny", "--cache_dir", str(tmp_path / "c"),
            "--modalities", "audio,image", "--no_progress"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "audio: 4 files, 3 computed, 0 reused, 1 failed" in out
    assert "image: 2 files, 2 computed, 0 reused, 0 failed" in out
    assert f"failed: {bad}" in out
    assert main(argv + ["--skip_bad"]) == 0
    out = capsys.readouterr().out
    assert "audio: 4 files, 0 computed, 3 reused, 1 skipped" in out
    assert f"skipped: {bad}" in out
    with pytest.raises(SystemExit):
        main(argv[:-3] + ["--modalities", "smell"])


# ---------------------------------------------------------------------------------------------
# MediaFeatures: the one path -> features route for serving and training


class _FakeModel:
    """What MediaFeatures needs of a model: its config (loader parameters) and encoders."""

    def __init__(self) -> None:
        from llama.config import get_preset

        self.cfg = get_preset("tiny")
        self.enc = CountingEncoder()

    def encoder(self, modality: str):
        return self.enc


def _wav(path: Path, seconds: float, sr: int = 16000) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    return path


def test_media_features_memo_is_bounded_in_bytes(tmp_path):
    model = _FakeModel()
    wavs = [_wav(tmp_path / f"a{i}.wav", 0.5) for i in range(3)]
    one = features.MediaFeatures(model, memo_bytes=10**9).item_features("audio", wavs[0])
    size = one.numel() * one.element_size()
    media = features.MediaFeatures(model, memo_bytes=2 * size)  # room for two clips
    for w in wavs:
        media.item_features("audio", w)
    assert media.memo_used_bytes <= 2 * size
    calls = len(model.enc.calls)
    media.item_features("audio", wavs[2])  # recent: from RAM
    assert len(model.enc.calls) == calls
    media.item_features("audio", wavs[0])  # least recently used: dropped, encoded again
    assert len(model.enc.calls) == calls + 1


def test_media_features_never_memoises_an_item_over_budget(tmp_path):
    model = _FakeModel()
    media = features.MediaFeatures(model, memo_bytes=16)
    wav = _wav(tmp_path / "a.wav", 0.5)
    media.item_features("audio", wav)
    media.item_features("audio", wav)
    assert len(model.enc.calls) == 2 and media.memo_used_bytes == 0


def test_media_features_passes_decoded_arrays_through_and_uses_the_disk_cache(tmp_path):
    model = _FakeModel()
    wave = np.zeros(100, np.float32)
    media = features.MediaFeatures(model, tmp_path / "cache")
    assert media.item_features("audio", wave) is wave
    wav = _wav(tmp_path / "a.wav", 0.25)
    first = media.features({"audio": wav, "image": None})
    assert set(first) == {"audio"} and len(model.enc.calls) == 1
    again = features.MediaFeatures(model, tmp_path / "cache")  # new process: disk hit
    assert torch.equal(again.item_features("audio", wav), first["audio"])
    assert len(model.enc.calls) == 1


def test_media_features_rejects_a_negative_budget():
    with pytest.raises(ValueError, match="memo_bytes"):
        features.MediaFeatures(_FakeModel(), memo_bytes=-1)


def _grey_video(path: Path, n: int) -> Path:
    """Frame i is a flat grey of value 10 + 20 * i (so the frames a loader kept can be read)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for i in range(n):
            frame = np.full((32, 32, 3), 10 + 20 * i, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_video_sampling_reaches_the_loader_and_the_cache_key(tmp_path):
    """Uniform and window samplings give different frames, and a cache written under one is
    never served for the other (nor for another window seed)."""
    from data.media import VideoSampling

    model = _FakeModel()  # tiny ViViT config: 8 frames
    video = _grey_video(tmp_path / "v.mp4", 12)
    frames = {}
    for name, sampling in {"uniform": VideoSampling(), "centre": VideoSampling("window"),
                           "seed0": VideoSampling("window", 0),
                           "seed5": VideoSampling("window", 5)}.items():
        media = features.MediaFeatures(model, tmp_path / "cache", video_sampling=sampling)
        # CountingEncoder's features are 1.1 x the decoded frames: the frame ids are readable
        grey = media.item_features("video", video).reshape(8, -1).mean(1) / 1.1
        frames[name] = [int(round((float(g) - 10) / 20)) for g in grey]
    assert frames["uniform"] != frames["centre"]
    assert frames["centre"] == [2, 3, 4, 5, 6, 7, 8, 9]  # consecutive, centred
    assert len(model.enc.calls) == 4  # four keys: every sampling computed its own entry
    assert len(_entries(tmp_path / "cache")) == 4
    again = features.MediaFeatures(model, tmp_path / "cache",
                                   video_sampling=VideoSampling("window", 5))
    grey = again.item_features("video", video).reshape(8, -1).mean(1) / 1.1
    assert [int(round((float(g) - 10) / 20)) for g in grey] == frames["seed5"]
    assert len(model.enc.calls) == 4  # read from the cache under its own key
