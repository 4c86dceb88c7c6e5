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
from DataSet.instructions import TEMPLATE_POOL

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
                       "--model", str(model), "--batch_size", "2", "--no_progress"])
    assert rc == 1  # the broken image is a listed failure
    caps = json.loads(out.read_text())
    assert set(caps) == {"c0.png", "c1.png", "c2.png"}
    assert all(c.startswith("the image shows") for c in caps.values())  # published prompt
    from transformers import BertTokenizer

    tok = BertTokenizer.from_pretrained(model)
    # what the published script ran: the model's own generation config (greedy, 20 tokens in
    # all, prompt included), not the beam 4 / length 100 it defined and never passed
    assert all(len(tok(c)["input_ids"]) <= 20 for c in caps.values())
    prog = (tmp_path / "ImageCaptions.progress.jsonl").read_text().splitlines()
    failed = [json.loads(x) for x in prog if json.loads(x)["status"] == "failed"]
    assert [f["key"] for f in failed] == ["broken.png"] and "MediaError" in failed[0]["reason"]
    man = json.loads((tmp_path / "ImageCaptions.manifest.json").read_text())
    assert man["models"][0]["revision"].startswith("local:")
    assert man["settings"]["family"] == "blip"
    assert man["settings"]["generate"] == {"num_beams": 1, "max_length": 20, "do_sample": False,
                                           "from_model_generation_config": ["max_length",
                                                                            "num_beams"]}
    assert "never passed" in man["settings"]["source"]


def test_a_model_folder_missing_weights_is_refused(media, tmp_path):
    from safetensors.torch import load_file, save_file

    model = tiny_blip(tmp_path / "blip")
    weights = load_file(model / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "text_decoder.cls" not in k},
              str(model / "model.safetensors"), metadata={"format": "pt"})
    args = ["caption", "--media_dir", str(media / "images"), "--out",
            str(tmp_path / "caps.json"), "--model", str(model), "--no_progress"]
    assert muimage.main(args) == 2
    assert not (tmp_path / "caps.json").exists()
    assert muimage.main([*args, "--allow_random_weights"]) == 1  # runs; broken.png fails


def test_image_captions_llava_next_as_published_v2(media, tmp_path):
    from DataSet.captioners import IMAGE_PROMPT_MUSIC, VisionCaptioner

    cap = VisionCaptioner("image", str(tiny_llava_next(tmp_path / "llava")), max_new_tokens=6,
                          retries=1)
    assert cap.family == "llava_next" and cap.prompt == IMAGE_PROMPT_MUSIC
    assert cap.prompt.startswith("Describe the image within one sentence") and \
        "Recognize all the instruments" in cap.prompt
    assert "USER: <image>" in cap._chat_text("image")
    g = cap.settings["generate"]
    assert (g["temperature"], g["top_p"], g["num_beams"]) == (0.2, 1.0, 1)
    assert cap.settings["one_paragraph_check"] and "llava_caption.py" in g["source"]
    items = [(f"c{i}.png", media / "images" / f"c{i}.png") for i in range(3)]
    batched = cap.caption(items)
    alone = [cap.caption([it])[0] for it in items]
    assert [str(x) for x in batched] == [str(x) for x in alone]  # seeded per file, not batch
    for x in batched:  # a random model's text rarely ends with a full stop: retried, listed
        assert (isinstance(x, str) and x.endswith(".") and "\n" not in x) or \
            "2 captions rejected" in str(x)
    greedy = VisionCaptioner("image", str(tmp_path / "llava"), max_new_tokens=6,
                             temperature=0.0, retries=0)
    assert greedy.settings["overridden"] == ["max_new_tokens", "temperature"]


