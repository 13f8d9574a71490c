"""The textbook contender: the straightforward recipe, written plainly, on the CPU.

pandas preprocessing -> one text per user (their items' titles, most recent first) -> one BERT forward
pass per user with `AutoTokenizer`/`AutoModel` directly, fp32, unsorted fixed-size batches, mean
pooling -> scikit-learn KMeans. It is the baseline our speed claims are measured against, so it uses
no trick of ours (no length sorting, no token budget, no item-level sharing) and no deliberate slowness.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

SEPARATOR = "; "


class TextbookRecipe:
    """Cluster users from BERT embeddings of their behaviour text; `fit` sets labels_, metrics_, stages_.

    model: "default" (the offline all-MiniLM-L6-v2 files), a local model directory, or a
        `(model, tokenizer)` pair already built (the GPU machine has no weights: a random-weight BERT).
    batch_size: users per forward pass, in input order (no sorting by length).
    """

    def __init__(self, n_clusters: int = 20, model: Any = "default", batch_size: int = 32, max_length: int = 128,
                 n_init: int = 3, silhouette_sample: int = 20_000, random_state: int = 0) -> None:
        self.n_clusters = n_clusters
        self.model = model
        self.batch_size = batch_size
        self.max_length = max_length
        self.n_init = n_init
        self.silhouette_sample = silhouette_sample
        self.random_state = random_state

    def fit(self, events: pd.DataFrame, items: pd.DataFrame, truth: pd.DataFrame | None = None) -> TextbookRecipe:
        stages: dict[str, float] = {}
        t = time.perf_counter()
        users, texts = self.user_texts(events, items)
        stages["preprocess"] = time.perf_counter() - t

        t = time.perf_counter()
        model, tokenizer = self._load()
        stages["load_model"] = time.perf_counter() - t

        t = time.perf_counter()
        x = self.embed(texts, model, tokenizer)
        stages["embed"] = time.perf_counter() - t

        t = time.perf_counter()
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=self.n_clusters, n_init=self.n_init, random_state=self.random_state).fit(x)
        stages["cluster"] = time.perf_counter() - t

        t = time.perf_counter()
        self.metrics_ = self.score(x, km.labels_, users, truth)
        stages["assess"] = time.perf_counter() - t

        self.users_ = users
        self.labels_ = km.labels_
        self.embeddings_ = x
        self.stages_ = {k: round(v, 4) for k, v in stages.items()}
        return self

    def user_texts(self, events: pd.DataFrame, items: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """One text per user: distinct item titles, most recent first, at most `max_length` of them
        (every title costs at least one token, so the tokenizer's truncation decides the rest)."""
        ev = events[["user_id", "item_id", "timestamp"]].dropna().drop_duplicates()
        ev = ev.merge(items[["item_id", "title"]].dropna(), on="item_id", how="inner")
        ev = ev.sort_values(["user_id", "timestamp"], ascending=[True, False])
        ev = ev.drop_duplicates(["user_id", "item_id"])
        ev = ev.groupby("user_id", sort=True).head(self.max_length)
        texts = ev.groupby("user_id", sort=True)["title"].agg(SEPARATOR.join)
        return texts.index.to_numpy(), texts.astype(str).tolist()

    def _load(self):
        if isinstance(self.model, tuple):
            model, tokenizer = self.model
            return model.eval(), tokenizer
        from transformers import AutoModel, AutoTokenizer

        from gpuclust.features.text.model import resolve_source

        path = resolve_source(self.model)  # the packaged default's directory, or the given one
        return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)

    def embed(self, texts: list[str], model, tokenizer) -> np.ndarray:
        """Mean-pooled, L2-normalised fp32 vectors, as on the all-MiniLM-L6-v2 model card."""
        import torch
        import torch.nn.functional as F

        out = []
        self.tokens_ = self.non_pad_tokens_ = 0
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                  max_length=self.max_length, return_tensors="pt")
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                out.append(F.normalize(pooled, p=2, dim=1).numpy())
                self.tokens_ += int(mask.numel())
                self.non_pad_tokens_ += int(mask.sum())
        return np.concatenate(out).astype(np.float32)

    def score(self, x: np.ndarray, labels: np.ndarray, users: np.ndarray, truth: pd.DataFrame | None) -> dict:
        """Silhouette on a seeded sample (as gpuclust does); ARI/NMI over users with a planted group."""
        from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

        sample = min(self.silhouette_sample, len(x))
        metrics = {"silhouette": float(silhouette_score(x, labels, sample_size=sample,
                                                        random_state=self.random_state)),
                   "silhouette_sample": sample}
        if truth is not None:
            joined = pd.DataFrame({"user_id": users, "label": labels}).merge(truth, on="user_id")
            planted = joined[joined["group"] >= 0]
            metrics["ari"] = float(adjusted_rand_score(planted["group"], planted["label"]))
            metrics["nmi"] = float(normalized_mutual_info_score(planted["group"], planted["label"]))
            metrics["truth_users"] = len(planted)
        return metrics
