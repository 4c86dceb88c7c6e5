"""DataPaths of data/paths.py: the published layout, overrides and disabled sources."""

from __future__ import annotations

from pathlib import Path

import pytest
from dataset_fixtures import write_json

from data.mixes import stage_samples
from data.paths import DataPaths
from data.schemas import DatasetError


def test_from_root_fills_the_published_layout(tmp_path: Path) -> None:
    paths = DataPaths.from_root(tmp_path)
    assert paths.mucaps_captions == tmp_path / "MUCaps/MUCapsCaptions.json"
    assert paths.muvideo_instruction_videos == paths.muvideo_videos == tmp_path / "MUVideo/videos"
    assert paths.split == tmp_path / "split.json" and paths.split_root == tmp_path
    assert paths.musicqa_extra == ()
    extra = paths.parse_overrides(["musicqa_extra=a.json,b.json", "alpaca="])
    assert extra.musicqa_extra == (Path("a.json"), Path("b.json")) and extra.alpaca is None
    assert paths.alpaca is not None  # overrides return a copy
    with pytest.raises(ValueError, match="not of the form field=path"):
        paths.parse_overrides(["alpaca"])


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
