"""The report's pictures, drawn with matplotlib's Agg canvas (no display, no pyplot global state).

Each function takes plain host data and a path, writes one PNG atomically and returns the path.
Drawing on a bare `Figure` keeps plotting thread-safe and leaves the caller's pyplot backend alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpuclust.io.writers import atomic_path

DPI = 110
PNG_SOFTWARE = "gpuclust"
NOISE_COLOUR = "#b0b0b0"


def available() -> bool:
    """matplotlib is an optional extra; without it the report keeps its tables and drops its pictures."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig, path: Path, kind: str = "report-image") -> Path:
    """The PNG carries gpuclust's file mark (`io.outputs.written_as`), so a rerun may replace it."""
    from gpuclust.io.outputs import mark_text

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": PNG_SOFTWARE, "gpuclust-output": mark_text(kind)})
    return path


def cluster_colours(clusters: Sequence[int]) -> dict[int, Any]:
    """One stable colour per cluster id (tab20 cycles beyond 20); noise (-1) is grey."""
    from matplotlib import colormaps

    cmap = colormaps["tab20" if max(clusters, default=0) >= 10 else "tab10"]
    return {c: (NOISE_COLOUR if c < 0 else cmap(c % cmap.N)) for c in clusters}


def map_plot(x: np.ndarray, y: np.ndarray, cluster: np.ndarray, path: Path, title: str = "Users, 2D projection",
             labels: dict[int, str] | None = None, max_points: int = 8_000, seed: int = 0) -> Path:
    """Users in 2D, coloured by cluster, each cluster's number at its centre (names in the legend).

    At most `max_points` users are drawn, a fixed-seed sample, largest clusters first so small ones stay
    visible on top; the centres (medians) use every user given. The view keeps the central 99% of users
    on each axis, so a few far outliers do not squeeze the rest into a blob."""
    fig = _figure(10.0, 6.5)
    ax = fig.subplots()
    ids, sizes = np.unique(cluster, return_counts=True)
    colours = cluster_colours([int(c) for c in ids])
    pick = np.arange(len(x))
    if len(pick) > max_points:
        pick = np.sort(np.random.default_rng(seed).choice(len(x), max_points, replace=False))
    size = float(np.clip(40_000 / max(len(pick), 1), 4.0, 24.0))
    by_size = ids[np.argsort(-sizes, kind="stable")]  # big clusters first, small ones drawn over them
    for c in by_size:
        sel = pick[cluster[pick] == c]
        name = "noise" if c < 0 else f"{int(c)}: {_short((labels or {}).get(int(c), ''), 40)}".rstrip(": ")
        ax.scatter(x[sel], y[sel], s=size, color=colours[int(c)], alpha=0.5 if c >= 0 else 0.25, linewidths=0,
                   rasterized=True, label=name)
    _keep_central(ax, x, y)
    for c in ids:
        if c < 0:
            continue
        members = cluster == c
        ax.annotate(str(int(c)), (float(np.median(x[members])), float(np.median(y[members]))), ha="center",
                    va="center", fontsize=10, fontweight="bold",
                    bbox={"boxstyle": "circle,pad=0.25", "facecolor": "white", "edgecolor": colours[int(c)],
                          "linewidth": 2, "alpha": 0.9})
    if len(ids) <= 25:
        handles, names = ax.get_legend_handles_labels()
        drawn = {int(c): i for i, c in enumerate(by_size)}  # the legend in cluster order (ids are sorted)
        ax.legend([handles[drawn[int(c)]] for c in ids], [names[drawn[int(c)]] for c in ids],
                  loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=max(1.0, 40 / size) ** 0.5,
                  frameon=False, title="cluster")
    shown = f"{len(pick):,} of {len(x):,} users" if len(pick) < len(x) else f"{len(x):,} users"
    ax.set_title(f"{title} ({shown})")
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, path)


def _keep_central(ax, x: np.ndarray, y: np.ndarray, keep: float = 0.99) -> None:
    for values, limits in ((x, ax.set_xlim), (y, ax.set_ylim)):
        if len(values) < 20:
            continue
        low, high = np.quantile(values, [(1 - keep) / 2, (1 + keep) / 2])
        pad = 0.05 * (high - low) if high > low else 1.0
        limits(low - pad, high + pad)


def sizes_plot(clusters: Sequence[int], sizes: Sequence[int], path: Path,
               labels: dict[int, str] | None = None, value_shares: Sequence[float] | None = None) -> Path:
    """Share of users per cluster, largest first, with the share of value beside it where known."""
    order = np.argsort(-np.asarray(sizes), kind="stable")
    clusters = [int(clusters[i]) for i in order]
    sizes = np.asarray(sizes, dtype=float)[order]
    shares = sizes / max(sizes.sum(), 1.0)
    values = None if value_shares is None else np.asarray(value_shares, dtype=float)[order]
    fig = _figure(8.0, max(2.5, (0.5 if values is not None else 0.32) * len(clusters) + 1.2))
    ax = fig.subplots()
    colours = cluster_colours(clusters)
    names = [("noise" if c < 0 else f"{c}" + (f"  {_short(labels.get(c, ''))}" if labels else "")) for c in clusters]
    ypos = np.arange(len(clusters))
    height = 0.4 if values is not None else 0.8
    ax.barh(ypos - (height / 2 if values is not None else 0), shares, height=height,
            color=[colours[c] for c in clusters], label="users")
    for yy, s in zip(ypos, shares, strict=True):
        ax.text(s, yy - (height / 2 if values is not None else 0), f" {s:.1%} users", va="center", fontsize=7)
    if values is not None:
        ax.barh(ypos + height / 2, np.nan_to_num(values), height=height, color="#344054", label="value")
        for yy, v in zip(ypos, values, strict=True):
            if np.isfinite(v):
                ax.text(v, yy + height / 2, f" {v:.1%} value", va="center", fontsize=7)
        ax.legend(loc="lower right", fontsize=7, frameon=False)
    ax.set_yticks(ypos, names, fontsize=8)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_xlabel("share of all users" + (" / of all value" if values is not None else ""))
    ax.set_title("Users and value per cluster" if values is not None else "Cluster sizes")
    ax.margins(x=0.18)
    return _save(fig, path)


