"""Shared plumbing of the per-task evaluation CLIs: JSON inputs with clear errors, output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


class EvalInputError(ValueError):
    """An evaluation input file is missing or malformed (the message names file and field)."""


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file, naming it and its role in any error."""
    p = Path(path)
    if not p.is_file():
        raise EvalInputError(f"{what} file {p} does not exist")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EvalInputError(f"{what} file {p} is not valid JSON: {exc}") from exc


def conversation(item: dict, where: str) -> list[dict]:
    """The turn list of a published item (`conversation` or `conversations`)."""
    turns = item.get("conversation", item.get("conversations"))
    if not isinstance(turns, list) or len(turns) < 2:
        raise EvalInputError(f"{where}: needs a 'conversation' list of at least 2 turns")
    for k, t in enumerate(turns):
        if not isinstance(t, dict) or not isinstance(t.get("value"), str):
            raise EvalInputError(f"{where}: turn {k} has no string 'value'")
    return turns


def print_json(obj: Any) -> None:
    """The one JSON document a `score` verb prints (stable key order, finite numbers)."""
    sys.stdout.write(json.dumps(obj, indent=2, allow_nan=False) + "\n")


def fail(msg: str) -> int:
    """Report a user error on stderr; exit status 2 (usage/input error)."""
    print(f"error: {msg}", file=sys.stderr)
    return 2
