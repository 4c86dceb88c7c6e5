"""Tiny random-weight models of every family the DataSet steps load, saved as local folders
(what a user passes as --model), built from configs; no downloads."""

from __future__ import annotations

from pathlib import Path

import torch

#: Mistral-Instruct's template: no system role (exercises the fold-into-user fallback).
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}"
)
CHATML_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_chat_llm(folder: Path, template: str = MISTRAL_TEMPLATE, words_only: bool = False
                  ) -> Path:
    """A random Mistral with a chat template. `words_only`: its output layer can only favour
    whole-word pieces (every other row zeroed, word rows scaled up), so sampled texts are
    clean words a filter can accept; still random, still a real transformers model."""
    import re

    from transformers import MistralConfig, MistralForCausalLM

    from llama.tokenizer import load_tokenizer

    tok = load_tokenizer("tiny").hf
    tok.chat_template = template
    cfg = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = MistralForCausalLM(cfg)
    if words_only:
        words = torch.zeros(cfg.vocab_size, dtype=torch.bool)
        for piece, i in tok.get_vocab().items():
            words[i] = bool(re.fullmatch(r"\u2581[a-z]{2,}", piece))
        with torch.no_grad():
            w = model.lm_head.weight
            w[~words] = 0.0
            w[words] *= 40.0
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


WORDS = ("the image shows a red blue green yellow ball on grass music video man playing "
         "guitar piano dog cat in of with and is are small large bright dark room street").split()


def _bert_tokenizer(folder: Path):
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *WORDS, *"abcdefghij.,"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")
    return tok


def tiny_blip(folder: Path) -> Path:
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    tok = _bert_tokenizer(folder / "_tok")
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=64,
                bos_token_id=tok.convert_tokens_to_ids("[DEC]"), pad_token_id=0,
                sep_token_id=tok.sep_token_id, eos_token_id=tok.sep_token_id)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                  num_attention_heads=2, image_size=32, patch_size=8)
    cfg = BlipConfig(text_config=text, vision_config=vision, projection_dim=32)
    torch.manual_seed(0)
    BlipForConditionalGeneration(cfg).save_pretrained(folder)
    ip = BlipImageProcessor(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=ip, tokenizer=tok).save_pretrained(folder)
    return folder


def tiny_timesformer_gpt2(folder: Path, num_frames: int = 4) -> Path:
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPT2TokenizerFast,
        TimesformerConfig,
        TimesformerModel,
        VideoMAEImageProcessor,
        VisionEncoderDecoderModel,
    )

    vocab = {w: i for i, w in enumerate(["<|endoftext|>", *WORDS, *"abcdefghij.,", "Ġ"])}
    tok = GPT2TokenizerFast(vocab=vocab, merges=[], unk_token="<|endoftext|>",
                            bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    enc = TimesformerConfig(image_size=32, patch_size=8, num_frames=num_frames, hidden_size=32,
                            num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    dec = GPT2Config(vocab_size=len(vocab), n_positions=256, n_embd=32, n_layer=1, n_head=2,
                     add_cross_attention=True, is_decoder=True, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(encoder=TimesformerModel(enc),
                                      decoder=GPT2LMHeadModel(dec))
    model.config.decoder_start_token_id = 0
    model.config.pad_token_id = 0
    model.config.eos_token_id = 0
    model.generation_config.decoder_start_token_id = 0
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 0
    model.save_pretrained(folder)
    VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
                           ).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


LLAVA_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() + ': ' }}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}{{ '<image>\n' }}{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def _llama_tok_with(tokens: list[str]):
    from llama.tokenizer import load_tokenizer

    tok = load_tokenizer("tiny").hf
    tok.add_special_tokens({"additional_special_tokens": tokens})
    tok.pad_token = tok.unk_token
    return tok


def _tiny_text_cfg(vocab: int, tok) -> dict:
    return dict(model_type="llama", vocab_size=vocab, hidden_size=32, intermediate_size=64,
                num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def _tiny_clip_cfg() -> dict:
    return dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=37,
                num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
                projection_dim=32)


def tiny_llava_next(folder: Path) -> Path:
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tok = _llama_tok_with(["<image>"])
    cfg = LlavaNextConfig(vision_config=_tiny_clip_cfg(), text_config=_tiny_text_cfg(len(tok), tok),
                          image_token_index=tok.convert_tokens_to_ids("<image>"),
                          image_grid_pinpoints=[[32, 32]], vision_feature_layer=-1,
                          projector_hidden_act="gelu")
    torch.manual_seed(0)
    LlavaNextForConditionalGeneration(cfg).save_pretrained(folder)
    ip = LlavaNextImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                 image_grid_pinpoints=[[32, 32]])
    LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=8,
                       vision_feature_select_strategy="default", chat_template=LLAVA_TEMPLATE,
                       num_additional_image_tokens=1).save_pretrained(folder)
    return folder

