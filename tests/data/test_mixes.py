"""Stage mixes and held-out split filtering of data/mixes.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from dataset_fixtures import WordTokenizer

from data.dataset import build_stage_dataset
from data.mixes import STAGE2_REQUESTS, _stage2_sample, filter_split, stage_samples
from data.paths import DataPaths
from data.schemas import DatasetError, Sample


def test_stage_1_and_2_mixes(root: Path) -> None:
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


def test_stage2_requests_are_deterministic(root: Path) -> None:
    paths = DataPaths.from_root(root)
    r1 = stage_samples(2, paths, stage2_instruction="request")
    r2 = stage_samples(2, paths, stage2_instruction="request")
    assert [s.turns for s in r1] == [s.turns for s in r2]
    assert all(s.turns[0][0] != s.turns[0][1] and s.turns[0][1] in s.turns[0][0] for s in r1)
    templates = {t.split("{")[0] for t in STAGE2_REQUESTS}
    assert {next(t for t in templates if s.turns[0][0].startswith(t)) for s in r1} <= templates


def test_mixed_stage2_instructions_keep_captions_for_some_and_requests_for_others(root: Path
                                                                              ) -> None:
    paths = DataPaths.from_root(root)
    captions = stage_samples(2, paths)
    mixed = stage_samples(2, paths, stage2_instruction="mixed")
    requests = stage_samples(2, paths, stage2_instruction="request")
    assert [s.turns[0][1] for s in mixed] == [s.turns[0][1] for s in captions]  # same answers
    for m, c, r in zip(mixed, captions, requests):
        assert m.turns[0][0] in (c.turns[0][0], r.turns[0][0])
    assert mixed == stage_samples(2, paths, stage2_instruction="mixed")
    # about half of many captions stay bare (each sample's choice is fixed by its id)
    many = [Sample(id=f"MUCaps:{i}", task="audio_caption", turns=(("", f"Caption {i}."),),
                   media={"audio": f"{i}.wav"}) for i in range(200)]
    bare = sum(_stage2_sample(s, "mixed").turns[0][0] == s.turns[0][1] for s in many)
    assert 70 < bare < 130


def test_the_training_flag_offers_exactly_the_instructions_the_mix_knows() -> None:
    from typing import get_args

    from data.mixes import Stage2Instruction
    from llama.config import STAGE2_INSTRUCTIONS

    assert get_args(Stage2Instruction) == STAGE2_INSTRUCTIONS


def test_filter_split_argument_errors(root: Path) -> None:
    paths = DataPaths.from_root(root)
    samples = stage_samples(1, paths)
    assert filter_split(samples, "all", paths) == samples
    with pytest.raises(ValueError, match="split must be"):
        filter_split(samples, "validation", paths)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stage must be 1, 2 or 3"):
        stage_samples(4, paths)
    with pytest.raises(DatasetError, match="stage 2 needs"):
        stage_samples(2, paths.replace(mucaps_captions=None))
