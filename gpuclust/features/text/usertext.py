"""User-text mode: each user becomes one text of their interactions, encoded directly.

The textbook recipe, kept so the two modes can be compared honestly; it is slower than item mode because
every user is a long sequence and nothing is shared between users. Order: most recent first, so when the
text is truncated to the model's maximum length the oldest interactions are the ones dropped. An item
repeated by a user appears once, at its most recent position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from gpuclust.backend import to_host
from gpuclust.preprocess.prepared import PreparedData

if TYPE_CHECKING:
    from gpuclust.preprocess.table import EventTable

ITEM_SEPARATOR = "; "


def user_texts(data: PreparedData, item_texts: Sequence[str], max_items: int = 128) -> list[str]:
    """One text per user_idx (0..n_users-1): their distinct items' texts, most recent first.

    `max_items` caps how many items are joined before tokenising; the tokenizer's truncation decides
    the rest. Every item costs at least one token, so a cap at the model's max length loses nothing.
    """
    table: EventTable = data.table  # the event table's arrays: no events frame (texts are joined on the host anyway)
    users = np.asarray(to_host(table.user), dtype=np.int64)
    items = np.asarray(to_host(table.item), dtype=np.int64)
    stamps = np.asarray(to_host(table.time), dtype=np.int64)
    order = np.lexsort((-stamps, users))  # by user, newest first; ties keep the table's (input) order
    users, items = users[order], items[order]
    pair = users * max(1, int(data.n_items)) + items
    _, first = np.unique(pair, return_index=True)  # first = most recent occurrence of each (user, item)
    keep = np.sort(first)
    users, items = users[keep], items[keep]
    starts = np.searchsorted(users, np.arange(int(data.n_users)), side="left")
    ends = np.searchsorted(users, np.arange(int(data.n_users)), side="right")
    texts: list[str] = []
    for start, end in zip(starts, ends, strict=True):
        chosen = items[start:min(end, start + max_items)]
        texts.append(ITEM_SEPARATOR.join(item_texts[j] for j in chosen))
    return texts
