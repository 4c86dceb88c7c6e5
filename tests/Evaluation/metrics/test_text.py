"""Each published MusicQA variant equals the library call it reproduces, row by row."""

import json

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


def _bert_score_with(tokenizer, model_dir, cands, refs, num_layers):
    """bert_score's own scoring loop handed `tokenizer` (what `score` does after loading one)."""
    from collections import defaultdict

    from bert_score.utils import bert_cos_score_idf, get_model

    idf = defaultdict(lambda: 1.0)
    idf[tokenizer.sep_token_id] = idf[tokenizer.cls_token_id] = 0
    model = get_model(str(model_dir), num_layers, False)
    out = bert_cos_score_idf(model, refs, cands, tokenizer, idf, device="cpu", batch_size=64)
    return out.double().numpy().T  # P, R, F


def test_bert_scores_equal_bert_score_with_a_prefix_space_tokenizer(bpe_roberta_dir):
    from bert_score import score
    from transformers import AutoTokenizer

    cands, refs = [c for c in CANDS if c], [r for r, c in PAIRS if c]
    tok = AutoTokenizer.from_pretrained(bpe_roberta_dir, add_prefix_space=True)
    # a real merge table: the first word is one sentence-medial token, not the raw-start one
    assert tok.tokenize("The mood")[0] == "\u0120The"
    P, R, F = _bert_score_with(tok, bpe_roberta_dir, cands, refs, num_layers=2)
    p, r, f = T.bert_scores(cands, refs, model=str(bpe_roberta_dir), num_layers=2)
    for ours, theirs in ((p, P), (r, R), (f, F)):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    # the unfixed path (bert_score.score under transformers 5) encodes "The" without its space
    _, R0, _ = score(cands, refs, model_type=str(bpe_roberta_dir), num_layers=2)
    assert np.abs(r - R0.double().numpy()).max() > 1e-3
    assert AutoTokenizer.from_pretrained(bpe_roberta_dir).tokenize("The mood")[0] != "\u0120The"


def test_bert_score_tokenizer_gets_the_prefix_space_only_for_byte_level_bpe(bpe_roberta_dir,
                                                                          tmp_path):
    from transformers import BertTokenizer

    tok = T.load_bertscore_tokenizer(str(bpe_roberta_dir))
    assert T.is_byte_level_bpe(tok) and tok.tokenize("The")[0] == "\u0120The"
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the"]))
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    wordpiece = T.load_bertscore_tokenizer(str(tmp_path))
    assert not T.is_byte_level_bpe(wordpiece) and wordpiece.tokenize("the") == ["the"]


def test_bertscore_is_comparable_only_for_roberta_large_layer_17(bpe_roberta_dir, tmp_path):
    import shutil

    fake = tmp_path / "roberta-large"  # the right name, the wrong network
    shutil.copytree(bpe_roberta_dir, fake)
    assert not T.bertscore_matches_paper(str(fake), 17)
    cfg = json.loads((fake / "config.json").read_text())
    cfg.update(num_hidden_layers=24, hidden_size=1024, vocab_size=50265)
    (fake / "config.json").write_text(json.dumps(cfg))
    assert T.bertscore_matches_paper(str(fake), 17)
    assert not T.bertscore_matches_paper(str(fake), 16)
    assert not T.bertscore_matches_paper(str(bpe_roberta_dir), 17)


def test_bert_scores_accept_empty_candidates(bpe_roberta_dir):
    """bert_score 0.3.13 cannot encode "" with transformers 5 tokenizers; ours scores it as
    <s></s> (what bert_score meant) and leaves the other rows exactly as the library does."""
    p, r, f = T.bert_scores(CANDS, REFS, model=str(bpe_roberta_dir), num_layers=2)
    assert np.isfinite(r).all() and len(r) == len(CANDS)
    keep = [i for i, c in enumerate(CANDS) if c]
    p2, r2, f2 = T.bert_scores([CANDS[i] for i in keep], [REFS[i] for i in keep],
                               model=str(bpe_roberta_dir), num_layers=2)
    np.testing.assert_allclose(r[keep], r2, atol=1e-6)
