"""The five suites behind `gpuclust bench --suite ...`; each returns a JSON-able section of the results.

    stages      seconds and peak memory (RSS; GPU peak on CUDA) of each pipeline stage, CPU and GPU
    scaling     users from 10k upward, events per user fixed, up to what the time budget allows
    engines     KMeans engines, DBSCAN and HDBSCAN on the same fused features and k
    embed       encoder throughput: sorted vs unsorted batches, precisions (benchmarks/embed_bench.py)
    contenders  textbook vs gpuclust-cpu vs gpuclust-gpu: time next to quality, at several sizes

Heavy measurements run one per fresh process (`benchmarks.worker`) unless `isolate=False` (tests).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.contenders import CONTENDERS, Workload, measure
from benchmarks.method import cuda_usable, load_average, spread, timed, wait_for_quiet
from gpuclust.progress import tell, within

SUITES = ("stages", "scaling", "engines", "embed", "contenders")
KMEANS_ENGINES = {"cpu": ("sklearn", "faiss", "torch"), "cuda": ("cuml", "torch", "faiss")}
DEFAULT_USERS = {
    "stages": (50_000,),
    "scaling": (10_000, 20_000, 50_000, 100_000, 200_000, 400_000),
    "engines": (50_000,),
    "embed": (2_000,),  # item texts encoded
    "contenders": (2_000, 5_000, 10_000, 20_000, 50_000),
}


@dataclass
class BenchOptions:
    """Everything a suite needs; defaults are the published configuration (k=20, 20 groups, 20k items).

    budget_s: wall seconds a suite may spend; sizes predicted to overrun it are skipped and recorded.
    run_budget_s: longest single measurement; a textbook size predicted to exceed it is extrapolated
        (linear in users) instead of run, and labelled so.
    wait_load / wait_max_s: wait for the 1-minute load average to fall below `wait_load` before each
        measurement (shared machines), at most `wait_max_s` seconds.
    """

    users: tuple[int, ...] | None = None
    repeats: int = 3
    events_per_user: float = 50.0
    items: int = 20_000
    groups: int = 20
    k: int = 20
    seed: int = 0
    features: tuple[str, ...] = ("behaviour", "tfidf", "text")
    model: str = "default"
    warmup_users: int = 1000
    textbook_repeats: int = 1
    budget_s: float = 3600.0
    run_budget_s: float = 1500.0
    target_users: int = 50_000
    density_sample: int = 10_000
    isolate: bool = True
    wait_load: float | None = None
    wait_max_s: float = 0.0
    # Told each measurement as it starts (`gpuclust.progress`); not part of the results.
    progress: Any = dataclasses.field(default=None, repr=False, compare=False)

    def workload(self, users: int) -> Workload:
        return Workload(users=users, events_per_user=self.events_per_user, items=self.items, groups=self.groups,
                        k=self.k, seed=self.seed, features=tuple(self.features), model=self.model)

    def sizes(self, suite: str) -> tuple[int, ...]:
        return tuple(sorted(self.users or DEFAULT_USERS[suite]))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "progress"}


def run_suite(name: str, options: BenchOptions, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one suite; `previous` (the results file so far) lets contenders reuse matching scaling runs."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}: choose one of {', '.join(SUITES)}")
    started, load = time.perf_counter(), load_average()
    body = {"stages": stages, "scaling": scaling, "engines": engines, "embed": embed,
            "contenders": contenders}[name](options, previous or {})
    return {"options": options.to_dict(), "load_before": load, "load_after": load_average(),
            "wall_seconds": round(time.perf_counter() - started, 1), **body}


def _measure(contender: str, workload: Workload, options: BenchOptions, repeats: int) -> dict[str, Any]:
    if contender == "gpuclust-gpu" and not cuda_usable()[0]:  # no process, no waiting, just the reason
        record = {"contender": contender, "workload": workload.to_dict(), "not_run": f"not run: {cuda_usable()[1]}"}
        _progress(record)
        return record
    tell(options.progress, f"{contender}, {int(workload.users):,} users: a {options.warmup_users:,}-user warm-up "
                           f"and {repeats} timed run{'s' if repeats > 1 else ''}")
    quiet = wait_for_quiet(options.wait_load, options.wait_max_s)
    job = {"contender": contender, "workload": workload.to_dict(), "repeats": repeats,
           "warmup_users": options.warmup_users, "budget_s": options.run_budget_s}
    if options.isolate:
        from benchmarks.worker import run_isolated

        record = run_isolated(job)
    else:
        record = measure(contender, workload, repeats, options.warmup_users, options.run_budget_s)
    record.update(quiet)
    record["process"] = "fresh" if options.isolate else "shared"
    _progress(record)
    return record


def _progress(record: dict[str, Any]) -> None:
    """One line per measurement on stderr: long suites should show that they are alive."""
    import sys

    what = f"{record['contender']} {int(record['workload']['users']):,} users"
    if "seconds" in record:
        sp = record["seconds"]
        what += (f": {sp['median']:.1f} s ({sp['min']:.1f}-{sp['max']:.1f}, n={sp['n']}), "
                 f"ARI {record['metrics'].get('ari')}, load {record.get('load_before')}->{record.get('load_after')}")
    else:
        what += ": " + str(record.get("not_run") or record.get("error") or record.get("skipped"))
    print(time.strftime("%H:%M:%S ") + what, file=sys.stderr, flush=True)


def _gpuclust_contenders() -> list[str]:
    return ["gpuclust-cpu", "gpuclust-gpu"]


# --- stages -------------------------------------------------------------------------------------


def stages(options: BenchOptions, previous: dict[str, Any]) -> dict[str, Any]:
    users = options.sizes("stages")[-1]
    workload = options.workload(users)
    return {"workload": workload.to_dict(),
            "runs": {c: _reusable(previous, c, workload) or _measure(c, workload, options, options.repeats)
                     for c in _gpuclust_contenders()}}


# --- scaling ------------------------------------------------------------------------------------


def predicted_seconds(points: list[tuple[int, float]], users: int) -> float | None:
    """Power law through the measured (users, seconds) points; None with fewer than one point."""
    if not points:
        return None
    if len(points) == 1:
        return points[0][1] * users / points[0][0]
    from benchmarks.sizing import fit_power_law

    a, b = fit_power_law([p[0] for p in points], [p[1] for p in points])
    return a * users**b


def scaling(options: BenchOptions, previous: dict[str, Any]) -> dict[str, Any]:
    """Sizes in increasing order; a size whose predicted cost (warm-up + repeats) exceeds what is left of
    the budget is recorded as skipped, with the prediction, and so are the larger ones."""
    started = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {}
    for contender in _gpuclust_contenders():
        runs[contender] = []
        points: list[tuple[int, float]] = []
        for users in options.sizes("scaling"):
            workload = options.workload(users)
            left = options.budget_s - (time.perf_counter() - started)
            guess = predicted_seconds(points, users)
            if guess is not None and guess * (options.repeats + 0.5) > left:
                runs[contender].append({"contender": contender, "workload": workload.to_dict(),
                                        "skipped": f"predicted {guess:.0f} s per run x {options.repeats} repeats "
                                                   f"exceeds the {max(left, 0):.0f} s left of the budget"})
                continue
            record = _measure(contender, workload, options, options.repeats)
            runs[contender].append(record)
            if "not_run" in record:
                break
            if "seconds" in record:
                points.append((users, record["seconds"]["median"]))
    return {"workload": options.workload(0).to_dict() | {"users": "varies"}, "runs": runs}


# --- contenders ---------------------------------------------------------------------------------


def linear_fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """seconds = a + b * users by least squares (proportional through one point)."""
    if len(points) == 1:
        return 0.0, points[0][1] / points[0][0]
    import numpy as np

    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def _reusable(previous: dict[str, Any], contender: str, workload: Workload) -> dict[str, Any] | None:
    """A scaling run of the same contender and workload from the same results file, if any."""
    for record in previous.get("suites", {}).get("scaling", {}).get("runs", {}).get(contender, []):
        if record.get("workload") == workload.to_dict() and "seconds" in record:
            return {**record, "reused_from": "scaling"}
    return None


def contenders(options: BenchOptions, previous: dict[str, Any]) -> dict[str, Any]:
    """Every contender at every size; textbook sizes that would exceed `run_budget_s` are extrapolated
    linearly in users (one forward pass per user) from the sizes it did run, and marked `extrapolated`."""
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CONTENDERS}
    points: list[tuple[int, float]] = []
    for users in options.sizes("contenders"):
        workload = options.workload(users)
        for contender in CONTENDERS:
            if contender == "textbook":
                guess = None
                if points:
                    a, b = linear_fit(points)
                    guess = a + b * users
                if guess is not None and guess > options.run_budget_s:
                    runs[contender].append(_extrapolated(workload, points, guess, options.run_budget_s))
                    continue
                record = _measure(contender, workload, options, min(options.repeats, options.textbook_repeats))
                if "seconds" in record:
                    points.append((users, record["seconds"]["median"]))
            else:
                record = _reusable(previous, contender, workload) or _measure(contender, workload, options,
                                                                               options.repeats)
            runs[contender].append(record)
    return {"workload": options.workload(0).to_dict() | {"users": "varies"}, "runs": runs}


def _extrapolated(workload: Workload, points: list[tuple[int, float]], guess: float, limit: float) -> dict:
    a, b = linear_fit(points)
    sizes = ", ".join(f"{u:,}" for u, _ in points)
    return {"contender": "textbook", "workload": workload.to_dict(), "extrapolated": True,
            "seconds": {"median": round(guess, 1), "min": None, "max": None, "all": [], "n": 0},
            "basis": f"linear fit seconds = {a:.2f} + {b * 1000:.3f} ms x users over the measured sizes ({sizes}); "
                     f"a real run was predicted to take {guess:.0f} s, over the {limit:.0f} s limit per run"}


# --- engines ------------------------------------------------------------------------------------


def engines(options: BenchOptions, previous: dict[str, Any]) -> dict[str, Any]:
    """Same fused features (from our pipeline on the workload), same k and seed, for every engine.

    KMeans runs on all users; DBSCAN and HDBSCAN (quadratic-ish) on a seeded subsample of
    `density_sample` users, which the record states. ARI is against the planted groups (noise users of
    the generator left out; density noise counts as its own label).
    """
    import numpy as np

    from benchmarks.contenders import synth
    from gpuclust import PipelineConfig, UserClusterer
    from gpuclust.backend import resolve_backend

    workload = options.workload(options.sizes("engines")[-1])
    data = synth(workload)
    config = PipelineConfig(device="cpu", seed=options.seed)
    config.cluster.k, config.features.features = options.k, tuple(options.features)
    if options.model.startswith("random:"):
        config.features.features = tuple(f for f in options.features if f != "text")
    elif "text" in options.features:
        config.features.text.model = options.model
    tell(options.progress, f"engines: the fused features of {int(workload.users):,} users")
    p = UserClusterer(config=config, progress=within(options.progress, "engines")).fit(
        data.events, data.items, data.truth)
    features = p.transform(data.events)  # user_id, then the vectors the clusterer saw
    x_host = np.ascontiguousarray(features.drop(columns="user_id").to_numpy(), dtype=np.float32)
    truth = features[["user_id"]].merge(data.truth, on="user_id", how="left")["group"].fillna(-1).to_numpy(np.int64)
    out: dict[str, Any] = {"workload": workload.to_dict(), "features": list(config.features.features),
                           "shape": list(x_host.shape), "kmeans": [], "density": {}}
    devices = ["cpu"] + (["cuda"] if cuda_usable()[0] else [])
    for device in devices:
        backend = resolve_backend(device)
        x = backend.asarray(x_host)
        for engine in KMEANS_ENGINES[device]:
            out["kmeans"].append(_kmeans_row(engine, x, backend, truth, options))
    if not cuda_usable()[0]:
        out["kmeans"].append({"engine": "torch/cuml/faiss on cuda", "device": "cuda",
                              "not_run": f"not run: {cuda_usable()[1]}"})
    rng = np.random.default_rng(options.seed)
    n_sub = min(options.density_sample, x_host.shape[0])
    rows = np.sort(rng.choice(x_host.shape[0], size=n_sub, replace=False))
    out["density"] = {"sample": n_sub, "of": int(x_host.shape[0]), "runs": []}
    tell(options.progress, f"engines: dbscan and hdbscan on a sample of {n_sub:,} rows")
    from gpuclust import accelerators

    for device in devices:
        backend = resolve_backend(device)
        sub = backend.asarray(x_host[rows])
        if device == "cuda" and not accelerators.cuml().usable:  # density on the GPU is cuML's
            out["density"]["runs"] += [{"algorithm": a, "device": "cuda", "rows": n_sub,
                                        "not_run": f"not run: cuML: {accelerators.cuml().reason}"}
                                       for a in ("dbscan", "hdbscan")]
        else:
            out["density"]["runs"] += _density_rows(sub, x_host[rows], backend, truth[rows], options)
        sub_km = _kmeans_row("sklearn" if device == "cpu" else "torch", sub, backend, truth[rows], options)
        out["density"]["runs"].append({**sub_km, "algorithm": "kmeans (same subsample)"})
    return out


def _ari(labels, truth) -> float:
    from sklearn.metrics import adjusted_rand_score

    from gpuclust.backend import to_host

    keep = truth >= 0
    return round(float(adjusted_rand_score(truth[keep], to_host(labels)[keep])), 4)


def _kmeans_row(engine: str, x, backend, truth, options: BenchOptions) -> dict[str, Any]:
    from gpuclust import accelerators
    from gpuclust.cluster.kmeans import KMeans
    from gpuclust.errors import UsageError

    row: dict[str, Any] = {"engine": engine, "device": backend.device, "rows": int(x.shape[0])}
    tell(options.progress, f"engines: kmeans {engine} on {backend.device}, {int(x.shape[0]):,} rows")
    if backend.on_gpu and engine == "faiss" and not accelerators.faiss_gpu().usable:
        return {**row, "not_run": f"not run: {accelerators.faiss_gpu().reason}"}
    try:
        KMeans(options.k, engine=engine, random_state=options.seed).fit(x[: min(2000, x.shape[0])], backend)
    except UsageError as exc:
        return {**row, "not_run": f"not run: {exc}"}
    times, km = [], None
    for _ in range(options.repeats):
        seconds, km = timed(lambda: KMeans(options.k, engine=engine, random_state=options.seed).fit(x, backend))
        times.append(seconds)
    return {**row, "seconds": spread(times), "inertia": round(km.inertia_, 1), "ari": _ari(km.labels_, truth),
            "n_iter": getattr(km, "n_iter_", None)}


def _density_rows(x, x_host, backend, truth, options: BenchOptions) -> list[dict[str, Any]]:
    """DBSCAN with eps = median distance to the min_samples-th neighbour (a standard heuristic), and
    HDBSCAN with min_cluster_size sized so k groups of the subsample could each form."""
    import numpy as np
    from sklearn.neighbors import NearestNeighbors

    from gpuclust.cluster.density import DBSCAN, HDBSCAN
    from gpuclust.errors import UsageError

    min_samples = 10
    dist, _ = NearestNeighbors(n_neighbors=min_samples).fit(x_host).kneighbors(x_host)
    eps = float(np.median(dist[:, -1]))
    min_cluster = max(5, x_host.shape[0] // (10 * options.k))
    rows = []
    for name, make in (("dbscan", lambda: DBSCAN(eps=eps, min_samples=min_samples)),
                       ("hdbscan", lambda: HDBSCAN(min_cluster_size=min_cluster))):
        params = {"eps": round(eps, 4), "min_samples": min_samples} if name == "dbscan" else \
            {"min_cluster_size": min_cluster}
        row: dict[str, Any] = {"algorithm": name, "device": backend.device, "rows": int(x.shape[0]), "params": params}
        times, model = [], None
        try:
            for _ in range(max(1, min(options.repeats, 2))):  # the density runs are the slow ones
                seconds, model = timed(lambda make=make: make().fit(x, backend))
                times.append(seconds)
        except UsageError as exc:
            rows.append({**row, "not_run": f"not run: {exc}"})
            continue
        rows.append({**row, "engine": model.engine_, "seconds": spread(times), "clusters_found": model.n_clusters,
                     "noise_share": round(model.n_noise_ / x.shape[0], 4), "ari": _ari(model.labels_, truth)})
    return rows


# --- embed --------------------------------------------------------------------------------------


def embed(options: BenchOptions, previous: dict[str, Any]) -> dict[str, Any]:
    """Encoder throughput on the synthetic catalogue's item texts, via benchmarks/embed_bench.py's
    own comparisons (so the two benchmarks cannot drift apart)."""
    from benchmarks.contenders import synth, text_model
    from benchmarks.embed_bench import batching_comparison, precision_comparison
    from gpuclust.features.text.model import as_loaded
    from gpuclust.features.text.texts import item_texts

    n_texts = options.sizes("embed")[-1]
    data = synth(options.workload(max(1000, options.warmup_users)))
    texts = item_texts(data.items, ("title",))[:n_texts]
    out: dict[str, Any] = {"texts": len(texts), "model": options.model, "devices": {}}
    devices = ["cpu"] + (["cuda"] if cuda_usable()[0] else [])
    for device in devices:
        tell(options.progress, f"embed: {len(texts):,} item texts on {device}")
        model = as_loaded(text_model(options.model, data.items, device), device)
        lengths = [len(t) for t in model.tokenizer(texts, truncation=True, max_length=128)["input_ids"]]
        out["devices"][device] = {
            "mean_tokens": round(sum(lengths) / max(1, len(lengths)), 2),
            "batching": batching_comparison(model, texts, [1024, 2048, 4096], [32, 128], options.repeats),
            "precision": precision_comparison(model, texts, options.repeats),
        }
    if "cuda" not in devices:
        out["devices"]["cuda"] = {"not_run": f"not run: {cuda_usable()[1]}"}
    return out


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
