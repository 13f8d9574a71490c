"""`AutoencoderFeaturizer`: users as the bottleneck of a Mult-DAE / Mult-VAE (Liang et al. 2018) over
the sparse users x items matrix.

    users x items (summed event weights, log1p) -> row-L2 input, entries dropped at random (denoising)
    -> EmbeddingBag (a sparse product: no dense users x items matrix, ever) -> tanh -> bottleneck
       (VAE: mean and log-variance, KL annealed up to beta)
    -> tanh -> item logits: multinomial log-likelihood of the user's row (full softmax, chunked over
       the items beyond the device's logit budget; or sampled with logQ correction for large catalogues)
    user vector = the bottleneck (the mean for a VAE) of the whole row, L2-normalised

Batches are users: their CSR rows are gathered on the device per step. Early stopping holds out a
fifth of the items of a seeded share of users (never inputs or targets in training) and scores how
well the rest predicts them (multinomial loss, HR@10 over items the user does not have).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuclust.backend import Backend, from_torch, to_host, to_torch
from gpuclust.errors import UsageError
from gpuclust.features.learned import defaults
from gpuclust.features.learned.softmax import multinomial_loss, sampling_distribution
from gpuclust.features.learned.training import Trainer, capped, seeded, torch_threads
from gpuclust.features.learned.weights import load_module_arrays, module_arrays
from gpuclust.features.text.pooling import interaction_weights
from gpuclust.preprocess.prepared import PreparedData

if TYPE_CHECKING:  # torch is imported where it is used: a CPU-only install starts fast
    import torch

KINDS = ("dae", "vae")
HELD_SHARE = 0.2


def build_network(n_items: int, hidden: int, dim: int, kind: str, dropout: float) -> torch.nn.Module:
    import torch
    from torch import nn

    class MultAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encode_items = nn.EmbeddingBag(n_items, hidden, mode="sum")
            self.encode_bias = nn.Parameter(torch.zeros(hidden))
            self.latent = nn.Linear(hidden, 2 * dim if kind == "vae" else dim)
            self.decode_hidden = nn.Linear(dim, hidden)
            self.decode_items = nn.Linear(hidden, n_items)
            self.drop = nn.Dropout(dropout)
            nn.init.xavier_uniform_(self.encode_items.weight)

        def encode(self, cols, offsets, values):
            """(mean, log-variance or None) of each row of a CSR batch (cols, row offsets, values)."""
            h = torch.tanh(self.encode_items(cols, offsets, per_sample_weights=values) + self.encode_bias)
            z = self.latent(h)
            if kind == "vae":
                return z[:, :dim], z[:, dim:]
            return z, None

        def decode(self, z):
            return torch.tanh(self.decode_hidden(z))

    return MultAE()


class RowBatch:
    """Users `rows` of the device CSR matrix."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def halves(self) -> list[RowBatch]:
        mid = len(self.rows) // 2
        return [RowBatch(self.rows[:mid]), RowBatch(self.rows[mid:])]


class DeviceCSR:
    """indptr / indices / values as torch tensors on the training device."""

    def __init__(self, indptr, indices, values) -> None:
        self.indptr, self.indices, self.values = indptr, indices, values


def _device_csr(matrix, backend: Backend, device: str) -> DeviceCSR:
    xp = backend.xp

    def dev(a, dtype):
        return to_torch(xp.ascontiguousarray(a.astype(dtype))).to(device)

    return DeviceCSR(dev(matrix.indptr, np.int64), dev(matrix.indices, np.int64), dev(matrix.data, np.float32))


def _normalised_rows(row, values, n_rows: int):
    """Each row scaled to unit L2 norm (the Mult-VAE input)."""
    import torch

    norms = torch.zeros(n_rows, device=values.device).index_add_(0, row, values * values).sqrt()
    return values / norms.clamp(min=1e-12)[row]


