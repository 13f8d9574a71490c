"""One self-contained report.html per run: tables and pictures a team can open with no network.

Images are embedded as base64 data URIs and the CSS is inline; the page references nothing outside
itself, so it can be mailed, archived or opened on an air-gapped machine. Required inputs missing is a
UsageError; optional inputs missing (map, k sweep, labels, exemplars, terms) drop their section.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import gpuclust.report.plots as plots
from gpuclust import __version__
from gpuclust.errors import UsageError
from gpuclust.io.outputs import OutputDir, check_file_target, mark_text
from gpuclust.io.writers import atomic_path

REQUIRED = ("assignments.parquet", "clusters.json", "manifest.json")
MAP_FILE = "map.parquet"
IMAGE_DIR = "report"
IMAGES = ("map.png", "sizes.png", "lift.png", "kcurve.png")
MAP_COLUMNS = ("x", "y", "cluster")
MAX_LIST = 8
MAX_MAP_POINTS = 50_000


@dataclass
class RunOutputs:
    """What a run directory holds, read once; optional parts are None when absent or unreadable."""

    run_dir: Path
    clusters: list[dict]
    population: dict
    manifest: dict
    assigned: np.ndarray  # cluster per user
    map: Any = None
    sweep: dict | None = None
    notes: list[str] = field(default_factory=list)


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write DIR/report/*.png and DIR/report.html (or `out`) for a finished `gpuclust run`; return the HTML path.

    Both destinations are checked before anything is drawn; the pictures replace DIR/report as one
    unit, so a failed report leaves the previous one (or nothing) behind."""
    run = load_run(run_dir)
    default = run.run_dir / "report.html"
    # The run folder's own report.html belongs to its layout; any other file inside it would be foreign there.
    inputs = {} if out is None or Path(os.path.abspath(out)) == Path(os.path.abspath(default)) else {"--run": run_dir}
    target = check_file_target(out if out is not None else default, "--out", inputs, kind="report",
                               suffixes=(".html", ".htm"))
    with OutputDir(run.run_dir / IMAGE_DIR, "report", dict.fromkeys(IMAGES), what="report folder") as staging:
        images = draw_images(run, staging)
        page = render(run, {name: path.read_bytes() for name, path in images.items()})
        with atomic_path(target) as tmp:
            tmp.write_text(page, encoding="utf-8")
    return target


# --- inputs ---------------------------------------------------------------------------------

# The manifest's sections the report reads, each an object where present.
_MANIFEST_SECTIONS = ("rows", "cluster", "device", "timings", "metrics", "map", "device.backend", "device.gpu",
                      "timings.stages", "cluster.k_sweep")


def _section(manifest: dict, dotted: str) -> object:
    value: object = manifest
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _check_manifest(manifest: object, path: Path) -> None:
    """A run's manifest.json, not another JSON document (a drift or evaluate result, a model.json, a user's
    file) that a report would read field by field and crash on."""
    from gpuclust.io.outputs import FILE_MARK

    kind = None
    if isinstance(manifest, dict) and isinstance(manifest.get(FILE_MARK), dict):
        kind = manifest[FILE_MARK].get("kind")
    wrong = [name for name in _MANIFEST_SECTIONS if isinstance(manifest, dict)
             and _section(manifest, name) is not None and not isinstance(_section(manifest, name), dict)]
    if not isinstance(manifest, dict) or kind is not None or wrong:
        what = (f"a gpuclust {kind} result" if kind else f"JSON whose {', '.join(map(repr, wrong))} is not an object"
                if wrong else f"a JSON {type(manifest).__name__}")
        raise UsageError(f"{path} is not a run manifest ({what}); give --run the folder `gpuclust run --out` wrote, "
                         "or re-run `gpuclust run`")


