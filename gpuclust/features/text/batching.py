"""Tokenise once, then cut batches by a token budget over length-sorted sequences.

Padding is wasted work: a batch costs `rows x longest`, so sequences are sorted by token length and a
batch takes as many rows as fit in `batch_tokens` padded tokens. Sorting longest-first makes the most
memory-hungry batch run first, so an out-of-memory shows up (and is halved away) at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpuclust.errors import UsageError

TOKENIZE_CHUNK = 8192


@dataclass
class TokenizedTexts:
    """Token ids of many texts in one flat int64 array (no per-text Python lists kept around)."""

    ids: np.ndarray  # int64, all sequences back to back
    offsets: np.ndarray  # int64, start of each sequence in `ids`
    lengths: np.ndarray  # int64, tokens per sequence (special tokens included)
    pad_id: int = 0
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def from_lists(cls, sequences: Sequence[Sequence[int]], pad_id: int = 0,
                   input_names: tuple[str, ...] = ("input_ids", "attention_mask")) -> TokenizedTexts:
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        offsets = np.zeros(len(lengths), dtype=np.int64)
        if len(lengths):
            np.cumsum(lengths[:-1], out=offsets[1:])
        ids = np.fromiter((t for s in sequences for t in s), dtype=np.int64, count=int(lengths.sum()))
        return cls(ids, offsets, lengths, pad_id, input_names)

    def subset(self, index: np.ndarray) -> TokenizedTexts:
        """The sequences at `index`, in that order."""
        index = np.asarray(index, dtype=np.int64)
        lengths = self.lengths[index]
        gather = _gather_index(self.offsets[index], lengths)
        offsets = np.zeros(len(index), dtype=np.int64)
        if len(index):
            np.cumsum(lengths[:-1], out=offsets[1:])
        return TokenizedTexts(self.ids[gather], offsets, lengths, self.pad_id, self.input_names)

    def pad(self, index: np.ndarray, multiple_of: int = 1) -> dict[str, np.ndarray]:
        """Padded model inputs (int64) for the sequences at `index`, vectorised (no Python loop)."""
        lengths = self.lengths[index]
        width = int(lengths.max()) if len(lengths) else 0
        if multiple_of > 1:
            width = -(-width // multiple_of) * multiple_of
        rows = np.repeat(np.arange(len(index)), lengths)
        cols = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        input_ids = np.full((len(index), width), self.pad_id, dtype=np.int64)
        input_ids[rows, cols] = self.ids[_gather_index(self.offsets[index], lengths)]
        mask = np.zeros((len(index), width), dtype=np.int64)
        mask[rows, cols] = 1
        out = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            out["token_type_ids"] = np.zeros_like(input_ids)
        return out


def _gather_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    total = int(lengths.sum())
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total)


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> TokenizedTexts:
    """Fast-tokenise on the CPU (cuDF has no GPU tokenizer since 25.10), truncated, unpadded."""
    if max_length < 2:
        raise UsageError(f"max_length must be at least 2 tokens, got {max_length}")
    ids: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        chunk = list(texts[start:start + TOKENIZE_CHUNK])
        enc = tokenizer(chunk, truncation=True, max_length=max_length, padding=False,
                        return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        lengths.append(np.fromiter((len(e) for e in enc), dtype=np.int64, count=len(enc)))
        ids.append(np.fromiter((t for e in enc for t in e), dtype=np.int64, count=int(lengths[-1].sum())))
    length = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(length), dtype=np.int64)
    if len(length):
        np.cumsum(length[:-1], out=offsets[1:])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    names = tuple(getattr(tokenizer, "model_input_names", ("input_ids", "attention_mask")))
    return TokenizedTexts(np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64), offsets, length,
                          int(pad_id), names)


def length_order(lengths: np.ndarray) -> np.ndarray:
    """Longest first; ties keep input order (stable), so results are deterministic."""
    return np.argsort(-np.asarray(lengths), kind="stable")


def rows_for(longest: int, batch_tokens: int, max_rows: int | None = None) -> int:
    """How many rows of `longest` padded tokens fit the budget (at least one)."""
    rows = max(1, batch_tokens // max(1, longest))
    return min(rows, max_rows) if max_rows else rows


def next_batch(order: np.ndarray, lengths: np.ndarray, start: int, batch_tokens: int,
               multiple_of: int = 1, max_rows: int | None = None, uniform: bool = False) -> np.ndarray:
    """The batch beginning at `start` of a longest-first `order`; its first row is its longest.

    uniform: end the batch where the length changes, so that it needs no padding and no attention
    mask (the GPU then runs mask-free, flash attention), unless that would leave it under half the
    rows of the padded batch (a rare length: padding is then cheaper than a small batch)."""
    exact = int(lengths[order[start]])
    longest = -(-exact // multiple_of) * multiple_of if multiple_of > 1 else exact
    batch = order[start:start + rows_for(longest, batch_tokens, max_rows)]
    if uniform:
        window = order[start:start + rows_for(exact, batch_tokens, max_rows)]
        differs = np.flatnonzero(lengths[window] != exact)
        same = window[:differs[0]] if len(differs) else window
        if len(same) * 2 >= len(batch):
            return same
    return batch


def token_budget_batches(lengths: np.ndarray, batch_tokens: int, multiple_of: int = 1,
                         max_rows: int | None = None) -> Iterator[np.ndarray]:
    """Length-sorted batches under a padded-token budget (the static plan, without OOM retries)."""
    order = length_order(lengths)
    start = 0
    while start < len(order):
        batch = next_batch(order, lengths, start, batch_tokens, multiple_of, max_rows)
        yield batch
        start += len(batch)
