"""Schemas, stage mixes, split filtering, tokenisation (loss masks, EOS, [AUD], truncation) and the
error policy of data/datasets.py. Fixtures are small hand-written JSON files in a temp dir and a
word-level stand-in tokenizer, so that expected ids can be computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from data.datasets import (
    IGNORE_INDEX,
    DataPaths,
    DatasetError,
    ErrorPolicy,
    M2UGenDataset,
    Sample,
    build_stage_dataset,
    encode_prompt,
    parse_alpaca,
    stage_samples,
    tokenize_sample,
)
from llama.tokenizer import format_followup, format_prompt


class WordTokenizer:
    """Stand-in for llama.tokenizer.Tokenizer: one id per whitespace word, [AUDk] -> its id."""

    bos_id, eos_id, pad_id = 1, 2, 0
    base_vocab_size = 500

    def __init__(self) -> None:
        self.aud_ids = [self.base_vocab_size + k for k in range(8)]
        self.vocab_size = self.base_vocab_size + 8
        self._ids: dict[str, int] = {f"[AUD{k}]": self.aud_ids[k] for k in range(8)}
        self._words: dict[int, str] = {v: k for k, v in self._ids.items()}

    def _id(self, w: str) -> int:
        if w not in self._ids:
            i = 3 + len(self._words) - 8
            assert i < self.base_vocab_size
            self._ids[w] = i
            self._words[i] = w
        return self._ids[w]

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = [self._id(w) for w in text.split()]
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids, skip_special: bool = True) -> str:
        return " ".join(self._words[i] for i in ids if i >= 3 and i not in self.aud_ids)


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def touch(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"media")
    return str(path)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """Every published schema, two items each, in the INTERFACES.md layout."""
    r = tmp_path / "data"
    for name in ("a.wav", "b.wav"):
        touch(r / "MUCaps/audios" / name)
        touch(r / "MusicQA/audios" / name)
        touch(r / "MUImage/audios" / name)
        touch(r / "MUVideo/audios" / name)
        touch(r / "MUEdit/audios" / name)
    for name in ("a.png", "b.png"):
        touch(r / "COCO/images" / name)
        touch(r / "MUImage/images" / name)
    for name in ("a.mp4", "b.mp4"):
        touch(r / "MUVideo/videos" / name)
    write_json(
        r / "MUCaps/MUCapsCaptions.json", {"a.wav": "slow piano music", "b.wav": "fast flute"}
    )
    write_json(r / "COCO/CocoCaptions.json", {"a.png": "a red square", "b.png": "a blue circle"})
    write_json(r / "MUVideo/MUVideoCaptions.json", {"a.mp4": "green video", "b.mp4": "dark clip"})
    write_json(
        r / "MusicQA/MusicQA.json",
        [
            {
                "audio_name": "a.wav",
                "conversation": [
                    {"from": "human", "value": "What instrument plays?"},
                    {"from": "gpt", "value": "A piano."},
                    {"from": "human", "value": "Is it fast?"},
                    {"from": "gpt", "value": "No, slow."},
                ],
            },
            {
                "audio_name": "b.wav",
                "conversations": [
                    {"from": "human", "value": "Tempo?"},
                    {"from": "gpt", "value": "Fast."},
                ],
            },
        ],
    )
    write_json(
        r / "Alpaca/alpaca_data.json",
        [
            {"conversation": [{"value": "Name a colour."}, {"value": "Red."}]},
            {"conversation": [{"from": "human", "value": "Say hi."},
                              {"from": "gpt", "value": "Hi."}]},
        ],
    )

    def instr(inp: str, out: str, mod: str, caption: str) -> dict:
        return {
            "input_file": inp,
            "output_file": out,
            "conversation": [
                {"from": "human", "value": f"Make music for this {mod}.", "input_modality": mod,
                 "caption": "input caption"},
                {"from": "gpt", "value": "Here it is. [AUD0][AUD1]", "output_modality": "audio",
                 "caption": caption},
            ],
        }

    write_json(
        r / "MUImage/MUImageInstructions.json",
        [instr("a.png", "a.wav", "image", "bright piano"),
         instr("b.png", "b.wav", "image", "low organ")],
    )
    write_json(
        r / "MUVideo/MUVideoInstructions.json",
        [instr("a.mp4", "a.wav", "video", "fast guitar"),
         instr("b.mp4", "b.wav", "video", "slow flute")],
    )
    edit = instr("a.wav", "b.wav", "audio", "the same melody on a flute")
    edit["conversations"] = edit.pop("conversation")
    write_json(r / "MUEdit/MUEditInstructions.json", [edit])
    write_json(
        r / "split.json",
        {"train": ["MUCaps/audios/a.wav"], "test": ["MUCaps/audios/b.wav", "MUImage/audios/b.wav",
                                                    "MUVideo/videos/b.mp4"]},
    )
    return r


def test_every_schema_parses(root: Path) -> None:
    paths = DataPaths.from_root(root)
    s1 = stage_samples(1, paths)
    assert [(s.task, s.media, s.turns) for s in s1[:1]] == [
        ("audio_caption", {"audio": str(root / "MUCaps/audios/a.wav")}, (("", "slow piano music"),))
    ]
    assert [s.task for s in s1].count("image_caption") == 2
    assert [s.task for s in s1].count("video_caption") == 2
    assert all(s.music_caption is None for s in s1)

    s2 = stage_samples(2, paths)
    assert [s.turns for s in s2] == [
        (("slow piano music", "slow piano music"),),
        (("fast flute", "fast flute"),),
    ]
    assert [s.music_caption for s in s2] == ["slow piano music", "fast flute"]
    assert s2[0].media == {} and s2[0].output_music == str(root / "MUCaps/audios/a.wav")

    s3 = {s.id: s for s in stage_samples(3, paths)}
    qa = s3["MusicQA:0"]
    assert qa.turns == (("What instrument plays?", "A piano."), ("Is it fast?", "No, slow."))
    assert s3["MusicQA:1"].turns == (("Tempo?", "Fast."),)  # "conversations" key
    assert s3["Alpaca:0"].turns == (("Name a colour.", "Red."),) and s3["Alpaca:0"].media == {}
    img = s3["MUImage:0"]
    assert img.media == {"image": str(root / "MUImage/images/a.png")}
    assert img.music_caption == "bright piano"
    assert img.turns[-1][1] == "Here it is."  # literal [AUDk] text never reaches the tokens
    assert img.output_music == str(root / "MUImage/audios/a.wav")
    assert s3["MUVideo:1"].media == {"video": str(root / "MUVideo/videos/b.mp4")}
    edit = s3["MUEdit:0"]
    assert edit.media == {"audio": str(root / "MUEdit/audios/a.wav")}
    assert edit.music_caption == "the same melody on a flute"
    assert {s.task for s in s3.values()} == {
        "music_qa", "alpaca", "image_to_music", "video_to_music", "music_edit"
    }


def test_stanford_alpaca_and_stage2_requests(tmp_path: Path) -> None:
    p = tmp_path / "alpaca.json"
    write_json(p, [{"instruction": "Add.", "input": "1 and 2", "output": "3"},
                   {"instruction": "Say hi.", "input": "", "output": "Hi."}])
    assert [s.turns for s in parse_alpaca(p)] == [
        (("Add.\n\n1 and 2", "3"),), (("Say hi.", "Hi."),)
    ]


def test_paths_overrides_and_disabled_sources(root: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.json"
    write_json(other, {"a.wav": "other caption"})
    paths = DataPaths.from_root(root).parse_overrides(
        [f"mucaps_captions={other}", "coco_captions=", "muvideo_captions="]
    )
    assert [s.turns[0][1] for s in stage_samples(1, paths)] == ["other caption"]
    with pytest.raises(ValueError, match="unknown DataPaths field"):
        DataPaths.from_root(root, nonsense="x")
    with pytest.raises(DatasetError, match="MusicQA.json does not exist"):
        stage_samples(3, DataPaths.from_root(root, musicqa=root / "nowhere/MusicQA.json"))


def test_split_filtering(root: Path) -> None:
    tok = WordTokenizer()
    paths = DataPaths.from_root(root)
    train1 = build_stage_dataset(1, paths, tok, split="train")
    test1 = build_stage_dataset(1, paths, tok, split="test")
    assert {s.id for s in test1.samples} == {"MUCaps:b.wav", "MUVideoCaptions:b.mp4"}
    assert len(train1) + len(test1) == 6
    # Stage 2: the output music file decides; stage 3: any input or output file in the test list.
    test2 = build_stage_dataset(2, paths, tok, split="test")
    assert [s.id for s in test2.samples] == ["MUCaps:b.wav"]
    test3 = {s.id for s in build_stage_dataset(3, paths, tok, split="test").samples}
    assert test3 == {"MUImage:1", "MUVideo:1"}
    train3 = {s.id for s in build_stage_dataset(3, paths, tok, split="train").samples}
    assert "Alpaca:0" in train3 and not train3 & test3
    (root / "split.json").unlink()
    assert len(build_stage_dataset(1, paths, tok, split="train")) == 6
    with pytest.raises(DatasetError, match="split 'test'"):
        build_stage_dataset(1, paths, tok, split="test")


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


def test_schema_errors_follow_policy(root: Path) -> None:
    tok = WordTokenizer()
    bad = root / "MusicQA/MusicQA.json"
    items = json.loads(bad.read_text())
    items.append({"audio_name": "a.wav", "conversation": [{"from": "human", "value": "odd"}]})
    items.append("not an object")
    write_json(bad, items)
    paths = DataPaths.from_root(root)
    with pytest.raises(DatasetError, match=r"MusicQA.json item 2: conversation has an odd number"):
        build_stage_dataset(3, paths, tok, split="all")
    ds = build_stage_dataset(3, paths, tok, split="all", on_error="skip")
    assert ds.skipped.counts() == {"schema": 2}
    assert {"MusicQA:2", "MusicQA:3"} == {k for k, _, _ in ds.skipped.records()}
    (root / "Alpaca/alpaca_data.json").write_text("{broken")
    with pytest.raises(DatasetError, match="alpaca_data.json is not valid JSON"):
        build_stage_dataset(3, paths, tok, split="all", on_error="skip")


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
    from data.datasets import PerModalityLoader

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
    r1 = stage_samples(2, paths, stage2_instruction="request")
    r2 = stage_samples(2, paths, stage2_instruction="request")
    assert [s.turns for s in r1] == [s.turns for s in r2]
    assert all(s.turns[0][0] != s.turns[0][1] and s.turns[0][1] in s.turns[0][0] for s in r1)


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="on_error"):
        ErrorPolicy("ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="conflicts"):
        M2UGenDataset([], WordTokenizer(), on_error="raise", policy=ErrorPolicy("skip"))


# ---------------------------------------------------------------------------------------------
# Integration with the real tiny tokenizer, data.synthetic and data.media


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    from data.synthetic import generate

    out = tmp_path_factory.mktemp("synthetic") / "data"
    generate(out, seed=0, n=8)
    return out


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_synthetic_dataset_every_stage(synthetic_root: Path, stage: int) -> None:
    from data.collate import Collator
    from data.datasets import RawMediaLoader
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
