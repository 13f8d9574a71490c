"""Hardware sizing from the scaling runs: a power law per stage, and an honest check of it.

Each stage's seconds is fitted as `a * x ** b` by least squares in log-log space over the measured
sizes; its peak memory (RSS, GPU) as `c + a * x ** b`, a power law over a constant floor (libraries and
model weights do not grow with the data). The predicted total is the sum of the stages. `x` is users for stages driven by users (features text/fuse, cluster, assess) and
users x events-per-user / measured events-per-user for stages driven by the event log (preprocess,
behaviour, TF-IDF, explain), so a different events-per-user moves only what it should. The scaling
runs fix events per user, so that split is an assumption the check below cannot test; `predict` says
so whenever it is used.

The check: fit without the largest measured size, predict it, and report the error per stage and in
total. A prediction is only as good as that error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EVENT_STAGES = ("preprocess", "features.behaviour", "features.tfidf", "explain", "read")
# GPU memory sizes on sale (GiB), smallest first, with an example card each.
GPU_SIZES = ((16, "16 GB (T4, V100-16GB)"), (24, "24 GB (L4, A10, RTX 4090)"), (40, "40 GB (A100-40GB)"),
             (48, "48 GB (L40S, RTX 6000 Ada)"), (80, "80 GB (A100-80GB, H100)"), (94, "94 GB (H100 NVL)"),
             (141, "141 GB (H200)"), (192, "192 GB (B200)"))
GPU_HEADROOM = 1.2  # allocator fragmentation and the libraries' own workspaces
GPU_CONTEXT_GIB = 1.0  # CUDA context, cuBLAS/cuDNN handles: not in torch's or CuPy's counters
FLOOR = 1e-4  # log of zero is not a number: stages that round to 0 s are fitted at this floor


def fit_power_law(x, y) -> tuple[float, float]:
    """(a, b) of y = a * x**b by least squares on logs; one point gives b = 1 through it."""
    x = np.asarray(x, dtype=float)
    y = np.maximum(np.asarray(y, dtype=float), FLOOR)
    if len(x) == 1:
        return float(y[0] / x[0]), 1.0
    b, log_a = np.polyfit(np.log(x), np.log(y), 1)
    return float(math.exp(log_a)), float(b)


def fit_offset_power_law(x, y, steps: int = 60) -> tuple[float, float, float]:
    """(c, a, b) of y = c + a * x**b: a power law over a constant floor.

    Memory is the interpreter, libraries and model (a constant) plus what grows with the data; a bare
    power law bends to fit the constant and under-predicts large sizes. c is searched on a grid in
    [0, min(y)) for the smallest relative error; c = 0 is the bare power law. Fewer than 3 points: c = 0.
    """
    x = np.asarray(x, dtype=float)
    y = np.maximum(np.asarray(y, dtype=float), FLOOR)
    if len(x) < 3:
        return (0.0, *fit_power_law(x, y))
    best: tuple[float, float, float, float] | None = None
    for c in np.linspace(0.0, 0.98 * float(y.min()), steps):
        a, b = fit_power_law(x, y - c)
        err = float(np.sum(((c + a * x**b - y) / y) ** 2))
        if best is None or err < best[0]:
            best = (err, float(c), a, b)
    return best[1], best[2], best[3]


def driver(stage: str, users: float, events_per_user: float, measured_epu: float) -> float:
    return users * events_per_user / measured_epu if stage in EVENT_STAGES else float(users)


@dataclass
class Point:
    """One measured size: median seconds and worst memory per stage, and the end-to-end figures."""

    users: int
    seconds: dict[str, float]
    rss_mib: dict[str, float]
    gpu_mib: dict[str, float]
    total_seconds: float
    peak_rss_mib: float


def points_from(runs: list[dict[str, Any]]) -> list[Point]:
    out = []
    for r in runs:
        if "stages" not in r:
            continue
        st = r["stages"]
        out.append(Point(
            users=int(r["workload"]["users"]),
            seconds={k: v["seconds"]["median"] for k, v in st.items()},
            rss_mib={k: v["peak_rss_mib"] for k, v in st.items() if "peak_rss_mib" in v},
            gpu_mib={k: v["gpu_mib"] for k, v in st.items() if "gpu_mib" in v},
            total_seconds=r["seconds"]["median"], peak_rss_mib=r["peak_rss_mib"]))
    return sorted(out, key=lambda p: p.users)


TEXT_STAGES = ("features.text",)


def without_stages(points: list[Point], stages: tuple[str, ...]) -> list[Point]:
    """The points as if `stages` had not run: gone from the stages, their seconds out of the total (a run
    without text from runs with it; the other stages do not depend on whether text ran)."""
    out = []
    for p in points:
        dropped = sum(p.seconds.get(s, 0.0) for s in stages)
        out.append(Point(users=p.users, seconds={k: v for k, v in p.seconds.items() if k not in stages},
                         rss_mib={k: v for k, v in p.rss_mib.items() if k not in stages},
                         gpu_mib={k: v for k, v in p.gpu_mib.items() if k not in stages},
                         total_seconds=max(p.total_seconds - dropped, 1e-3), peak_rss_mib=p.peak_rss_mib))
    return out


@dataclass
class SizeModel:
    """Power laws per stage for seconds, peak RSS and (where measured) GPU memory."""

    events_per_user: float
    seconds: dict[str, tuple[float, float]] = field(default_factory=dict)
    rss: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    gpu: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    total: tuple[float, float, float] = (0.0, 0.0, 1.0)
    users_range: tuple[int, int] = (0, 0)

    @classmethod
    def fit(cls, points: list[Point], events_per_user: float) -> SizeModel:
        if not points:
            raise ValueError("no scaling runs to fit")
        users = [p.users for p in points]
        model = cls(events_per_user, users_range=(min(users), max(users)))
        for name in points[-1].seconds:
            have = [p for p in points if name in p.seconds]
            x = [driver(name, p.users, events_per_user, events_per_user) for p in have]
            model.seconds[name] = fit_power_law(x, [p.seconds[name] for p in have])
            if all(name in p.rss_mib for p in have):
                model.rss[name] = fit_offset_power_law(x, [p.rss_mib[name] for p in have])
            if have and all(name in p.gpu_mib for p in have):
                model.gpu[name] = fit_offset_power_law(x, [max(p.gpu_mib[name], 1.0) for p in have])
        # End to end in one law, for comparison only: a fixed cost (model load, a fixed catalogue's
        # text) plus growth is what the floor is for.
        model.total = fit_offset_power_law(users, [p.total_seconds for p in points])
        return model

    def predict(self, users: int, events_per_user: float | None = None) -> dict[str, Any]:
        epu = events_per_user or self.events_per_user
        stages = {}
        for name, (a, b) in self.seconds.items():
            x = driver(name, users, epu, self.events_per_user)
            stage = {"seconds": a * x**b}
            if name in self.rss:
                rc, ra, rb = self.rss[name]
                stage["peak_rss_mib"] = rc + ra * x**rb
            if name in self.gpu:
                gc, ga, gb = self.gpu[name]
                stage["gpu_mib"] = gc + ga * x**gb
            stages[name] = stage
        c, a, b = self.total
        out: dict[str, Any] = {
            "users": users, "events_per_user": epu, "stages": stages,
            "stage_sum_seconds": sum(s["seconds"] for s in stages.values()),
            "end_to_end_seconds": c + a * users**b,
            "peak_rss_mib": max([s.get("peak_rss_mib", 0.0) for s in stages.values()], default=0.0),
        }
        if self.gpu:
            out["gpu_peak_mib"] = max(s.get("gpu_mib", 0.0) for s in stages.values())
            out["smallest_gpu"] = smallest_gpu(out["gpu_peak_mib"])
        notes = []
        lo, hi = self.users_range
        if users > 2 * hi or users < lo / 2:
            notes.append(f"{users:,} users is outside the measured {lo:,}-{hi:,} (by more than 2x): extrapolated")
        if abs(epu - self.events_per_user) > 1e-9:
            notes.append(f"the scaling runs fixed {self.events_per_user:g} events per user; {epu:g} is predicted by "
                         f"scaling the event-driven stages ({', '.join(s for s in EVENT_STAGES if s in stages)}) "
                         "by events, the others by users: an assumption these runs did not test")
        out["notes"] = notes
        return out


def smallest_gpu(peak_mib: float) -> dict[str, Any]:
    need_gib = peak_mib / 1024 * GPU_HEADROOM + GPU_CONTEXT_GIB
    for gib, label in GPU_SIZES:
        if need_gib <= gib:
            return {"gib": gib, "label": label, "need_gib": round(need_gib, 2)}
    return {"gib": None, "label": f"more than {GPU_SIZES[-1][0]} GB: split the users (dask-cuda, several GPUs)",
            "need_gib": round(need_gib, 2)}


def holdout(points: list[Point], events_per_user: float) -> dict[str, Any] | None:
    """Fit without the largest size, predict it; relative error per stage, stage sum and end to end."""
    if len(points) < 3:
        return None
    train, test = points[:-1], points[-1]
    model = SizeModel.fit(train, events_per_user)
    pred = model.predict(test.users)

    def err(p: float, m: float) -> float | None:
        return round((p - m) / m, 4) if m > 0 else None

    stages = {}
    for name, stage in pred["stages"].items():
        if name not in test.seconds:
            continue
        row = {"predicted_s": round(stage["seconds"], 3), "measured_s": test.seconds[name],
               "error": err(stage["seconds"], test.seconds[name])}
        if "peak_rss_mib" in stage and name in test.rss_mib:
            row.update(predicted_rss_mib=round(stage["peak_rss_mib"], 1), measured_rss_mib=test.rss_mib[name],
                       rss_error=err(stage["peak_rss_mib"], test.rss_mib[name]))
        stages[name] = row
    measured_sum = sum(test.seconds.values())
    out = {
        "fitted_on_users": [p.users for p in train], "predicted_users": test.users, "stages": stages,
        "stage_sum": {"predicted_s": round(pred["stage_sum_seconds"], 2), "measured_s": round(measured_sum, 2),
                      "error": err(pred["stage_sum_seconds"], measured_sum)},
        "end_to_end": {"predicted_s": round(pred["end_to_end_seconds"], 2), "measured_s": test.total_seconds,
                       "error": err(pred["end_to_end_seconds"], test.total_seconds)},
        "peak_rss": {"predicted_mib": round(pred["peak_rss_mib"], 1), "measured_mib": test.peak_rss_mib,
                     "error": err(pred["peak_rss_mib"], test.peak_rss_mib)},
    }
    if "gpu_peak_mib" in pred:
        measured_gpu = max(test.gpu_mib.values(), default=0.0)
        out["gpu_peak"] = {"predicted_mib": round(pred["gpu_peak_mib"], 1), "measured_mib": measured_gpu,
                           "error": err(pred["gpu_peak_mib"], measured_gpu)}
    return out
