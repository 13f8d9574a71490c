"""Personal recommendations: EASE (Steck 2019) or sparse item-kNN over the binary users x items matrix X.

Segment popularity gives every user of a cluster the same list; a person's taste is finer than that.
On Online Retail's leave-last-out split EASE's HR@10 is about twice that of the best clusters (see
benchmarks/results/recommend-cpu.md), so the personal model is what a user with enough history gets,
and the segment list is for users with too few events (`min_items`), cold starts and campaigns.

    EASE      P = (XᵀX + λI)⁻¹,  B = I − P·diag(1/diag(P)),  diag(B) = 0,  score(u) = X_u B
    item-kNN  W[i] = the `neighbours` largest cosine similarities of item i (sparse), score(u) = X_u W

Both are computed with the backend's array library in float32 (CuPy on a GPU, NumPy here). The rule
for the catalogue: EASE while EASE_COPIES x items² x 4 bytes fits `recommend.memory_gib`, item-kNN
(weights items x neighbours) beyond. EASE_COPIES = 4 is what the GPU's general inverse holds (the Gram
kept across the λ grid, its regularised copy, the solver's factor and identity); the CPU's in-place
Cholesky inverse (`backend.spd_inverse`) holds two, so the rule leaves it headroom. The default 8 GiB
allows 23,170 items; 60 GiB of an 80 GiB H100, 63k; 120 GiB of an H200, 89k. Users are scored in
batches of BATCH_CELLS scores; items a user already has are masked from the batch's sparse rows (no
dense users x items matrix), and the top K is taken on the device.

λ and the neighbourhood size are chosen on an inner leave-last-out split of the fitted users (the rules
of `recommend.split`): every contender is fitted without the held-out items and ranked by HR@10 on them
(ties: NDCG@10, then the first in the grid); the winner is refitted on all events.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuclust.backend import Backend, dense_product, map_row_blocks, spd_inverse, to_host
from gpuclust.errors import UsageError
from gpuclust.recommend.scoring import BATCH_CELLS, hit_ranks, metrics, top_k_sorted
from gpuclust.recommend.split import held_out

if TYPE_CHECKING:
    from gpuclust.config import RecommendConfig
    from gpuclust.preprocess.table import EventTable

KINDS = ("ease", "knn")
EASE_COPIES = 4
TUNE_TOP_K = 10
PERSONAL, SEGMENT = "personal", "segment"


@dataclass
class PersonalModel:
    """Item-item weights: `weights` is dense items x items (EASE, diagonal 0) or CSR (kNN, row i holds
    item i's neighbours), on the backend's device, float32."""

    kind: str
    weights: Any
    lam: float | None = None
    neighbours: int | None = None
    selection: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return int(self.weights.shape[0])

    def scores(self, rows: Any) -> Any:
        """Dense (len(rows) x items) float32 scores of a CSR batch of users' item rows."""
        out = rows @ self.weights
        return (out if self.kind == "ease" else out.toarray()).astype(np.float32, copy=False)

    @property
    def name(self) -> str:
        """How a table names it: "EASE (λ=100)" or "item-kNN (20 neighbours)"."""
        return f"EASE (λ={self.lam:g})" if self.kind == "ease" else f"item-kNN ({self.neighbours} neighbours)"

    def to_meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "lambda": self.lam, "neighbours": self.neighbours, "items": self.n_items,
                "selection": self.selection}

    def arrays(self) -> dict[str, Any]:
        """What a saved model stores (safetensors): the dense matrix, or the CSR's three arrays."""
        if self.kind == "ease":
            return {"weights": self.weights}
        w = self.weights
        return {"data": w.data, "indices": w.indices.astype(np.int32), "indptr": w.indptr.astype(np.int64)}

    @classmethod
    def restore(cls, meta: dict[str, Any], arrays: dict[str, Any], n_items: int, backend: Backend) -> PersonalModel:
        """A saved model's weights, every number checked: kind, λ / neighbours in range, shapes that fit
        the vocabulary, finite weights, CSR indices inside the catalogue (ValueError otherwise)."""
        kind = meta["kind"]
        if kind not in KINDS:
            raise ValueError(f"personal model kind {kind!r} is none of {', '.join(KINDS)}")
        xp = backend.xp
        if kind == "ease":
            lam = float(meta["lambda"])
            if not (math.isfinite(lam) and lam > 0):
                raise ValueError(f"EASE λ {meta['lambda']!r} is not a positive number")
            w = arrays["weights"]
            if w.ndim != 2 or w.shape != (n_items, n_items) or w.dtype != np.float32:
                raise ValueError(f"EASE weights of shape {tuple(w.shape)} do not fit {n_items} items")
            if not bool(xp.isfinite(w).all()) or bool((xp.diagonal(w) != 0).any()):
                raise ValueError("EASE weights are not finite or have a non-zero diagonal")
            return cls(kind, w, lam, None, dict(meta.get("selection") or {}))
        neighbours = meta["neighbours"]
        if not isinstance(neighbours, int) or isinstance(neighbours, bool) or not 1 <= neighbours <= max(n_items, 1):
            raise ValueError(f"item-kNN neighbours {neighbours!r} is not between 1 and {n_items}")
        data, indices, indptr = arrays["data"], arrays["indices"], arrays["indptr"]
        if indptr.shape != (n_items + 1,) or data.shape != indices.shape or data.ndim != 1 \
                or data.dtype != np.float32:
            raise ValueError(f"item-kNN weights do not fit {n_items} items")
        counts = xp.diff(indptr)
        if int(to_host(indptr[0])) != 0 or int(to_host(indptr[-1])) != len(data) or bool((counts < 0).any()) \
                or bool((counts > neighbours).any()) or not bool(xp.isfinite(data).all()) \
                or (len(indices) and not (int(to_host(indices.min())) >= 0 and int(to_host(indices.max())) < n_items)):
            raise ValueError("item-kNN weights are malformed: offsets, item indices or values out of range")
        w = backend.sparse.csr_matrix((data, indices.astype(np.int32), indptr.astype(np.int64)),
                                      shape=(n_items, n_items))
        return cls(kind, w, None, int(neighbours), dict(meta.get("selection") or {}))


