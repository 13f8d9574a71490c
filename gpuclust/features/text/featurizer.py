"""`TextFeaturizer`: users described by the meaning of what they interacted with.

fit_transform reads as its stages: item texts -> encoder (length-sorted token batches, autocast,
pooling, cache) -> DLPack to the backend's arrays -> sparse weighted pooling to users. In user mode the
middle is replaced by one text per user, encoded directly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gpuclust.backend import Backend, from_torch
from gpuclust.errors import UsageError
from gpuclust.features.text.embed import encode_texts, precomputed_vectors
from gpuclust.features.text.encoder import POOLINGS, PRECISIONS, ItemEncoder
from gpuclust.features.text.model import LoadedModel, as_loaded, model_fingerprint
from gpuclust.features.text.pooling import check_half_life, interaction_weights, l2_normalise, pool_users
from gpuclust.features.text.texts import item_texts
from gpuclust.features.text.usertext import user_texts
from gpuclust.preprocess.prepared import PreparedData

MODES = ("item", "user")
# What the manifest keeps of an encoder run.
STATS = ("unique_texts", "tokens", "non_pad_tokens", "padding_share", "batches",
         "batch_tokens", "oom_retries", "encode_seconds", "tokenize_seconds", "items_per_s", "tokens_per_s",
         "cache_hits", "cache_misses")


class TextFeaturizer:
    """Transformer embeddings of user behaviour, float32 (n_users, hidden) in `backend.xp`.

    model: what turns texts into vectors, any of
        - "default" (the offline all-MiniLM-L6-v2 package), a Hugging Face id or a local directory: loaded
          per call and released after, so the GPU memory returns to the stages that follow;
        - a `LoadedModel`, or a (transformers model, tokenizer) pair: encoded with gpuclust's batching;
        - a sentence-transformers model (anything with `encode(list[str])`), or any callable
          texts -> (n, d) vectors.
    item_vectors: precomputed item vectors instead of a model: a frame with `item_id` and a `vector`
        column (what `gpuclust embed` writes), or the path of such a Parquet file. Items without a vector
        pool as zeros, and the manifest counts them.
    mode: "item" (encode items once, pool per user: fast) or "user" (one text per user: the textbook
        recipe, slower; `item_vectors_` is then None).
    template: e.g. "{title} | {category}" over item columns; default joins the text columns and the category.
    half_life_days: time decay of event weights in item mode; None = no decay.
    seed: recorded for the manifest; inference is deterministic and draws no random numbers.
    """

    name = "text"

    def __init__(self, model: Any = "default", mode: str = "item", template: str | None = None,
                 pooling: str = "mean", precision: str = "auto", half_life_days: float | None = None,
                 batch_tokens: int | None = None, cache_dir: str | Path | None = None, max_length: int = 128,
                 seed: int = 0, allow_download: bool = False, item_vectors: Any = None) -> None:
        self.model = model
        self.mode = mode
        self.template = template
        self.pooling = pooling
        self.precision = precision
        self.half_life_days = half_life_days
        self.batch_tokens = batch_tokens
        self.cache_dir = cache_dir
        self.max_length = max_length
        self.seed = seed
        self.allow_download = allow_download
        self.item_vectors = item_vectors

    def _validate(self, data: PreparedData) -> None:
        for label, value, valid in (("mode", self.mode, MODES), ("pooling", self.pooling, POOLINGS),
                                    ("precision", self.precision, PRECISIONS)):
            if value not in valid:
                raise UsageError(f"unknown text {label} {value!r}: choose one of {', '.join(valid)}")
        check_half_life(self.half_life_days)
        if self.item_vectors is not None and self.mode != "item":
            raise UsageError("precomputed item_vectors describe items: use text mode 'item' with them")
        if int(data.n_users) < 1 or int(data.n_items) < 1:
            raise UsageError("the text feature needs at least one user and one item after preprocessing")
        if len(data.items) != int(data.n_items):
            raise UsageError(f"items table has {len(data.items)} rows but n_items is {data.n_items}")

    def fit_transform(self, data: PreparedData, backend: Backend):
        started = time.perf_counter()
        self._validate(data)
        if self.item_vectors is not None:
            self.item_vectors_, stats = precomputed_vectors(self.item_vectors, data, backend)
            users = pool_users(interaction_weights(data, backend, self.half_life_days), self.item_vectors_, backend)
            self.info_ = {"dims": int(users.shape[1]), "model": "precomputed item vectors", "mode": "item",
                          **stats, "seconds": round(time.perf_counter() - started, 4)}
            return users
        texts = item_texts(data.items, data.text_columns, self.template)
        if self.mode == "user":
            texts = user_texts(data, texts, max_items=self.max_length)
        vectors, stats, described = self._encode(texts, backend)
        if self.mode == "item":
            self.item_vectors_ = vectors
            users = pool_users(interaction_weights(data, backend, self.half_life_days), vectors, backend)
        else:
            self.item_vectors_ = None
            users = l2_normalise(vectors, backend.xp)
        self.names_ = None  # embedding dimensions have no individual meaning
        self.info_ = {"dims": int(users.shape[1]), **described, "mode": self.mode,
                      "template": self.template or "default", "half_life_days": self.half_life_days,
                      "seed": self.seed, "n_users": int(data.n_users), "n_items": int(data.n_items), **stats,
                      "seconds": round(time.perf_counter() - started, 4)}
        backend.free_caches()  # hand the encoder's GPU memory to the stages that follow (RAPIDS, FAISS)
        return users

    def _encode(self, texts: list[str], backend: Backend) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(vectors on the backend, encoding stats, what encoded them) for any kind of `model`."""
        model = self.model
        if not isinstance(model, str | Path | LoadedModel | tuple) and (callable(model) or hasattr(model, "encode")):
            encode = model.encode if hasattr(model, "encode") else model
            started = time.perf_counter()
            vectors = backend.asarray(encode(list(texts)), dtype=backend.xp.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(texts):
                raise UsageError(f"the embedding model returned shape {tuple(vectors.shape)} for {len(texts)} "
                                 "texts; it must return one vector per text")
            seconds = time.perf_counter() - started
            return (l2_normalise(vectors, backend.xp), {"texts_encoded": len(texts), "encode_seconds": round(seconds, 4)},
                    {"model": type(model).__name__, "model_source": "callable"})
        if isinstance(model, tuple):
            loaded = LoadedModel(model[0], model[1], type(model[0]).__name__,
                                 model_fingerprint(model[0], model[1])).to(backend.torch_device)
        else:
            loaded = as_loaded(model, backend.torch_device, self.allow_download)
        encoder = ItemEncoder(loaded, pooling=self.pooling, precision=self.precision,
                              batch_tokens=self.batch_tokens, max_length=self.max_length).resolve()
        vectors, stats = encode_texts(encoder, texts, self.cache_dir)
        described = {"model": loaded.name, "model_source": loaded.source, "pooling": self.pooling,
                     "precision": encoder.precision_, "max_length": encoder.max_length_}
        out = from_torch(vectors, backend)
        del vectors, encoder, loaded
        return out, {"texts_encoded": stats["encoded"], **{key: stats[key] for key in STATS if key in stats}}, described

    # --- saved models: item mode keeps its item vectors, so placing new users needs no encoder -----

    def transform(self, data: PreparedData, backend: Backend):
        """New users from the fitted item vectors (item indices follow the model's vocabulary)."""
        if self.mode == "user":
            return self.fit_transform(data, backend)  # one text per user: nothing to reuse but the model
        weights = interaction_weights(data, backend, self.half_life_days)
        return pool_users(weights, self.item_vectors_, backend)

    def state(self) -> tuple[dict, dict]:
        if self.mode == "user" and not isinstance(self.model, str | Path):
            raise UsageError("a text feature in user mode re-encodes new users with its model, and a model "
                             "passed as an object cannot be saved without pickle; pass its name or folder")
        model = self.model if isinstance(self.model, str | Path) else getattr(self.model, "name", "custom")
        meta = {"model": str(model), "mode": self.mode, "template": self.template,
                "pooling": self.pooling, "precision": self.precision, "half_life_days": self.half_life_days,
                "max_length": self.max_length, "seed": self.seed}
        return meta, ({} if self.item_vectors_ is None else {"item_vectors": self.item_vectors_})

    @classmethod
    def from_state(cls, meta: dict, arrays: dict, backend: Backend) -> TextFeaturizer:
        self = cls(**meta)
        self.item_vectors_ = backend.asarray(arrays["item_vectors"]) if "item_vectors" in arrays else None
        return self
