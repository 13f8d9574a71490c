"""`--k auto`: fit each k of a range, score it, and pick one by a stated rule.

The rule: the highest sampled silhouette wins; k values whose silhouette is within SILHOUETTE_TIE of the best
count as tied (a 20k-row sample moves the score by about that much), and among those the lowest
Davies-Bouldin wins, then the smaller k. Inertia always falls as k grows, and Calinski-Harabasz favours
small k on elongated groups, so both are kept in the curve for the report but do not decide.
The silhouette sample is the same rows for every k (same seed), so the scores are comparable.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpuclust.backend import Backend
from gpuclust.cluster.outcome import check_k
from gpuclust.errors import UsageError
from gpuclust.quality.metrics import internal_scores

SILHOUETTE_TIE = 0.01
DEFAULT_K_VALUES = tuple(range(2, 13))
# --k auto with the recommend objective: recommendation keeps gaining from finer segments long after the
# silhouette peaks (Online Retail, 4.3k users: still rising at 12, best near 50), so the range reaches
# about sqrt(users), at least 12 and at most AUTO_K_MAX, on AUTO_K_POINTS roughly geometric steps.
AUTO_K_MAX = 100
AUTO_K_POINTS = 20
RULE = (f"highest sampled silhouette; k values within {SILHOUETTE_TIE} of the best count as tied, and the tie "
        "goes to the lowest Davies-Bouldin, then the smaller k")


@dataclass
class KSweep:
    """The scored k range and the k chosen from it; `to_dict()` is what the manifest and report keep."""

    curve: list[dict[str, Any]]
    best_k: int
    rule: str = RULE
    silhouette_sample: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"best_k": self.best_k, "rule": self.rule, "silhouette_sample": self.silhouette_sample,
                "curve": [dict(row) for row in self.curve], **self.extra}


def sweep_k(x: Any, backend: Backend, k_values: Sequence[int], make_clusterer: Callable[[int], Any],
            sample: int = 20_000, seed: int = 0, fit: Callable[[Any, Any], Any] | None = None) -> KSweep:
    """Fit `make_clusterer(k)` for each k, score it on `x`, and choose k by RULE.

    `make_clusterer` returns an unfitted estimator with the KMeans interface (fit(x, backend) -> labels_,
    inertia_), e.g. `lambda k: build_clusterer(config.cluster, seed, k)`; `fit(model, x)` fits it when
    given (for clusterers that also take the data).
    """
    ks = sorted({int(k) for k in k_values})
    if not ks:
        raise UsageError("the k range is empty: give --k auto, 8, 4-16 or 4:16:2")
    if ks[0] < 2:
        raise UsageError(f"a k sweep needs k of at least 2 (silhouette is undefined for one cluster), got {ks[0]}")
    check_k(ks[-1], int(x.shape[0]))
    xp = backend.xp
    curve = []
    for k in ks:
        started = time.perf_counter()
        model = make_clusterer(k)
        model = fit(model, x) if fit is not None else model.fit(x, backend)
        fit_seconds = time.perf_counter() - started
        scores = internal_scores(x, model.labels_, xp, sample, seed)
        curve.append({
            "k": k,
            **{name: scores[name] for name in ("silhouette", "silhouette_sample", "calinski_harabasz",
                                               "davies_bouldin")},
            "inertia": float(getattr(model, "inertia_", math.nan)),
            "seconds": round(time.perf_counter() - started, 4),
            "fit_seconds": round(fit_seconds, 4),
        })
    return KSweep(curve, choose_k(curve), RULE, curve[0]["silhouette_sample"], {"objective": "separation"})


def auto_k_values(n_users: int, objective: str) -> tuple[int, ...]:
    """The k values `--k auto` tries: 2..12 for separation; for the recommend objective up to about
    sqrt(users) (at least 12, at most AUTO_K_MAX), dense at small k and coarser above; always < users."""
    if objective != "recommend":
        values = DEFAULT_K_VALUES
    else:
        top = int(min(AUTO_K_MAX, max(DEFAULT_K_VALUES[-1], round(math.sqrt(n_users)))))
        step = (top / 2) ** (1 / (AUTO_K_POINTS - 1))
        values = tuple(sorted({int(round(2 * step**i)) for i in range(AUTO_K_POINTS)} | {top}))
    return tuple(k for k in values if k < n_users)


def edge_warning(best_k: int, tried: Sequence[int], n_users: int, objective: str) -> str | None:
    """A line when the chosen k lies at an end of the tried range that the range could have passed (the
    top below the number of users, or a bottom above 2): the best k may lie beyond it."""
    low, high = min(tried), max(tried)
    if best_k == high and high < n_users - 1:
        wider = f"{low}:{min(n_users - 1, 4 * high)}:{max(1, high // 10)}"
        side = "top"
    elif best_k == low and low > 2:
        wider = f"2:{high}"
        side = "bottom"
    else:
        return None
    return (f"k = {best_k} was chosen at the {side} of the range tried ({low}..{high}, by the {objective} objective): "
            f"a k beyond it may be better; try a wider range, e.g. --k {wider} (n_clusters='{wider}')")


def choose_k(curve: Sequence[dict[str, Any]]) -> int:
    """Apply RULE to a scored curve (rows with k, silhouette, davies_bouldin)."""
    scored = [row for row in curve if not math.isnan(row["silhouette"])]
    if not scored:
        # A wider range would not help: every k left the users in one cluster (too alike to tell apart).
        raise UsageError("no k in the range could be scored: at every k tried the users fell into fewer than 2 "
                         "clusters (they are too alike to tell apart, e.g. identical histories), where the "
                         "silhouette is undefined; give a fixed --k (n_clusters=4), or features that separate them")
    best = max(row["silhouette"] for row in scored)
    tied = [row for row in scored if row["silhouette"] >= best - SILHOUETTE_TIE]

    def db(row):
        value = row["davies_bouldin"]
        return math.inf if math.isnan(value) else value

    return int(min(tied, key=lambda row: (db(row), row["k"]))["k"])


_RANGE = re.compile(r"^(\d+)-(\d+)$")
_STEP = re.compile(r"^(\d+):(\d+)(?::(\d+))?$")


def apply_k(cluster: Any, k: str | int) -> None:
    """`--k` (n_clusters) onto a `ClusterConfig`: a fixed k, a range to sweep, or auto, which keeps a range
    the config already gives (a TOML's `k_values`) and otherwise leaves the range to gpuclust (`k_auto`)."""
    fixed, values = parse_k(k)
    if fixed is not None:
        cluster.k, cluster.k_values, cluster.k_auto = fixed, (), False
    elif str(k).strip().lower() == "auto":
        cluster.k_auto = not cluster.k_values
        cluster.k_values = cluster.k_values or values
    else:
        cluster.k_values, cluster.k_auto = values, False


def parse_k(text: str | int) -> tuple[int | None, tuple[int, ...]]:
    """CLI `--k`: "auto" | "8" | "4-16" | "4:16:2" -> (fixed k or None, k values to try). Ranges include both ends."""
    raw = str(text).strip().lower()
    bad = (f"--k {text!r} is not understood: use auto, a number (8), a range (4-16) or start:stop:step (4:16:2)")
    if raw == "auto":
        return None, DEFAULT_K_VALUES
    if raw.isdigit():
        k = int(raw)
        if k < 1:
            raise UsageError(f"--k must be at least 1, got {k}")
        return k, (k,)
    match = _RANGE.match(raw) or _STEP.match(raw)
    if not match:
        raise UsageError(bad)
    start, stop = int(match.group(1)), int(match.group(2))
    step = int(match.group(3)) if match.re is _STEP and match.group(3) else 1
    if step < 1:
        raise UsageError(f"--k {text!r}: the step must be at least 1")
    if start < 2 or stop <= start:
        raise UsageError(f"--k {text!r}: a range needs 2 <= start < stop (silhouette needs at least 2 clusters)")
    return None, tuple(range(start, stop + 1, step))