# --- fitting --------------------------------------------------------------------------------------

def binary_matrix(user: Any, item: Any, n_users: int, n_items: int, backend: Backend) -> Any:
    """CSR users x items, 1.0 where the user has any event on the item (repeats count once)."""
    xp = backend.xp
    u, i = xp.asarray(user).astype(xp.int64), xp.asarray(item).astype(xp.int64)
    m = backend.sparse.coo_matrix((xp.ones(len(u), dtype=xp.float32), (u, i)), shape=(n_users, n_items)).tocsr()
    m.sum_duplicates()
    m.data = xp.ones_like(m.data)
    return m


def gram(x: Any) -> Any:
    """XᵀX as a dense items x items float32 matrix (a sparse product, then dense: its size is items²).

    One product of the whole. Multiplying only the upper half (it is symmetric) by column blocks visits
    every user once per block: at 200k users / 20k items it took 2.97 s on two threads, the whole
    product 3.0 s on one."""
    g = (x.T @ x)
    return (g.toarray() if hasattr(g, "toarray") else g).astype(np.float32, copy=False)


def ease_weights(g: Any, lam: float, backend: Backend, keep_gram: bool = True) -> Any:
    """B from the Gram XᵀX and λ (Steck 2019): P = (G + λI)⁻¹, B = −P / diag(P) per column, diag(B) = 0.

    With keep_gram (the λ grid reuses G) the inverse works on a copy; without, on G itself: then EASE
    holds one items x items matrix at a time on the CPU (`backend.spd_inverse`). A λ that vanishes beside
    the Gram in float32 leaves G + λI singular: a UsageError naming it (`spd_inverse` says so on either
    device)."""
    xp = backend.xp
    a = g.copy() if keep_gram else g
    a[xp.diag_indices_from(a)] += xp.float32(lam)
    try:
        p = spd_inverse(a, backend)
    except np.linalg.LinAlgError:
        raise UsageError(f"recommend.lambdas: EASE's λ = {lam:g} is too small for this log (XᵀX + λI is singular "
                         "in float32); give larger values, e.g. lambdas = [30, 100, 300, 1000]") from None
    p /= -xp.diagonal(p)[None, :]
    p[xp.diag_indices_from(p)] = 0.0
    return p


