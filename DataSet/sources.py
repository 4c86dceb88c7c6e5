"""Sources: where the clips come from.

    python -m DataSet.sources split-videos --video_dir V --out_dir D
        -> D/images/<stem>.png (the middle frame) and D/audios/<stem>.wav (the audio track, at its
           own rate): the image/music and video/music pairs of MUImage and MUVideo
    python -m DataSet.sources audioset --csv segments.csv --out_dir D [--labels LABELS.csv]
        [--download]
        -> D/segments.json (YTID, start, end); with --labels (AudioSet's
           class_labels_indices.csv: index, mid, display_name) D/tags.json {<YTID>_<start ms>:
           [label names]}, the tags the published MUImage / MUVideo v2 responses were written
           from; with --download, D/audios/<YTID>_<start>.m4a via yt-dlp (only when the user
           has installed it: `pip install yt-dlp`)

Any local folder of audio or video works as a source as it is (that is what the tests use).
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from data.media import load_video
from DataSet.audio import load_native, write_wav
from DataSet.common import (
    ItemError,
    Manifest,
    StepError,
    StepReport,
    add_common_args,
    finish,
    list_media,
    open_step,
    run_cli,
    run_items,
)
from util.atomic import atomic_path, write_json


@dataclass(frozen=True)
class Segment:
    ytid: str
    start: float
    end: float

    @property
    def name(self) -> str:
        return f"{self.ytid}_{int(round(self.start * 1000))}"


def parse_segments(path: Path) -> list[Segment]:
    """AudioSet segment CSV lines `YTID, start_seconds, end_seconds[, labels]`; '#' lines are
    comments (the released files start with three)."""
    return [seg for seg, _ in parse_labelled_segments(path)]


def parse_labelled_segments(path: Path) -> list[tuple[Segment, list[str]]]:
    """(segment, label ids) per line; the ids are the quoted, comma-separated fourth field."""
    out = []
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh, skipinitialspace=True), 1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 3:
                raise StepError(f"{path}:{lineno}: expected YTID,start,end, got {row}")
            try:
                start, end = float(row[1]), float(row[2])
            except ValueError as e:
                raise StepError(f"{path}:{lineno}: start/end are not numbers: {row[:3]}") from e
            if not end > start >= 0:
                raise StepError(f"{path}:{lineno}: need 0 <= start < end, got {start}, {end}")
            mids = [m.strip() for field in row[3:] for m in field.split(",") if m.strip()]
            out.append((Segment(row[0].strip(), start, end), mids))
    return out


def read_label_names(path: Path) -> dict[str, str]:
    """mid -> display name from AudioSet's class_labels_indices.csv (index, mid, display_name)."""
    names: dict[str, str] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            if lineno == 1 and row and row[0].strip().lower() == "index":
                continue
            if len(row) < 3:
                raise StepError(f"{path}:{lineno}: expected index,mid,display_name, got {row}")
            names[row[1].strip()] = row[2].strip()
    if not names:
        raise StepError(f"{path}: no labels")
    return names


def segment_tags(labelled: list[tuple[Segment, list[str]]], names: dict[str, str]
                 ) -> dict[str, list[str]]:
    """{segment name: label names}; an id the label file does not know is an error."""
    out = {}
    for seg, mids in labelled:
        unknown = [m for m in mids if m not in names]
        if unknown:
            raise StepError(f"segment {seg.ytid}: label id {unknown[0]!r} is not in the labels "
                            "file")
        out[seg.name] = [names[m] for m in mids]
    return out


def download_segment(seg: Segment, out_dir: Path) -> dict[str, Any]:
    """Download one segment's audio with yt-dlp (imported only here: an optional tool)."""
    try:
        import yt_dlp
        from yt_dlp.utils import DownloadError, download_range_func
    except ImportError as e:
        raise StepError("--download needs yt-dlp: pip install yt-dlp") from e
    opts = {
        "format": "bestaudio[ext=m4a]/bestaudio",
        "outtmpl": str(out_dir / f"{seg.name}.%(ext)s"),
        "download_ranges": download_range_func(None, [(seg.start, seg.end)]),
        "force_keyframes_at_cuts": True, "quiet": True, "noprogress": True,
    }
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            ydl.download([f"https://www.youtube.com/watch?v={seg.ytid}"])
    except DownloadError as e:
        raise ItemError(f"download failed: {e}") from e
    files = sorted(out_dir.glob(f"{seg.name}.*"))
    if not files:
        raise ItemError("yt-dlp reported success but wrote no file")
    return {"file": files[0].name, **asdict(seg)}


def split_video(path: Path, out_dir: Path) -> dict[str, Any]:
    frame = load_video(path, 1)[0]  # the frame in the middle of the clip
    image = out_dir / "images" / f"{path.stem}.png"
    with atomic_path(image) as tmp:
        Image.fromarray(frame).save(tmp, format="PNG")
    wave, sr = load_native(path)
    audio = out_dir / "audios" / f"{path.stem}.wav"
    write_wav(audio, wave, sr)
    return {"video": path.name, "image": image.name, "audio": audio.name, "sample_rate": sr}


def run_split(video_dir: Path, out_dir: Path, **kw: Any) -> StepReport:
    files = list_media(video_dir, "video")
    if not files:
        raise StepError(f"{video_dir}: no video files")
    progress = open_step(Manifest("split-videos", {"video_dir": str(video_dir.resolve())}),
                         out_dir, restart=kw.pop("restart", False))
    return run_items("split-videos", [(f.name, f) for f in files],
                     lambda b: [split_video(b[0], out_dir)], progress, **kw)


def _split_main(args: argparse.Namespace) -> int:
    report = run_split(Path(args.video_dir), Path(args.out_dir), restart=args.restart,
                       retry_failed=args.retry_failed, show_progress=not args.no_progress)
    return finish(report)


def _audioset_main(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    labelled = parse_labelled_segments(Path(args.csv))
    segs = [s for s, _ in labelled]
    write_json(out / "segments.json", [asdict(s) for s in segs])
    print(f"{len(segs)} segments -> {out / 'segments.json'}", file=sys.stderr)
    if args.labels:
        write_json(out / "tags.json", segment_tags(labelled, read_label_names(Path(args.labels))))
        print(f"tags -> {out / 'tags.json'}", file=sys.stderr)
    if not args.download:
        return 0
    progress = open_step(Manifest("audioset-download", {"csv": str(Path(args.csv).resolve())}),
                         out, restart=args.restart)
    audio = out / "audios"
    audio.mkdir(parents=True, exist_ok=True)
    report = run_items("download", [(s.name, s) for s in segs],
                       lambda b: [download_segment(b[0], audio)], progress,
                       retry_failed=args.retry_failed, show_progress=not args.no_progress)
    return finish(report)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m DataSet.sources", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split-videos", help="middle frame + audio track of every video")
    s.add_argument("--video_dir", required=True)
    s.add_argument("--out_dir", required=True)
    add_common_args(s)
    s.set_defaults(func=_split_main)
    a = sub.add_parser("audioset", help="AudioSet segment list (+ optional yt-dlp download)")
    a.add_argument("--csv", required=True)
    a.add_argument("--out_dir", required=True)
    a.add_argument("--labels", help="AudioSet class_labels_indices.csv: write tags.json")
    a.add_argument("--download", action="store_true", help="needs `pip install yt-dlp`")
    add_common_args(a)
    a.set_defaults(func=_audioset_main)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
