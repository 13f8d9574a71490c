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
from gpuclust.features.text.embed import encode_texts
from gpuclust.features.text.encoder import POOLINGS, PRECISIONS, ItemEncoder
from gpuclust.features.text.model import LoadedModel, as_loaded
from gpuclust.features.text.pooling import check_half_life, interaction_weights, l2_normalise, pool_users
from gpuclust.features.text.texts import item_texts
from gpuclust.features.text.usertext import user_texts
from gpuclust.preprocess.prepared import PreparedData

MODES = ("item", "user")


class TextFeaturizer:
    """Transformer embeddings of user behaviour, float32 (n_users, hidden) in `backend.xp`.

    model: "default" (the offline all-MiniLM-L6-v2 package), a Hugging Face id or local directory, or a
        `LoadedModel` (load once, reuse across runs). A name is loaded per call and released after, so
        the GPU memory returns to the stages that follow.
    mode: "item" (encode items once, pool per user: fast) or "user" (one text per user: the textbook
        recipe, slower; `item_vectors_` is then None).
    text_template: e.g. "{title} | {category}" over item columns; default joins the text columns and
        the category.
    half_life_days: time decay of event weights in item mode; None = no decay.
    seed: recorded for the manifest; inference is deterministic and draws no random numbers.
    """

    name = "text"

    def __init__(self, model: str | LoadedModel = "default", mode: str = "item", text_template: str | None = None,
                 pooling: str = "mean", precision: str = "auto", half_life_days: float | None = None,
                 batch_tokens: int | None = None, cache_dir: str | Path | None = None, max_length: int = 128,
                 seed: int = 0, allow_download: bool = False) -> None:
        self.model = model
        self.mode = mode
        self.text_template = text_template
        self.pooling = pooling
        self.precision = precision
        self.half_life_days = half_life_days
        self.batch_tokens = batch_tokens
        self.cache_dir = cache_dir
        self.max_length = max_length
        self.seed = seed
        self.allow_download = allow_download

    def _validate(self, data: PreparedData) -> None:
        for label, value, valid in (("mode", self.mode, MODES), ("pooling", self.pooling, POOLINGS),
                                    ("precision", self.precision, PRECISIONS)):
            if value not in valid:
                raise UsageError(f"unknown text {label} {value!r}: choose one of {', '.join(valid)}")
        check_half_life(self.half_life_days)
        if int(data.n_users) < 1 or int(data.n_items) < 1:
            raise UsageError("the text feature needs at least one user and one item after preprocessing")
        if len(data.items) != int(data.n_items):
            raise UsageError(f"items table has {len(data.items)} rows but n_items is {data.n_items}")

    def fit_transform(self, data: PreparedData, backend: Backend):
        started = time.perf_counter()
        self._validate(data)
        texts = item_texts(data.items, data.text_columns, self.text_template)
        loaded = as_loaded(self.model, backend.torch_device, self.allow_download)
        encoder = ItemEncoder(loaded, pooling=self.pooling, precision=self.precision,
                              batch_tokens=self.batch_tokens, max_length=self.max_length).resolve()
        if self.mode == "item":
            vectors, stats = encode_texts(encoder, texts, self.cache_dir)
            self.item_vectors_ = from_torch(vectors, backend)
            weights = interaction_weights(data, backend, self.half_life_days)
            users = pool_users(weights, self.item_vectors_, backend)
        else:
            per_user = user_texts(data, texts, max_items=encoder.max_length_)
            vectors, stats = encode_texts(encoder, per_user, self.cache_dir)
            self.item_vectors_ = None
            users = l2_normalise(from_torch(vectors, backend), backend.xp)
        self.names_ = None  # embedding dimensions have no individual meaning
        self.info_ = self._info(data, loaded, encoder, stats, users, time.perf_counter() - started)
        del vectors, encoder, loaded
        if backend.on_gpu:  # hand torch's cached blocks back to the stages that follow (RAPIDS, FAISS)
            import torch

            torch.cuda.empty_cache()
        return users

    # --- saved models: item mode keeps its item vectors, so placing new users needs no encoder -----

    def transform(self, data: PreparedData, backend: Backend):
        """New users from the fitted item vectors (item indices follow the model's vocabulary)."""
        if self.mode == "user":
            return self.fit_transform(data, backend)  # one text per user: nothing to reuse but the model
        weights = interaction_weights(data, backend, self.half_life_days)
        return pool_users(weights, self.item_vectors_, backend)

    def state(self) -> tuple[dict, dict]:
        model = self.model if isinstance(self.model, str | Path) else getattr(self.model, "name", "default")
        meta = {"model": str(model), "mode": self.mode, "text_template": self.text_template,
                "pooling": self.pooling, "precision": self.precision, "half_life_days": self.half_life_days,
                "max_length": self.max_length, "seed": self.seed}
        return meta, ({} if self.item_vectors_ is None else {"item_vectors": self.item_vectors_})

    @classmethod
    def from_state(cls, meta: dict, arrays: dict, backend: Backend) -> TextFeaturizer:
        self = cls(**meta)
        self.item_vectors_ = backend.asarray(arrays["item_vectors"]) if "item_vectors" in arrays else None
        return self

    def _info(self, data: PreparedData, loaded: LoadedModel, encoder: ItemEncoder, stats: dict[str, Any],
              users: Any, seconds: float) -> dict[str, Any]:
        return {
            "dims": int(users.shape[1]), "model": loaded.name, "model_source": loaded.source,
            "mode": self.mode, "pooling": self.pooling, "precision": encoder.precision_,
            "max_length": encoder.max_length_, "template": self.text_template or "default",
            "half_life_days": self.half_life_days, "seed": self.seed,
            "n_users": int(data.n_users), "n_items": int(data.n_items),
            "texts_encoded": stats["encoded"], "unique_texts": stats["unique_texts"],
            "tokens": stats["tokens"], "non_pad_tokens": stats["non_pad_tokens"],
            "padding_share": stats["padding_share"], "batches": stats["batches"],
            "batch_tokens": stats["batch_tokens"], "oom_retries": stats["oom_retries"],
            "encode_seconds": stats["encode_seconds"], "tokenize_seconds": stats["tokenize_seconds"],
            "items_per_s": stats["items_per_s"], "tokens_per_s": stats["tokens_per_s"],
            "cache_hits": stats["cache_hits"], "cache_misses": stats["cache_misses"],
            "seconds": round(seconds, 4),
        }
