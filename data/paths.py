"""Where the data lives: every annotation file and media folder of the M2UGen datasets.

One record (`DataPaths`) names them all, so loaders never guess paths; `from_root` fills the
published layout (docs/DATA.md) and single entries can be moved or disabled from a command
line (`--data FIELD=PATH`, `parse_overrides`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

__all__ = ["DataPaths"]


@dataclass
class DataPaths:
    """Every annotation file and media folder; `None` disables a source.

    `DataPaths.from_root(root)` fills the layout of docs/DATA.md; pass keyword overrides
    (or `parse_overrides(["field=path", ...])` from a command line) for data stored elsewhere.
    """

    mucaps_captions: Optional[Path] = None
    mucaps_audio: Optional[Path] = None
    coco_captions: Optional[Path] = None
    coco_images: Optional[Path] = None
    muvideo_captions: Optional[Path] = None
    muvideo_videos: Optional[Path] = None
    musicqa: Optional[Path] = None
    musicqa_extra: tuple[Path, ...] = ()  # e.g. the ChatGPT variant of MusicQA, same audio folder
    musicqa_audio: Optional[Path] = None
    alpaca: Optional[Path] = None
    muimage_instructions: Optional[Path] = None
    muimage_images: Optional[Path] = None
    muimage_audio: Optional[Path] = None
    muvideo_instructions: Optional[Path] = None
    muvideo_instruction_videos: Optional[Path] = None
    muvideo_audio: Optional[Path] = None
    muedit_instructions: Optional[Path] = None
    muedit_audio: Optional[Path] = None
    split: Optional[Path] = None  # split.json; its paths are relative to `split_root`
    split_root: Optional[Path] = None

    @classmethod
    def from_root(cls, root: str | os.PathLike, **overrides: Any) -> "DataPaths":
        r = Path(root)
        paths = cls(
            mucaps_captions=r / "MUCaps/MUCapsCaptions.json",
            mucaps_audio=r / "MUCaps/audios",
            coco_captions=r / "COCO/CocoCaptions.json",
            coco_images=r / "COCO/images",
            muvideo_captions=r / "MUVideo/MUVideoCaptions.json",
            muvideo_videos=r / "MUVideo/videos",
            musicqa=r / "MusicQA/MusicQA.json",
            musicqa_audio=r / "MusicQA/audios",
            alpaca=r / "Alpaca/alpaca_data.json",
            muimage_instructions=r / "MUImage/MUImageInstructions.json",
            muimage_images=r / "MUImage/images",
            muimage_audio=r / "MUImage/audios",
            muvideo_instructions=r / "MUVideo/MUVideoInstructions.json",
            muvideo_instruction_videos=r / "MUVideo/videos",
            muvideo_audio=r / "MUVideo/audios",
            muedit_instructions=r / "MUEdit/MUEditInstructions.json",
            muedit_audio=r / "MUEdit/audios",
            split=r / "split.json",
            split_root=r,
        )
        return paths.replace(**overrides)

    def replace(self, **overrides: Any) -> "DataPaths":
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown DataPaths field(s) {unknown}; known: {sorted(names)}")
        fixed: dict[str, Any] = {}
        for k, v in overrides.items():
            if k == "musicqa_extra":
                fixed[k] = tuple(Path(p) for p in (v or ()))
            else:
                fixed[k] = None if v in (None, "") else Path(v)
        return dataclasses.replace(self, **fixed)

    def parse_overrides(self, items: Iterable[str]) -> "DataPaths":
        """Apply command-line style overrides `field=path` (`field=` disables the source;
        `musicqa_extra=a.json,b.json` takes a comma-separated list)."""
        changes: dict[str, Any] = {}
        for item in items:
            if "=" not in item:
                raise ValueError(f"data path override {item!r} is not of the form field=path")
            k, v = item.split("=", 1)
            k = k.strip()
            changes[k] = [p for p in v.split(",") if p] if k == "musicqa_extra" else v.strip()
        return self.replace(**changes)