def lift_plot(clusters: Sequence[int], features: Sequence[str], lift: np.ndarray, path: Path,
              labels: dict[int, str] | None = None) -> Path:
    """Behaviour lift (cluster mean / population mean) on a log2 scale: 0 = like everyone, ±1 = 2x / half."""
    from matplotlib.colors import TwoSlopeNorm

    with np.errstate(divide="ignore", invalid="ignore"):
        logged = np.log2(np.where(lift > 0, lift, np.nan))
    finite = np.abs(logged[np.isfinite(logged)])
    bound = float(min(max(finite.max() if finite.size else 1.0, 0.25), 4.0))
    fig = _figure(max(6.0, 0.55 * len(features) + 2.5), max(2.5, 0.36 * len(clusters) + 1.8))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(logged), cmap="RdBu_r", aspect="auto",
                      norm=TwoSlopeNorm(vcenter=0.0, vmin=-bound, vmax=bound))
    ax.set_xticks(np.arange(len(features)), list(features), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(np.arange(len(clusters)), [f"{c}  {_short((labels or {}).get(int(c), ''), 28)}".rstrip()
                                             for c in clusters], fontsize=8)
    ax.set_ylabel("cluster")
    if len(features) * len(clusters) <= 400:
        for (i, j), v in np.ndenumerate(logged):
            if np.isfinite(v):
                ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=6,
                        color="white" if abs(v) > 0.6 * bound else "black")
    fig.colorbar(image, ax=ax, label="log2 lift over population", shrink=0.8)
    ax.set_title("Behaviour against the whole population")
    return _save(fig, path)


def k_curve_plot(curve: Sequence[dict], path: Path, best_k: int | None = None, rule: str | None = None) -> Path:
    """Each quality score against k, the chosen k marked."""
    metrics = [("validation_hr10", "higher is better"), ("silhouette", "higher is better"),
               ("calinski_harabasz", "higher is better"), ("davies_bouldin", "lower is better"),
               ("inertia", "lower is better")]
    present = [(m, how) for m, how in metrics if any(_finite(row.get(m)) for row in curve)]
    if not present:
        present = metrics[:1]
    cols = 2 if len(present) > 1 else 1
    rows = math.ceil(len(present) / cols)
    fig = _figure(4.2 * cols, 3.0 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    ks = [row.get("k") for row in curve]
    for ax, (metric, how) in zip(axes, present, strict=False):
        values = [row.get(metric) if _finite(row.get(metric)) else np.nan for row in curve]
        errors = [row.get(f"{metric}_se") if _finite(row.get(f"{metric}_se")) else 0.0 for row in curve]
        ax.errorbar(ks, values, yerr=errors if any(errors) else None, marker="o", color="#1f77b4", capsize=2)
        if best_k is not None:
            ax.axvline(best_k, color="#d62728", linestyle="--", linewidth=1)
        ax.set_title(f"{metric.replace('_', ' ')} ({how})", fontsize=9)
        ax.set_xlabel("k", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(present):]:
        ax.set_visible(False)
    if best_k is not None:
        import textwrap

        title = f"k sweep: chose k={best_k}" + (f" ({rule})" if rule else "")
        fig.suptitle(textwrap.fill(title, int(28 * 4.2 * cols)), fontsize=9)
    return _save(fig, path)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _short(text: str, width: int = 32) -> str:
    """A cluster's name as a label: cut to `width`, its dollar signs escaped. Names come from the catalogue,
    and matplotlib reads text between two `$` as TeX: "save $\\frac{ now$" ended the report in a
    ParseSyntaxException, and "under $5 or $10" was drawn as an italic formula."""
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("$", "\\$")


def hit_rate_plot(series: dict[str, list[tuple[int, float, float]]], path: Path, top_k: int = 10,
                  flat: dict[str, float] | None = None, title: str | None = None) -> Path:
    """HR@top_k against k, one line per representation, with one-standard-error bars; `flat` draws
    contenders without a k (global popularity) as horizontal lines."""
    from matplotlib import colormaps

    fig = _figure(7.0, 4.6)
    ax = fig.subplots()
    cmap = colormaps["tab10"]
    for i, (name, points) in enumerate(series.items()):
        points = sorted(points)
        ks, hr, se = zip(*points, strict=True) if points else ((), (), ())
        ax.errorbar(ks, hr, yerr=se, marker="o", capsize=3, label=name, color=cmap(i % cmap.N))
    for name, value in (flat or {}).items():
        ax.axhline(value, color="#777777", linestyle=":", linewidth=1.2, label=name)
    ax.set_xlabel("k (clusters)")
    ax.set_ylabel(f"HR@{top_k} of cluster popularity")
    ax.set_title(title or f"Leave-last-out HR@{top_k} against k (bars: one standard error)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path, "evaluate-plot")
