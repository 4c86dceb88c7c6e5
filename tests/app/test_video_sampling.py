"""--video_sampling from the command line to the frames the video encoder sees: inference.py,
gradio_app.py and the Evaluation generate CLIs take it; the window's start comes from --seed."""

from __future__ import annotations

import pytest

import gradio_app
import inference
from app import args as app_args
from app import loading as app_loading
from data.media import SAMPLINGS, VideoSampling


def test_the_flag_offers_what_the_loader_knows():
    assert app_args.VIDEO_SAMPLINGS == SAMPLINGS


@pytest.mark.parametrize("argv,expected", [
    ([], VideoSampling()),
    (["--video_sampling", "window"], VideoSampling("window")),  # no --seed: centred
    (["--video_sampling", "window", "--seed", "3"], VideoSampling("window", 3)),
    (["--seed", "3"], VideoSampling()),  # uniform has nothing random: the seed is not kept
])
def test_inference_choice_carries_the_sampling(argv, expected):
    args = inference.build_parser().parse_args(["--prompt", "hi", *argv])
    choice = app_loading.choose_model(args)
    assert VideoSampling(choice.video_sampling, choice.video_seed) == expected


def test_the_loaded_model_decodes_videos_with_the_chosen_sampling():
    window = app_loading.ModelChoice(None, "tiny", {}, "cpu", "float32",
                                     video_sampling="window", video_seed=5)
    uniform = app_loading.ModelChoice(None, "tiny", {}, "cpu", "float32")
    assert window.key != uniform.key  # never one cached model for both
    cache: dict = {}
    assert app_loading.load_model(window, cache).features.video_sampling == VideoSampling(
        "window", 5)


def test_demo_and_evaluation_parsers_take_the_flag():
    import argparse

    from Evaluation._generation import add_generate_parser

    demo = gradio_app.build_parser().parse_args(["--video_sampling", "window"])
    assert demo.video_sampling == "window"
    parser = argparse.ArgumentParser()
    add_generate_parser(parser.add_subparsers(), run=lambda a: 0, media_help="inputs", music=True)
    given = ["generate", "--references", "r", "--media_dir", "m", "--out", "o"]
    assert parser.parse_args(given).video_sampling == "uniform"
    ev = parser.parse_args(given + ["--video_sampling", "window"])
    assert (ev.video_sampling, ev.seed) == ("window", 0)  # the published evaluation's seed
    assert app_loading.choose_model(ev).video_seed == 0
