"""Generation: cache vs recompute, mixed-length batches, sampling, EOS, stop strings, streaming."""

from __future__ import annotations

import pytest
import torch

from llama.backbone import Transformer
from llama.lora import parameter_group
from llama.config import llama_tiny
from llama.generation import generate, select_next, stream_generate


pytestmark = pytest.mark.usefixtures("one_thread")


class CharTokenizer:
    """Test tokenizer: id i decodes to a letter, odd ids to two letters (uneven token widths)."""

    eos_id = 2

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(97 + i % 26) * (1 + i % 2) for i in ids)


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    m = Transformer(llama_tiny()).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # trained-looking PEFT state so the adapters matter
        for name, p in m.named_parameters():
            if parameter_group(name) in ("lora", "bias", "gates"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return m


PROMPTS = [[1, 17, 230, 45, 9, 88, 300], [1, 5], [1, 900, 14, 15]]


def recompute_greedy(model: Transformer, prompt: list[int], n: int, feats=None) -> list[int]:
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq]), feats)[0, -1].argmax()))
    return seq[len(prompt) :]


def test_cached_generation_equals_recomputation(model):
    feats = torch.randn(3, 3, 128)
    out = generate(model, PROMPTS, 12, modality_features=feats)
    assert [len(o) for o in out] == [12, 12, 12]
    for b, p in enumerate(PROMPTS):
        assert out[b] == recompute_greedy(model, p, 12, feats[b : b + 1])
    # The features matter (gates are nonzero) and are kept in the cache for every decoded step.
    assert out != generate(model, PROMPTS, 12)


def test_mixed_length_batch_equals_each_prompt_alone(model):
    batched = generate(model, PROMPTS, 16)
    alone = [generate(model, [p], 16)[0] for p in PROMPTS]
    assert batched == alone


def test_top_p_sampling_is_seeded_and_tiny_top_p_is_greedy(model):
    def sample(seed: int, **kw) -> list[list[int]]:
        gen = torch.Generator().manual_seed(seed)
        return generate(model, PROMPTS, 10, temperature=1.5, generator=gen, **kw)

    a, b = sample(7, top_p=0.9), sample(7, top_p=0.9)
    assert a == b
    assert sample(8, top_p=0.9) != a
    assert sample(7, top_p=1e-6) == generate(model, PROMPTS, 10)


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(4000, 4)
    g = torch.Generator().manual_seed(0)
    picked = select_next(logits, 1.0, 0.7, g)
    assert set(picked.tolist()) == {0, 1}
    frac0 = (picked == 0).float().mean().item()
    assert abs(frac0 - 0.5 / 0.8) < 0.03  # renormalised within the nucleus
    assert set(select_next(logits, 1.0, 0.85, g).tolist()) == {0, 1, 2}
    assert set(select_next(logits, 1.0, 1.0, g).tolist()) == {0, 1, 2, 3}


def test_eos_ends_only_its_row(model):
    free = generate(model, PROMPTS, 10)
    eos = free[0][3]
    out = generate(model, PROMPTS, 10, eos_id=eos)
    cut = [f.index(eos) if eos in f else len(f) for f in free]
    assert out == [f[:c] for f, c in zip(free, cut)]
    # Default EOS comes from the tokenizer.
    tok = CharTokenizer()
    tok.eos_id = eos
    assert generate(model, PROMPTS, 10, tokenizer=tok) == out


