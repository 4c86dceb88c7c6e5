"""The whole chain on a small folder of media: filter -> music / image / video captions ->
MUEdit edits -> instructions for MUImage, MUVideo, MUEdit and MusicQA, every file where
`data.paths.DataPaths.from_root` looks for it; then `train.sh --preset tiny` trains one epoch
per stage on the generated dataset."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_models import tiny_blip, tiny_timesformer_gpt2

from data.synthetic import draw_image, render_video, synth_music, write_mp4, write_music
from DataSet import mucaps, muedit, muimage, musicqa, muvideo

REPO = Path(__file__).resolve().parents[2]
CLIPS = [({"instrument": "piano", "register": "low", "tempo": "slow"},
          {"colour": "red", "size": "large"}, {"colour": "red", "brightness": "brightening"}),
         ({"instrument": "flute", "register": "high", "tempo": "fast"},
          {"colour": "blue", "size": "small"}, {"colour": "blue", "brightness": "darkening"})]


def _media(root: Path, speech: Path) -> None:
    rng = np.random.default_rng(0)
    for i, (music, image, video) in enumerate(CLIPS):
        wave = synth_music(music, rng, seconds=2.0)
        for folder in ("MUCaps", "MUImage", "MUVideo", "MusicQA"):
            write_music(root / folder / "audios" / f"clip{i}.wav", wave)
        write_music(root / "MUEdit" / "audios" / "src" / f"clip{i}.wav", wave)
        (root / "MUImage" / "images").mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.fromarray(draw_image(image, rng)).save(root / "MUImage" / "images" / f"clip{i}.png")
        (root / "MUVideo" / "videos").mkdir(parents=True, exist_ok=True)
        write_mp4(root / "MUVideo" / "videos" / f"clip{i}.mp4", render_video(video, rng))
    shutil.copy(speech, root / "MUCaps" / "audios" / "talk.wav")  # the filter must drop it


@pytest.mark.slow
def test_generated_dataset_trains_one_epoch_per_stage(tmp_path, espeak_wav):
    d, w = tmp_path / "data", tmp_path / "work"
    _media(d, espeak_wav)
    quiet = ["--no_progress"]
    assert mucaps.main(["filter", "--audio_dir", str(d / "MUCaps/audios"),
                        "--out", str(w / "filter.json"), "--max_silence_ratio", "0.9",
                        *quiet]) == 0  # the synthetic slow piano rests between notes
    caps = d / "MUCaps/MUCapsCaptions.json"
    assert mucaps.main(["caption", "--audio_dir", str(d / "MUCaps/audios"), "--filter",
                        str(w / "filter.json"), "--out", str(caps), "--preset", "tiny",
                        "--device", "cpu", "--batch_size", "2", "--max_new_tokens", "8",
                        "--allow_random_weights", *quiet]) == 0
    assert set(json.loads(caps.read_text())) == {"clip0.wav", "clip1.wav"}  # no speech
    blip, ved = tiny_blip(w / "blip"), tiny_timesformer_gpt2(w / "ved")
    img_caps, vid_caps = w / "ImageCaptions.json", d / "MUVideo/MUVideoCaptions.json"
    assert muimage.main(["caption", "--media_dir", str(d / "MUImage/images"), "--out",
                         str(img_caps), "--model", str(blip), "--num_beams", "1",
                         "--max_length", "20", *quiet]) == 0
    assert muvideo.main(["caption", "--media_dir", str(d / "MUVideo/videos"), "--out",
                         str(vid_caps), "--model", str(ved), "--num_beams", "1",
                         "--max_length", "16", *quiet]) == 0
    for cli, media_caps, out in ((muimage, img_caps, d / "MUImage/MUImageInstructions.json"),
                                 (muvideo, vid_caps, d / "MUVideo/MUVideoInstructions.json")):
        assert cli.main(["instruct", "--media_captions", str(media_caps), "--music_captions",
                         str(caps), "--out", str(out), *quiet]) == 0
    ed = d / "MUEdit/audios"
    assert muedit.main(["speed", "--audio_dir", str(ed / "src"), "--out_dir", str(ed),
                        "--factors", "0.7,1.5", *quiet]) == 0
    assert muedit.main(["pitch", "--audio_dir", str(ed / "src"), "--out_dir", str(ed),
                        "--cents", "-500,500", *quiet]) == 0
    assert muedit.main(["instruct", "--audio_root", str(ed), "--captions", str(caps),
                        "--edits", str(ed / "speed.json"), str(ed / "pitch.json"),
                        "--out", str(d / "MUEdit/MUEditInstructions.json"), *quiet]) == 0
    assert musicqa.main(["write", "--writer", "template", "--captions", str(caps), "--out",
                         str(d / "MusicQA/MusicQA.json"), "--questions_per_clip", "1",
                         *quiet]) == 0

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHON": sys.executable, "STAGE3_ARGS": "--projector_refit_steps 10"}
    cmd = ["bash", str(REPO / "train.sh"), "--preset", "tiny", "--data_root", str(d),
           "--output_dir", str(tmp_path / "out"), "--epochs", "1",
           "--data", "alpaca=", f"coco_captions={img_caps}",
           f"coco_images={d / 'MUImage/images'}"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    for stage in (1, 2, 3):
        log = tmp_path / "out" / f"stage{stage}" / "train_log.jsonl"
        epochs = [r for r in map(json.loads, log.read_text().splitlines()) if "skipped" in r]
        assert epochs and epochs[-1]["skipped"] == 0
        assert (tmp_path / "out" / f"stage{stage}" / "checkpoint" / "model.safetensors").is_file()
    # every generated file is in the stage mixes (stage 2 and 3 may add replayed samples)
    counts = {int(m[0]): ast.literal_eval(m[1])
              for m in re.findall(r"^stage (\d): \d+ samples (\{.*?\});", res.stdout, re.M)}
    assert counts[1] == {"audio_caption": 2, "image_caption": 2, "video_caption": 2}, counts
    assert counts[2]["text_to_music"] == 2
    refit = json.loads((tmp_path / "out/stage3/train_log.jsonl").read_text().splitlines()[-1])
    # the stage's own music samples and the replayed stage-2 ones (caption -> music)
    assert refit["projector_refit"]["rows"] == 12 + counts[3].get("text_to_music", 0)
    for task, n in (("music_qa", 10), ("image_to_music", 2), ("video_to_music", 2),
                    ("music_edit", 8)):
        assert counts[3][task] == n, counts[3]
