"""Our PaSST against hear21passt's own outputs (passt_reference/README.md), and its loading."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from Evaluation.metrics import passt as PS

pytestmark = pytest.mark.usefixtures("one_thread")

REF = Path(__file__).parent / "passt_reference"
WEIGHTS = REF / "passt_tiny_weights.safetensors"
TINY_HEADS = 4  # the reduced reference network: 64 wide, 2 blocks, 4 heads


def _signals() -> dict[str, np.ndarray]:
    speech = sf.read(REF / "speech_32k.wav", dtype="int16")[0]
    music = sf.read(REF / "music_32k.wav", dtype="int16")[0]
    mix = ((speech.astype(np.int32) + music.astype(np.int32)) // 2).astype(np.int16)
    return {name: x.astype(np.float32) / 32768 for name, x in
            (("speech", speech), ("music", music), ("mix", mix))}


@pytest.fixture(scope="module")
def reference():
    with np.load(REF / "passt_reference.npz") as z:
        return dict(z)


@pytest.fixture(scope="module")
def tiny():
    return PS.PasstClassifier(WEIGHTS, heads=TINY_HEADS)


def test_mel_front_end_equals_hear21passt(reference):
    mel = PS.PasstMel()
    for name, wave in _signals().items():
        ours = mel(torch.from_numpy(wave)[None])[0].numpy()
        assert ours.shape == reference[f"{name}.mel"].shape == (128, 200)
        np.testing.assert_allclose(ours, reference[f"{name}.mel"], rtol=0, atol=1e-4)


def test_mel_test_can_fail(reference):
    """A front end 1 kHz off in its top mel edge (no augmentation margin) is caught."""
    wrong = PS.PasstMel(PS.PasstConfig(fmax=16000.0))
    ours = wrong(torch.from_numpy(_signals()["music"])[None])[0].numpy()
    assert np.abs(ours - reference["music.mel"]).max() > 1e-2


def test_logits_end_to_end_equal_hear21passt(tiny, reference):
    for name, wave in _signals().items():
        np.testing.assert_allclose(tiny.logits(wave), reference[f"{name}.logits"], rtol=0,
                                   atol=1e-5)


def test_ten_second_input_uses_every_time_encoding(tiny, reference):
    """1000 frames = 99 patch columns, the whole time positional encoding."""
    mel = torch.from_numpy(reference["music10s.mel_f16"].astype(np.float32))[None, None]
    with torch.no_grad():
        ours = tiny.model(mel)[0].numpy()
    np.testing.assert_allclose(ours, reference["music10s.logits"], rtol=0, atol=1e-5)
    assert tiny.model.time_new_pos_embed.shape[-1] == 99


def test_probs_are_the_softmax_of_the_first_ten_seconds(tiny):
    rng = np.random.default_rng(0)
    long = (0.1 * rng.standard_normal(12 * 32000)).astype(np.float32)
    p = tiny.probs([long, long[:10 * 32000]])
    np.testing.assert_allclose(p[0], p[1], atol=1e-12)  # only the first 10 s are read
    logits = tiny.logits(long)
    np.testing.assert_allclose(p[0], np.exp(logits) / np.exp(logits).sum(), atol=1e-12)
    with pytest.raises(ValueError, match="at least"):
        tiny.logits(long[:4000])


def test_published_architecture_is_inferred_from_the_checkpoint_shapes():
    with torch.device("meta"):
        state = PS.Passt(PS.PASST_S).state_dict()
    assert len(state) == 7 + 12 * 12 + 8 and PS.infer_config(state) == PS.PASST_S
    assert state["time_new_pos_embed"].shape == (1, 768, 1, 99)
    assert state["freq_new_pos_embed"].shape == (1, 768, 12, 1)
    tiny = PS.infer_config(PS.read_state_dict(WEIGHTS), heads=TINY_HEADS)
    assert (tiny.embed_dim, tiny.depth, tiny.classes) == (64, 2, 527) and tiny != PS.PASST_S
    assert PS.PasstClassifier(WEIGHTS, heads=TINY_HEADS).is_published_architecture is False


def test_wrapper_and_torch_checkpoints_load_and_bad_ones_are_named(tmp_path, tiny):
    state = PS.read_state_dict(WEIGHTS)
    wrapped = {f"net.{k}": v.float() for k, v in state.items()}
    wrapped["device_proxy"] = torch.zeros(1)  # hear21passt's wrapper state dict
    torch.save(wrapped, tmp_path / "wrapper.pt")
    wave = _signals()["speech"]
    again = PS.PasstClassifier(tmp_path / "wrapper.pt", heads=TINY_HEADS)
    np.testing.assert_allclose(again.logits(wave), tiny.logits(wave), atol=1e-6)
    broken = {k: v for k, v in state.items() if k != "blocks.1.mlp.fc2.bias"}
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="blocks.1.mlp.fc2.bias"):
        PS.load_passt(tmp_path / "broken.pt", heads=TINY_HEADS)
    with pytest.raises(FileNotFoundError, match="passt-s-f128"):
        PS.load_passt(tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="heads"):
        PS.load_passt(WEIGHTS, heads=5)


def test_unreadable_or_unsafe_files_are_refused_with_their_name(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a readable PaSST state dict"):
        PS.read_state_dict(tmp_path / "junk.pt")
    torch.save({"weights": PS.read_state_dict(WEIGHTS), "run": object()}, tmp_path / "pickle.pt")
    with pytest.raises(ValueError, match="pickle.pt: not a readable"):  # weights_only refuses
        PS.read_state_dict(tmp_path / "pickle.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="bad.safetensors"):
        PS.read_state_dict(tmp_path / "bad.safetensors")
