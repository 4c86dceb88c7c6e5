"""Offline WordNet 3.0 for nltk's METEOR: where it lives and how to build it from Debian's files.

No PyPI package ships WordNet, and nltk would otherwise download it at run time. Debian's
`wordnet-base` + `wordnet-sense-index` packages hold the WordNet 3.0 database; nltk's reader also
needs a `lexnames` file (the lexicographer-file list), which we write from the standard list below.
Build: `python -m Evaluation.metrics.wordnet --out .cache/nltk_data` (the Makefile runs it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO / ".cache" / "nltk_data"
DEBIAN_WORDNET = Path("/usr/share/wordnet")
# Every file nltk's WordNetCorpusReader opens (sense index included: it backs lemma keys).
REQUIRED = (
    "adj.exc", "adv.exc", "noun.exc", "verb.exc", "cntlist.rev",
    "data.adj", "data.adv", "data.noun", "data.verb",
    "index.adj", "index.adv", "index.noun", "index.verb", "index.sense",
)
# WordNet 3.0 lexicographer files (lexnames(5WN)): number = position, category from the prefix.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
    "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant "
    "noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
    "noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def lexnames_text() -> str:
    """The 45-line `lexnames` file: `NN<TAB>name<TAB>syntactic category number`."""
    lines = [f"{i:02d}\t{name}\t{_POS_NUMBER[name.split('.')[0]]}"
             for i, name in enumerate(LEXNAMES)]
    return "\n".join(lines) + "\n"


def nltk_data_dir() -> Path:
    """The folder nltk reads from: `$NLTK_DATA` (first entry) when set, else `.cache/nltk_data`."""
    env = os.environ.get("NLTK_DATA", "").split(os.pathsep)[0]
    return Path(env) if env else DEFAULT_DATA


def use_project_wordnet() -> Path:
    """Point nltk at the project's data folder (idempotent) and check WordNet is there."""
    import nltk

    folder = nltk_data_dir()
    if str(folder) not in nltk.data.path:
        nltk.data.path.insert(0, str(folder))
    wn = folder / "corpora" / "wordnet"
    missing = [n for n in (*REQUIRED, "lexnames") if not (wn / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"WordNet 3.0 is incomplete in {wn} (missing {', '.join(missing[:4])}); "
            "METEOR needs it. "
            "Install it with `apt-get install -y wordnet-base wordnet-sense-index` then "
            f"`python -m Evaluation.metrics.wordnet --out {folder}` (or `make setup`)."
        )
    return folder


def install(out: Path, source: Path = DEBIAN_WORDNET) -> Path:
    """Copy Debian's WordNet files into `out/corpora/wordnet` and write `lexnames`."""
    missing = [n for n in REQUIRED if not (source / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{source} lacks {', '.join(missing[:4])}: apt-get install -y wordnet-base "
            "wordnet-sense-index"
        )
    dest = out / "corpora" / "wordnet"
    dest.mkdir(parents=True, exist_ok=True)
    for name in REQUIRED:
        shutil.copyfile(source / name, dest / name)
    (dest / "lexnames").write_text(lexnames_text())
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_DATA, help="nltk data folder to fill")
    ap.add_argument("--source", type=Path, default=DEBIAN_WORDNET, help="Debian WordNet folder")
    args = ap.parse_args(argv)
    try:
        dest = install(args.out, args.source)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"WordNet 3.0 installed in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
