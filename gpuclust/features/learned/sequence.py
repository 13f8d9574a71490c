"""`SequenceFeaturizer`: users as the state of an encoder run over their time-ordered events.

    events -> per-user sequences (item, event type, time gap) -> GRU | LSTM | causal Transformer
           -> trained on next-item prediction (full softmax, or sampled for large catalogues)
           -> user vector: the state after the last event ("last") or the mean state ("mean"), L2-normalised

Early stopping holds out the last events (up to 5) of a seeded share of users: their prediction from
the events before each is the validation loss and HR@10; they are never training targets. RNNs run on packed
sequences; the Transformer (SASRec-style: learned positions, pre-norm blocks, causal attention through
`scaled_dot_product_attention`) on right-padded batches. Batches are users of similar length cut by a
token budget (`info_["padding_share"]` says how much of each step is padding). A full softmax over more
logits than the device's cell budget is chunked over the items (`softmax.chunked_logsumexp`). Item embeddings are tied to the
output layer and may start from the text encoder's item vectors (`item_init="text"`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuclust.backend import Backend, from_torch
from gpuclust.errors import UsageError
from gpuclust.features.learned import defaults
from gpuclust.features.learned.sequences import GAP_BUCKETS, Sequences, TokenBatcher, build_sequences, gather
from gpuclust.features.learned.softmax import next_item_loss, sampling_distribution
from gpuclust.features.learned.training import Trainer, capped, seeded, torch_threads
from gpuclust.features.learned.weights import load_module_arrays, module_arrays
from gpuclust.preprocess.prepared import PreparedData

if TYPE_CHECKING:  # torch is imported where it is used: a CPU-only install starts fast
    import torch

CELLS = ("gru", "lstm", "transformer")
VALIDATION_EVENTS = 5
POOLINGS = ("last", "mean")
ITEM_INITS = ("random", "text")
HEAD_DIM = 32


def build_network(n_items: int, n_kinds: int, dim: int, cell: str, layers: int, dropout: float,
                  max_length: int) -> torch.nn.Module:
    import torch
    from torch import nn

    class SequenceNet(nn.Module):
        """Embeddings of item + event type + gap bucket, an encoder, and an output layer tied to the items."""

        def __init__(self) -> None:
            super().__init__()
            self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
            self.kinds = nn.Embedding(n_kinds + 1, dim, padding_idx=0)
            self.gaps = nn.Embedding(GAP_BUCKETS, dim, padding_idx=0)
            self.bias = nn.Parameter(torch.zeros(n_items + 1))
            self.drop = nn.Dropout(dropout)
            nn.init.normal_(self.items.weight, std=dim ** -0.5)
            with torch.no_grad():
                self.items.weight[0].zero_()
            if cell == "transformer":
                heads = max(1, dim // HEAD_DIM)
                self.positions = nn.Embedding(max_length, dim)
                block = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, batch_first=True, norm_first=True)
                self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
                self.norm = nn.LayerNorm(dim)
            else:
                rnn = nn.GRU if cell == "gru" else nn.LSTM
                self.encoder = rnn(dim, dim, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)

        def forward(self, items, kinds, gaps, lengths, mask):
            """(B, L, dim) states; position j has seen events 0..j only."""
            x = self.items(items) + self.kinds(kinds) + self.gaps(gaps)
            if cell == "transformer":
                width = items.shape[1]
                x = self.drop(x + self.positions(torch.arange(width, device=items.device))[None])
                for block in self.encoder.layers:
                    x = causal_block(block, x)
                return self.norm(x)
            packed = nn.utils.rnn.pack_padded_sequence(self.drop(x), lengths.cpu(), batch_first=True,
                                                       enforce_sorted=False)
            out, _ = self.encoder(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=items.shape[1])
            return out

    return SequenceNet()


def causal_block(block: torch.nn.TransformerEncoderLayer, x: torch.Tensor) -> torch.Tensor:
    """A pre-norm `nn.TransformerEncoderLayer` (its own weights, so saved models keep their names) with
    the attention as `scaled_dot_product_attention(is_causal=True)`: no mask tensor, so flash kernels
    run on the GPU. Sequences are padded on the right, so a real position never attends to padding
    under the causal mask, and no key-padding mask is needed (padded positions' outputs are unused)."""
    import torch.nn.functional as F

    attn = block.self_attn
    batch, width, dim = x.shape
    heads = attn.num_heads
    qkv = F.linear(block.norm1(x), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(batch, width, 3, heads, dim // heads).permute(2, 0, 3, 1, 4).unbind(0)
    mixed = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.dropout if block.training else 0.0,
                                           is_causal=True)
    x = x + block.dropout1(attn.out_proj(mixed.transpose(1, 2).reshape(batch, width, dim)))
    ffn = block.linear2(block.dropout(block.activation(block.linear1(block.norm2(x)))))
    return x + block.dropout2(ffn)


class SequenceFeaturizer:
    """A behaviour-sequence encoder trained on next-item prediction; float32 (n_users, dim) in `backend.xp`.

    cell: "gru" (default), "lstm" or "transformer". pooling: "last" or "mean". dim, epochs, batch_tokens:
    None sizes them from the data (`defaults`). negatives: None for a full softmax up to
    `defaults.FULL_SOFTMAX_ITEMS` items (sampled beyond), or the number of sampled negatives.
    item_init "text" starts the item embeddings from `text_vectors(data, backend)` (the text encoder's
    item vectors, projected to `dim` by PCA). progress: called with a line per update while training.
    """

    name = "sequence"

    def __init__(self, cell: str = "gru", pooling: str = "last", dim: int | None = None, layers: int = 1,
                 max_length: int = 200, epochs: int | None = None, batch_tokens: int | None = None,
                 learning_rate: float | None = None, dropout: float = 0.1, negatives: int | None = None,
                 item_init: str = "random", validation_share: float = 0.1, patience: int = 3,
                 precision: str = "auto", horizon: int = 1, seed: int = 0, progress: Any = None,
                 text_vectors: Any = None, max_steps: int | None = None) -> None:
        self.cell = cell
        self.pooling = pooling
        self.dim = dim
        self.layers = layers
        self.max_length = max_length
        self.epochs = epochs
        self.batch_tokens = batch_tokens
        self.learning_rate = learning_rate
        self.dropout = dropout
        self.negatives = negatives
        self.item_init = item_init
        self.validation_share = validation_share
        self.patience = patience
        self.precision = precision
        self.horizon = horizon
        self.seed = seed
        self.progress = progress
        self.text_vectors = text_vectors
        self.max_steps = max_steps  # stop after this many optimiser steps (benchmarks' CPU samples)

    # --- fitting --------------------------------------------------------------------------------

    def _validate(self, data: PreparedData) -> None:
        for label, value, valid in (("cell", self.cell, CELLS), ("pooling", self.pooling, POOLINGS),
                                    ("item_init", self.item_init, ITEM_INITS)):
            if value not in valid:
                raise UsageError(f"unknown sequence {label} {value!r}: choose one of {', '.join(valid)}")
        if int(data.n_users) < 1 or int(data.n_items) < 1:
            raise UsageError("the sequence feature needs at least one user and one item after preprocessing")
        if self.item_init == "text" and self.text_vectors is None:
            raise UsageError("item_init 'text' needs the text encoder's item vectors; build the featuriser with "
                             "gpuclust.features.factory.build_featurizer, or pass text_vectors")

    def fit_transform(self, data: PreparedData, backend: Backend):
        with torch_threads(backend.torch_device):
            return self._fit_transform(data, backend)

    def _fit_transform(self, data: PreparedData, backend: Backend):
        import torch

        started = time.perf_counter()
        self._validate(data)
        device = backend.torch_device
        self.n_items_ = int(data.n_items)
        self.event_types_ = [str(t) for t in data.event_types]
        self.dim_ = self.dim or defaults.sequence_dim(self.n_items_)
        if self.cell == "transformer" and self.dim_ % max(1, self.dim_ // HEAD_DIM):
            raise UsageError(f"a transformer sequence encoder needs dim divisible by {self.dim_ // HEAD_DIM} heads")
        self.negatives_ = self.negatives if self.negatives is not None else (
            None if self.n_items_ <= defaults.FULL_SOFTMAX_ITEMS else defaults.DEFAULT_NEGATIVES)
        generator = seeded(self.seed, device)
        seq = build_sequences(data, backend, self.event_types_, self.max_length, device)
        self.network_ = build_network(self.n_items_, len(self.event_types_), self.dim_, self.cell, self.layers,
                                      self.dropout, self.max_length).to(device)
        init = self._init_items(data, backend) if self.item_init == "text" else None

        # The held-out slice: the last events (up to VALIDATION_EVENTS, leaving 2) of a seeded share of
        # users with at least 3 events; they are never training targets.
        rng = np.random.default_rng(self.seed)
        lengths = seq.host_lengths
        candidates = np.flatnonzero(lengths >= 3)
        n_val = defaults.validation_users(self.validation_share, len(candidates), self.n_items_)
        val_users = np.sort(rng.choice(candidates, n_val, replace=False)) if n_val else np.empty(0, np.int64)
        n_held = np.zeros(seq.n_users, dtype=np.int64)
        n_held[val_users] = np.minimum(VALIDATION_EVENTS, lengths[val_users] - 2)
        held = torch.as_tensor(n_held, device=device)

        classes = self.n_items_ + 1 if self.negatives_ is None else self.negatives_ + 1
        budget = self.batch_tokens or defaults.batch_tokens(device, classes, seq.n_tokens)
        batcher = TokenBatcher(lengths, max(budget, int(lengths.max())), defaults.MAX_BATCH_ROWS, self.seed)
        q = sampling_distribution(torch.bincount(seq.items, minlength=self.n_items_ + 1)) if self.negatives_ else None
        net, negatives = self.network_, self.negatives_
        static_plan = batcher.plan(shuffle=False)
        steps_per_epoch = len(static_plan)
        padded = sum(b.tokens for b in static_plan)
        epochs = self.epochs or defaults.epochs_for(steps_per_epoch, defaults.SEQUENCE_TARGET_STEPS,
                                                    defaults.SEQUENCE_EPOCHS)
        plan, epochs = capped(batcher.plan, epochs, steps_per_epoch, self.max_steps)

        def targets_of(batch):
            items, kinds, gaps, lens, mask = gather(seq, batch.rows)
            index = torch.as_tensor(batch.rows, device=device)
            # target of position j is the item at j + 1; a held-out user's last events are not targets
            last = lens - 1 - held[index]
            valid = torch.arange(items.shape[1], device=device)[None, :] < last[:, None]
            return items, kinds, gaps, lens, mask, valid

        horizon = self.horizon
        max_cells = defaults.logit_cells(device)

        def loss_of(batch):
            items, kinds, gaps, lens, mask, valid = targets_of(batch)
            states = net(items, kinds, gaps, lens, mask)
            rows, cols = torch.nonzero(valid, as_tuple=True)
            if horizon > 1:  # a random one of the next `horizon` events (never past the last target)
                last = (lens - 1 - held[torch.as_tensor(batch.rows, device=device)])[rows]
                reach = torch.clamp(last - cols, max=horizon)
                step = 1 + (torch.rand(len(cols), device=device, generator=generator) * reach).long()
            else:
                step = 1
            target = items[rows, cols + step]
            h = states[rows, cols]
            return (next_item_loss(h, target, net.items.weight, net.bias, negatives, q, generator, max_cells),
                    int(target.numel()))

        def units(batch):
            lens = lengths[batch.rows]
            return int(np.maximum(lens - 1 - n_held[batch.rows], 0).sum())

        chunk = defaults.logit_rows(device, self.n_items_ + 1)

        n_targets = int(n_held.sum())

        def validate():
            """Full-softmax loss and HR@10 of each held-out event, predicted from the events before it."""
            total, hits = 0.0, 0
            for batch in batcher.plan(val_users, shuffle=False):
                items, kinds, gaps, lens, mask = gather(seq, batch.rows)
                states = net(items, kinds, gaps, lens, mask)
                index = torch.as_tensor(batch.rows, device=device)
                steps = torch.arange(items.shape[1], device=device)[None, :]
                # positions lens-1-held .. lens-2 predict the held-out events lens-held .. lens-1
                chosen = (steps >= (lens - 1 - held[index])[:, None]) & (steps < (lens - 1)[:, None])
                rows, cols = torch.nonzero(chosen, as_tuple=True)
                h, target = states[rows, cols], items[rows, cols + 1]
                for start in range(0, len(rows), chunk):
                    part = slice(start, start + chunk)
                    logits = (h[part] @ net.items.weight.t() + net.bias).float()
                    logits[:, 0] = float("-inf")
                    total += float(torch.nn.functional.cross_entropy(logits, target[part], reduction="sum"))
                    top: torch.Tensor = logits.topk(min(10, self.n_items_), dim=1).indices
                    hits += int(torch.any(top == target[part, None], dim=1).sum())
            return {"loss": total / n_targets, "hr10": hits / n_targets}

        if init is not None:
            with torch.no_grad():
                net.items.weight[1:] = init
        trainer = Trainer("sequence", net, learning_rate=self.learning_rate or defaults.learning_rate(self.cell),
                          epochs=epochs, patience=self.patience,
                          precision=self.precision, device=device, progress=self.progress)
        self.precision_ = trainer.precision
        report = trainer.fit(plan, loss_of, units, validate if len(val_users) else None,
                             shrink=batcher.shrink, split=lambda b: b.halves(), work=lambda b: int(lengths[b.rows].sum()))
        self.batch_tokens_ = batcher.budget
        users = self._encode(seq, backend, batcher.budget)
        self.info_ = {"dims": int(self.dim_), "cell": self.cell, "pooling": self.pooling, "layers": self.layers,
                      "max_length": self.max_length, "negatives": self.negatives_ or "full softmax",
                      "item_init": self.item_init, "n_users": int(seq.n_users), "events": int(seq.n_tokens),
                      "validation_users": int(len(val_users)), "batch_tokens": int(batcher.budget),
                      "padding_share": round(1.0 - seq.n_tokens / max(padded, 1), 4),
                      "steps_per_epoch": steps_per_epoch, "training": report.to_dict(),
                      "flops_per_token": self.flops_per_token(), "seconds": round(time.perf_counter() - started, 4)}
        backend.free_caches()
        return users

    def _init_items(self, data: PreparedData, backend: Backend):
        """The text encoder's item vectors projected to `dim` (PCA), scaled to the embeddings' init."""
        import torch

        from gpuclust.backend import to_torch

        vectors: torch.Tensor = to_torch(backend.xp.ascontiguousarray(self.text_vectors(data, backend))).float()
        vectors = vectors.to(backend.torch_device)
        centred = vectors - vectors.mean(0, keepdim=True)
        rank = min(self.dim_, *centred.shape)
        u, s, _ = torch.linalg.svd(centred, full_matrices=False)
        projected = torch.zeros(len(vectors), self.dim_, device=vectors.device)
        projected[:, :rank] = u[:, :rank] * s[:rank]
        return projected / projected.std().clamp(min=1e-8) * self.dim_ ** -0.5

    def flops_per_token(self) -> int:
        """Training FLOPs per event (forward x 3): encoder matmuls plus the output layer."""
        d, n = self.dim_, self.n_items_ + 1
        encoder = {"gru": 3 * 2 * 2 * d * d, "lstm": 4 * 2 * 2 * d * d,
                   "transformer": 2 * (4 * d * d + 8 * d * d) + 2 * 2 * d * self.max_length}[self.cell] * self.layers
        output = 2 * d * (n if self.negatives_ is None else self.negatives_ + 1)
        return int(3 * (encoder + output))

    # --- encoding users ------------------------------------------------------------------------

    def _encode(self, seq: Sequences, backend: Backend, budget: int):
        import torch

        from gpuclust.features.text.encoder import autocast_context

        device = backend.torch_device
        out = torch.zeros((seq.n_users, self.dim_), dtype=torch.float32, device=device)
        batcher = TokenBatcher(seq.host_lengths, max(budget, int(seq.host_lengths.max(initial=1))),
                               defaults.MAX_BATCH_ROWS, self.seed)
        net = self.network_.eval()
        with torch.inference_mode(), autocast_context(self.precision_, device):
            for batch in batcher.plan(shuffle=False):
                items, kinds, gaps, lens, mask = gather(seq, batch.rows)
                states = net(items, kinds, gaps, lens, mask).float()
                if self.pooling == "last":
                    pooled = states[torch.arange(len(batch.rows), device=device), lens - 1]
                else:
                    pooled = (states * mask[..., None]).sum(1) / lens[:, None].clamp(min=1)
                out[torch.as_tensor(batch.rows, device=device)] = pooled
        out = torch.nn.functional.normalize(out, dim=1)
        return from_torch(out, backend)

    def transform(self, data: PreparedData, backend: Backend):
        """New users through the trained encoder (item indices follow the model's vocabulary)."""
        with torch_threads(backend.torch_device):
            seq = build_sequences(data, backend, self.event_types_, self.max_length, backend.torch_device)
            return self._encode(seq, backend, self.batch_tokens_)

    # --- saved models -----------------------------------------------------------------------------

    def state(self) -> tuple[dict, dict]:
        meta = {"cell": self.cell, "pooling": self.pooling, "dim": self.dim_, "layers": self.layers,
                "max_length": self.max_length, "dropout": self.dropout, "n_items": self.n_items_,
                "event_types": self.event_types_, "negatives": self.negatives_, "precision": self.precision_,
                "batch_tokens": self.batch_tokens_, "seed": self.seed}
        return meta, module_arrays(self.network_)

    @classmethod
    def from_state(cls, meta: dict, arrays: dict, backend: Backend) -> SequenceFeaturizer:
        from gpuclust.features.text.encoder import resolve_precision

        self = cls(meta["cell"], meta["pooling"], meta["dim"], meta["layers"], meta["max_length"],
                   dropout=meta["dropout"], seed=meta["seed"])
        self.dim_, self.n_items_, self.event_types_ = meta["dim"], meta["n_items"], list(meta["event_types"])
        self.negatives_, self.batch_tokens_ = meta["negatives"], meta["batch_tokens"]
        self.precision_ = resolve_precision("auto", backend.torch_device)  # wherever it was trained
        net = build_network(self.n_items_, len(self.event_types_), self.dim_, self.cell, self.layers, self.dropout,
                            self.max_length)
        self.network_ = load_module_arrays(net, arrays, backend.torch_device)
        return self


def text_item_vectors(text_config: Any, seed: int, embedding_model: Any = None, item_vectors: Any = None):
    """A function (data, backend) -> the text encoder's item vectors, for `item_init="text"`: the model
    the text settings name (or `embedding_model`), or precomputed `item_vectors`."""
    import dataclasses

    def vectors(data: PreparedData, backend: Backend):
        from gpuclust.features.text.featurizer import TextFeaturizer

        options = dataclasses.asdict(text_config)
        options["mode"] = "item"
        if embedding_model is not None:
            options["model"] = embedding_model
        featurizer = TextFeaturizer(**options, seed=seed, item_vectors=item_vectors)
        featurizer.fit_transform(data, backend)
        return featurizer.item_vectors_

    return vectors

