"""One report a reviewer reads: every task's score JSONs across models in one Markdown file and
one figure.

    python -m Evaluation.report [NAME=]RESULT.json ... --out DIR

Each RESULT.json is what a `score` verb printed (`Evaluation.musicqa`, `Evaluation.muchomusic`,
`Evaluation.text2music|image2music|video2music|editing`); NAME labels its model (default: the
file name without .json; the music-generation tasks name their systems themselves). Writes
`DIR/report.md` (per task: the published metrics, chance, and each media control's effect with
its 95% interval) and `DIR/report.png` (one bar chart per task, side by side: the headline metric
per model, its value under each control with the interval, chance as a dashed line).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from Evaluation._common import EvalInputError, fail

if TYPE_CHECKING:
    from Evaluation.report_figure import Panel

MUSIC_TASKS = ("text2music", "image2music", "video2music", "editing")
TASK_ORDER = ("musicqa", "muchomusic", *MUSIC_TASKS)
TITLES = {"musicqa": "MusicQA", "muchomusic": "MuChoMusic", "text2music": "Text-to-music (MUCaps)",
          "image2music": "Image-to-music (MUImage)", "video2music": "Video-to-music (MUVideo)",
          "editing": "Music editing (MUEdit)"}
# (key in the score JSON, column title); MusicQA's live under "published"
QA_METRICS = (("bleu", "BLEU"), ("bleu4", "BLEU-4"), ("meteor", "METEOR"),
              ("rouge_l", "ROUGE-L"), ("bert_score", "BERTScore"))
MC_METRICS = (("accuracy", "accuracy"),)
MUSIC_METRICS = (("fad", "FAD"), ("kl", "KL"), ("clap", "CLAP"))
NOT_COMPARABLE = "†"


@dataclass
class Entry:
    """One model's (system's) result on one task."""

    task: str
    system: str
    result: dict
    source: Path
    shared: Optional[dict] = None  # music tasks: the whole score JSON the system came from


def _label_and_path(arg: str) -> tuple[Optional[str], Path]:
    name, sep, path = arg.partition("=")
    if sep and name and path and not Path(arg).exists():
        return name, Path(path)
    return None, Path(arg)


def load_entries(args: Sequence[str]) -> list[Entry]:
    """Every (task, system) result of the given score JSONs; errors name the file."""
    entries: list[Entry] = []
    for arg in args:
        label, path = _label_and_path(arg)
        if not path.is_file():
            raise EvalInputError(f"result file {path} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise EvalInputError(f"result file {path} is not valid JSON: {exc}") from exc
        task = data.get("task") if isinstance(data, dict) else None
        if task not in TASK_ORDER:
            raise EvalInputError(f"result file {path}: 'task' is {task!r}, expected one of "
                                 f"{list(TASK_ORDER)} (the JSON a score verb prints)")
        if task in MUSIC_TASKS:
            systems = data.get("systems")
            if not isinstance(systems, dict) or not systems:
                raise EvalInputError(f"result file {path}: no 'systems'")
            for name, result in systems.items():
                system = name if label is None else (label if len(systems) == 1
                                                     else f"{label}:{name}")
                entries.append(Entry(task, system, result, path, data))
        else:
            entries.append(Entry(task, label or path.stem, data, path))
    seen: dict[tuple[str, str], Path] = {}
    for e in entries:
        if (e.task, e.system) in seen:
            raise EvalInputError(f"{e.source} and {seen[e.task, e.system]} both give "
                                 f"{e.task} results for {e.system!r}: label them NAME=FILE")
        seen[e.task, e.system] = e.source
    return entries


def by_task(entries: Sequence[Entry]) -> dict[str, list[Entry]]:
    out: dict[str, list[Entry]] = {}
    for task in TASK_ORDER:
        rows = [e for e in entries if e.task == task]
        if rows:
            out[task] = rows
    return out


# ---------------------------------------------------------------------------------------------
# Numbers


def fmt(x: Any, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def metric_values(e: Entry) -> dict[str, Optional[float]]:
    """The task's published metrics of one entry, by key."""
    if e.task == "musicqa":
        return {k: e.result["published"].get(k) for k, _ in QA_METRICS}
    if e.task == "muchomusic":
        return {"accuracy": e.result.get("accuracy")}
    out = {k: e.result.get(k) for k, _ in MUSIC_METRICS}
    rel = e.result.get("relevance")
    out["relevance"] = rel.get("mrr") if isinstance(rel, dict) else None
    return out


