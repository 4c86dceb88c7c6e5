"""MUVideo: videos paired with music -> video captions -> instructions (the any-to-music schema).

    python -m DataSet.muvideo caption --media_dir DIR --out CAPTIONS.json --model MODEL
    python -m DataSet.muvideo instruct --media_captions CAPTIONS.json --music_captions MUSIC.json \
        --out MUVideoInstructions.json [--writer llm --model LLM]

See `DataSet.anytomusic` for the pairing rule and the schema.
"""

from __future__ import annotations

import sys
from typing import Sequence

from DataSet.anytomusic import main as _main


def main(argv: Sequence[str] | None = None) -> int:
    return _main("video", argv)


if __name__ == "__main__":
    sys.exit(main())
