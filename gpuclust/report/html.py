"""One self-contained report.html per run: tables and pictures a team can open with no network.

Images are embedded as base64 data URIs, CSV downloads as data: links, and the CSS and the one small
script (sorting, filtering, the comparison's pickers: `tables.SCRIPT`) are inline; the page references
nothing outside itself, so it can be mailed, archived or opened on an air-gapped machine. Business
content (`sections`) comes first, run details and timings last. Required inputs missing is a
UsageError; optional inputs missing (map, k sweep, labels, exemplars, terms, anomaly scores) drop
their section.
"""

from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import gpuclust.report.plots as plots
import gpuclust.report.sections as sections
import gpuclust.report.tables as tables
from gpuclust import __version__
from gpuclust.errors import UsageError
from gpuclust.explain.behaviour_words import statistic
from gpuclust.io.outputs import OutputDir, check_file_target, mark_text
from gpuclust.io.writers import atomic_path
from gpuclust.privacy import small_clusters
from gpuclust.quality.anomaly import OUTLIER_SCORE
from gpuclust.report.fmt import amount, count, e, fmt, num

REQUIRED = ("assignments.parquet", "clusters.json", "manifest.json")
ASSIGNMENT_PARTS = "assignments"  # a Dask run's assignments: a partitioned dataset, assignments/part.N.parquet
MAP_FILE = "map.parquet"
IMAGE_DIR = "report"
IMAGES = ("map.png", "sizes.png", "lift.png", "kcurve.png")
MAP_COLUMNS = ("x", "y", "cluster")
MAX_MAP_POINTS = 8_000  # beyond this a scatter turns into a blob; the centres use every point
MAP_SEED = 0


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
    anomalies: list[dict] = field(default_factory=list)  # the top anomalous users, as clusters.json lists them
    scores: tuple[np.ndarray, np.ndarray] | None = None  # (anomaly score, cluster) per user, where written
    privacy: dict = field(default_factory=dict)
    assignments: Any = None  # assignments.parquet as read: cluster, anomaly_score and the columns asked for
    assignments_path: Path | None = None  # where they were read: assignments.parquet, or a Dask run's assignments/


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


def load_run(run_dir: str | Path, columns: tuple[str, ...] = ()) -> RunOutputs:
    """A finished run's outputs, checked. `columns`: further assignments columns a caller needs (those the
    file has), read in the same pass so that no caller reads the file again."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} not found; run `gpuclust run --out {run_dir} ...` first")
    path = assignments_path(run_dir)
    for name in REQUIRED:
        if not (run_dir / name).is_file() and not (name == REQUIRED[0] and path.is_dir()):
            raise UsageError(f"{run_dir / name} not found; {run_dir} is not a finished run: "
                             f"run `gpuclust run --out {run_dir} ...` first")
    clusters_doc = _read_json(run_dir / "clusters.json")
    manifest = _read_json(run_dir / "manifest.json")
    if not isinstance(clusters_doc, dict) or not isinstance(clusters_doc.get("clusters"), list):
        raise UsageError(f"{run_dir / 'clusters.json'} has no 'clusters' list; re-run `gpuclust run`")

    try:
        table = _read_assignments(path, columns)
        assigned = table["cluster"].to_numpy()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad or foreign file
        raise UsageError(f"{path} is unreadable or has no 'cluster' column ({exc}); "
                         "re-run `gpuclust run`") from None
    if assigned.dtype.kind not in "iu":
        raise UsageError(f"{path}: its 'cluster' column holds {assigned.dtype}, not "
                         "cluster numbers; the file is damaged: re-run `gpuclust run`")
    for i, entry in enumerate(clusters_doc["clusters"]):
        # A size may be withheld (privacy: null); the cluster number never is.
        if not (isinstance(entry, dict) and _whole(entry.get("cluster"))
                and (entry.get("size") is None or _whole(entry["size"]))):
            raise UsageError(f"{run_dir / 'clusters.json'}: cluster entry {i} lacks a whole-number 'cluster' (or its "
                             "'size' is not a whole number); the file is damaged: re-run `gpuclust run`")
    _check_manifest(manifest, run_dir / "manifest.json")
    population = clusters_doc.get("population")
    run = RunOutputs(run_dir, list(clusters_doc["clusters"]), population if isinstance(population, dict) else {}, manifest,
                     assigned.astype(np.int64), assignments=table, assignments_path=path)
    run.map = _read_map(run_dir / MAP_FILE, run.notes)
    privacy = clusters_doc.get("privacy") if isinstance(clusters_doc.get("privacy"), dict) else {}
    run.privacy = privacy
    run.anomalies = [a for a in clusters_doc.get("anomalies") or [] if isinstance(a, dict) and _whole(a.get("cluster"))]
    if "anomaly_score" in table.columns and table["anomaly_score"].dtype.kind == "f":
        run.scores = (table["anomaly_score"].to_numpy(np.float64), run.assigned)
    if privacy.get("pseudonymised"):
        withheld = sorted(small_clusters(run.clusters))
        run.notes.append(f"User ids are pseudonymised ({privacy.get('method', 'HMAC-SHA256')}, key fingerprint "
                         f"{privacy.get('key_fingerprint')}); exemplar users are left out, and every figure of a "
                         f"cluster of fewer than {privacy.get('min_group_size')} users is withheld"
                         + (f" (clusters {', '.join(map(str, withheld))})" if withheld else "") + ".")
    described = run.manifest.get("describe") if isinstance(run.manifest.get("describe"), dict) else {}
    if described.get("model"):
        run.notes.append(f"Names and descriptions by the language model {described['model']} for "
                         f"{described.get('described')} of {described.get('clusters')} clusters; rule-based elsewhere.")
    sweep = (run.manifest.get("cluster") or {}).get("k_sweep")
    if isinstance(sweep, dict) and isinstance(sweep.get("curve"), list) and sweep["curve"]:
        run.sweep = sweep
    return run


def assignments_path(run_dir: Path) -> Path:
    """Where a run's assignments are: assignments.parquet, or the dataset folder a Dask run writes instead."""
    one, parts = run_dir / REQUIRED[0], run_dir / ASSIGNMENT_PARTS
    return parts if not one.is_file() and parts.is_dir() else one