def knn_neighbours(x: Any, most: int, backend: Backend, added: Any = None, g: Any = None) -> Any:
    """Each item's `most` largest cosine similarities to other items, best first: (indices, values),
    items x most on the device. Rows of XᵀX are read from `g` (x's dense `gram`, where it fits) or made
    in blocks, so that memory is a block x items at a time.

    With `added` (CSR users x items, 1.0 at pairs not in `x`), a second pair of the same for x + added
    comes from the same blocks: XᵀX of the sum is XᵀX plus a sparse correction, so the inner split's
    neighbours and the whole log's cost one pass of the block products."""
    xp = backend.xp
    n_items = x.shape[1]
    most = max(1, min(most, n_items - 1)) if n_items > 1 else 1
    xt = x.T.tocsr() if g is None else None
    outs = [(_inverse_norms(x, xp), None)]
    if added is not None:
        d = (added.T @ x).tocsr()
        correction = (d + d.T + added.T @ added).tocsr()
        correction.sum_duplicates()  # one entry per pair: the scatter below adds each once
        outs.append((_inverse_norms(x + added, xp), correction))

    def block(start: int, stop: int) -> list[tuple[Any, Any]]:
        rows = dense_product(xt[start:stop], x, backend) if g is None else g[start:stop]
        found = []
        for j, (inv, correction) in enumerate(outs):
            # The last list may scale the product in place; one that comes before it, or the Gram's own rows, a copy.
            s = rows if g is None and j == len(outs) - 1 else rows.copy()
            if correction is not None:  # the held-out pairs, added where they are: a few per row
                part = correction[start:stop].tocoo()
                s[xp.asarray(part.row), xp.asarray(part.col)] += part.data
            s *= inv[start:stop, None]  # cosine: co-occurrence x inv[i] x inv[j]
            s *= inv[None, :]
            s[xp.arange(stop - start), xp.arange(start, stop)] = 0.0  # an item is not its own neighbour
            found.append(top_k_sorted(s, most, xp))
        return found

    blocks = map_row_blocks(block, n_items, n_items, BATCH_CELLS, backend)
    found = [(xp.concatenate([b[j][0] for b in blocks]), xp.concatenate([b[j][1] for b in blocks]))
             for j in range(len(outs))]
    return found if added is not None else found[0]


def _inverse_norms(x: Any, xp: Any) -> Any:
    """1 / sqrt(item count) per column of a binary matrix (0 for items without users)."""
    norms = xp.sqrt(xp.asarray(x.sum(axis=0)).ravel().astype(xp.float32))
    return xp.where(norms > 0, 1.0 / xp.where(norms > 0, norms, 1.0), 0.0).astype(xp.float32)


def knn_weights(idx: Any, val: Any, neighbours: int, backend: Backend) -> Any:
    """CSR items x items of each item's first `neighbours` neighbours (zero similarities dropped)."""
    xp = backend.xp
    n_items = idx.shape[0]
    idx, val = idx[:, :neighbours], val[:, :neighbours]
    rows = xp.broadcast_to(xp.arange(n_items)[:, None], idx.shape)
    keep = val > 0
    w = backend.sparse.coo_matrix((val[keep].astype(xp.float32), (rows[keep], idx[keep])),
                                  shape=(n_items, n_items)).tocsr()
    w.sort_indices()
    return w


EASE_CPU_ITEMS = 4_000  # auto's largest EASE catalogue on the CPU (time, not memory); personal = "ease" forces it


def ease_fits(n_items: int, memory_gib: float) -> bool:
    """The catalogue rule: EASE while its dense matrices fit the memory budget."""
    return EASE_COPIES * 4 * n_items**2 <= memory_gib * 2**30


def fit_personal(table: EventTable, n_users: int, n_items: int, backend: Backend, config: RecommendConfig,
                 seed: int, matrix: Any = None) -> PersonalModel | None:
    """The personal model of `table`'s users (config.personal: auto, ease, knn or none), λ and the
    neighbourhood size chosen on an inner leave-last-out split; None for "none", an empty log, or a log where
    no user has two distinct items: no pair of items co-occurs, so every weight would be 0 and its lists
    mere ties, where the segment lists know each cluster's items.
    `matrix` is the table's `binary_matrix` where the caller has made it (the campaigns need it too)."""
    if config.personal == "none" or len(table) == 0 or n_items < 2:
        return None
    kinds = _kinds(config, n_items, backend.on_gpu)
    if matrix is None:
        matrix = binary_matrix(backend.asarray(table.user), backend.asarray(table.item), n_users, n_items, backend)
    if not bool((backend.xp.diff(matrix.indptr) > 1).any()):
        return None
    t0 = time.perf_counter()
    contenders, selection, whole = _select(table, matrix, n_items, kinds, backend, config, seed)
    best = contenders[0] if len(contenders) == 1 else max(
        contenders, key=lambda c: (c[f"HR@{TUNE_TOP_K}"], c[f"NDCG@{TUNE_TOP_K}"], -contenders.index(c)))
    selection.update({"chosen": {"kind": best["kind"], "lambda": best.get("lambda"),
                                 "neighbours": best.get("neighbours")},
                      "select_seconds": round(time.perf_counter() - t0, 3)})
    t1 = time.perf_counter()
    if best["kind"] == "ease":
        g = whole["gram"] if "gram" in whole else gram(matrix)
        model = PersonalModel("ease", ease_weights(g, best["lambda"], backend, keep_gram=False), float(best["lambda"]))
    else:
        idx, val = whole["knn"] if "knn" in whole else knn_neighbours(matrix, best["neighbours"], backend)
        model = PersonalModel("knn", knn_weights(idx, val, best["neighbours"], backend), None, int(best["neighbours"]))
    selection["fit_seconds"] = round(time.perf_counter() - t1, 3)
    model.selection = selection
    return model


