"""Audio metrics against direct formulas; CLAP score on a tiny ClapModel; VGGish loading."""

import numpy as np
import pytest
import torch
from scipy import linalg

from Evaluation.metrics import audio as A


def test_fad_equals_direct_numpy_scipy_and_zero_for_identical_sets():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 8))
    b = rng.normal(loc=0.5, scale=1.3, size=(150, 8))
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    direct = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * np.real(linalg.sqrtm(s1 @ s2)))
    assert A.fad(a, b) == pytest.approx(direct, rel=1e-10)
    assert A.fad(a, a) == pytest.approx(0.0, abs=1e-8)
    assert A.fad(a, b) > 1.0
    with pytest.raises(ValueError, match="NaN"):
        A.fad(a, np.full((3, 8), np.nan))


def test_kl_matches_the_published_torch_formula():
    rng = np.random.default_rng(1)
    t = A.softmax(rng.normal(size=(6, 527)))
    g = A.softmax(rng.normal(size=(6, 527)))
    t[0, :10] = 0.0  # zero target mass contributes nothing
    ref = torch.nn.functional.kl_div((torch.tensor(g) + 1e-6).log(), torch.tensor(t),
                                     reduction="none").sum(-1).mean().item()
    assert A.kl_target_generated(t, g) == pytest.approx(ref, rel=1e-9)
    assert A.kl_target_generated(t, t) == pytest.approx(0.0, abs=1e-3)


def test_relevance_rank_is_one_for_the_most_similar_system():
    sims = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.8]])
    np.testing.assert_allclose(A.relevance_ranks(sims), [[1, 3, 2], [3, 1.5, 1.5]])
    expected = [(1 + 1 / 3) / 2, (1 / 3 + 1 / 1.5) / 2, (0.5 + 1 / 1.5) / 2]
    np.testing.assert_allclose(A.mean_reciprocal_rank(sims), expected)


def test_fixed_chunks_match_fad_pytorch_framing():
    w = np.arange(300000, dtype=np.float32)
    c = A.fixed_chunks(w)
    assert c.shape == (10, 26214)
    assert c[1, 0] == 26214 and c[-1, -1] == 10 * 26214 - 1
    short = A.fixed_chunks(np.ones(1000))
    assert short[0, :1000].sum() == 1000 and short[1:].sum() == 0  # zero-padded


def test_clap_score_on_a_tiny_clap_model(tmp_path):
    from transformers import (ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel,
                              ClapProcessor, ClapTextConfig, RobertaTokenizer)

    from Evaluation.models import ClapEmbedder

    torch.manual_seed(0)
    text = ClapTextConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1,
                          num_attention_heads=2, intermediate_size=16, max_position_embeddings=64,
                          projection_dim=8)
    audio = ClapAudioConfig(spec_size=256, window_size=8, num_mel_bins=64,
                            patch_embeds_hidden_size=8,
                            hidden_size=16, depths=[1, 1], num_heads=[1, 1], patch_stride=(4, 4),
                            projection_dim=8)
    ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(),
                         projection_dim=8)).save_pretrained(tmp_path)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in "abcdefghijklmnopqrstuvwxyz ":
        vocab.setdefault(ch, len(vocab))
    ClapProcessor(feature_extractor=ClapFeatureExtractor(feature_size=64, truncation="rand_trunc"),
                  tokenizer=RobertaTokenizer(vocab=vocab, merges=[])).save_pretrained(tmp_path)
    clap = ClapEmbedder(str(tmp_path))
    t = np.arange(48000) / 48000
    waves = [np.sin(2 * np.pi * f * t).astype(np.float32) for f in (220, 880)]
    ae, te = clap.audio(waves), clap.text(["slow piano", "fast flute"])
    assert ae.shape == te.shape == (2, 8)
    score = A.clap_score(ae, te)
    direct = np.mean([ae[i] @ te[i] / np.linalg.norm(ae[i]) / np.linalg.norm(te[i])
                      for i in range(2)])
    assert score == pytest.approx(direct, abs=1e-6)


def test_vggish_loads_a_torchvggish_state_dict(tmp_path):
    from Evaluation.models import VGGish, VGGishEmbedder

    torch.manual_seed(0)
    with torch.device("meta"):
        shapes = VGGish().state_dict()
    sd = {k: torch.randn(v.shape) * 0.01 for k, v in shapes.items()}
    sd["pproc._pca_matrix"] = torch.zeros(128, 128)  # torchvggish files carry the PCA too
    torch.save(sd, tmp_path / "vggish.pth")
    emb = VGGishEmbedder(tmp_path / "vggish.pth").embed(np.random.default_rng(0).normal(size=32000))
    assert emb.shape == (2, 128) and (emb < 0).any()  # pre-ReLU embeddings, as the paper's FAD
