"""The contenders, each measured the same way on the same synthetic data and k.

    textbook      the plain CPU recipe (`benchmarks.textbook`)
    gpuclust-cpu  our pipeline on the CPU backend
    gpuclust-gpu  our pipeline on CUDA, or "not run: <reason>" where CUDA is unusable

`measure(contender, workload)` does an untimed warm-up on a small slice of the same workload, then the
timed repeats, and returns medians, spread, per-stage figures and quality (ARI against the planted
groups, silhouette) so that no speed is reported without the quality it came with.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from benchmarks.method import cuda_usable, load_average, spread, timed

CONTENDERS = ("textbook", "gpuclust-cpu", "gpuclust-gpu")
TEXTBOOK_WARMUP_USERS = 200
RANDOM_PREFIX = "random:"  # "random:minilm-l6": seeded random weights (machines without model files)


@dataclass(frozen=True)
class Workload:
    """What is clustered: a synthetic log (events per user fixed) and the run's k, features and model."""

    users: int
    events_per_user: float = 50.0
    items: int = 20_000
    groups: int = 20
    k: int = 20
    seed: int = 0
    features: tuple[str, ...] = ("behaviour", "tfidf", "text")
    model: str = "default"

    def with_users(self, users: int) -> Workload:
        return dataclasses.replace(self, users=users)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["features"] = list(self.features)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workload:
        return cls(**{**data, "features": tuple(data.get("features", cls.features))})


@functools.lru_cache(maxsize=2)
def synth(workload: Workload):
    """The synthetic log for a workload (cached: repeats and contenders share one copy)."""
    from gpuclust.synth import SynthSpec, generate

    return generate(SynthSpec(n_users=workload.users, n_items=workload.items, n_groups=workload.groups,
                              events_per_user=workload.events_per_user, seed=workload.seed).validate())


def text_model(name: str, items, device: str = "cpu"):
    """"default" stays a name (loaded inside the timed run, as a user's run loads it); "random:<shape>" is a
    seeded random-weight BERT with a word tokenizer over the catalogue (no model files needed)."""
    if not name.startswith(RANDOM_PREFIX):
        return name
    from benchmarks.random_models import random_model, word_tokenizer

    words = set()
    for column in ("title", "category"):
        if column in items.columns:
            for text in items[column].dropna().astype(str).unique():
                words.update(text.lower().replace("&", " ").split())
    return random_model(name[len(RANDOM_PREFIX):], seed=0, device=device, tokenizer=word_tokenizer(sorted(words)))


def run_gpuclust(workload: Workload, device: str) -> dict[str, Any]:
    """One timed `UserClusterer.fit` on the workload's frames: wall seconds, stages, memory, quality."""
    from gpuclust import PipelineConfig, UserClusterer

    data = synth(workload)
    config = PipelineConfig(device=device, seed=workload.seed)
    config.cluster.k = workload.k
    config.features.features = tuple(workload.features)
    model = None
    if "text" in workload.features:
        model = text_model(workload.model, data.items, "cuda" if device == "cuda" else "cpu")
        if isinstance(model, str):  # a name goes into the (recorded) config; a built model in as a sub-model
            config.features.text.model, model = model, None
    seconds, p = timed(lambda: UserClusterer(config=config, embedding_model=model).fit(data.events, data.items,
                                                                                     data.truth))
    timings = p.manifest_["timings"]
    stages = {}
    for name, rec in timings["stages"].items():
        stage = {"seconds": rec["seconds"], "peak_rss_mib": rec["peak_rss_mib"]}
        if "gpu_peak_sum_mib" in rec:  # torch + CuPy + RMM peaks in use (an upper bound of the stage's peak)
            stage["gpu_mib"] = rec["gpu_peak_sum_mib"]
        stages[name] = stage
    out = {"seconds": seconds, "stages": stages, "peak_rss_mib": timings["peak_rss_mib"],
           "metrics": _quality(p.metrics_), "engine": p.clusterer_.engine_,
           "rows": {k: p.manifest_["rows"][k] for k in ("users", "events", "items")},
           "device_to_host_bytes": p.manifest_["device_to_host_bytes"]}
    if "gpu_allocators" in timings:
        out["gpu_peak_mib"] = max((s["gpu_mib"] for s in stages.values() if "gpu_mib" in s), default=0.0)
        out["gpu_allocators"] = timings["gpu_allocators"]
    return out


