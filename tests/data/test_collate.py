"""Padding, masks, per-modality grouping, [AUD] positions and skip records of data/collate.py."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from data.collate import Collator
from data.dataset import M2UGenDataset
from data.schemas import Sample
from llama.prompt import IGNORE_INDEX


class WordTokenizer:
    """One id per whitespace word; [AUD] ids after the base vocabulary."""

    bos_id, eos_id, pad_id = 1, 2, 0

    def __init__(self) -> None:
        self.aud_ids = [900 + k for k in range(8)]
        self._ids: dict[str, int] = {}

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = [self._ids.setdefault(w, 3 + len(self._ids)) for w in text.split()]
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids, skip_special: bool = True) -> str:
        inv = {v: k for k, v in self._ids.items()}
        return " ".join(inv[i] for i in ids if i in inv)


def loader(modality: str, path: str) -> torch.Tensor:
    if path.endswith("bad"):
        raise OSError(f"{path}: unreadable")
    return torch.full((3,), float(len(path)))


def mixed_dataset(tmp_path, **kw) -> M2UGenDataset:
    files = {}
    for name in ("a.wav", "b.png", "c.mp4", "d.png", "e.bad"):
        (tmp_path / name).write_bytes(b"x")
        files[name] = str(tmp_path / name)
    samples = [
        Sample("s0", "audio_caption", (("", "slow piano"),), {"audio": files["a.wav"]}),
        Sample("s1", "alpaca", (("Say hi please.", "Hi."),)),
        Sample("s2", "image_to_music", (("Music for this.", "Here."),), {"image": files["b.png"]},
               music_caption="red music", output_music="out.wav"),
        Sample("s3", "video_caption", (("", "a green video that gets bright"),),
               {"video": files["c.mp4"]}),
        Sample("s4", "image_caption", (("", "blue"),), {"image": files["d.png"]}),
        Sample("s5", "audio_caption", (("", "broken"),), {"audio": files["e.bad"]}),
    ]
    return M2UGenDataset(samples, WordTokenizer(), max_words=64, media_loader=loader, **kw)


def test_padding_masks_and_modalities(tmp_path) -> None:
    ds = mixed_dataset(tmp_path)
    items = [ds[i] for i in range(5)]
    batch = Collator(pad_id=0)(items)
    lengths = [it["input_ids"].numel() for it in items]
    b, t = batch["input_ids"].shape
    assert (b, t) == (5, max(lengths)) and len(set(lengths)) > 1
    for i, it in enumerate(items):
        n = lengths[i]
        assert torch.equal(batch["input_ids"][i, :n], it["input_ids"])
        assert torch.equal(batch["labels"][i, :n], it["labels"])
        assert (batch["input_ids"][i, n:] == 0).all()
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all()
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (t - n)
    assert batch["lengths"].tolist() == lengths
    # Presence mask in MODALITIES order (audio, image, video) and per-modality groups.
    assert batch["modality_mask"].tolist() == [
        [True, False, False], [False, False, False], [False, True, False],
        [False, False, True], [False, True, False],
    ]
    img = batch["media"]["image"]
    assert img["index"].tolist() == [2, 4]
    assert img["paths"] == [items[2]["media_paths"]["image"], items[4]["media_paths"]["image"]]
    assert [d.tolist() for d in img["data"]] == [items[2]["media"]["image"].tolist(),
                                                 items[4]["media"]["image"].tolist()]
    assert batch["media"]["audio"]["index"].tolist() == [0]
    assert batch["media"]["video"]["index"].tolist() == [3]
    # Music output: only sample 2; its [AUD] positions point at the AUD ids in the padded batch.
    assert batch["music_mask"].tolist() == [False, False, True, False, False]
    pos = batch["aud_positions"][2]
    assert batch["input_ids"][2, pos].tolist() == ds.tokenizer.aud_ids
    assert (batch["aud_positions"][[0, 1, 3, 4]] == 0).all()
    assert batch["music_captions"] == [None, None, "red music", None, None]
    assert batch["output_music"][2] == "out.wav"
    assert batch["ids"] == ["s0", "s1", "s2", "s3", "s4"] and batch["skipped"] == []


def test_pad_to_multiple() -> None:
    item = {"id": "x", "task": "alpaca", "input_ids": torch.arange(1, 6),
            "labels": torch.arange(1, 6), "media_paths": {}, "media": {}, "music_caption": None,
            "output_music": None,
            "aud_positions": None}
    batch = Collator(pad_id=7, pad_to_multiple_of=8)([item])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 7, 7, 7]]
    assert batch["labels"][0, 5:].tolist() == [IGNORE_INDEX] * 3


def test_skipped_items_are_carried_and_merged(tmp_path) -> None:
    ds = mixed_dataset(tmp_path, on_error="skip")
    # Two worker processes: skip records come back in the batches and merge into the main copy.
    dl = DataLoader(ds, batch_size=3, collate_fn=Collator(pad_id=0), num_workers=2)
    batches = list(dl)
    assert len(ds.skipped) == 0  # recorded in the worker copies only
    for batch in batches:
        ds.record_skips(batch["skipped"])
    assert sum(len(b["ids"]) for b in batches) == 5
    assert ds.skipped.counts() == {"unreadable file": 1}
    assert ds.skipped.records()[0][0] == "s5"
    ds.record_skips(batches[-1]["skipped"])  # merging twice does not double count
    assert len(ds.skipped) == 1
    # A batch where every item was skipped has B = 0.
    empty = Collator(pad_id=0)([ds[5]])
    assert empty["input_ids"].shape == (0, 0) and empty["modality_mask"].shape == (0, 3)
    assert empty["skipped"][0][0] == "s5"