def chance_values(e: Entry) -> dict[str, Optional[float]]:
    if e.task == "musicqa":
        chance = e.result.get("chance") or {}
        return {k: (chance.get("published") or {}).get(k) for k, _ in QA_METRICS}
    if e.task == "muchomusic":
        return {"accuracy": e.result.get("chance")}
    return {}


def headline(task: str, entries: Sequence[Entry]) -> Optional[str]:
    """The metric the figure shows for a task."""
    if task == "musicqa":
        return "bleu"
    if task == "muchomusic":
        return "accuracy"
    for key in ("clap", "fad", "kl"):
        if any(metric_values(e).get(key) is not None for e in entries):
            return key
    return None


def comparable(e: Entry, key: str) -> bool:
    flags = (e.shared or e.result).get("comparable_with_paper") or {}
    return bool(flags.get(key, False))


def controls(e: Entry) -> dict[str, dict]:
    return e.result.get("media_effect") or {}


# ---------------------------------------------------------------------------------------------
# Markdown


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _metrics_table(task: str, entries: Sequence[Entry]) -> list[str]:
    if task == "musicqa":
        cols = list(QA_METRICS)
    elif task == "muchomusic":
        cols = [("accuracy", "accuracy")]
    else:
        cols = [*MUSIC_METRICS, ("relevance", "relevance MRR")]
    header = ["model", *(t for _, t in cols)]
    if task == "muchomusic":
        header += ["IFR", "knowledge", "reasoning"]
    header.append("rows")
    rows = []
    for e in entries:
        vals = metric_values(e)
        cells = [e.system] + [fmt(vals.get(k)) + ("" if vals.get(k) is None or comparable(e, k)
                                                  else NOT_COMPARABLE) for k, _ in cols]
        if task == "muchomusic":
            cells += [fmt(e.result.get("ifr")), fmt((e.result.get("knowledge") or {}).get(
                "overall")), fmt((e.result.get("reasoning") or {}).get("overall"))]
        cells.append(str(e.result.get("rows_scored", "n/a")))
        rows.append(cells)
        chance = chance_values(e)
        if chance:
            rows.append([f"chance ({e.system})", *(fmt(chance.get(k)) for k, _ in cols),
                         *([""] * (len(header) - len(cols) - 1))])
    return _table(header, rows)


def _music_extras(entries: Sequence[Entry]) -> list[str]:
    lines: list[str] = []
    for source in dict.fromkeys(e.source for e in entries):
        shared = next(e.shared for e in entries if e.source == source) or {}
        if shared.get("references_clap") is not None:
            lines.append(f"- {source.name}: CLAP of the reference music itself (the ceiling): "
                         f"{fmt(shared['references_clap'])}")
        base = (shared.get("baselines") or {}).get("source")
        if base:
            lines.append(f"- {source.name}: the unedited source as a system: " + ", ".join(
                f"{t} {fmt(base.get(k))}" for k, t in MUSIC_METRICS))
    return lines


