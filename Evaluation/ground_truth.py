"""The ground truth that `python -m data.synthetic` writes and every evaluation here reads."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

FILES = ("attributes.json", "split.json")


def missing_ground_truth(root: Path) -> Optional[str]:
    """Why `root` cannot be evaluated (a missing ground-truth file), or None when it can."""
    for name in FILES:
        if not (root / name).is_file():
            return f"{root / name} is missing (make the data with python -m data.synthetic)"
    return None
