"""Transformer (BERT-family) embeddings of what users interacted with.

`TextFeaturizer` is the pipeline stage; `embed_items` is the `gpuclust embed` command as a function;
`ItemEncoder`, `load_encoder`, `VectorCache` and `pool_users` are the parts, usable on their own.
"""

from gpuclust.features.text.cache import VectorCache
from gpuclust.features.text.embed import embed_items, encode_texts
from gpuclust.features.text.encoder import EncodeStats, ItemEncoder
from gpuclust.features.text.featurizer import TextFeaturizer
from gpuclust.features.text.model import LoadedModel, load_encoder
from gpuclust.features.text.pooling import interaction_weights, pool_users

__all__ = [
    "EncodeStats", "ItemEncoder", "LoadedModel", "TextFeaturizer", "VectorCache", "embed_items",
    "encode_texts", "interaction_weights", "load_encoder", "pool_users",
]