class AutoencoderFeaturizer:
    """Mult-DAE / Mult-VAE bottleneck; float32 (n_users, dim) in `backend.xp`.

    kind: "dae" (default) or "vae". dim, hidden, epochs, batch_users: None sizes them from the data
    (`defaults`). negatives: None for a full softmax up to `defaults.FULL_SOFTMAX_ITEMS` items.
    """

    name = "autoencoder"

    def __init__(self, kind: str = "dae", dim: int | None = None, hidden: int | None = None, epochs: int | None = None,
                 batch_users: int | None = None, learning_rate: float | None = 0.001, dropout: float = 0.5,
                 beta: float = 0.2, negatives: int | None = None, validation_share: float = 0.1, patience: int = 3,
                 precision: str = "auto", seed: int = 0, progress: Any = None, max_steps: int | None = None) -> None:
        self.kind = kind
        self.dim = dim
        self.hidden = hidden
        self.epochs = epochs
        self.batch_users = batch_users
        self.learning_rate = learning_rate
        self.dropout = dropout
        self.beta = beta
        self.negatives = negatives
        self.validation_share = validation_share
        self.patience = patience
        self.precision = precision
        self.seed = seed
        self.progress = progress
        self.max_steps = max_steps  # stop after this many optimiser steps (memory benchmarks)

    def fit_transform(self, data: PreparedData, backend: Backend):
        with torch_threads(backend.torch_device):
            return self._fit_transform(data, backend)

    def _fit_transform(self, data: PreparedData, backend: Backend):
        if int(data.n_users) < 1 or int(data.n_items) < 1:
            raise UsageError("the autoencoder feature needs at least one user and one item after preprocessing")
        return self.fit_matrix(_log_weights(interaction_weights(data, backend), backend), backend)

    def fit_matrix(self, matrix, backend: Backend):
        """Train on a users x items CSR matrix (SciPy or cupyx) of non-negative weights; the user vectors.
        (`fit_transform` passes log1p of the users' summed event weights.)"""
        import torch

        started = time.perf_counter()
        if self.kind not in KINDS:
            raise UsageError(f"unknown autoencoder kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        device = backend.torch_device
        self.n_items_ = int(matrix.shape[1])
        default_hidden, default_dim = defaults.autoencoder_sizes(self.n_items_)
        self.hidden_, self.dim_ = self.hidden or default_hidden, self.dim or default_dim
        self.negatives_ = self.negatives if self.negatives is not None else (
            None if self.n_items_ <= defaults.FULL_SOFTMAX_ITEMS else defaults.DEFAULT_NEGATIVES)
        generator = seeded(self.seed, device)
        n_users = int(matrix.shape[0])
        csr = _device_csr(matrix, backend, device)
        self.network_ = net = build_network(self.n_items_, self.hidden_, self.dim_, self.kind, self.dropout).to(device)

        # The held-out slice: a fifth of the entries of a seeded share of users with 5 or more items.
        rng = np.random.default_rng(self.seed)
        nnz = np.diff(to_host(matrix.indptr))
        candidates = np.flatnonzero(nnz >= 5)
        n_val = defaults.validation_users(self.validation_share, len(candidates), self.n_items_)
        val_users = np.sort(rng.choice(candidates, n_val, replace=False)) if n_val else np.empty(0, np.int64)
        held = torch.zeros(int(matrix.nnz), dtype=torch.bool, device=device)
        if n_val:
            indptr = to_host(matrix.indptr).astype(np.int64)
            picks = [indptr[u] + rng.choice(nnz[u], max(1, int(HELD_SHARE * nnz[u])), replace=False) for u in val_users]
            held[torch.as_tensor(np.concatenate(picks), device=device)] = True
        keep_entry = ~held

        batch = self.batch_users or defaults.autoencoder_batch(self.n_items_, device, self.negatives_)
        planner = _UserPlanner(n_users, batch, self.seed)
        steps_per_epoch = -(-n_users // batch)
        epochs = self.epochs or defaults.epochs_for(steps_per_epoch, defaults.AUTOENCODER_TARGET_STEPS,
                                                    defaults.AUTOENCODER_EPOCHS)
        plan, epochs = capped(planner.plan, epochs, steps_per_epoch, self.max_steps)
        counts = torch.zeros(self.n_items_, device=device).index_add_(0, csr.indices, csr.values)
        q = sampling_distribution(counts, padding=False) if self.negatives_ else None
        negatives, kind, beta = self.negatives_, self.kind, self.beta
        total_anneal = max(1, epochs * steps_per_epoch // 2)  # KL weight reaches beta halfway through
        state = {"step": 0}
        max_cells = defaults.logit_cells(device)

        def loss_of(piece: RowBatch):
            users = torch.as_tensor(piece.rows, device=device)
            row, cols, values, keep = self._rows(csr, users, keep_entry)
            row, cols, values = row[keep], cols[keep], values[keep]
            inputs = values
            if net.training and self.dropout > 0:  # denoising: drop whole entries, then normalise
                kept = torch.rand(len(values), device=device, generator=generator) >= self.dropout
                inputs = values * kept
            inputs = _normalised_rows(row, inputs, len(users))
            offsets = _offsets(row, len(users))
            mean, logvar = net.encode(cols, offsets, inputs)
            z = mean
            loss_kl = 0.0
            if kind == "vae":
                z = mean + torch.randn(mean.shape, device=device, generator=generator) * torch.exp(0.5 * logvar)
                kl = -0.5 * (1 + logvar - mean.pow(2) - torch.exp(logvar)).sum()
                weight = beta * min(1.0, state["step"] / total_anneal)
                loss_kl = weight * kl
            state["step"] += 1
            h = net.decode(z)
            loss = multinomial_loss(h, row, cols, values, net.decode_items.weight, net.decode_items.bias,
                                    negatives, q, generator, max_cells)
            return loss + loss_kl, len(users)

        chunk = defaults.logit_rows(device, self.n_items_)

        def validate():
            """Multinomial loss of the held-out entries given the rest, and HR@10 of the first of them."""
            total, hits, n = 0.0, 0, 0
            for start in range(0, len(val_users), chunk):
                users = torch.as_tensor(val_users[start:start + chunk], device=device)
                row, cols, values, keep = self._rows(csr, users, keep_entry)
                inputs = _normalised_rows(row[keep], values[keep], len(users))
                mean, _ = net.encode(cols[keep], _offsets(row[keep], len(users)), inputs)
                logits = (net.decode(mean) @ net.decode_items.weight.t() + net.decode_items.bias).float()
                logp = torch.log_softmax(logits, dim=1)
                out = ~keep
                total += float(-(values[out] * logp[row[out], cols[out]]).sum())
                logits[row[keep], cols[keep]] = float("-inf")  # rank among items the input lacks
                top = logits.topk(min(10, self.n_items_), dim=1).indices
                target = torch.zeros(logits.shape, dtype=torch.bool, device=device)
                target[row[out], cols[out]] = True
                hits += int(target.gather(1, top).any(dim=1).sum())
                n += len(users)
            return {"loss": total / max(n, 1), "hr10": hits / max(n, 1)}

        trainer = Trainer("autoencoder", net, learning_rate=self.learning_rate or 0.001, epochs=epochs,
                          patience=self.patience, precision=self.precision, device=device, progress=self.progress)
        self.precision_ = trainer.precision
        report = trainer.fit(plan, loss_of, lambda b: len(b.rows), validate if n_val else None,
                             shrink=planner.shrink, split=lambda b: b.halves())
        self.batch_users_ = planner.batch
        users = self._encode(csr, n_users, backend)
        self.info_ = {"dims": int(self.dim_), "kind": self.kind, "hidden": int(self.hidden_),
                      "negatives": self.negatives_ or "full softmax", "n_users": n_users, "n_items": self.n_items_,
                      "entries": int(matrix.nnz), "validation_users": int(n_val), "batch_users": int(planner.batch),
                      "steps_per_epoch": steps_per_epoch, "training": report.to_dict(),
                      "seconds": round(time.perf_counter() - started, 4)}
        backend.free_caches()
        return users

    @staticmethod
    def _rows(csr: DeviceCSR, users, keep_entry):
        """Entries of `users`: (row, col, value, kept-in-training mask)."""
        import torch

        starts = csr.indptr[users]
        counts = csr.indptr[users + 1] - starts
        offsets = torch.cumsum(counts, 0) - counts
        total = int(counts.sum())
        row = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts, output_size=total)
        position = torch.repeat_interleave(starts - offsets, counts, output_size=total) + \
            torch.arange(total, device=users.device)
        return row, csr.indices[position], csr.values[position], keep_entry[position]

    def _encode(self, csr: DeviceCSR, n_users: int, backend: Backend):
        import torch

        from gpuclust.features.text.encoder import autocast_context

        device = backend.torch_device
        out = torch.zeros((n_users, self.dim_), dtype=torch.float32, device=device)
        step = max(1, defaults.logit_rows(device, self.hidden_))
        net = self.network_.eval()
        everything = torch.ones(len(csr.values), dtype=torch.bool, device=device)
        with torch.inference_mode(), autocast_context(self.precision_, device):
            for start in range(0, n_users, step):
                users = torch.arange(start, min(n_users, start + step), device=device)
                row, cols, values, _ = self._rows(csr, users, everything)
                mean, _ = net.encode(cols, _offsets(row, len(users)), _normalised_rows(row, values, len(users)))
                out[start:start + len(users)] = mean.float()
        return from_torch(torch.nn.functional.normalize(out, dim=1), backend)

    def transform(self, data: PreparedData, backend: Backend):
        """New users through the trained encoder (item indices follow the model's vocabulary)."""
        with torch_threads(backend.torch_device):
            matrix = _log_weights(interaction_weights(data, backend), backend)
            return self._encode(_device_csr(matrix, backend, backend.torch_device), int(matrix.shape[0]), backend)

    def state(self) -> tuple[dict, dict]:
        meta = {"kind": self.kind, "dim": self.dim_, "hidden": self.hidden_, "n_items": self.n_items_,
                "dropout": self.dropout, "negatives": self.negatives_, "seed": self.seed}
        return meta, module_arrays(self.network_)

    @classmethod
    def from_state(cls, meta: dict, arrays: dict, backend: Backend) -> AutoencoderFeaturizer:
        from gpuclust.features.text.encoder import resolve_precision

        self = cls(meta["kind"], meta["dim"], meta["hidden"], dropout=meta["dropout"], seed=meta["seed"])
        self.dim_, self.hidden_, self.n_items_, self.negatives_ = meta["dim"], meta["hidden"], meta["n_items"], \
            meta["negatives"]
        self.precision_ = resolve_precision("auto", backend.torch_device)
        net = build_network(self.n_items_, self.hidden_, self.dim_, self.kind, self.dropout)
        self.network_ = load_module_arrays(net, arrays, backend.torch_device)
        return self


def _offsets(row, n_rows: int):
    """Start of each row in a row-sorted entry list (EmbeddingBag's offsets)."""
    import torch

    counts = torch.bincount(row, minlength=n_rows)
    return torch.cumsum(counts, 0) - counts


def _log_weights(matrix, backend: Backend):
    """log1p of summed event weights: repeat purchases count, but sublinearly."""
    matrix = matrix.tocsr()
    matrix.sum_duplicates()
    matrix.data = backend.xp.log1p(matrix.data).astype(np.float32)
    return matrix


class _UserPlanner:
    """A seeded shuffle of the users in batches of `batch`; `shrink()` halves the batch after an OOM."""

    def __init__(self, n_users: int, batch: int, seed: int) -> None:
        self.n_users, self.batch = n_users, int(batch)
        self.rng = np.random.default_rng(seed)

    def shrink(self) -> None:
        self.batch = max(1, self.batch // 2)

    def plan(self) -> list[RowBatch]:
        order = self.rng.permutation(self.n_users)
        return [RowBatch(order[i:i + self.batch]) for i in range(0, self.n_users, self.batch)]
