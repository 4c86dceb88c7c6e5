"""MUImage / MUVideo: image and video captions with tiny random BLIP and TimeSformer-GPT2
(built from configs), then instructions in the schema `data` reads for stage 3."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import tiny_blip, tiny_llava_next, tiny_timesformer_gpt2

from data.schemas import TASK_IMAGE_TO_MUSIC, TASK_VIDEO_TO_MUSIC, parse_any_to_music
from data.synthetic import write_mp4
from DataSet import muimage, muvideo

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    (d / "images").mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200), (30, 200, 30)]):
        Image.fromarray(np.full((40, 48, 3), colour, np.uint8)).save(d / "images" / f"c{i}.png")
    (d / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (d / "videos").mkdir()
    for i in range(2):
        write_mp4(d / "videos" / f"c{i}.mp4", rng.integers(0, 255, (8, 32, 32, 3), np.uint8))
    return d


def test_image_captions_blip(media, tmp_path):
    model = tiny_blip(tmp_path / "blip")
    out = tmp_path / "ImageCaptions.json"
    rc = muimage.main(["caption", "--media_dir", str(media / "images"), "--out", str(out),
                       "--model", str(model), "--batch_size", "2", "--num_beams", "1",
                       "--no_progress"])
    assert rc == 1  # the broken image is a listed failure
    caps = json.loads(out.read_text())
    assert set(caps) == {"c0.png", "c1.png", "c2.png"}
    assert all(c.startswith("the image shows") for c in caps.values())  # published prompt
    prog = (tmp_path / "ImageCaptions.progress.jsonl").read_text().splitlines()
    failed = [json.loads(x) for x in prog if json.loads(x)["status"] == "failed"]
    assert [f["key"] for f in failed] == ["broken.png"] and "MediaError" in failed[0]["reason"]
    man = json.loads((tmp_path / "ImageCaptions.manifest.json").read_text())
    assert man["models"][0]["revision"].startswith("local:")
    assert man["settings"]["family"] == "blip"


def test_image_captions_llava_next_batched(media, tmp_path):
    from DataSet.captioners import VisionCaptioner

    cap = VisionCaptioner("image", str(tiny_llava_next(tmp_path / "llava")), max_new_tokens=6)
    assert cap.family == "llava_next" and cap.prompt == "Describe the image in detail."
    assert "USER: <image>" in cap._chat_text("image")
    paths = [media / "images" / f"c{i}.png" for i in range(3)]
    batched = cap.caption(paths)
    assert batched == [cap.caption([p])[0] for p in paths]  # left padding: batch = one by one
    assert all(isinstance(t, str) and t.strip() for t in batched)


def test_video_captions_timesformer_gpt2(media, tmp_path):
    model = tiny_timesformer_gpt2(tmp_path / "ved", num_frames=4)
    out = tmp_path / "MUVideoCaptions.json"
    rc = muvideo.main(["caption", "--media_dir", str(media / "videos"), "--out", str(out),
                       "--model", str(model), "--batch_size", "2", "--num_beams", "1",
                       "--no_progress"])
    assert rc == 0
    caps = json.loads(out.read_text())
    assert set(caps) == {"c0.mp4", "c1.mp4"} and all(caps.values())
    assert json.loads((tmp_path / "MUVideoCaptions.manifest.json").read_text())["settings"][
        "num_frames"] == 4


@pytest.mark.parametrize("modality", ["image", "video"])
def test_instructions_schema_read_by_data(modality, tmp_path):
    ext = ".png" if modality == "image" else ".mp4"
    media_caps = {f"c{i}{ext}": f"a {c} ball on grass" for i, c in enumerate(["red", "blue"])}
    media_caps[f"lonely{ext}"] = "no music for this one"
    music_caps = {"c0.wav": "A calm piano melody.", "c1.wav": "A fast guitar tune."}
    (tmp_path / "m.json").write_text(json.dumps(media_caps))
    (tmp_path / "u.json").write_text(json.dumps(music_caps))
    out = tmp_path / "Instructions.json"
    cli = muimage if modality == "image" else muvideo
    rc = cli.main(["instruct", "--media_captions", str(tmp_path / "m.json"),
                   "--music_captions", str(tmp_path / "u.json"), "--out", str(out),
                   "--no_progress"])
    assert rc == 1  # the unpaired media file is listed as a failure
    items = json.loads(out.read_text())
    assert [(i["input_file"], i["output_file"]) for i in items] == [
        (f"c0{ext}", "c0.wav"), (f"c1{ext}", "c1.wav")]  # media in, music out (not swapped)
    human, gpt = items[0]["conversation"]
    assert human["value"].startswith(f"Generate a music for the {modality} that is")
    assert human["input_modality"] == modality and human["caption"] == "a red ball on grass"
    assert gpt["output_modality"] == "audio" and gpt["caption"] == "A calm piano melody."
    task = TASK_IMAGE_TO_MUSIC if modality == "image" else TASK_VIDEO_TO_MUSIC
    samples = parse_any_to_music(out, tmp_path / "in", tmp_path / "audios", source="X",
                                 task=task, default_modality=modality)
    assert [s.music_caption for s in samples] == ["A calm piano melody.", "A fast guitar tune."]
    assert samples[0].media == {modality: str(tmp_path / "in" / f"c0{ext}")}
    assert samples[0].output_music == str(tmp_path / "audios" / "c0.wav")