def load_run(run_dir: str | Path) -> RunOutputs:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} not found; run `gpuclust run --out {run_dir} ...` first")
    for name in REQUIRED:
        if not (run_dir / name).is_file():
            raise UsageError(f"{run_dir / name} not found; {run_dir} is not a finished run: "
                             f"run `gpuclust run --out {run_dir} ...` first")
    clusters_doc = _read_json(run_dir / "clusters.json")
    manifest = _read_json(run_dir / "manifest.json")
    if not isinstance(clusters_doc, dict) or not isinstance(clusters_doc.get("clusters"), list):
        raise UsageError(f"{run_dir / 'clusters.json'} has no 'clusters' list; re-run `gpuclust run`")
    import pandas as pd

    try:
        assigned = pd.read_parquet(run_dir / "assignments.parquet", columns=["cluster"])["cluster"].to_numpy()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad or foreign file
        raise UsageError(f"{run_dir / 'assignments.parquet'} is unreadable or has no 'cluster' column ({exc}); "
                         "re-run `gpuclust run`") from None
    if assigned.dtype.kind not in "iu":
        raise UsageError(f"{run_dir / 'assignments.parquet'}: its 'cluster' column holds {assigned.dtype}, not "
                         "cluster numbers; the file is damaged: re-run `gpuclust run`")
    for i, entry in enumerate(clusters_doc["clusters"]):
        # A size may be withheld (privacy: null); the cluster number never is.
        if not (isinstance(entry, dict) and _whole(entry.get("cluster"))
                and (entry.get("size") is None or _whole(entry["size"]))):
            raise UsageError(f"{run_dir / 'clusters.json'}: cluster entry {i} lacks a whole-number 'cluster' (or its "
                             "'size' is not a whole number); the file is damaged: re-run `gpuclust run`")
    _check_manifest(manifest, run_dir / "manifest.json")
    run = RunOutputs(run_dir, list(clusters_doc["clusters"]), clusters_doc.get("population") or {}, manifest,
                     assigned.astype(np.int64))
    run.map = _read_map(run_dir / MAP_FILE, run.notes)
    privacy = clusters_doc.get("privacy") if isinstance(clusters_doc.get("privacy"), dict) else {}
    if privacy.get("pseudonymised"):
        withheld = sorted(_withheld(run.clusters))
        run.notes.append(f"User ids are pseudonymised ({privacy.get('method', 'HMAC-SHA256')}, key fingerprint "
                         f"{privacy.get('key_fingerprint')}); exemplar users are left out, and every figure of a "
                         f"cluster of fewer than {privacy.get('min_group_size')} users is withheld"
                         + (f" (clusters {', '.join(map(str, withheld))})" if withheld else "") + ".")
    sweep = (run.manifest.get("cluster") or {}).get("k_sweep")
    if isinstance(sweep, dict) and isinstance(sweep.get("curve"), list) and sweep["curve"]:
        run.sweep = sweep
    return run


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); re-run `gpuclust run`") from None


def _read_map(path: Path, notes: list[str]):
    if not path.is_file():
        return None
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"{path.name} could not be read ({exc}); the map is left out")
        return None
    missing = [c for c in MAP_COLUMNS if c not in frame.columns]
    if missing:
        notes.append(f"{path.name} lacks column(s) {', '.join(missing)}; the map is left out")
        return None
    return frame.dropna(subset=list(MAP_COLUMNS))


# --- pictures -------------------------------------------------------------------------------

def draw_images(run: RunOutputs, image_dir: Path) -> dict[str, Path]:
    """The PNGs this run's inputs support; none where matplotlib is not installed."""
    if not plots.available():
        run.notes.append("matplotlib is not installed, so the report has no pictures (pip install matplotlib)")
        return {}
    labels = {int(c["cluster"]): str(c.get("label") or "") for c in run.clusters if "cluster" in c}
    withheld = _withheld(run.clusters)  # privacy: no picture shows a group too small to describe
    out: dict[str, Path] = {}
    shown = run.map if run.map is None or not withheld else run.map[~run.map["cluster"].isin(list(withheld))]
    if shown is not None and len(shown):
        points = shown.iloc[:: max(1, math.ceil(len(shown) / MAX_MAP_POINTS))]  # a picture needs no more
        out["map.png"] = plots.map_plot(points["x"].to_numpy(float), points["y"].to_numpy(float),
                                        points["cluster"].to_numpy(np.int64), image_dir / "map.png",
                                        title=_map_title(run.manifest), labels=labels)
    ids, counts = np.unique(run.assigned, return_counts=True)
    if withheld:
        keep = ~np.isin(ids, list(withheld))
        ids, counts = ids[keep], counts[keep]
    if len(ids):
        out["sizes.png"] = plots.sizes_plot(ids.tolist(), counts.tolist(), image_dir / "sizes.png", labels)
    lift = lift_table(run.clusters)
    if lift is not None:
        out["lift.png"] = plots.lift_plot(*lift, image_dir / "lift.png")
    if run.sweep is not None:
        out["kcurve.png"] = plots.k_curve_plot(run.sweep["curve"], image_dir / "kcurve.png",
                                               run.sweep.get("best_k"), run.sweep.get("rule"))
    return out


