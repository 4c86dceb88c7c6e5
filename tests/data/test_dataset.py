"""Tokenisation (loss masks, EOS, [AUD], truncation), media loading and the error policy of
data/dataset.py; integration with the real tiny tokenizer, data.synthetic and data.media."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dataset_fixtures import WordTokenizer

from data.collate import Collator
from data.dataset import (
    M2UGenDataset,
    PerModalityLoader,
    RawMediaLoader,
    build_stage_dataset,
    tokenize_sample,
)
from data.paths import DataPaths
from data.schemas import DatasetError, ErrorPolicy, Sample
from llama.prompt import IGNORE_INDEX, encode_prompt, format_followup, format_prompt


def _expected(tok: WordTokenizer, turns, music: bool) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    labels: list[int] = []
    for i, (q, a) in enumerate(turns):
        p = tok.encode(format_prompt(q) if i == 0 else format_followup(q), bos=i == 0)
        ans = tok.encode(a) + (tok.aud_ids if music and i == len(turns) - 1 else []) + [tok.eos_id]
        ids += p + ans
        labels += [IGNORE_INDEX] * len(p) + ans
    return ids, labels


def test_multi_turn_loss_mask_is_exact(root: Path) -> None:
    tok = WordTokenizer()
    ds = build_stage_dataset(3, DataPaths.from_root(root), tok, split="all")
    idx = [s.id for s in ds.samples].index("MusicQA:0")
    item = ds[idx]
    turns = (("What instrument plays?", "A piano."), ("Is it fast?", "No, slow."))
    ids, labels = _expected(tok, turns, False)
    assert item["input_ids"].tolist() == ids
    assert item["labels"].tolist() == labels
    assert item["input_ids"][0] == tok.bos_id
    # Both answers are supervised and each ends with EOS; nothing else is.
    sup = [i for i, v in enumerate(labels) if v != IGNORE_INDEX]
    assert tok.decode([ids[i] for i in sup]) == "A piano. No, slow."
    assert [ids[i] for i in sup].count(tok.eos_id) == 2 and ids[-1] == tok.eos_id
    assert item["aud_positions"] is None and item["music_caption"] is None
    assert item["media_paths"] == {"audio": str(root / "MusicQA/audios/a.wav")}
    # encode_prompt reproduces the training layout of the first turns for inference.
    prompt = encode_prompt(tok, "Is it fast?", [("What instrument plays?", "A piano.")])
    assert ids[: len(prompt)] == prompt and labels[len(prompt)] != IGNORE_INDEX


def test_music_answer_ends_with_aud_and_eos(root: Path) -> None:
    tok = WordTokenizer()
    ds = build_stage_dataset(2, DataPaths.from_root(root), tok, split="all")
    item = ds[0]
    ids, labels = _expected(tok, (("slow piano music", "slow piano music"),), True)
    assert item["input_ids"].tolist() == ids and item["labels"].tolist() == labels
    pos = item["aud_positions"].tolist()
    assert [ids[p] for p in pos] == tok.aud_ids and pos[-1] == len(ids) - 2
    assert item["music_caption"] == "slow piano music"
    # Stage 1 has an empty instruction: the prompt is the bare template.
    s1 = build_stage_dataset(1, DataPaths.from_root(root), tok, split="all")[0]
    assert s1["input_ids"].tolist() == _expected(tok, (("", "slow piano music"),), False)[0]


def test_truncation_keeps_aud_and_eos(root: Path) -> None:
    tok = WordTokenizer()
    long_q = " ".join(f"w{i}" for i in range(100))
    turns = (("first question " + long_q, "first answer"), ("make music " + long_q, "Here it is."))
    s = Sample(id="X:0", task="music_edit", turns=turns, music_caption="piano")
    full = tokenize_sample(s, tok, 10_000)
    assert full.dropped_turns == 0 and not full.instruction_truncated
    short = tokenize_sample(s, tok, 60)
    assert len(short.input_ids) <= 60 and short.dropped_turns == 1 and short.instruction_truncated
    assert short.input_ids[-9:] == tok.aud_ids + [tok.eos_id]
    assert short.labels[-9:] == tok.aud_ids + [tok.eos_id]
    assert [short.input_ids[p] for p in short.aud_positions] == tok.aud_ids
    assert short.input_ids[0] == tok.bos_id
    sup = [t for t, lab in zip(short.input_ids, short.labels) if lab != IGNORE_INDEX]
    assert tok.decode(sup) == "Here it is."
    # Dropping the earlier turn alone is enough here: no instruction cut.
    mid = tokenize_sample(s, tok, len(full.input_ids) - 5)
    assert mid.dropped_turns == 1 and not mid.instruction_truncated
    assert mid.input_ids[-9:] == tok.aud_ids + [tok.eos_id]
    # Impossible: the answer alone does not fit -> error naming the sample.
    with pytest.raises(DatasetError, match="X:0.*max_words=20"):
        tokenize_sample(s, tok, 20)


def test_samples_are_tokenised_in_the_models_chat_style(root: Path) -> None:
    """A model trained in another template (its checkpoint's style) gets its data in it."""
    from llama.chat_style import ChatStyle

    tok = WordTokenizer()
    style = ChatStyle("qa", "Q: {instruction} A:", " Q: {instruction} A:")
    ds = build_stage_dataset(3, DataPaths.from_root(root), tok, split="all", style=style)
    item = ds[[s.id for s in ds.samples].index("MusicQA:0")]
    assert tok.decode(item["input_ids"].tolist()).startswith("Q: What instrument plays? A:")
    assert "### Instruction" not in tok.decode(item["input_ids"].tolist())


def test_too_long_sample_policy(root: Path) -> None:
    tok = WordTokenizer()
    paths = DataPaths.from_root(root)
    with pytest.raises(DatasetError, match="MUCaps:a.wav"):
        build_stage_dataset(1, paths, tok, split="all", max_words=22)[0]
    ds = build_stage_dataset(1, paths, tok, split="all", max_words=22, on_error="skip")
    assert ds[0] == {"skipped": ("MUCaps:a.wav", "too long", ds.skipped.records()[0][2])}
    assert ds.skipped.counts() == {"too long": 1}


def test_missing_media_raise_names_file_and_skip_counts(root: Path) -> None:
    tok = WordTokenizer()
    missing = root / "COCO/images/b.png"
    missing.unlink()
    paths = DataPaths.from_root(root)
    with pytest.raises(DatasetError, match=str(missing)):
        build_stage_dataset(1, paths, tok, split="all")
    ds = build_stage_dataset(1, paths, tok, split="all", on_error="skip")
    assert len(ds) == 5 and "COCO:b.png" not in {s.id for s in ds.samples}
    assert ds.skipped.counts() == {"missing file": 1}
    assert "missing file: 1" in ds.report() and str(missing) in ds.report()


def test_loader_callback_and_unreadable_files(root: Path) -> None:
    tok = WordTokenizer()
    (root / "MUCaps/audios/b.wav").write_bytes(b"")
    calls: list[tuple[str, str]] = []

    def loader(modality: str, path: str) -> torch.Tensor:
        calls.append((modality, path))
        data = Path(path).read_bytes()
        if not data:
            raise ValueError(f"{path}: empty file")
        return torch.full((2,), float(len(data)))

    paths = DataPaths.from_root(root)
    ds = build_stage_dataset(1, paths, tok, split="all", media_loader=loader)
    assert calls == []  # lazy: nothing read at construction
    item = ds[0]
    assert calls == [("audio", str(root / "MUCaps/audios/a.wav"))]
    assert torch.equal(item["media"]["audio"], torch.full((2,), 5.0))
    with pytest.raises(DatasetError, match=r"cannot read audio file .*MUCaps/audios/b.wav"):
        ds[1]
    ds = build_stage_dataset(1, paths, tok, split="all", media_loader=loader, on_error="skip")
    out = [ds[i] for i in range(len(ds))]
    assert sum("skipped" in o for o in out) == 1 and out[1]["skipped"][0] == "MUCaps:b.wav"
    _ = ds[1]  # recording is idempotent per sample
    assert ds.skipped.counts() == {"unreadable file": 1}
    # Bugs in a loader (not read errors) are never swallowed, even with on_error="skip".
    def broken(modality: str, path: str):
        raise KeyError("bug")

    ds = build_stage_dataset(1, paths, tok, split="all", media_loader=broken, on_error="skip")
    with pytest.raises(KeyError):
        ds[0]


def test_per_modality_loader(root: Path) -> None:
    load = PerModalityLoader({"audio": lambda p: ("audio", Path(p).name)})
    ds = build_stage_dataset(1, DataPaths.from_root(root), WordTokenizer(), split="all",
                             media_loader=load, on_error="skip")
    assert ds[0]["media"] == {"audio": ("audio", "a.wav")}
    with pytest.raises(KeyError, match="no loader for modality 'image'"):
        ds[2]


def test_deterministic(root: Path) -> None:
    tok_a, tok_b = WordTokenizer(), WordTokenizer()
    paths = DataPaths.from_root(root)
    a = build_stage_dataset(3, paths, tok_a, split="all", stage2_instruction="request")
    b = build_stage_dataset(3, paths, tok_b, split="all", stage2_instruction="request")
    assert [s.id for s in a.samples] == [s.id for s in b.samples]
    assert all(torch.equal(a[i]["input_ids"], b[i]["input_ids"]) for i in range(len(a)))


def test_policy_conflict() -> None:
    with pytest.raises(ValueError, match="conflicts"):
        M2UGenDataset([], WordTokenizer(), on_error="raise", policy=ErrorPolicy("skip"))


# ---------------------------------------------------------------------------------------------
# Integration with the real tiny tokenizer, data.synthetic and data.media


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_synthetic_dataset_every_stage(synthetic_root: Path, stage: int) -> None:
    from llama.config import llama_tiny
    from llama.tokenizer import load_tokenizer

    tok = load_tokenizer("tiny")
    paths = DataPaths.from_root(synthetic_root)
    loader = RawMediaLoader(sample_rate=24000, num_frames=8)
    kw = dict(max_words=256, media_loader=loader)
    train = build_stage_dataset(stage, paths, tok, split="train", **kw)
    test = build_stage_dataset(stage, paths, tok, split="test", **kw)
    assert len(train) > 0 and len(test) > 0 and len(train.skipped) == 0
    assert not {s.id for s in train.samples} & {s.id for s in test.samples}
    expected_tasks = {
        1: {"audio_caption", "image_caption", "video_caption"},
        2: {"text_to_music"},
        3: {"music_qa", "alpaca", "image_to_music", "video_to_music", "music_edit"},
    }[stage]
    assert set(train.task_counts()) == expected_tasks
    items = [train[i] for i in range(len(train))]
    for it in items:
        ids, labels = it["input_ids"], it["labels"]
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and labels[-1] == tok.eos_id
        assert int(ids.max()) < llama_tiny().vocab_size + 8
        sup = labels != IGNORE_INDEX
        assert torch.equal(ids[sup], labels[sup]) and 0 < int(sup.sum()) < ids.numel()
        if it["music_caption"] is not None:
            assert ids[it["aud_positions"]].tolist() == tok.aud_ids
        else:
            assert not set(ids.tolist()) & set(tok.aud_ids)
        for mod, value in it["media"].items():
            shape = {"audio": 1, "image": 3, "video": 4}[mod]
            assert value.ndim == shape, (mod, value.shape)
    if stage == 2:
        assert all(it["music_caption"] for it in items) and all(not it["media"] for it in items)
    batch = Collator(pad_id=tok.pad_id)(items)
    assert batch["input_ids"].shape[0] == len(items)
    present = batch["modality_mask"].any(0).tolist()
    assert present == [stage != 2] * 3
    for mod in ("audio", "image", "video"):
        g = batch["media"][mod]
        assert len(g["data"]) == len(g["paths"]) == g["index"].numel()