def test_video_captions_timesformer_gpt2(media, tmp_path):
    model = tiny_timesformer_gpt2(tmp_path / "ved", num_frames=4)
    out = tmp_path / "MUVideoCaptions.json"
    rc = muvideo.main(["caption", "--media_dir", str(media / "videos"), "--out", str(out),
                       "--model", str(model), "--batch_size", "2", "--num_beams", "1",
                       "--no_progress"])
    assert rc == 0
    settings = json.loads((tmp_path / "MUVideoCaptions.manifest.json").read_text())["settings"]
    assert settings["generate"] == {"num_beams": 1, "max_length": 200, "min_length": 20}
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
    (tmp_path / "t.json").write_text(json.dumps({"c0": ["Music", "Piano", "Musical instrument"]}))
    out = tmp_path / "Instructions.json"
    cli = muimage if modality == "image" else muvideo
    rc = cli.main(["instruct", "--media_captions", str(tmp_path / "m.json"),
                   "--music_captions", str(tmp_path / "u.json"), "--tags",
                   str(tmp_path / "t.json"), "--out", str(out), "--no_progress"])
    assert rc == 1  # the unpaired media file is listed as a failure
    items = json.loads(out.read_text())
    assert [(i["input_file"], i["output_file"]) for i in items] == [
        (f"c0{ext}", "c0.wav"), (f"c1{ext}", "c1.wav")]  # media in, music out (not swapped)
    pool = {p.format(m=modality) for p in TEMPLATE_POOL}
    for item, music in zip(items, music_caps.values()):
        human, gpt = item["conversation"]
        assert human["value"] in pool  # drawn from the pool: no word of the target music
        assert "piano" not in human["value"].lower() and "guitar" not in human["value"].lower()
        assert human["input_modality"] == modality
        assert gpt["output_modality"] == "audio" and gpt["caption"] == music
    human, gpt = items[0]["conversation"]
    assert human["caption"] == "a red ball on grass"
    assert gpt["value"] == (f"Here is a music for the {modality} that is a calm piano melody, "
                            "with Piano.")  # the tags, without Music / Musical instrument
    task = TASK_IMAGE_TO_MUSIC if modality == "image" else TASK_VIDEO_TO_MUSIC
    samples = parse_any_to_music(out, tmp_path / "in", tmp_path / "audios", source="X",
                                 task=task, default_modality=modality)
    assert [s.music_caption for s in samples] == ["A calm piano melody.", "A fast guitar tune."]
    assert samples[0].media == {modality: str(tmp_path / "in" / f"c0{ext}")}
    assert samples[0].output_music == str(tmp_path / "audios" / "c0.wav")


@pytest.mark.usefixtures("one_thread")
def test_pool_from_an_llm_feeds_the_human_turns(tmp_path):
    from tiny_models import tiny_chat_llm

    model = tiny_chat_llm(tmp_path / "llm", words_only=True)
    pool = tmp_path / "VideoPool.json"
    rc = muvideo.main(["pool", "--out", str(pool), "--writer", "llm", "--model", str(model),
                       "--size", "6", "--max_new_tokens", "8", "--retries", "1",
                       "--batch_size", "4", "--no_progress"])
    data = json.loads(pool.read_text())
    assert data["modality"] == "video" and len(data["instructions"]) >= 3
    prog = [json.loads(x) for x in (tmp_path / "VideoPool.progress.jsonl").read_text().splitlines()]
    assert len(prog) == 6 and rc == (0 if all(p["status"] == "done" for p in prog) else 1)
    for text in data["instructions"]:
        assert text.startswith("Generate") and not any(c.isdigit() or c in "()" for c in text)
    caps = {"c0.mp4": "a red ball", "c1.mp4": "a blue ball", "c2.mp4": "a dog"}
    (tmp_path / "m.json").write_text(json.dumps(caps))
    (tmp_path / "u.json").write_text(json.dumps({k.replace(".mp4", ".wav"): "A calm tune."
                                                 for k in caps}))
    outs = []
    for seed in ("0", "0", "5"):
        out = tmp_path / f"I{len(outs)}.json"
        assert muvideo.main(["instruct", "--media_captions", str(tmp_path / "m.json"),
                             "--music_captions", str(tmp_path / "u.json"), "--pool", str(pool),
                             "--seed", seed, "--out", str(out), "--no_progress"]) == 0
        outs.append([i["conversation"][0]["value"] for i in json.loads(out.read_text())])
    assert all(h in data["instructions"] for h in outs[0])
    assert outs[0] == outs[1]  # seeded per item
    template_pool = tmp_path / "TemplatePool.json"
    assert muvideo.main(["pool", "--out", str(template_pool), "--no_progress"]) == 0
    assert len(json.loads(template_pool.read_text())["instructions"]) == len(TEMPLATE_POOL)