def _read_assignments(path: Path, columns: tuple[str, ...] = ()):
    """The cluster column, and the anomaly scores and `columns` where the file has them (older runs may not);
    a folder's part.N.parquet files in their order, each read by itself (none is left out, none foreign read)."""
    import pandas as pd
    import pyarrow.parquet as pq

    files = sorted(path.glob("part.*.parquet"), key=lambda f: (len(f.name), f.name)) if path.is_dir() else [path]
    if not files:
        raise ValueError("no part.N.parquet file in it")
    names = set(pq.read_schema(files[0]).names)
    wanted = list(dict.fromkeys(["cluster", *(c for c in ("anomaly_score", *columns) if c in names)]))
    return pd.concat([pd.read_parquet(f, columns=wanted) for f in files], ignore_index=True)


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
    labels = {int(c["cluster"]): sections.title(c) for c in run.clusters if "cluster" in c}
    withheld = small_clusters(run.clusters)  # privacy: no picture shows a group too small to describe
    out: dict[str, Path] = {}
    shown = run.map if run.map is None or not withheld else run.map[~run.map["cluster"].isin(list(withheld))]
    if shown is not None and len(shown):
        x, y, cluster = (shown[c].to_numpy(t) for c, t in (("x", float), ("y", float), ("cluster", np.int64)))
        out["map.png"] = plots.map_plot(x, y, cluster, image_dir / "map.png", title=_map_title(run.manifest),
                                        labels=labels, max_points=MAX_MAP_POINTS, seed=MAP_SEED)
    ids, counts = np.unique(run.assigned, return_counts=True)
    if withheld:
        keep = ~np.isin(ids, list(withheld))
        ids, counts = ids[keep], counts[keep]
    if len(ids):
        value = {int(c["cluster"]): num(c.get("value_share")) for c in run.clusters if "value_share" in c}
        shares = [value.get(int(i), float("nan")) for i in ids] if value else None
        out["sizes.png"] = plots.sizes_plot(ids.tolist(), counts.tolist(), image_dir / "sizes.png", labels, shares)
    lift = lift_table(run.clusters)
    if lift is not None:
        out["lift.png"] = plots.lift_plot(*lift, image_dir / "lift.png", labels)
    if run.sweep is not None:
        out["kcurve.png"] = plots.k_curve_plot(run.sweep["curve"], image_dir / "kcurve.png",
                                               run.sweep.get("best_k"), run.sweep.get("rule"))
    return out


