"""`Evaluation.imagebind`: checkpoint names/shapes, strict loading, the towers' math, the
reference preprocessing, and `image2music` / `video2music score --relevance_model imagebind`."""

import functools
import json
import math
import shutil
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import Evaluation.imagebind as IB
from Evaluation import image2music as I
from Evaluation import video2music as V
from Evaluation.imagebind import preprocess as P
from Evaluation.imagebind.config import HUGE, USED, ImageBindConfig, checkpoint_shapes, modality_of
from Evaluation.imagebind.model import ImageBindVisionAudio
from Evaluation.imagebind.relevance import ImageBindRelevance, load_model
from Evaluation.music_scoring import Scorers, comparable
from Evaluation.music_tasks import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ImageBindConfig(out_dim=8, vision_dim=16, vision_layers=1, vision_heads=2, image_size=28,
                       audio_dim=16, audio_layers=2, audio_heads=2, text_dim=8, text_layers=1,
                       vocab=40, context=9, depth_dim=8, depth_layers=1, thermal_dim=8,
                       thermal_layers=1, imu_dim=8, imu_layers=1, imu_length=80)


def _ours(cfg):
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in ImageBindVisionAudio(cfg).state_dict().items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, path): a random tiny model and a full checkpoint file holding its tensors plus
    random tensors for every other modality, under the reference names."""
    torch.manual_seed(0)
    model = ImageBindVisionAudio(TINY).eval()
    with torch.no_grad():  # random, not the near-identity init: outputs must depend on weights
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    state = dict(model.state_dict())
    for k, shape in checkpoint_shapes(TINY).items():
        state.setdefault(k, torch.randn(shape))
    path = tmp_path_factory.mktemp("imagebind") / "imagebind_tiny.pth"
    torch.save(state, path)
    return model, path


def test_huge_parameter_names_and_shapes_equal_the_checkpoint_list():
    want = checkpoint_shapes(HUGE)
    assert _ours(HUGE) == {k: s for k, s in want.items() if modality_of(k) in USED}
    # facts of imagebind_huge.pth (1.2 B float32 values, ~4.8 GB), from the model definition
    assert len(want) == 1311 and sum(math.prod(s) for s in want.values()) == 1_200_786_990
    assert want["modality_preprocessors.vision.rgbt_stem.proj.1.weight"] == (1280, 3, 2, 14, 14)
    assert want["modality_preprocessors.vision.pos_embedding_helper.pos_embed"] == (1, 257, 1280)
    assert want["modality_preprocessors.audio.pos_embedding_helper.pos_embed"] == (1, 229, 768)
    assert want["modality_trunks.audio.blocks.11.attn.bias_k"] == (1, 1, 768)
    assert "modality_trunks.vision.blocks.0.attn.bias_k" not in want
    assert want["modality_trunks.vision.blocks.31.mlp.fc1.weight"] == (5120, 1280)
    assert want["modality_preprocessors.text.mask"] == (77, 77)
    assert want["modality_heads.text.proj.1.weight"] == (1024, 1024)
    assert want["modality_heads.imu.3.weight"] == (1024, 512)
    assert want["modality_preprocessors.depth.depth_stem.proj.weight"] == (384, 1, 16, 16)
    assert want["modality_postprocessors.audio.1.log_logit_scale"] == ()
    assert not any(k.startswith("modality_postprocessors.vision") for k in want)


def test_tiny_checkpoint_loads_strictly_and_reproduces_the_model(tiny):
    model, path = tiny
    loaded = load_model(path, TINY)
    assert _ours(TINY) == {k: tuple(v.shape) for k, v in loaded.state_dict().items()}
    torch.manual_seed(1)
    image = torch.randn(2, 3, 28, 28)
    clips = torch.randn(1, 4, 3, 2, 28, 28)
    mel = torch.randn(2, 3, 1, 128, 204)
    with torch.no_grad():
        for modality, x in (("vision", image), ("vision", clips), ("audio", mel)):
            assert torch.allclose(loaded(modality, x), model(modality, x), atol=1e-6)
        # an image is a 2-frame clip of itself; several clips are averaged after normalisation
        still = image[:1, :, None].repeat(1, 1, 2, 1, 1)
        assert torch.allclose(model("vision", image[:1]), model.embed_clips("vision", still),
                              atol=1e-6)
        per = model.embed_clips("audio", mel[0])
        assert torch.allclose(model("audio", mel[:1])[0], per.mean(0), atol=1e-6)
        assert torch.allclose(per.norm(dim=-1), torch.full((3,), 20.0), atol=1e-4)


def test_checkpoint_errors_name_missing_unexpected_and_misshaped(tiny, tmp_path):
    _, path = tiny
    state = torch.load(path, weights_only=True)
    state.pop("modality_trunks.audio.blocks.1.attn.bias_v")
    state["point_trunk.weight"] = torch.zeros(1)
    state["modality_heads.vision.2.weight"] = torch.zeros(8, 17)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError) as err:
        load_model(bad, TINY)
    msg = str(err.value)
    assert "1 missing (first: modality_trunks.audio.blocks.1.attn.bias_v)" in msg
    assert "1 unexpected (first: point_trunk.weight)" in msg
    assert "modality_heads.vision.2.weight (8, 17) != (8, 16)" in msg
    with pytest.raises(ValueError, match="missing"):
        load_model(path, HUGE)  # a file of another configuration is refused, not half-loaded
    with pytest.raises(FileNotFoundError, match="imagebind_huge.pth"):
        load_model(tmp_path / "absent.pth", TINY)


def test_audio_tower_equals_a_direct_computation(tiny):
    """Patch conv -> LayerNorm -> CLS + positions -> blocks whose attention appends learnt key
    and value tokens -> LayerNorm -> CLS -> projection -> unit vector x 20, by hand."""
    model, _ = tiny
    sd = {k: v.double() for k, v in model.state_dict().items()}
    torch.manual_seed(2)
    x = torch.randn(2, 1, 128, 204, dtype=torch.float64)
    p = "modality_preprocessors.audio."
    t = F.conv2d(x, sd[p + "rgbt_stem.proj.weight"], stride=10).flatten(2).transpose(1, 2)
    t = F.layer_norm(t, (16,), sd[p + "rgbt_stem.norm_layer.weight"],
                     sd[p + "rgbt_stem.norm_layer.bias"], eps=1e-5)
    t = torch.cat([sd[p + "cls_token"].expand(2, -1, -1), t], 1)
    t = t + sd[p + "pos_embedding_helper.pos_embed"]
    for i in range(TINY.audio_layers):
        b = f"modality_trunks.audio.blocks.{i}."
        h = F.layer_norm(t, (16,), sd[b + "norm_1.weight"], sd[b + "norm_1.bias"], eps=1e-6)
        q, k, v = (h @ sd[b + "attn.in_proj_weight"].T + sd[b + "attn.in_proj_bias"]).chunk(3, -1)
        k = torch.cat([k, sd[b + "attn.bias_k"].expand(2, 1, 16)], 1)
        v = torch.cat([v, sd[b + "attn.bias_v"].expand(2, 1, 16)], 1)
        heads = [torch.softmax(q[..., j:j + 8] @ k[..., j:j + 8].transpose(1, 2) / math.sqrt(8),
                               -1) @ v[..., j:j + 8] for j in (0, 8)]
        t = t + torch.cat(heads, -1) @ sd[b + "attn.out_proj.weight"].T \
            + sd[b + "attn.out_proj.bias"]
        h = F.layer_norm(t, (16,), sd[b + "norm_2.weight"], sd[b + "norm_2.bias"], eps=1e-6)
        h = F.gelu(h @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"])
        t = t + h @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"]
    h = F.layer_norm(t, (16,), sd["modality_heads.audio.0.weight"],
                     sd["modality_heads.audio.0.bias"], eps=1e-6)[:, 0]
    want = F.normalize(h @ sd["modality_heads.audio.2.weight"].T, dim=-1) * 20.0
    with torch.no_grad():
        got = model.double().embed_clips("audio", x)
    model.float()
    assert torch.allclose(got, want, atol=1e-9)


def test_clip_starts_follow_the_constant_clips_sampler():
    assert P.clip_starts(10.0, 2, 3) == [0, 4, 8]
    assert P.clip_starts(1.5, 2, 3) == [0, 0, 0]  # shorter than a clip: every clip at 0
    assert P.clip_starts(Fraction(7), 2, 5) == [0, Fraction(5, 4), Fraction(5, 2),
                                                Fraction(15, 4), 5]


def test_image_resize_and_centre_crop_follow_the_reference_rules():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (224, 300, 3), dtype=np.uint8)  # short side already 224
    x = P.image_tensor(rgb)
    ref = (rgb[:, 38:262].astype(np.float32) / 255 - P.CLIP_MEAN) / P.CLIP_STD
    assert x.shape == (3, 224, 224) and np.allclose(x.numpy().transpose(1, 2, 0), ref, atol=1e-6)
    odd = rng.integers(0, 256, (225, 224, 3), dtype=np.uint8)  # offset round(0.5) = 0
    assert np.allclose(P.image_tensor(odd).numpy().transpose(1, 2, 0),
                       (odd[:224].astype(np.float32) / 255 - P.CLIP_MEAN) / P.CLIP_STD,
                       atol=1e-6)
    flat = P.image_tensor(np.full((100, 50, 3), 128, dtype=np.uint8))  # upscaled, bicubic
    assert np.allclose(flat.numpy(), ((128 / 255 - P.CLIP_MEAN) / P.CLIP_STD)[:, None, None],
                       atol=1e-5)


def test_kaldi_fbank_frames_bands_and_dc_removal():
    sr = 16000
    t = np.arange(2 * sr) / sr
    fb = P.kaldi_fbank(np.sin(2 * np.pi * 1000 * t))
    assert fb.shape == (198, 128)  # 1 + (32000 - 400) // 160 whole frames
    banks = P.kaldi_mel_banks()
    assert banks.shape == (128, 257) and not banks[:, -1].any() and not banks[:, 0].any()
    centre_hz = 700 * (np.exp((P._mel(20) + (np.arange(128) + 1) * (P._mel(8000) - P._mel(20))
                               / 129) / 1127) - 1)
    assert abs(centre_hz[fb.mean(0).argmax()] - 1000) < 40
    floor = np.log(np.float32(P.FLOAT32_EPS))
    assert np.allclose(P.kaldi_fbank(np.full(4000, 0.3)), floor)  # per-frame DC removal
    with pytest.raises(ValueError, match="shorter than one 400-sample frame"):
        P.kaldi_fbank(np.zeros(399))


def test_audio_clips_pad_normalise_and_share_a_short_file():
    wave = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    clips = P.audio_clips(wave)
    assert clips.shape == (3, 1, 128, 204)
    assert torch.allclose(clips[0], clips[2], atol=1e-5)  # 1 s: all three clips start at 0
    pad = (0 - P.AUDIO_MEAN) / P.AUDIO_STD
    assert torch.allclose(clips[:, :, :, 98:], torch.full_like(clips[:, :, :, 98:], pad))


def _write_video(path, seconds=7, fps=10, size=(48, 64)):
    """Lossless video whose frame k is filled with the value 3 * k (to read back which frame)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=fps)
        s.height, s.width = size
        s.pix_fmt = "yuv444p"
        for k in range(seconds * fps):
            img = np.full((*size, 3), 3 * k, dtype=np.uint8)
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode())


