"""`Evaluation.relevance` (captioner + CLAP fallback) and the ranking of systems in `score`."""

import numpy as np
import pytest

from Evaluation.models import ClapEmbedder
from Evaluation.music_scoring import _relevance
from Evaluation.music_rows import MusicRow
from Evaluation.relevance import CaptionClapRelevance

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def relevance(scoring_models):
    clap = ClapEmbedder(str(scoring_models["clap"]))
    return CaptionClapRelevance(str(scoring_models["blip"]), clap, video_frames=3)


def test_image_and_video_embeddings_are_mean_caption_embeddings(relevance, small_synthetic):
    images = sorted((small_synthetic / "MUImage" / "images").iterdir())[:2]
    emb = relevance.media_embeddings("image", images)
    assert emb.shape == (2, 8) and np.allclose(np.linalg.norm(emb, axis=1), 1)
    caps = relevance.last_captions
    assert [len(c) for c in caps] == [1, 1]
    direct = relevance.clap.text(caps[0])[0]
    assert np.allclose(emb[0], direct / np.linalg.norm(direct), atol=1e-6)

    video = sorted((small_synthetic / "MUVideo" / "videos").iterdir())[0]
    vemb = relevance.media_embeddings("video", [video])
    frames = relevance.last_captions[0]
    assert len(frames) == 3  # one caption per sampled frame
    t = relevance.clap.text(frames)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    assert np.allclose(vemb[0], t.mean(0) / np.linalg.norm(t.mean(0)), atol=1e-6)


def test_similarity_is_the_rowwise_cosine():
    a, b = np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 0.0], [-1.0, -1.0]])
    assert np.allclose(CaptionClapRelevance.similarity(a, b), [1.0, -1.0])


def test_relevance_requires_an_image_or_video(relevance, small_synthetic):
    with pytest.raises(ValueError, match="image or video"):
        relevance.frames("audio", small_synthetic / "attributes.json")


def test_systems_are_ranked_on_the_rows_they_share():
    rows = [MusicRow(k, "p", "c", "m", "t") for k in ("a", "b", "c")]
    systems = {"x": {"_sims": np.array([0.9, 0.1, 0.5])},
               "y": {"_sims": np.array([0.2, 0.3])}}  # y has no row "c"
    _relevance(systems, {"x": rows, "y": rows[:2]})
    x, y = systems["x"]["relevance"], systems["y"]["relevance"]
    assert x["rows_ranked"] == y["rows_ranked"] == 2
    assert (x["mean_rank"], y["mean_rank"]) == (1.5, 1.5)  # x wins row a, y wins row b
    assert x["mrr"] == pytest.approx(0.75) and x["similarity"] == pytest.approx(0.5)