def _controls_table(task: str, entries: Sequence[Entry]) -> list[str]:
    metrics = QA_METRICS + (("clap_text", "CLAPText"),) if task == "musicqa" else MC_METRICS
    keys = [k for k, _ in metrics]
    titles = dict(metrics)
    present = [k for k in keys if any(k in c for e in entries for c in controls(e).values())]
    header = ["model", "control", "identical answers"]
    if task == "muchomusic":
        header.append("identical choices")
    header += [f"Δ {titles[k]} [95% CI]" for k in present]
    rows = []
    for e in entries:
        for name, block in controls(e).items():
            cells = [e.system, name, fmt(block.get("identical_answers"), 3)]
            if task == "muchomusic":
                cells.append(fmt((e.result.get("identical_choices") or {}).get(name), 3))
            for k in present:
                m = block.get(k)
                cells.append("n/a" if not m else
                             f"{m['delta']:+.4f} [{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}]")
            rows.append(cells)
    return _table(header, rows) if rows else []


def markdown(entries: Sequence[Entry], figure: str) -> str:
    lines = ["# Evaluation report", "",
             f"Numbers marked {NOT_COMPARABLE} are not comparable with the paper's (the score "
             "JSON's `comparable_with_paper`); docs/EVALUATION.md defines every number and says "
             "what it can be compared with. Δ = the metric with the real media minus the metric "
             "under the control; an interval excluding 0 means the media changed the score. "
             "Identical answers 1.000 with Δ exactly 0 under every control: the model's answers "
             "do not depend on its media (it does not listen).", "", f"![report]({figure})", ""]
    for task, rows in by_task(entries).items():
        lines += [f"## {TITLES[task]}", ""] + _metrics_table(task, rows) + [""]
        if task in MUSIC_TASKS:
            extras = _music_extras(rows)
            lines += extras + ([""] if extras else [])
        ctl = _controls_table(task, rows) if task in ("musicqa", "muchomusic") else []
        if ctl:
            lines += ["### Media controls", ""] + ctl + [""]
        elif task in ("musicqa", "muchomusic"):
            lines += ["No media controls were scored (`score --control_predictions`).", ""]
    lines += ["## Inputs", ""] + [f"- `{p}`" for p in dict.fromkeys(str(e.source)
                                                                    for e in entries)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# CLI


def panels(entries: Sequence[Entry]) -> list["Panel"]:
    """One figure panel per task: per model the headline metric, then its value under each
    control (main minus delta) with the interval of that shift."""
    from Evaluation.report_figure import Bar, Panel

    out = []
    for task, rows in by_task(entries).items():
        key = headline(task, rows)
        title = dict(QA_METRICS + MC_METRICS + MUSIC_METRICS).get(key or "", "")
        panel = Panel(TITLES[task], f"{title} (published)" if task == "musicqa" else title)
        for e in rows:
            value = metric_values(e).get(key) if key else None
            if value is None:
                continue
            bars = [Bar("main", value)]
            for name, block in controls(e).items():
                m = block.get(key)
                if m:
                    lo, hi = m["ci95"]
                    bars.append(Bar(name, value - m["delta"], (value - hi, value - lo)))
            panel.groups[e.system] = bars
        chances = [chance_values(e).get(key) for e in rows if key]
        chances = [c for c in chances if c is not None]
        panel.chance = sum(chances) / len(chances) if chances else None
        out.append(panel)
    return out


def write_report(results: Sequence[str], out: Path) -> tuple[Path, Path]:
    from Evaluation.report_figure import draw
    from util.atomic import write_text

    entries = load_entries(results)
    out.mkdir(parents=True, exist_ok=True)
    md, png = out / "report.md", out / "report.png"
    draw(panels(entries), png)
    write_text(md, markdown(entries, png.name))
    return md, png


def main(argv: Optional[list[str]] = None) -> int:
    from app.args import OneLineParser

    ap = OneLineParser(prog="python -m Evaluation.report", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", metavar="[NAME=]RESULT.json",
                    help="score JSONs of any tasks and models")
    ap.add_argument("--out", required=True, help="folder for report.md and report.png")
    args = ap.parse_args(argv)
    try:
        md, png = write_report(args.results, Path(args.out))
    except EvalInputError as exc:
        return fail(str(exc))
    print(f"wrote {md} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
