"""Command-line inference for M2UGen: one request, or a batch of requests from a JSON-lines file.

    python inference.py --prompt "Compose a slow piano melody in a low register."  # text (+ music)
    python inference.py --prompt "Describe this music" --audio_file x.wav --json
    python inference.py --batch-file requests.jsonl --out_dir out/    # -> out/results.jsonl

Flags keep the published code's names (--model --llama_dir --mert_path --vit_path --vivit_path
--music_decoder --music_decoder_path --prompt --audio_file --image_file --video_file). Without
--model the trained checkpoint `ckpts/<preset>/stage3` is used when it exists; otherwise the
preset's random tuned weights are used and a notice says so on stderr (a fresh clone still runs).

Bad input (missing or corrupt media, invalid flag values, an empty prompt, a prompt longer than
the context, a model component that cannot be loaded) ends the program with exit status 2 and one
line on stderr naming the problem; bugs keep their traceback. In batch mode a bad request becomes
an error result for its id and the other requests still run (exit status 1 if any failed).

This script only parses flags and prints; the work is done by the serving layer `app/`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Optional, Sequence

from app import args as app_args
from app.batch import BatchRun
from app.engine import (
    FinalReply,
    LoadedModel,
    check_media_length,
    check_media_paths,
    check_prompt,
    reply_record,
    write_music,
)
from app.errors import InputError, bad_input_errors, fail
from app.loading import choose_model, load_model, random_weights_notice
from app.logs import setup_logging
from app.settings import make_settings
from util.shard import Group, Launch, ShardError

PROG = "inference.py"
EXIT_BATCH_FAILURES = 1


def build_parser() -> argparse.ArgumentParser:
    p = app_args.OneLineParser(
        prog=PROG,
        description="M2UGen inference: answer a prompt about music/image/video, generate music.",
        epilog="Batch lines: {\"id\": unique string or integer, \"prompt\": ..., "
               "\"audio\"|\"image\"|\"video\": path (relative paths are relative to the batch "
               "file), optional \"history\": [[question, answer], ...], \"music\", and any "
               "generation setting above by its flag name without dashes}.",
    )
    app_args.add_model_arguments(p)
    req = p.add_argument_group("request")
    req.add_argument("--prompt", default=None, help="the instruction / question")
    req.add_argument("--audio_file", default=None, help="music input (wav, flac, mp3, ...)")
    req.add_argument("--image_file", default=None, help="image input")
    req.add_argument("--video_file", default=None, help="video input")
    req.add_argument("--batch-file", "--batch_file", dest="batch_file", default=None,
                     help="JSON-lines file of requests; results go to OUT_DIR/results.jsonl")
    app_args.add_media_arguments(p)
    app_args.add_generation_arguments(p)
    out = p.add_argument_group("output")
    out.add_argument("--out_dir", default="output", help="where WAV files (and results) go")
    out.add_argument("--json", action="store_true", help="print the result as one JSON object")
    out.add_argument("--verbose", action="store_true",
                     help="show library warnings, progress, and tracebacks of errors")
    return p


def validate_request_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before loading a model (fast feedback)."""
    if args.batch_file is not None:
        if args.prompt is not None or args.audio_file or args.image_file or args.video_file:
            raise InputError("--batch-file cannot be combined with --prompt/--audio_file/"
                             "--image_file/--video_file (put them in the batch lines)")
        if not Path(args.batch_file).is_file():
            raise InputError(f"--batch-file {args.batch_file}: no such file")
    else:
        if args.prompt is None:
            raise InputError("--prompt is required (or use --batch-file)")
        check_prompt(args.prompt)  # the engine's own check, before a model is loaded for nothing
        check_media_paths(
            {"audio": args.audio_file, "image": args.image_file, "video": args.video_file},
            label="--{modality}_file",
        )
        check_media_length(
            {"audio": args.audio_file, "video": args.video_file}, args.max_media_seconds,
            label="--{modality}_file",
        )
    make_settings(app_args.settings_values(args))  # value checks without the model


def run_single(args: argparse.Namespace, engine: LoadedModel) -> int:
    settings = engine.settings(app_args.settings_values(args))
    media = {"audio": args.audio_file, "image": args.image_file, "video": args.video_file}
    reply = None
    printed = False
    for event in engine.stream_turn(args.prompt, media=media, settings=settings,
                                    music=args.music):
        if isinstance(event, FinalReply):
            reply = event.reply
        elif not args.json:
            sys.stdout.write(event.text)
            sys.stdout.flush()
            printed = True
    assert reply is not None
    audio = None
    if reply.music is not None:
        name = f"m2ugen-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.wav"
        audio = write_music(Path(args.out_dir) / name, reply)
    record = reply_record(reply, audio)
    if args.json:
        record.update(model=engine.description, trained=bool(engine.model.trained))
        print(json.dumps(record, ensure_ascii=False))
        return 0
    if printed:
        sys.stdout.write("\n")
    elif reply.text:
        print(reply.text)
    if audio:
        print(f"music: {audio} ({record['audio_seconds']} s at {reply.sample_rate} Hz)")
    return 0


def run_batch(args: argparse.Namespace, engine: LoadedModel, launch: Launch) -> int:
    """Every request gets a result line; failures are recorded per id and the rest still run.
    Under torchrun each process runs its share (docs/SHARDING.md)."""
    run = BatchRun(engine, args.out_dir, defaults=app_args.settings_values(args), music=args.music,
                   progress=lambda line: print(line, file=sys.stderr))
    with Group(launch) as group:
        summary = run.run(args.batch_file, group=group)
    if not launch.is_main:
        return EXIT_BATCH_FAILURES if summary.failed else 0
    print(f"{summary.ok} ok, {summary.failed} failed -> {summary.results}", file=sys.stderr)
    if args.json:
        print(json.dumps({"results": str(summary.results), "ok": summary.ok,
                          "failed": summary.failed}))
    return EXIT_BATCH_FAILURES if summary.failed else 0


def main(argv: Optional[Sequence[str]] = None, *, model_cache: Optional[dict] = None) -> int:
    """Run the CLI; returns the exit status. `model_cache` lets callers reuse loaded models."""
    args = build_parser().parse_args(argv)
    try:
        validate_request_args(args)
        launch = Launch.from_env()
        if launch.sharded:
            args.device = launch.device(args.device)  # with CUDA: this process's own GPU
        choice = choose_model(args)
    except (InputError, ShardError) as err:
        return fail(PROG, err)
    setup_logging(args.verbose)
    try:
        notice = random_weights_notice(choice)
        if notice and (model_cache is None or choice.key not in model_cache):
            print(notice, file=sys.stderr)
        engine = load_model(choice, model_cache)
        engine.max_media_seconds = args.max_media_seconds
        if args.batch_file is not None:
            return run_batch(args, engine, launch)
        return run_single(args, engine)
    except bad_input_errors() as err:
        if args.verbose:  # the full story, for debugging what looked like bad input
            traceback.print_exc()
        return fail(PROG, err)


if __name__ == "__main__":
    sys.exit(main())