def lift_table(clusters: list[dict]) -> tuple[list[int], list[str], np.ndarray] | None:
    """clusters x behaviour features lift matrix (NaN where unknown), or None without lift data."""
    rows = [c for c in clusters if isinstance(c.get("behaviour_lift"), dict) and c["behaviour_lift"]]
    if not rows:
        return None
    features = list(dict.fromkeys(name for c in rows for name in c["behaviour_lift"]))
    matrix = np.array([[num(c["behaviour_lift"].get(f)) for f in features] for c in rows], dtype=float)
    return [int(c.get("cluster", i)) for i, c in enumerate(rows)], features, matrix


def _map_title(manifest: dict) -> str:
    method = (manifest.get("map") or {}).get("method") if isinstance(manifest.get("map"), dict) else None
    return f"Users, 2D {method}" if method else "Users, 2D projection"


# --- page -----------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2330;
margin:0;background:#f5f6f8}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 10px;border-bottom:2px solid #dfe3ea;
padding-bottom:4px}h3{font-size:16px;margin:0 0 8px}
nav a{margin-right:12px}
.muted{color:#667085}.card{background:#fff;border:1px solid #e3e7ee;border-radius:8px;padding:14px 16px;
margin:12px 0}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 8px;
border-bottom:1px solid #eef0f4;vertical-align:top}th{background:#f0f2f6;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv>tbody>tr>th,table.kv>tr>th{width:150px;background:none;color:#475467}
table.fig{width:auto;min-width:60%}tr.strong td{background:#fbfcfe;font-weight:600}
.two{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:12px}
.two .card{margin:12px 0 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:8px}
.stat{background:#fff;border:1px solid #e3e7ee;border-radius:8px;padding:8px 12px}
.stat b{display:block;font-size:18px}.chip{display:inline-block;background:#eef2ff;border-radius:10px;
padding:1px 8px;margin:1px 3px 1px 0;font-size:12px}
.up{color:#b42318}.down{color:#175cd3}figure{margin:10px 0}figure img{max-width:100%;height:auto;
border:1px solid #e3e7ee;border-radius:6px;background:#fff}
tr.best td{font-weight:600;background:#fef3f2}.description{font-size:15px;margin:0 0 8px}
figcaption{font-size:12px;color:#667085}.note{background:#fffaeb;border:1px solid #fedf89;
border-radius:6px;padding:6px 10px;margin:6px 0}
""" + tables.CSS


def render(run: RunOutputs, images: dict[str, bytes]) -> str:
    """The whole page as one string: what the clusters are and are worth first, how the run went last."""
    title = f"gpuclust report: {run.run_dir.name or run.run_dir}"
    privacy = run.privacy
    withheld = small_clusters(run.clusters)
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="gpuclust {__version__}">',
        f'<meta name="gpuclust-output" content="{mark_text("report")}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{e(title)}</h1>",
        f'<p class="muted">created {e(run.manifest.get("created", "?"))} · gpuclust '
        f'{e(run.manifest.get("gpuclust", "?"))}</p>',
        "<nav><a href='#glance'>clusters</a><a href='#compare'>compare</a><a href='#clusters'>each cluster</a>"
        "<a href='#anomalies'>anomalies</a><a href='#run'>run details</a></nav>",
        *[f'<p class="note">{e(n)}</p>' for n in run.notes],
        _headline(run),
        sections.overview(run.clusters, run.population, int(np.isin(run.assigned, list(withheld)).sum())),
        _figures(images, ("map.png", "Users in 2D, coloured by cluster, each cluster's number at its centre "
                                     "(a fixed-seed sample)"),
                 ("sizes.png", "Share of users and of value per cluster")),
        sections.comparison(run.clusters, run.population),
        sections.cluster_cards(run.clusters, run.population),
        sections.anomalies(run.anomalies, run.clusters, run.scores, OUTLIER_SCORE, bool(privacy.get("pseudonymised"))),
        _lift(images),
        _k_sweep(run, images),
        _run_details(run),
        f"<script>{tables.SCRIPT}</script>",
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _headline(run: RunOutputs) -> str:
    """Who and how much: users, clusters, events, items and, where events carry value, the total."""
    rows = run.manifest.get("rows") or {}
    cluster = run.manifest.get("cluster") or {}
    noise = int((run.assigned < 0).sum())
    k = cluster["k"] if "k" in cluster else int(np.unique(run.assigned[run.assigned >= 0]).size)
    stats = [("users", count(rows.get("users", len(run.assigned)))), ("clusters", count(k)),
             ("events", count(rows.get("events"))), ("items", count(rows.get("items")))]
    spend = num(run.population.get("monetary"))
    if math.isfinite(spend) and spend > 0:
        stats += [("total value", fmt(spend * len(run.assigned))),
                  (statistic("monetary").what, amount("monetary", spend))]
    if noise:
        stats.insert(2, ("noise users", count(noise)))
    grid = "".join(f'<div class="stat"><span class="muted">{e(a)}</span><b>{e(b)}</b></div>' for a, b in stats)
    return f"<div class='grid'>{grid}</div>"


def _run_details(run: RunOutputs) -> str:
    """How the run went (algorithm, device, quality scores, timings): for whoever runs gpuclust."""
    m = run.manifest
    cluster = m.get("cluster") or {}
    device = m.get("device") or {}
    backend = device.get("backend") or {}
    gpu = device.get("gpu") or {}
    timings = m.get("timings") or {}
    stats = [
        ("algorithm", cluster.get("algorithm", "?")),
        ("engine", cluster.get("engine", "?")),
        ("device", backend.get("device", "?") + (f" · {gpu['name']}" if gpu.get("name") else "")),
        ("total time", f"{fmt(timings.get('total_seconds'))} s"),
    ]
    grid = "".join(f'<div class="stat"><span class="muted">{e(a)}</span><b>{e(b)}</b></div>' for a, b in stats)
    metrics = m.get("metrics") or {}
    metric_rows = "".join(f"<tr><th>{e(name)}</th><td class='num'>{e(fmt(v))}</td></tr>"
                          for name, v in metrics.items() if isinstance(v, int | float | str) and v is not None)
    stages = timings.get("stages") or {}
    stage_rows = "".join(
        f"<tr><td>{e(name)}</td><td class='num'>{e(fmt(s.get('seconds')))}</td>"
        f"<td class='num'>{e(fmt(s.get('peak_rss_mib')))}</td></tr>"
        for name, s in stages.items() if isinstance(s, dict))
    out = [f"<h2 id='run'>Run details</h2><div class='grid'>{grid}</div>"]
    side = []
    if metric_rows:
        side.append(f"<div class='card'><h3>Quality</h3><table class='kv'>{metric_rows}</table></div>")
    if stage_rows:
        side.append("<div class='card'><h3>Timings</h3><table><tr><th>stage</th><th class='num'>seconds</th>"
                    f"<th class='num'>peak RSS MiB</th></tr>{stage_rows}</table></div>")
    if side:
        out.append(f"<div class='two'>{''.join(side)}</div>")
    return "\n".join(out)


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
        ("<tr class='best'>" if row.get("k") == best else "<tr>") + f"<td class='num'>{e(row.get('k'))}</td>"
        + "".join(f"<td class='num'>{e(fmt(row.get(m)))}</td>" for m in metrics) + "</tr>"
        for row in sweep["curve"] if isinstance(row, dict))
    head = "".join(f"<th class='num'>{e(m.replace('_', ' '))}</th>" for m in metrics)
    rule = f"<p>Chosen k = <b>{e(best)}</b>" + (f" by the rule: {e(sweep['rule'])}" if sweep.get("rule") else "") + "</p>"
    return ("<h2>Choice of k</h2>" + rule + _figures(images, ("kcurve.png", "Quality scores against k"))
            + f"<table><tr><th class='num'>k</th>{head}</tr>{rows}</table>")


def _figures(images: dict[str, bytes], *wanted: tuple[str, str]) -> str:
    out = []
    for name, caption in wanted:
        if name in images:
            data = base64.b64encode(images[name]).decode("ascii")
            out.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{e(caption)}\" "
                       f"data-name=\"{e(name)}\"><figcaption>{e(caption)}</figcaption></figure>")
    return "".join(out)