def _withheld(clusters: list[dict]) -> set[int]:
    return {int(c["cluster"]) for c in clusters if c.get("suppressed") and "cluster" in c}


def lift_table(clusters: list[dict]) -> tuple[list[int], list[str], np.ndarray] | None:
    """clusters x behaviour features lift matrix (NaN where unknown), or None without lift data."""
    rows = [c for c in clusters if isinstance(c.get("behaviour_lift"), dict) and c["behaviour_lift"]]
    if not rows:
        return None
    features = list(dict.fromkeys(name for c in rows for name in c["behaviour_lift"]))
    matrix = np.array([[_float(c["behaviour_lift"].get(f)) for f in features] for c in rows], dtype=float)
    return [int(c.get("cluster", i)) for i, c in enumerate(rows)], features, matrix


def _map_title(manifest: dict) -> str:
    method = (manifest.get("map") or {}).get("method") if isinstance(manifest.get("map"), dict) else None
    return f"Users, 2D {method}" if method else "Users, 2D projection"


# --- page -----------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2330;
margin:0;background:#f5f6f8}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 10px;border-bottom:2px solid #dfe3ea;
padding-bottom:4px}h3{font-size:16px;margin:0 0 8px}
.muted{color:#667085}.card{background:#fff;border:1px solid #e3e7ee;border-radius:8px;padding:14px 16px;
margin:12px 0}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 8px;
border-bottom:1px solid #eef0f4;vertical-align:top}th{background:#f0f2f6;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{width:190px;background:none;color:#475467}
.two{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:12px}
.two .card{margin:12px 0 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:8px}
.stat{background:#fff;border:1px solid #e3e7ee;border-radius:8px;padding:8px 12px}
.stat b{display:block;font-size:18px}.chip{display:inline-block;background:#eef2ff;border-radius:10px;
padding:1px 8px;margin:1px 3px 1px 0;font-size:12px}
.up{color:#b42318}.down{color:#175cd3}figure{margin:10px 0}figure img{max-width:100%;height:auto;
border:1px solid #e3e7ee;border-radius:6px;background:#fff}
tr.best td{font-weight:600;background:#fef3f2}
figcaption{font-size:12px;color:#667085}.note{background:#fffaeb;border:1px solid #fedf89;
border-radius:6px;padding:6px 10px;margin:6px 0}
"""


def render(run: RunOutputs, images: dict[str, bytes]) -> str:
    """The whole page as one string."""
    title = f"gpuclust report: {run.run_dir.name or run.run_dir}"
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="gpuclust {__version__}">',
        f'<meta name="gpuclust-output" content="{mark_text("report")}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">created {_e(run.manifest.get("created", "?"))} · gpuclust '
        f'{_e(run.manifest.get("gpuclust", "?"))}</p>',
        *[f'<p class="note">{_e(n)}</p>' for n in run.notes],
        _summary(run),
        _overview(run),
        _figures(images, ("map.png", "Users in 2D, coloured by cluster (a sample)"),
                 ("sizes.png", "Users per cluster")),
        _clusters(run),
        _lift(images),
        _k_sweep(run, images),
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _summary(run: RunOutputs) -> str:
    m = run.manifest
    rows = m.get("rows") or {}
    cluster = m.get("cluster") or {}
    device = m.get("device") or {}
    backend = device.get("backend") or {}
    gpu = device.get("gpu") or {}
    timings = m.get("timings") or {}
    noise = int((run.assigned < 0).sum())
    k = cluster.get("k", len({int(c) for c in run.assigned if c >= 0}))
    stats = [
        ("users", _n(rows.get("users", len(run.assigned)))),
        ("clusters (k)", _n(k)),
        ("events", _n(rows.get("events"))),
        ("items", _n(rows.get("items"))),
        ("algorithm", cluster.get("algorithm", "?")),
        ("engine", cluster.get("engine", "?")),
        ("device", backend.get("device", "?") + (f" · {gpu['name']}" if gpu.get("name") else "")),
        ("total time", f"{_fmt(timings.get('total_seconds'))} s"),
    ]
    if noise:
        stats.insert(2, ("noise users", _n(noise)))
    grid = "".join(f'<div class="stat"><span class="muted">{_e(a)}</span><b>{_e(b)}</b></div>' for a, b in stats)
    metrics = m.get("metrics") or {}
    metric_rows = "".join(f"<tr><th>{_e(name)}</th><td class='num'>{_e(_fmt(v))}</td></tr>"
                          for name, v in metrics.items() if isinstance(v, int | float | str) and v is not None)
    stages = timings.get("stages") or {}
    stage_rows = "".join(
        f"<tr><td>{_e(name)}</td><td class='num'>{_e(_fmt(s.get('seconds')))}</td>"
        f"<td class='num'>{_e(_fmt(s.get('peak_rss_mib')))}</td></tr>"
        for name, s in stages.items() if isinstance(s, dict))
    out = [f"<h2>Run</h2><div class='grid'>{grid}</div>"]
    side = []
    if metric_rows:
        side.append(f"<div class='card'><h3>Quality</h3><table class='kv'>{metric_rows}</table></div>")
    if stage_rows:
        side.append("<div class='card'><h3>Timings</h3><table><tr><th>stage</th><th class='num'>seconds</th>"
                    f"<th class='num'>peak RSS MiB</th></tr>{stage_rows}</table></div>")
    if side:
        out.append(f"<div class='two'>{''.join(side)}</div>")
    return "\n".join(out)


def _overview(run: RunOutputs) -> str:
    if not run.clusters:
        return ""
    with_cats = any(c.get("top_categories") for c in run.clusters)
    rows = []
    for c in run.clusters:
        if with_cats:
            what = ", ".join(str(x.get("category")) for x in (c.get("top_categories") or [])[:3])
        else:
            what = "; ".join(str(x.get("title") or x.get("item_id")) for x in (c.get("top_items") or [])[:2])
        rows.append(
            f"<tr><td class='num'><a href='#cluster-{_e(c.get('cluster'))}'>{_e(c.get('cluster'))}</a></td>"
            f"<td>{_e(c.get('label') or '')}</td><td class='num'>{_e(_n(c.get('size')))}</td>"
            f"<td class='num'>{_e(_pct(c.get('share')))}</td><td>{_e(what or '–')}</td>"
            f"<td>{_standout_html(c, 2)}</td></tr>")
    return ("<h2>Clusters at a glance</h2><table><tr><th class='num'>cluster</th><th>label</th>"
            "<th class='num'>users</th><th class='num'>share</th>"
            f"<th>{'top categories' if with_cats else 'top items'}</th>"
            f"<th>stands out by</th></tr>{''.join(rows)}</table>")


def _clusters(run: RunOutputs) -> str:
    if not run.clusters:
        return ""
    cards = ["<h2>Each cluster</h2>"]
    for c in run.clusters:
        cid = c.get("cluster")
        label = c.get("label")
        head = f"Cluster {_e(cid)}" + (f" — {_e(label)}" if label else "")
        rows = [("users", f"{_n(c.get('size'))} ({_pct(c.get('share'))} of all)")]
        rows_html = [f"<tr><th>{_e(a)}</th><td>{_e(b)}</td></tr>" for a, b in rows]
        if label:
            rows_html.append(f"<tr><th>label</th><td>{_e(label)}</td></tr>")
        if c.get("top_categories"):
            chips = "".join(f"<span class='chip'>{_e(x.get('category'))} · {_pct(x.get('share'))}"
                            f" · lift {_e(_fmt(x.get('lift')))}</span>" for x in c["top_categories"][:MAX_LIST])
            rows_html.append(f"<tr><th>top categories</th><td>{chips}</td></tr>")
        if c.get("top_items"):
            rows_html.append(f"<tr><th>top items</th><td>{_items_table(c['top_items'])}</td></tr>")
        standout = _standout_html(c, 5, with_mean=True)
        if standout:
            rows_html.append(f"<tr><th>distinctive behaviour</th><td>{standout}</td></tr>")
        terms = _pairs(c.get("terms"), "term")
        if terms:
            rows_html.append("<tr><th>c-TF-IDF terms</th><td>" + "".join(
                f"<span class='chip'>{_e(t)} <span class='muted'>{_e(_fmt(s))}</span></span>" for t, s in terms)
                + "</td></tr>")
        cats = _pairs(c.get("ctfidf_categories"), "category")
        if cats:
            rows_html.append("<tr><th>c-TF-IDF categories</th><td>" + "".join(
                f"<span class='chip'>{_e(t)} <span class='muted'>{_e(_fmt(s))}</span></span>" for t, s in cats)
                + "</td></tr>")
        exemplars = c.get("exemplars")
        if isinstance(exemplars, list) and exemplars:
            rows_html.append("<tr><th>users nearest the centre</th><td>"
                             + ", ".join(_e(u) for u in exemplars[:MAX_LIST * 2]) + "</td></tr>")
        cards.append(f"<div class='card' id='cluster-{_e(cid)}'><h3>{head}</h3>"
                     f"<table class='kv'>{''.join(rows_html)}</table></div>")
    return "\n".join(cards)


def _items_table(items: list[dict]) -> str:
    rows = []
    for item in items[:MAX_LIST]:
        name = item.get("title") or item.get("item_id")
        extra = f" <span class='muted'>({_e(item.get('category'))})</span>" if item.get("category") else ""
        rows.append(f"<tr><td>{_e(name)}{extra}</td><td class='muted'>{_e(item.get('item_id'))}</td>"
                    f"<td class='num'>{_e(_pct(item.get('share')))}</td><td class='num'>{_e(_fmt(item.get('lift')))}"
                    "</td></tr>")
    return ("<table><tr><th>item</th><th>id</th><th class='num'>share</th><th class='num'>lift</th></tr>"
            + "".join(rows) + "</table>")


def _standout_html(profile: dict, n: int, with_mean: bool = False) -> str:
    """The behaviour statistics furthest from the population, by |log lift|."""
    lifts = profile.get("behaviour_lift") or {}
    means = profile.get("behaviour_mean") or {}
    ranked = sorted(((k, v) for k, v in lifts.items() if _float(v) > 0), key=lambda kv: -abs(math.log(kv[1])))
    out = []
    for name, lift in ranked[:n]:
        arrow = "up" if lift >= 1 else "down"
        mean = f" (mean {_fmt(means.get(name))})" if with_mean and name in means else ""
        out.append(f"<span class='chip'>{_e(name)} <b class='{arrow}'>×{_fmt(lift)}</b>{_e(mean)}</span>")
    return "".join(out)


def _lift(images: dict[str, bytes]) -> str:
    if "lift.png" not in images:
        return ""
    return ("<h2>Behaviour lift</h2><p class='muted'>Each cell is log2(cluster mean / population mean): red is "
            "above the population, blue below; +1 means twice as much.</p>"
            + _figures(images, ("lift.png", "Behaviour lift per cluster and feature (log2)")))


def _k_sweep(run: RunOutputs, images: dict[str, bytes]) -> str:
    if run.sweep is None:
        return ""
    sweep = run.sweep
    metrics = [m for m in ("validation_hr10", "validation_hr10_se", "silhouette", "calinski_harabasz",
                           "davies_bouldin", "inertia") if any(isinstance(r, dict) and m in r for r in sweep["curve"])]
    best = sweep.get("best_k")
    rows = "".join(
        ("<tr class='best'>" if row.get("k") == best else "<tr>") + f"<td class='num'>{_e(row.get('k'))}</td>"
        + "".join(f"<td class='num'>{_e(_fmt(row.get(m)))}</td>" for m in metrics) + "</tr>"
        for row in sweep["curve"] if isinstance(row, dict))
    head = "".join(f"<th class='num'>{_e(m.replace('_', ' '))}</th>" for m in metrics)
    rule = f"<p>Chosen k = <b>{_e(best)}</b>" + (f" by the rule: {_e(sweep['rule'])}" if sweep.get("rule") else "") + "</p>"
    return ("<h2>Choice of k</h2>" + rule + _figures(images, ("kcurve.png", "Quality scores against k"))
            + f"<table><tr><th class='num'>k</th>{head}</tr>{rows}</table>")


def _figures(images: dict[str, bytes], *wanted: tuple[str, str]) -> str:
    out = []
    for name, caption in wanted:
        if name in images:
            data = base64.b64encode(images[name]).decode("ascii")
            out.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{_e(caption)}\" "
                       f"data-name=\"{_e(name)}\"><figcaption>{_e(caption)}</figcaption></figure>")
    return "".join(out)


# --- formatting -----------------------------------------------------------------------------

def _pairs(value: Any, key: str) -> list[tuple[str, Any]]:
    """[{'term': t, 'score': s}] or [[t, s]] -> [(t, s)]."""
    out = []
    for entry in value or []:
        if isinstance(entry, dict) and key in entry:
            out.append((str(entry[key]), entry.get("score")))
        elif isinstance(entry, list | tuple) and entry:
            out.append((str(entry[0]), entry[1] if len(entry) > 1 else None))
        elif isinstance(entry, str):
            out.append((entry, None))
    return out[:MAX_LIST]


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _float(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


def _n(value: Any) -> str:
    return f"{int(value):,}" if isinstance(value, int | float) and not isinstance(value, bool) else "–"


def _pct(value: Any) -> str:
    v = _float(value)
    return f"{v:.1%}" if math.isfinite(v) else "–"
