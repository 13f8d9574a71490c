"""Encoders with seeded random weights, and token ids without a tokenizer.

The GPU test machine has no pretrained model files: speed and reduced-precision agreement do not need
trained weights, so the GPU check and the gpu-marked tests build a `BertModel` from a config. A tiny
word-level tokenizer (built in memory) lets those tests run the text path end to end.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from gpuclust.features.text.batching import TokenizedTexts
from gpuclust.features.text.model import LoadedModel, model_fingerprint

SHAPES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "minilm-l6": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def word_tokenizer(words: Iterable[str] = (), max_length: int = 512):
    """A lower-casing word-level fast tokenizer over `words`, with BERT's special tokens and template."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    for word in words:
        vocab.setdefault(word.lower(), len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", model_max_length=max_length)


def random_model(shape: str = "tiny", *, seed: int = 0, device: str = "cpu", vocab_size: int = 30522,
                 tokenizer=None, max_positions: int = 512) -> LoadedModel:
    """A `BertModel` in a named shape with seeded random weights, in eval mode on `device`."""
    import torch
    from transformers import BertConfig, BertModel

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}: choose one of {', '.join(SHAPES)}")
    if tokenizer is not None:
        vocab_size = len(tokenizer)
    config = BertConfig(vocab_size=vocab_size, max_position_embeddings=max_positions, **SHAPES[shape])
    torch.manual_seed(seed)
    model = BertModel(config, add_pooling_layer=False).eval()
    identity = f"random:{shape}:seed{seed}:{model_fingerprint(model, tokenizer)}"
    return LoadedModel(model=model, tokenizer=tokenizer, name=f"random-{shape}", identity=identity,
                       source="random weights").to(device)


def random_tokens(n: int, *, min_len: int = 8, max_len: int = 64, vocab_size: int = 30522, seed: int = 0,
                  cls_id: int = 101, sep_id: int = 102) -> TokenizedTexts:
    """`n` sequences of random ids, lengths uniform in [min_len, max_len], framed by CLS ... SEP."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, size=n).astype(np.int64)
    low = min(1000, max(4, vocab_size // 4))  # skip the special and unused ids at the start
    ids = rng.integers(low, vocab_size, size=int(lengths.sum())).astype(np.int64)
    offsets = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(lengths[:-1], out=offsets[1:])
    ids[offsets] = cls_id
    ids[offsets + lengths - 1] = sep_id
    return TokenizedTexts(ids, offsets, lengths, pad_id=0,
                          input_names=("input_ids", "token_type_ids", "attention_mask"))
