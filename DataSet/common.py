"""The resumable step framework shared by every dataset pipeline step.

A step turns a list of keyed items (usually media files) into one record per item. Design:

- `Progress`: an append-only JSONL file, one line per finished item (`done` with its record, or
  `failed` with the reason), flushed and fsynced before the next item starts. A crash or Ctrl-C
  therefore loses at most the item in flight; a torn last line (crash mid-write) is ignored and
  counted. A rerun skips every key already present (failures too, unless `retry_failed`).
- `Manifest`: the models (id + resolved revision), settings and seeds of a step, written
  atomically beside its outputs. A rerun with different settings refuses to mix results unless
  `--restart` is given (which starts a fresh progress file).
- `run_items`: batches the pending items through a worker, records each result or failure (the
  failure types are listed, so programming errors still crash loudly), shows a tqdm bar and
  returns a `StepReport` that lists every failure with its reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from tqdm.auto import tqdm

from data.media import MediaError
from util.atomic import write_json
from util.hashing import sha256_json

AUDIO_EXTS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".aif"})
IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
VIDEO_EXTS = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v"})
MEDIA_EXTS = {"audio": AUDIO_EXTS, "image": IMAGE_EXTS, "video": VIDEO_EXTS}


class ItemError(Exception):
    """One item cannot be processed (bad content, filter refusal...); recorded, never fatal."""


class StepError(RuntimeError):
    """The step as a whole cannot run (bad arguments, settings mismatch on resume...)."""


#: Exceptions recorded as per-item failures. Anything else is a bug and stops the step.
ITEM_ERRORS: tuple[type[BaseException], ...] = (ItemError, MediaError, OSError)


# ---------------------------------------------------------------------------------------------
# Progress


class Progress:
    """Append-only JSONL progress of one step (see the module docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.done: dict[str, Any] = {}
        self.failed: dict[str, str] = {}
        self.torn_lines = 0
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    self.torn_lines += 1  # crash mid-append: that item simply runs again
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    self.torn_lines += 1
                    continue
                self._apply(entry)

    def _apply(self, entry: dict) -> None:
        key = entry["key"]
        if entry["status"] == "done":
            self.done[key] = entry.get("record")
            self.failed.pop(key, None)
        else:
            self.failed[key] = entry.get("reason", "")
            self.done.pop(key, None)

    def _append(self, entry: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            if fh.tell() > 0 and self.torn_lines:
                fh.write("\n")  # never glue a new entry onto a torn line
                self.torn_lines = 0
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._apply(entry)

    def record(self, key: str, record: Any) -> None:
        self._append({"key": key, "status": "done", "record": record})

    def fail(self, key: str, reason: str) -> None:
        self._append({"key": key, "status": "failed", "reason": reason})

    def finished(self, key: str, retry_failed: bool = False) -> bool:
        return key in self.done or (key in self.failed and not retry_failed)


# ---------------------------------------------------------------------------------------------
# Manifest


@dataclass
class ModelInfo:
    """A model a step used: what the user named, and the exact revision that was loaded."""

    name: str  # hub id or local folder as given
    revision: str  # hub commit hash, or "local:<sha256 of file names/sizes/config>"
    role: str = ""


def resolve_revision(name_or_path: str, revision: str | None = None) -> str:
    """The commit a hub id resolves to in the local cache (offline), or a content key for a
    local folder. Raises StepError when neither exists (nothing is downloaded here)."""
    p = Path(name_or_path)
    if p.exists():
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        listing = [(str(f.relative_to(p)) if p.is_dir() else f.name, f.stat().st_size)
                   for f in files]
        config = p / "config.json"
        text = config.read_text(encoding="utf-8") if config.is_file() else ""
        return "local:" + sha256_json([listing, text])[:16]
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        local = snapshot_download(name_or_path, revision=revision, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError) as e:
        raise StepError(
            f"model {name_or_path!r} is neither a local folder nor in the Hugging Face cache "
            f"(offline by default; download it first or pass --online): {e}"
        ) from e
    return Path(local).name


@dataclass
class Manifest:
    """What a step used. `settings` decide the results: a resume must use the same ones."""

    step: str
    settings: dict[str, Any]
    models: list[ModelInfo] = field(default_factory=list)
    seed: int | None = None

    def key(self) -> str:
        return sha256_json({"step": self.step, "settings": self.settings, "seed": self.seed,
                            "models": [dataclasses.asdict(m) for m in self.models]})

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["key"] = self.key()
        d["python"] = sys.version.split()[0]
        return d


def open_step(manifest: Manifest, out_dir: Path, *, restart: bool = False) -> Progress:
    """Write the manifest of a step and return its progress, checking resume compatibility.

    Files: `<out_dir>/<step>.manifest.json` and `<out_dir>/<step>.progress.jsonl`.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    man_path = out_dir / f"{manifest.step}.manifest.json"
    prog_path = out_dir / f"{manifest.step}.progress.jsonl"
    if restart and prog_path.exists():
        prog_path.unlink()
    if man_path.exists() and prog_path.exists():
        old = json.loads(man_path.read_text(encoding="utf-8"))
        if old.get("key") != manifest.key():
            raise StepError(
                f"{man_path}: this step was started with other settings or models "
                f"(old settings {old.get('settings')}, new {manifest.settings}); "
                "rerun with the same ones to resume, or pass --restart to start over"
            )
    write_json(man_path, manifest.to_json())
    return Progress(prog_path)


# ---------------------------------------------------------------------------------------------
# Running items


@dataclass
class StepReport:
    """Counts of one run; `failures` lists every failed key with its reason."""

    step: str
    total: int = 0
    skipped_finished: int = 0
    done: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"{self.step}: {self.total} items, {self.done} done now, "
            f"{self.skipped_finished} already finished, {len(self.failures)} failed "
            f"({self.seconds:.1f} s)"
        ]
        lines += [f"  FAILED {k}: {r}" for k, r in sorted(self.failures.items())]
        return "\n".join(lines)


def batched(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


#: A worker maps a batch of items to one result per item: a JSON-able record, or an exception
#: instance (of ITEM_ERRORS) for an item that failed while the others succeeded.
Worker = Callable[[Sequence[Any]], Sequence[Any]]


def run_items(
    step: str,
    items: Sequence[tuple[str, Any]],
    worker: Worker,
    progress: Progress,
    *,
    batch_size: int = 1,
    retry_failed: bool = False,
    show_progress: bool = True,
) -> StepReport:
    """Run `worker` over the (key, item) pairs not finished yet, recording each outcome."""
    t0 = time.monotonic()
    report = StepReport(step=step, total=len(items))
    pending = [(k, it) for k, it in items if not progress.finished(k, retry_failed)]
    report.skipped_finished = len(items) - len(pending)
    bar = tqdm(total=len(pending), desc=step, unit="item", disable=not show_progress)
    try:
        for batch in batched(pending, max(1, batch_size)):
            try:
                results = list(worker([it for _, it in batch]))
            except ITEM_ERRORS as e:
                if len(batch) > 1:  # find the bad item(s): rerun the batch one by one
                    results = [_one(worker, it) for _, it in batch]
                else:
                    results = [e]
            if len(results) != len(batch):
                raise StepError(f"{step}: worker returned {len(results)} results for "
                                f"{len(batch)} items")
            for (key, _), res in zip(batch, results):
                if isinstance(res, BaseException):
                    progress.fail(key, f"{type(res).__name__}: {res}")
                else:
                    progress.record(key, res)
                    report.done += 1
            bar.update(len(batch))
    finally:
        bar.close()
    report.failures = {k: progress.failed[k] for k, _ in items if k in progress.failed}
    report.seconds = time.monotonic() - t0
    return report


def _one(worker: Worker, item: Any) -> Any:
    try:
        return worker([item])[0]
    except ITEM_ERRORS as e:
        return e


# ---------------------------------------------------------------------------------------------
# Inputs and command lines


def list_media(folder: str | os.PathLike, modality: str, *, recursive: bool = False) -> list[Path]:
    """Media files of `modality` in `folder`, sorted by relative path (stable item order)."""
    root = Path(folder)
    if not root.is_dir():
        raise StepError(f"{root}: not a folder")
    exts = MEDIA_EXTS[modality]
    it: Iterable[Path] = root.rglob("*") if recursive else root.iterdir()
    return sorted((p for p in it if p.is_file() and p.suffix.lower() in exts),
                  key=lambda p: str(p.relative_to(root)))


def add_common_args(ap: argparse.ArgumentParser, *, models: bool = False) -> None:
    """Flags every step shares."""
    ap.add_argument("--batch_size", type=int, default=1)
    ap.add_argument("--retry_failed", action="store_true", help="rerun items that failed before")
    ap.add_argument("--restart", action="store_true", help="forget earlier progress of this step")
    ap.add_argument("--no_progress", action="store_true", help="no progress bar")
    ap.add_argument("--seed", type=int, default=0)
    if models:
        ap.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
        ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
        ap.add_argument("--online", action="store_true",
                        help="allow hub downloads (default: offline, local folders / HF cache)")


def apply_offline(args: argparse.Namespace) -> None:
    """Offline unless --online: a missing model fails at once instead of after hub retries."""
    if not getattr(args, "online", False):
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"


def torch_dtype(name: str) -> Any:
    """--dtype of the pipelines' own models (util.dtypes holds the one map)."""
    from util.dtypes import resolve_dtype

    return resolve_dtype(name)


def finish(report: StepReport, out: Path | None = None) -> int:
    """Print the report (and save it beside the outputs); exit code 1 when items failed."""
    print(report.summary(), file=sys.stderr)
    if out is not None:
        write_json(out, dataclasses.asdict(report))
    return 1 if report.failures else 0


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse, run the chosen step's `func`; a StepError (bad input) is one line, exit 2."""
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except StepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
