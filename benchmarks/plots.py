"""PNG plots of a results file: time vs users (log-log, per contender) and per-stage bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

STYLE = {"textbook": ("tab:red", "o"), "gpuclust-cpu": ("tab:blue", "s"), "gpuclust-gpu": ("tab:green", "^")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_paths(stem: Path) -> dict[str, Path]:
    """The pictures bench may write beside STEM.json, by kind: `bench` checks them before a new results file."""
    return {kind: Path(f"{stem}-{kind}.png") for kind in ("scaling", "stages")}


def plot_all(results: dict[str, Any], stem: Path) -> list[Path]:
    """Every plot the results allow; returns the files written (none without matplotlib)."""
    try:
        _pyplot()
    except ImportError:
        return []
    out = []
    suites, paths = results.get("suites", {}), plot_paths(stem)
    if "contenders" in suites or "scaling" in suites:
        out.append(scaling_plot(suites, paths["scaling"], results.get("device", "")))
    if "stages" in suites:
        out.append(stages_plot(suites["stages"], paths["stages"], results.get("device", "")))
    return out


def _series(suites: dict[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    """Per contender, users -> record, from the contenders suite and the scaling suite (measured wins)."""
    series: dict[str, dict[int, dict[str, Any]]] = {}
    for name in ("scaling", "contenders"):
        for contender, runs in suites.get(name, {}).get("runs", {}).items():
            for r in runs:
                if "seconds" in r and r["seconds"].get("median") is not None:
                    mine = series.setdefault(contender, {})
                    users = int(r["workload"]["users"])
                    if users not in mine or mine[users].get("extrapolated"):
                        mine[users] = r
    return series


def scaling_plot(suites: dict[str, Any], path: Path, device: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = _series(suites)
    for contender, points in sorted(series.items()):
        colour, marker = STYLE.get(contender, ("black", "x"))
        users = sorted(points)
        measured = [u for u in users if not points[u].get("extrapolated")]
        med = [points[u]["seconds"]["median"] for u in measured]
        lo = [m - (points[u]["seconds"]["min"] or m) for u, m in zip(measured, med, strict=True)]
        hi = [(points[u]["seconds"]["max"] or m) - m for u, m in zip(measured, med, strict=True)]
        ax.errorbar(measured, med, yerr=[lo, hi], color=colour, marker=marker, label=contender, capsize=3)
        extra = [u for u in users if points[u].get("extrapolated")]
        if extra and measured:
            xs = [measured[-1], *extra]
            ys = [med[-1], *(points[u]["seconds"]["median"] for u in extra)]
            ax.plot(xs, ys, color=colour, linestyle="--", marker=marker, markerfacecolor="none",
                    label=f"{contender} (extrapolated)")
    missing = [f"{c}: {r['not_run']}" for c, runs in suites.get("contenders", {}).get("runs", {}).items()
               for r in runs[:1] if "not_run" in r]
    for i, text in enumerate(missing):
        ax.text(0.98, 0.03 + 0.06 * i, text.split(":")[0] + ": not run (" + _short(text) + ")", ha="right",
                transform=ax.transAxes, fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ticks = sorted({u for points in series.values() for u in points})
    if ticks:
        ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:,.0f}k" if v >= 1000 else f"{v:.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("users (events per user fixed)")
    ax.set_ylabel("seconds, end to end (median, min-max bars)")
    ax.set_title(f"Time vs users on {device}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(not_run: str) -> str:
    return "no CUDA here" if "cuda" in not_run.lower() else not_run.split(":", 2)[-1].strip()[:40]


def stages_plot(section: dict[str, Any], path: Path, device: str) -> Path:
    """Speed-up per stage GPU vs CPU where GPU data exist; otherwise CPU seconds per stage."""
    from benchmarks.method import stage_names

    plt = _pyplot()
    cpu, gpu = section["runs"].get("gpuclust-cpu", {}), section["runs"].get("gpuclust-gpu", {})
    names = stage_names(cpu)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if "stages" in gpu:
        values = [cpu["stages"][n]["seconds"]["median"] / max(gpu["stages"][n]["seconds"]["median"], 1e-6)
                  if n in gpu["stages"] else 0.0 for n in names]
        ax.bar(names, values, color="tab:green")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylabel("speed-up, GPU vs CPU (x)")
        ax.set_yscale("log")
        title = f"Speed-up per stage, {gpu['workload']['users']:,} users"
    else:
        med = [cpu["stages"][n]["seconds"]["median"] for n in names]
        lo = [m - cpu["stages"][n]["seconds"]["min"] for n, m in zip(names, med, strict=True)]
        hi = [cpu["stages"][n]["seconds"]["max"] - m for n, m in zip(names, med, strict=True)]
        ax.bar(names, med, yerr=[lo, hi], color="tab:blue", capsize=3)
        ax.set_ylabel("seconds (median, min-max bars)")
        title = f"CPU seconds per stage, {cpu['workload']['users']:,} users (no GPU data: {device})"
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
