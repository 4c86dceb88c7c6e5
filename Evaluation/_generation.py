"""The `generate` verb of the evaluation CLIs: flags and model loading through the serving layer
(`app.args`, `app.loading`), and the resumable prediction files. Each task's row loop lives in
its own module (`Evaluation.musicqa`, `Evaluation.music_tasks`, ...).

Every task loads its model the way `inference.py` does (same flags, same loader, same notices),
so a reviewer's checkpoint runs identically in the demo and in the tables. Generation settings
default to the published evaluation scripts' values (temperature 0.6, top_p 0.8, 512 new
tokens); any flag the user gives wins. Rows are resumable: rows already in --out are skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from Evaluation._common import EvalInputError

if TYPE_CHECKING:
    from app.engine import LoadedModel
    from Evaluation.media_control import MediaControl

# The published generate_*.py scripts sampled with these values (MU-LLaMA / M2UGen).
PUBLISHED_SETTINGS = {"max_new_tokens": 512, "temperature": 0.6, "top_p": 0.8, "seed": 0}
# Models loaded in this process, keyed by app.loading.ModelChoice.key: repeated CLI calls in one
# process (tests, notebooks) load a checkpoint once.
_MODEL_CACHE: dict = {}


def add_generate_parser(sub, run: Callable, media_help: str, *, music: bool = False,
                        media_control: bool = False,
                        inputs: Optional[Callable[[Any], None]] = None
                        ) -> argparse.ArgumentParser:
    """The `generate` sub-command: app's model and generation flags + the evaluation's own
    (`media_control`: the task's model reads media, so --media_control applies; `inputs` adds
    a task's own input flags instead of --references/--media_dir)."""
    from app.args import add_generation_arguments, add_model_arguments, add_video_sampling_argument

    g = sub.add_parser("generate", help="run a model over the references, write predictions")
    add_model_arguments(g)
    add_generation_arguments(g, music_mode=False)
    add_video_sampling_argument(g)
    g.set_defaults(**PUBLISHED_SETTINGS)
    for action in g._actions:  # help must show this CLI's defaults, not the library's
        if action.dest in PUBLISHED_SETTINGS:
            action.help = f"default: {PUBLISHED_SETTINGS[action.dest]} (published evaluation)"
        elif action.dest == "audio_seconds" and music:
            action.help = ("length of every clip; default: its reference music's length (capped "
                           "at the decoder's maximum), as published, when the reference music "
                           "is available, else {default}")
    e = g.add_argument_group("evaluation")
    if inputs is None:
        e.add_argument("--references", required=True)
        e.add_argument("--media_dir", required=True, help=media_help)
    else:
        inputs(e)
    e.add_argument("--out", required=True, help="prediction file (resumed if it exists)")
    if media_control:
        from Evaluation.media_control import add_media_control_argument

        add_media_control_argument(e)
    if not music:
        e.add_argument("--batch_size", type=int, default=10,
                       help="rows between atomic saves of --out (one prompt per model call)")
    else:
        e.add_argument("--target_dir", default=None,
                       help="folder of the reference music (output_file): each clip is "
                            "generated as long as its reference, as published (default: "
                            "--audio_seconds or the library default when absent)")
        e.add_argument("--audio_dir", default=None,
                       help="where the WAV files go (default: <out without .json>_audio/)")
        e.add_argument("--music", default="always", choices=("always", "auto"),
                       help="always: synthesize music for every row (published behaviour); auto: "
                            "only when the model emits [AUD] tokens (rows without music are "
                            "recorded with audio null)")
    g.set_defaults(run=run)
    return g


def load_engine(args: argparse.Namespace) -> "LoadedModel":
    """The model the flags choose, loaded by `app.loading` (cached per process).

    Raises app.errors.InputError (bad flags, components that cannot be loaded)."""
    from app.loading import choose_model, load_model, random_weights_notice

    choice = choose_model(args)
    notice = random_weights_notice(choice)
    if notice:
        print(notice, file=sys.stderr)
    return load_model(choice, cache=_MODEL_CACHE)


def media_control_for(args: argparse.Namespace, engine: "LoadedModel",
                      rows_media: list[dict[str, Any]]) -> "MediaControl":
    """The --media_control of this run over every row's media ({modality: path} per row), seeded
    by --seed, decoding with the engine's model loaders."""
    from Evaluation.media_control import MediaControl, model_decoder

    return MediaControl(getattr(args, "media_control", "none"), args.seed, rows_media,
                        model_decoder(engine))


def settings_for(engine: "LoadedModel", args: argparse.Namespace, **overrides: Any):
    """Validated GenerationSettings from the flags (published defaults already applied)."""
    from app.args import settings_values

    return engine.settings(settings_values(args, overrides))


def save_json(path: Path, obj: Any) -> None:
    """Atomic write, so an interrupted run never leaves half a prediction file."""
    from util.atomic import write_text

    write_text(path, json.dumps(obj, indent=1, ensure_ascii=False))


def read_previous(path: Path, what: str) -> Any:
    """The JSON of an earlier (interrupted) run of --out, or None."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EvalInputError(f"{what} {path} exists but is not valid JSON ({exc}); move it "
                             "away to start over") from exc
