"""Each published MusicQA variant equals the library call it reproduces, row by row."""

import numpy as np
import pytest

from Evaluation.metrics import text as T
from Evaluation.metrics.wordnet import use_project_wordnet

# Real answers in the EvalMusicQA style (reference, candidate), incl. an empty candidate.
PAIRS = [
    ("The audio is an alternative rock post-rock electronic experimental track.",
     "This is an experimental electronic rock track."),
    ("The music has a slow tempo with a melancholic piano melody and soft strings.",
     "A slow, sad piano melody with strings in the background."),
    ("The mood of the audio is energetic and uplifting.", "The mood is happy."),
    ("The main instrument is the acoustic guitar.", ""),
    ("It features drums, bass and a distorted electric guitar playing power chords!",
     "Drums, bass, and guitars are playing."),
]

REFS = [r for r, _ in PAIRS]
CANDS = [c for _, c in PAIRS]


def test_char_bleu_is_nltk_sentence_bleu_on_raw_strings():
    from nltk.translate.bleu_score import sentence_bleu

    for ref, cand in PAIRS:
        assert T.char_bleu(cand, ref) == sentence_bleu([ref], cand)
        assert T.char_bleu(cand, ref, T.BLEU4_WEIGHTS) == sentence_bleu(
            [ref], cand, weights=(0.0, 0.0, 0.0, 1.0))
    # character n-grams: a word-order shuffle keeps most character 4-grams
    assert T.char_bleu("rock track alternative", "alternative rock track") > 0.5


def test_meteor_is_nltk_meteor_on_wordpunct_tokens():
    from nltk.tokenize import wordpunct_tokenize
    from nltk.translate.meteor_score import meteor_score

    use_project_wordnet()
    for ref, cand in PAIRS:
        assert T.meteor(cand, ref) == meteor_score([wordpunct_tokenize(ref)],
                                                   wordpunct_tokenize(cand))
    # WordNet synonymy is in play (offline data folder): "sad" ~ "melancholic" is not, but
    # stems are: "playing" vs "plays"
    assert T.meteor("guitars playing", "guitar plays") > 0.4


def test_rouge_l_is_rouge_score_with_stemmer():
    from rouge_score import rouge_scorer

    sc = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for ref, cand in PAIRS:
        s = sc.score(ref, cand)["rougeL"]
        assert T.rouge_l(cand, ref) == (s.precision, s.recall, s.fmeasure)


def test_row_scores_and_published_mean():
    rs = T.row_scores(CANDS, REFS)
    assert rs.bleu[3] == rs.meteor[3] == rs.rouge_l_recall[3] == 0.0  # empty candidate
    assert T.published_mean(rs.bleu) == pytest.approx(sum(rs.bleu) / len(rs.bleu), abs=1e-15)
    with pytest.raises(ValueError):
        T.row_scores(CANDS, REFS[:-1])


def test_sacrebleu_corpus_is_sacrebleu():
    import sacrebleu

    assert T.sacrebleu_corpus(CANDS, REFS) == sacrebleu.corpus_bleu(CANDS, [REFS]).score


def test_bert_scores_equal_bert_score_score(tiny_bert_dir):
    from bert_score import score

    cands, refs = [c for c in CANDS if c], [r for r, c in PAIRS if c]
    p, r, f = T.bert_scores(cands, refs, model=str(tiny_bert_dir), num_layers=2)
    P, R, F = score(cands, refs, model_type=str(tiny_bert_dir), num_layers=2)
    np.testing.assert_allclose(r, R.double().numpy(), atol=1e-7)
    np.testing.assert_allclose(f, F.double().numpy(), atol=1e-7)
    assert abs(T.published_mean(r) - R.mean().item()) < 1e-6


def test_bert_scores_accept_empty_candidates(tiny_bert_dir):
    """bert_score 0.3.13 cannot encode "" with transformers 5 tokenizers; ours scores it as
    <s></s> (what bert_score meant) and leaves the other rows exactly as the library does."""
    p, r, f = T.bert_scores(CANDS, REFS, model=str(tiny_bert_dir), num_layers=2)
    assert np.isfinite(r).all() and len(r) == len(CANDS)
    keep = [i for i, c in enumerate(CANDS) if c]
    p2, r2, f2 = T.bert_scores([CANDS[i] for i in keep], [REFS[i] for i in keep],
                               model=str(tiny_bert_dir), num_layers=2)
    np.testing.assert_allclose(r[keep], r2, atol=1e-6)