def _kinds(config: RecommendConfig, n_items: int, on_gpu: bool) -> tuple[str, ...]:
    fits = ease_fits(n_items, config.memory_gib)
    if config.personal == "ease":
        if not fits:
            raise UsageError(f"recommend.personal = 'ease' needs {EASE_COPIES} x {n_items:,}² x 4 bytes = "
                             f"{EASE_COPIES * 4 * n_items**2 / 2**30:.1f} GiB, over recommend.memory_gib = "
                             f"{config.memory_gib:g}; raise memory_gib or use personal = 'knn' (or 'auto')")
        return ("ease",)
    if config.personal == "knn":
        return ("knn",)
    # auto: on the CPU the items³ inverse also bounds EASE by time (one λ: 5.7 s at 3,659 items, 204 s at
    # 20,000 on 2 cores; the grid fits it len(lambdas) + 1 times), so beyond EASE_CPU_ITEMS it is item-kNN.
    return ("ease", "knn") if fits and (on_gpu or n_items <= EASE_CPU_ITEMS) else ("knn",)


def _select(table: EventTable, matrix: Any, n_items: int, kinds: tuple[str, ...], backend: Backend,
            config: RecommendConfig, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Every contender's inner-split HR@10 / NDCG@10 (best first is not implied: grid order), and what
    the whole log's model can reuse of the split's work: its Gram ("gram") and neighbours ("knn"), each
    the split's plus the held-out pairs, so that the final fit makes no second pass over the log."""
    xp = backend.xp
    grid = [{"kind": "ease", "lambda": float(lam)} for lam in config.lambdas] if "ease" in kinds else []
    grid += [{"kind": "knn", "neighbours": int(n)} for n in config.neighbours] if "knn" in kinds else []
    user, item, time_, weight = (backend.asarray(a) for a in (table.user, table.item, table.time, table.weight))
    n_users = matrix.shape[0]
    test_users, targets = held_out(user, item, time_, weight, n_items, seed, xp, presorted=True)  # the table's rows
    if len(grid) == 1 or len(test_users) == 0:
        how = "only one contender" if len(grid) == 1 else "no user has two distinct items: first of the grid"
        return grid[:1], {"how": how, "users": 0, "contenders": grid[:1]}, {}
    if len(test_users) > config.tune_personal_users:
        pick = np.sort(np.random.default_rng(seed).choice(len(test_users), config.tune_personal_users, replace=False))
        test_users, targets = test_users[xp.asarray(pick)], targets[xp.asarray(pick)]
    added = binary_matrix(test_users, targets, n_users, n_items, backend)
    # Every event of a user on its held-out item leaves the split, so its pair leaves X: x + added = matrix.
    x = matrix - added
    x.eliminate_zeros()
    seen = x[test_users]
    whole: dict[str, Any] = {}
    knn = None
    g = gram(x) if "ease" in kinds else None
    if "knn" in kinds:  # where EASE made the Gram, item-kNN reads its rows instead of multiplying them again
        knn, whole["knn"] = knn_neighbours(x, max(config.neighbours), backend, added=added, g=g)
    for c in grid:
        t0 = time.perf_counter()
        if c["kind"] == "ease":
            model = PersonalModel("ease", ease_weights(g, c["lambda"], backend), c["lambda"])
        else:
            model = PersonalModel("knn", knn_weights(*knn, c["neighbours"], backend), None, c["neighbours"])
        ranks = target_ranks(model, seen, targets, TUNE_TOP_K, backend)
        c.update({**metrics(ranks, (TUNE_TOP_K,)), "seconds": round(time.perf_counter() - t0, 3)})
        del model
    if g is not None:  # the whole log's Gram, in place: XᵀX of x + added is XᵀX plus a sparse correction
        d = (added.T @ x).tocsr()
        correction = (d + d.T + added.T @ added).tocoo()
        g[correction.row, correction.col] += correction.data
        whole["gram"] = g
    return grid, {"how": f"inner leave-last-out HR@{TUNE_TOP_K} on the fitted users (split seed {seed}); each "
                         "contender fitted without the held-out items", "users": int(len(targets)),
                  "contenders": grid}, whole


# --- recommending -------------------------------------------------------------------------------

def top_items(model: PersonalModel, seen: Any, top_k: int, backend: Backend, tie: Any = None) -> tuple[Any, Any]:
    """(items, scores), each len(seen) x min(top_k, items), best first, on the device: the personal
    model's scores of each row of `seen` (CSR users x items), the items in it masked to -inf. `tie` (one
    value per item) orders equal scores, as in `top_k_sorted`."""
    return _batched_top(lambda start, stop: model.scores(seen[start:stop]), seen, top_k, backend, tie)


def segment_top_items(table: Any, blend_weight: float, clusters: Any, seen: Any, top_k: int,
                      backend: Backend) -> tuple[Any, Any]:
    """The same for segment popularity: w · share in the user's cluster + (1 − w) · global share
    (`table` (k + 1) x items, row k global; a cluster outside 0..k-1 gets the global row)."""
    xp = backend.xp
    table = backend.asarray(table)
    k = table.shape[0] - 1
    rows = xp.where((clusters >= 0) & (clusters < k), clusters, k)
    w = xp.float32(blend_weight)

    def scores(start: int, stop: int) -> Any:
        return w * table[rows[start:stop]] + (xp.float32(1) - w) * table[k][None, :]

    return _batched_top(scores, seen, top_k, backend, tie=table[k])  # ties (a cluster's unseen items) by global share


def _batched_top(scores_of: Any, seen: Any, top_k: int, backend: Backend, tie: Any = None) -> tuple[Any, Any]:
    """Batches of BATCH_CELLS scores: score, mask the batch's seen items, keep the top K on the device."""
    xp = backend.xp
    n, n_items = seen.shape

    def block(start: int, stop: int) -> tuple[Any, Any]:
        scores = scores_of(start, stop)
        part = seen[start:stop].tocoo()
        scores[part.row, part.col] = -xp.inf
        return top_k_sorted(scores, top_k, xp, tie)

    blocks = map_row_blocks(block, n, n_items, BATCH_CELLS, backend)
    if not blocks:
        k = min(top_k, n_items)
        return xp.empty((0, k), dtype=xp.int64), xp.empty((0, k), dtype=xp.float32)
    return xp.concatenate([b[0] for b in blocks]).astype(xp.int64), xp.concatenate([b[1] for b in blocks])


def recommend_rows(personal: PersonalModel | None, table: Any, blend_weight: float, clusters: Any, seen: Any,
                   top_k: int, min_items: int, backend: Backend) -> tuple[Any, Any, Any]:
    """Each user's list: the personal model's for users with at least `min_items` distinct items (and a
    personal model), their segment's otherwise. Returns (items, scores, personal?) on the device:
    n x top_k indices and float32 scores (−inf: no more items to recommend) and a bool per user. Equal
    personal scores go by global share, as a segment list's do: item-kNN scores only the neighbours of a
    user's items, and past them the list is the popular items, not whatever order a partition left."""
    xp = backend.xp
    n_seen = xp.diff(seen.indptr)
    personal_rows = (n_seen >= min_items) if personal is not None else xp.zeros(seen.shape[0], dtype=bool)
    items, scores = segment_top_items(table, blend_weight, clusters, seen, top_k, backend)
    chosen = xp.nonzero(personal_rows)[0]
    if len(chosen):
        p_items, p_scores = top_items(personal, seen[chosen], top_k, backend, tie=backend.asarray(table)[-1])
        items[chosen], scores[chosen] = p_items, p_scores
    return items, scores, personal_rows


def target_ranks(model: PersonalModel, seen: Any, targets: Any, top_k: int, backend: Backend) -> np.ndarray:
    """0-based rank of each row's target in its personal top `top_k` (-1: not in it), on the host."""
    return to_host(hit_ranks(*top_items(model, seen, top_k, backend), targets, backend.xp))
