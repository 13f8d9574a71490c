"""Sizes that work without tuning from a thousand to ten million users, and the reasons for them.

Epochs follow an update budget rather than a fixed count: a small log needs many passes to take
enough optimiser steps, a large one converges within a few passes (early stopping usually ends
training before the cap either way). Embedding sizes grow with the catalogue, slowly.
"""

from __future__ import annotations

import math

# Above this many items the output layer is a sampled softmax (shared negatives, logQ-corrected):
# a full softmax costs batch x items per step, which at 100k+ items dominates everything else.
FULL_SOFTMAX_ITEMS = 50_000
DEFAULT_NEGATIVES = 2048

SEQUENCE_TARGET_STEPS = 3000
SEQUENCE_EPOCHS = (2, 40)
AUTOENCODER_TARGET_STEPS = 3000
AUTOENCODER_EPOCHS = (3, 150)

CPU_BATCH_TOKENS = 8192
GPU_BATCH_TOKENS = 131_072
MAX_BATCH_ROWS = 4096
AE_BATCH_CELLS = 1 << 22  # batch users x items of one full-softmax step on the CPU (16 MiB of logits)
AE_GPU_BATCH_CELLS = 1 << 26


def sequence_dim(n_items: int) -> int:
    """32 for a few hundred items, 64 up to ~20k, 128 beyond: the item table dominates the parameters."""
    if n_items <= 1_000:
        return 32
    if n_items <= 20_000:
        return 64
    return 128


def autoencoder_sizes(n_items: int) -> tuple[int, int]:
    """(hidden, bottleneck): Mult-VAE's 600-200 for large catalogues, smaller for small ones."""
    hidden = 256 if n_items <= 20_000 else 600
    return hidden, 64


def epochs_for(steps_per_epoch: int, target_steps: int, bounds: tuple[int, int]) -> int:
    low, high = bounds
    return int(min(high, max(low, math.ceil(target_steps / max(steps_per_epoch, 1)))))


CPU_LOGIT_CELLS = 1 << 25  # tokens x output classes of one step: 128 MiB of fp32 logits on the CPU
GPU_LOGIT_CELLS = 1 << 28
MAX_VALIDATION_USERS = 20_000
VALIDATION_CELLS = 200_000_000  # held-out users x catalogue items scored per validation (a few seconds)


def validation_users(share: float, candidates: int, n_items: int) -> int:
    """Users in the held-out slice: `share` of the candidates, capped so that scoring them against the
    whole catalogue stays cheap (20,000 users at most; 2,000 at 100k items)."""
    cap = max(1_000, min(MAX_VALIDATION_USERS, VALIDATION_CELLS // max(n_items, 1)))
    return int(min(round(share * candidates), cap))


MIN_STEPS_PER_EPOCH = 128  # a small log still takes enough optimiser steps
MIN_BATCH_TOKENS = 512


def batch_tokens(device: str, classes: int, n_tokens: int) -> int:
    """Events per step: the device's budget, lowered so that a small log still gives MIN_STEPS_PER_EPOCH
    steps per epoch (and, on the CPU only, so that tokens x classes stays within CPU_LOGIT_CELLS, which
    keeps the CPU's batches, and so its results, as they were). Steps, not epochs, are what a small log
    lacks: on 1,200 synthetic users a GRU learnt nothing but popularity in 100 steps, and the order of
    its users' categories only after ~3,000 (benchmarks/results/learned-cpu.md). On the GPU the full
    softmax is chunked over the items (`softmax.chunked_logsumexp`), so the logits no longer cap the
    batch: it reaches GPU_BATCH_TOKENS."""
    on_gpu = str(device).startswith("cuda")
    tokens = GPU_BATCH_TOKENS if on_gpu else min(CPU_BATCH_TOKENS, CPU_LOGIT_CELLS // max(classes, 1))
    return int(max(MIN_BATCH_TOKENS, min(tokens, n_tokens // MIN_STEPS_PER_EPOCH)))


def learning_rate(cell: str) -> float:
    """Adam's step: recurrent encoders train well at 5e-3, the Transformer (SASRec's 1e-3) lower."""
    return 0.002 if cell == "transformer" else 0.005


def cpu_threads() -> int:
    """torch threads for training on the CPU: 1 unless GPUCLUST_TORCH_THREADS says otherwise.

    The recurrent and small dense matmuls of these models gain little from threads and lose badly when
    the cores are shared: one GRU step (64 x 128 x 32) took 0.05 s on 1 thread and 3.8 s on 2 on this
    2-core machine under a load of 7."""
    import os

    value = os.environ.get("GPUCLUST_TORCH_THREADS", "1")
    return max(1, int(value)) if value.isdigit() else 1


def logit_cells(device: str) -> int:
    """Logits held at once (rows x classes): beyond this a full softmax is chunked over the items."""
    return GPU_LOGIT_CELLS if str(device).startswith("cuda") else CPU_LOGIT_CELLS


def logit_rows(device: str, classes: int) -> int:
    """Rows of logits computed at once when every class is scored (validation)."""
    return int(max(1, logit_cells(device) // max(classes, 1)))


AE_GPU_MAX_USERS = 4096


def autoencoder_batch(n_items: int, device: str, negatives: int | None) -> int:
    """Users per step. On the CPU the logits (users x items, or x candidates when sampled) bound it, as
    before; on the GPU the full softmax is chunked over the items, so only the candidates of a sampled
    one (materialised) do."""
    if str(device).startswith("cuda"):
        if negatives is None:
            return AE_GPU_MAX_USERS
        return int(min(AE_GPU_MAX_USERS, max(32, AE_GPU_BATCH_CELLS // (negatives * 4))))
    width = n_items if negatives is None else negatives * 4
    return int(min(512, max(32, AE_BATCH_CELLS // max(width, 1))))
