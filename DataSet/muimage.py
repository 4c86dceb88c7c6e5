"""MUImage: images paired with music -> image captions -> instructions (the any-to-music schema).

    python -m DataSet.muimage caption --media_dir DIR --out CAPTIONS.json --model MODEL
    python -m DataSet.muimage instruct --media_captions CAPTIONS.json --music_captions MUSIC.json \
        --out MUImageInstructions.json [--writer llm --model LLM]

See `DataSet.anytomusic` for the pairing rule and the schema.
"""

from __future__ import annotations

import sys
from typing import Sequence

from DataSet.anytomusic import main as _main


def main(argv: Sequence[str] | None = None) -> int:
    return _main("image", argv)


if __name__ == "__main__":
    sys.exit(main())
