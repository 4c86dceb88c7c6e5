"""Batch requests: a JSON-lines file in, `results.jsonl` and one WAV per music reply out.

Every line gets a result line (in input order) with its id, the reply text, the generated
`token_ids`, the WAV path and an error (None when it succeeded); a bad request is recorded and
the others still run. Ids must be unique strings or integers: a repeated id is an error for the
later line, naming the line of the first. WAV names come from the ids, sanitised to a safe
file name; ids that sanitise to the same name (e.g. "a/b" and "a_b") get "-2", "-3", ... suffixes
so no file is ever overwritten by another request (compared case-insensitively, as some file
systems are). `results.jsonl` is rewritten atomically (util.atomic) after every request, so a
reader or an interrupted run always finds whole lines for the requests done so far.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from app.args import MUSIC_MODES
from app.engine import LoadedModel, reply_record, write_music
from app.errors import InputError, bad_input_errors, one_line
from util.atomic import write_text

if TYPE_CHECKING:
    from llama.m2ugen import GenerationSettings

log = logging.getLogger("m2ugen.batch")

REQUEST_KEYS = ("id", "prompt", "audio", "image", "video", "history", "music")


def safe_name(text: str) -> str:
    """A file-name stem made of [A-Za-z0-9._-] only (at most 80 characters)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:80] or "item"


class OutputNames:
    """Hands out distinct WAV file names for request ids."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def claim(self, request_id: Any) -> str:
        base = safe_name(str(request_id))
        name, n = base, 1
        while name.casefold() in self._taken:
            n += 1
            name = f"{base}-{n}"
        self._taken.add(name.casefold())
        return f"{name}.wav"


@dataclasses.dataclass
class BatchRequest:
    lineno: int
    id: Any
    prompt: str
    media: dict[str, Optional[str]]
    history: list[tuple[str, str]]
    settings: "GenerationSettings"
    music: str


def _field_checks(req: dict, lineno: int) -> None:
    """Shape of one request: known fields, an id, a prompt, a history of pairs."""
    from app.settings import setting_names

    known = REQUEST_KEYS + tuple(setting_names())
    unknown = sorted(set(req) - set(known))
    if unknown:
        raise InputError(f"line {lineno}: unknown field(s) {unknown}; known: {list(known)}")
    rid = req.get("id")
    if rid in (None, "") or isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise InputError(f"line {lineno}: \"id\" must be a non-empty string or an integer")
    if not isinstance(req.get("prompt"), str):  # its content is the engine's to check
        raise InputError(f"line {lineno}: \"prompt\" must be a string")
    history = req.get("history") or []
    if not (isinstance(history, list) and all(
            isinstance(t, (list, tuple)) and len(t) == 2 and all(isinstance(s, str) for s in t)
            for t in history)):
        raise InputError(f"line {lineno}: \"history\" must be a list of [question, answer] pairs")


def _media_paths(req: dict, lineno: int, base: Path) -> dict[str, Optional[str]]:
    """Media fields as paths; relative ones are relative to the batch file's folder."""
    media: dict[str, Optional[str]] = {}
    for m in ("audio", "image", "video"):
        value = req.get(m)
        if value is None:
            media[m] = None
            continue
        if not isinstance(value, str):
            raise InputError(f"line {lineno}: \"{m}\" must be a path string")
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise InputError(f"line {lineno}: \"{m}\" {path}: no such file")
        media[m] = str(path)
    return media


def parse_line(line: str, lineno: int, base: Path, engine: LoadedModel,
               defaults: dict[str, Any], music: str) -> BatchRequest:
    """One request, validated; `defaults` are the command line's setting values."""
    try:
        req = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"line {lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(req, dict):
        raise InputError(f"line {lineno}: expected a JSON object, got {type(req).__name__}")
    _field_checks(req, lineno)
    media = _media_paths(req, lineno, base)
    music = req.get("music", music)
    if music not in MUSIC_MODES:
        raise InputError(f"line {lineno}: \"music\" must be one of {list(MUSIC_MODES)}")
    values = dict(defaults)
    values.update({k: v for k, v in req.items() if k not in REQUEST_KEYS})
    try:
        settings = engine.settings(values)
    except InputError as err:
        raise InputError(f"line {lineno}: {err}") from None
    history = [(q, a) for q, a in req.get("history") or []]
    return BatchRequest(lineno, req["id"], req["prompt"], media, history, settings, music)


def _peek_id(line: str) -> Any:
    """The id of a line that may be invalid (so even a rejected request is reported by id)."""
    try:
        raw = json.loads(line)
    except json.JSONDecodeError:
        return None
    return raw.get("id") if isinstance(raw, dict) else None


@dataclasses.dataclass
class BatchSummary:
    ok: int
    failed: int
    results: Path


class BatchRun:
    """Runs the requests of one batch file into `out_dir`."""

    def __init__(self, engine: LoadedModel, out_dir: str | Path, *,
                 defaults: dict[str, Any], music: str = "auto",
                 progress: Callable[[str], None] = lambda line: None) -> None:
        self.engine, self.out_dir = engine, Path(out_dir)
        self.defaults, self.music, self.progress = defaults, music, progress
        self.names = OutputNames()
        self.first_line: dict[str, int] = {}  # id -> line it was first used on

    def run(self, batch_file: str | Path) -> BatchSummary:
        batch_file = Path(batch_file)
        lines = batch_file.read_text(encoding="utf-8").splitlines()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        results_path = self.out_dir / "results.jsonl"
        written: list[str] = []
        ok = failed = 0
        write_text(results_path, "")
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            result = self.one(line, lineno, batch_file.parent)
            ok, failed = (ok + 1, failed) if result["error"] is None else (ok, failed + 1)
            written.append(json.dumps(result, ensure_ascii=False) + "\n")
            write_text(results_path, "".join(written))
            status = "ok" if result["error"] is None else f"error: {result['error']}"
            self.progress(f"[{lineno}/{len(lines)}] {result['id']}: {status}")
        return BatchSummary(ok, failed, results_path)

    def one(self, line: str, lineno: int, base: Path) -> dict[str, Any]:
        """The result line of one request; its failure never stops the batch."""
        result: dict[str, Any] = {"id": _peek_id(line), "text": None, "token_ids": None,
                                  "audio": None, "error": None}
        try:
            req = parse_line(line, lineno, base, self.engine, self.defaults, self.music)
            key = str(req.id)
            if key in self.first_line:
                raise InputError(f"line {lineno}: duplicate id {req.id!r} (first used on line "
                                 f"{self.first_line[key]})")
            self.first_line[key] = lineno
            reply = self.engine.run_turn(req.prompt, history=req.history, media=req.media,
                                         settings=req.settings, music=req.music)
            audio = None
            if reply.music is not None:
                audio = write_music(self.out_dir / self.names.claim(req.id), reply)
            result.update(reply_record(reply, audio))
        except bad_input_errors() as err:
            result["error"] = one_line(err)
        except Exception as err:  # noqa: BLE001 - one broken request must not stop the batch
            log.exception("request on line %d failed", lineno)
            result["error"] = f"internal error: {type(err).__name__}: {one_line(err)}"
        if result["id"] is None:
            result["line"] = lineno
        return result