def run_textbook(workload: Workload) -> dict[str, Any]:
    """One timed run of the textbook recipe (CPU, fp32, unsorted batches of 32)."""
    from benchmarks.textbook import TextbookRecipe
    from gpuclust.manifest import StageRecorder

    data = synth(workload)
    model = text_model(workload.model, data.items, "cpu")
    if not isinstance(model, str):
        model = (model.model, model.tokenizer)
    recipe = TextbookRecipe(n_clusters=workload.k, model=model, random_state=workload.seed)
    recorder = StageRecorder()
    with recorder.stage("all"):
        seconds, _ = timed(lambda: recipe.fit(data.events, data.items, data.truth))
    return {"seconds": seconds, "stages": {k: {"seconds": v} for k, v in recipe.stages_.items()},
            "peak_rss_mib": recorder.stages["all"]["peak_rss_mib"], "metrics": _quality(recipe.metrics_),
            "rows": {"users": len(recipe.users_), "events": len(data.events), "items": workload.items},
            "tokens": recipe.tokens_, "non_pad_tokens": recipe.non_pad_tokens_}


def run_once(contender: str, workload: Workload) -> dict[str, Any]:
    if contender == "textbook":
        return run_textbook(workload)
    if contender in ("gpuclust-cpu", "gpuclust-gpu"):
        return run_gpuclust(workload, "cuda" if contender == "gpuclust-gpu" else "cpu")
    raise ValueError(f"unknown contender {contender!r}: choose one of {', '.join(CONTENDERS)}")


def measure(contender: str, workload: Workload, repeats: int = 3, warmup_users: int = 1000,
            budget_s: float | None = None) -> dict[str, Any]:
    """Warm up once (untimed, `warmup_users` users), then up to `repeats` timed runs.

    Repeats stop early when the next one would take the run past `budget_s`; the record says how many
    ran. A contender that cannot run here is recorded as "not run: <reason>".
    """
    record: dict[str, Any] = {"contender": contender, "workload": workload.to_dict()}
    if contender == "gpuclust-gpu":
        ok, why = cuda_usable()
        if not ok:
            return {**record, "not_run": f"not run: {why}"}
    record["load_before"] = load_average()
    if contender == "textbook":  # its cost per user is flat: a short warm-up loads everything it needs
        warmup_users = min(warmup_users, TEXTBOOK_WARMUP_USERS)
    if warmup_users > 0:
        run_once(contender, workload.with_users(min(warmup_users, workload.users)))
    runs: list[dict[str, Any]] = []
    for _ in range(max(1, repeats)):
        runs.append(run_once(contender, workload))
        spent = sum(r["seconds"] for r in runs)
        if budget_s is not None and spent + runs[-1]["seconds"] > budget_s and len(runs) < repeats:
            record["repeats_cut"] = f"{len(runs)} of {repeats} repeats: another would pass the {budget_s:.0f} s budget"
            break
    record["load_after"] = load_average()
    return {**record, **aggregate(runs)}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread of seconds per run and per stage; memory is the worst run's."""
    out: dict[str, Any] = {"repeats": len(runs), "seconds": spread([r["seconds"] for r in runs])}
    stages: dict[str, dict[str, Any]] = {}
    for name in runs[0]["stages"]:
        values = [r["stages"][name] for r in runs if name in r["stages"]]
        stage = {"seconds": spread([v["seconds"] for v in values])}
        for key in ("peak_rss_mib", "gpu_mib"):
            if key in values[0]:
                stage[key] = max(v[key] for v in values)
        stages[name] = stage
    out["stages"] = stages
    out["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    first = runs[0]
    out["metrics"] = first["metrics"]
    if any(r["metrics"] != first["metrics"] for r in runs[1:]):
        out["metrics_per_run"] = [r["metrics"] for r in runs]
    for key in ("engine", "rows", "device_to_host_bytes", "tokens", "non_pad_tokens", "gpu_allocators"):
        if key in first:
            out[key] = first[key]
    if "gpu_peak_mib" in first:
        out["gpu_peak_mib"] = max(r["gpu_peak_mib"] for r in runs)
    return out


def _quality(metrics: dict[str, Any]) -> dict[str, Any]:
    keep = ("ari", "nmi", "silhouette", "silhouette_sample", "truth_users")
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items() if k in keep}
