"""Fixtures of the data-pipeline tests: every published schema in a temp dir, and a small
`data.synthetic` dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
from dataset_fixtures import touch, write_json


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """Every published schema, two items each, in the docs/DATA.md layout."""
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


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    from data.synthetic import generate

    out = tmp_path_factory.mktemp("synthetic") / "data"
    generate(out, seed=0, n=8)
    return out