def test_stop_strings_cut_before_the_stop_and_stream_never_leaks_it(model):
    tok = CharTokenizer()
    free = generate(model, PROMPTS, 24, eos_id=-1)
    text = tok.decode(free[0])
    stop = text[9:12]  # may start inside a two-letter token
    start = text.find(stop)
    keep = max(j for j in range(len(free[0]) + 1) if len(tok.decode(free[0][:j])) <= start)
    out = generate(model, PROMPTS, 24, eos_id=-1, stop_strings=[stop], tokenizer=tok)
    assert out[0] == free[0][:keep]
    assert stop not in tok.decode(out[0])
    for b in (1, 2):  # other rows stop at their own first occurrence, or run to the end
        t = tok.decode(free[b])
        if stop not in t:
            assert out[b] == free[b]
        else:
            assert stop not in tok.decode(out[b]) and free[b][: len(out[b])] == out[b]
    # Streaming: released tokens never include the stop string, and add up to generate().
    streamed = [[] for _ in PROMPTS]
    for step in stream_generate(model, PROMPTS, 24, eos_id=-1, stop_strings=[stop], tokenizer=tok):
        for acc, toks in zip(streamed, step):
            acc.extend(toks)
            assert stop not in tok.decode(acc)
    assert streamed == out
    with pytest.raises(ValueError, match="tokenizer"):
        generate(model, PROMPTS, 4, stop_strings=["x"])


def test_stream_yields_tokens_as_they_are_produced(model):
    stream = stream_generate(model, PROMPTS, 5)
    first = next(stream)
    assert [len(t) for t in first] == [1, 1, 1]
    rest = list(stream)
    assert len(rest) == 4
    full = generate(model, PROMPTS, 5)
    assert [first[b] + sum((s[b] for s in rest), []) for b in range(3)] == full


def test_bfloat16_generation_runs(model):
    low = Transformer(llama_tiny()).eval()
    low.load_state_dict(model.state_dict())
    low.to(torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    out = generate(low, PROMPTS, 6, temperature=0.8, top_p=0.9, generator=gen)
    assert [len(o) for o in out] == [6, 6, 6]
    assert all(0 <= t < 1000 for o in out for t in o)


def test_bad_arguments_fail_before_decoding(model):
    with pytest.raises(ValueError, match="empty"):
        stream_generate(model, [[1], []], 4)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, PROMPTS, 4, temperature=1.0, top_p=0.0)
    assert generate(model, PROMPTS, 0) == [[], [], []]


def _first_new(ids: list[int], start: int) -> int:
    return next(j for j in range(start, len(ids)) if ids[j] not in ids[:j])


def test_end_ids_end_a_row_and_are_returned(model):
    free = generate(model, PROMPTS, 20, eos_id=())
    j = _first_new(free[0], 4)
    out = generate(model, PROMPTS, 20, eos_id=(), end_ids=[free[0][j]])
    assert out[0] == free[0][: j + 1]
    for b in (1, 2):
        t = free[b].index(free[0][j]) if free[0][j] in free[b] else None
        assert out[b] == (free[b] if t is None else free[b][: t + 1])


def test_end_after_needs_the_ids_in_order_with_others_between(model):
    free = generate(model, [PROMPTS[0]], 24, eos_id=())[0]
    a, b = _first_new(free, 2), _first_new(free, 10)
    out = generate(model, [PROMPTS[0]], 24, eos_id=(), end_after=[free[a], free[b]])[0]
    assert out == free[: b + 1]
    backwards = generate(model, [PROMPTS[0]], 24, eos_id=(), end_after=[free[b], free[a]])[0]
    assert len(backwards) > b + 1 or backwards == free  # free[a] before free[b] does not count


def test_tail_stop_keeps_its_tokens_and_needs_an_exact_match(model):
    tok = CharTokenizer()
    free = generate(model, [PROMPTS[0]], 24, eos_id=())[0]
    stop = tok.decode(free[9:12])
    end = next(i for i in range(2, 24) if tok.decode(free[i - 2: i + 1]) == stop)
    out = generate(model, [PROMPTS[0]], 24, eos_id=(), stop_strings=[stop], tokenizer=tok,
                   stop_tail_tokens=3)[0]
    assert out == free[: end + 1]
    # Text merely contained in the last tokens' text is no match (the published check).
    part = stop[1:]
    ends = [i for i in range(2, 24) if tok.decode(free[i - 2: i + 1]) == part]
    out = generate(model, [PROMPTS[0]], 24, eos_id=(), stop_strings=[part], tokenizer=tok,
                   stop_tail_tokens=3)[0]
    assert out == (free[: ends[0] + 1] if ends else free)