def test_video_clips_take_first_and_last_frame_of_each_2s_window(tmp_path):
    path = tmp_path / "v.mkv"
    _write_video(path)
    clips = P.video_clip_frames(path)
    got = [[int(round(f[0, 0, 0] / 3)) for f in c] for c in clips]
    # Matroska gives no stream duration, so (as pytorchvideo) the duration is the last frame's
    # timestamp, 6.9 s -> starts 0, 1.225, 2.45, 3.675, 4.9; frames in [s, s + 2) at 10 fps
    assert got == [[0, 19], [13, 32], [25, 44], [37, 56], [49, 68]]
    views = P.video_views(clips, size=28)
    assert views.shape == (15, 3, 2, 28, 28)  # 48x64 -> 28x37, crops at x = 0, 5, 9


def test_image2music_score_with_imagebind(tiny, small_synthetic, tmp_path, capsys, monkeypatch):
    model, path = tiny
    monkeypatch.setattr(IB, "ImageBindRelevance", functools.partial(ImageBindRelevance,
                                                                    config=TINY))
    d = small_synthetic / "MUImage"
    rows = json.loads((d / "MUImageInstructions.json").read_text())[:3]
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps(rows))
    other = tmp_path / "shuffled"
    other.mkdir()
    names = [r["output_file"] for r in rows]
    for a, b in zip(names, names[1:] + names[:1]):
        shutil.copy(d / "audios" / a, other / b)
    argv = ["score", "--predictions", str(d / "audios"), str(other), "--references", str(refs),
            "--target_dir", str(d / "audios"), "--media_dir", str(d / "images"),
            "--relevance_model", "imagebind", "--imagebind_weights", str(path)]
    assert main(I.SPEC, I.__doc__, argv) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["models"]["relevance"].startswith("imagebind(") and "CLAP" not in \
        rep["models"]["relevance"]
    rel = {n: s["relevance"] for n, s in rep["systems"].items()}
    assert all(r["rows_ranked"] == 3 and r["systems_ranked"] == 2 for r in rel.values())
    assert rel["audios"]["mean_rank"] + rel["shuffled"]["mean_rank"] == pytest.approx(3.0)
    # the reported similarity is the mean cosine of direct ImageBind embeddings
    from data.media import load_audio

    scorer = ImageBindRelevance(path, config=TINY)
    img = scorer.media_embeddings("image", [d / "images" / r["input_file"] for r in rows])
    aud = np.stack(scorer.audio([load_audio(d / "audios" / n, 16000) for n in names]))
    assert rel["audios"]["similarity"] == pytest.approx(scorer.similarity(img, aud).mean(),
                                                        abs=1e-9)
    assert rep["comparable_with_paper"]["relevance"] is False  # a tiny model is not the paper's
    sc = Scorers(relevance=type("R", (), {"identity": "imagebind_huge:imagebind_huge.pth"})())
    assert comparable(I.SPEC, sc)["relevance"] is True

    assert main(I.SPEC, I.__doc__, argv[:-2]) == 2  # imagebind asked for without weights
    assert "needs --imagebind_weights" in capsys.readouterr().err


def test_video_embeddings_average_fifteen_views(tiny, small_synthetic):
    model, path = tiny
    scorer = ImageBindRelevance(path, config=TINY, batch_size=4)
    video = sorted((small_synthetic / "MUVideo" / "videos").iterdir())[0]
    emb = scorer.media_embeddings("video", [video])
    views = P.video_views(P.video_clip_frames(video), 28)
    with torch.no_grad():
        want = model.embed_clips("vision", views).mean(0)
    assert emb.shape == (1, 8) and np.allclose(emb[0], want.double().numpy(), atol=1e-6)
    assert V.SPEC.modality == "video"
