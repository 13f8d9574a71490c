"""`gpuclust bench` and `gpuclust size`: thin commands over the source tree's `benchmarks/` package.

`benchmarks/` sits beside the package, not in it, so a wheel install has no benchmarks; these commands
then say so instead of failing on an import.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from gpuclust.errors import UsageError, check_path_length, require_file

ROOT = Path(__file__).resolve().parents[2]


def load_benchmarks():
    """Import `benchmarks` from this source tree (adding its root to sys.path only when needed)."""
    if not (ROOT / "benchmarks" / "__init__.py").is_file():
        raise UsageError("gpuclust bench/size need the benchmarks/ folder of the source tree, which a wheel install "
                         "does not carry: clone the repository and run them from it (PYTHONPATH=. or pip install -e .)")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import benchmarks

    if Path(benchmarks.__file__).resolve().parent != ROOT / "benchmarks":
        raise UsageError(f"another package named 'benchmarks' ({benchmarks.__file__}) shadows this tree's; "
                         f"run from {ROOT}")
    return benchmarks


def _ints(values: list[str] | None) -> tuple[int, ...] | None:
    if not values:
        return None
    out = []
    for part in (p.strip() for v in values for p in v.split(",")):
        if not part:
            continue
        try:
            number = int(float(part.replace("_", "")))
        except ValueError:
            raise UsageError(f"--users takes whole numbers (e.g. 10000,20000), got {part!r}") from None
        if number < 10:
            raise UsageError(f"--users must be at least 10, got {number}")
        out.append(number)
    return tuple(out)


def bench(
    suite: Annotated[str, typer.Option(help="stages, scaling, engines, embed, contenders (comma list) or all.")],
    users: Annotated[list[str] | None, typer.Option(help="Users per size; repeat or comma-separate (embed: texts).")] = None,
    repeats: Annotated[int, typer.Option(help="Timed repeats after one warm-up.")] = 3,
    out: Annotated[Path, typer.Option(help="Results folder.")] = ROOT / "benchmarks" / "results",
    events_per_user: Annotated[float, typer.Option(help="Mean events per user (fixed while users grow).")] = 50.0,
    items: Annotated[int, typer.Option(help="Items in the synthetic catalogue.")] = 20_000,
    groups: Annotated[int, typer.Option(help="Planted user groups.")] = 20,
    k: Annotated[int, typer.Option(help="Clusters (the same for every contender).")] = 20,
    features: Annotated[str, typer.Option(help="Comma list of behaviour, tfidf, text.")] = "behaviour,tfidf,text",
    model: Annotated[str, typer.Option(help="Text model: 'default' (offline MiniLM) or random:minilm-l6.")] = "default",
    budget_s: Annotated[float, typer.Option("--budget-s", help="Seconds a scaling suite may spend.")] = 3600.0,
    run_budget_s: Annotated[float, typer.Option("--run-budget-s", help="Longest single run; a textbook size predicted past it is extrapolated.")] = 1500.0,
    textbook_repeats: Annotated[int, typer.Option(help="Timed repeats for textbook (it is slow).")] = 1,
    warmup_users: Annotated[int, typer.Option(help="Users in the untimed warm-up run.")] = 1000,
    target_users: Annotated[int, typer.Option(help="Size of the headline contenders comparison.")] = 50_000,
    density_sample: Annotated[int, typer.Option(help="Rows for DBSCAN/HDBSCAN in the engines suite.")] = 10_000,
    wait_load: Annotated[float | None, typer.Option(help="Wait for the 1-min load average to drop below this.")] = None,
    wait_max: Annotated[float, typer.Option(help="Longest wait for a quiet machine, seconds.")] = 600.0,
    isolate: Annotated[bool, typer.Option(help="A fresh process per measurement (honest RSS).")] = True,
    name: Annotated[str | None, typer.Option(help="Results file stem (default <device>-<date>).")] = None,
    report_only: Annotated[bool, typer.Option("--report-only", help="Only re-render Markdown and plots.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results JSON on stdout.")] = False,
) -> None:
    """Benchmark the stages, scaling, engines, encoder and contenders; write JSON, Markdown and plots."""
    load_benchmarks()
    from benchmarks import report
    from benchmarks.suites import SUITES, BenchOptions, run_suite

    chosen = list(SUITES) if suite.strip() == "all" else [s.strip() for s in suite.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SUITES]
    if unknown or not chosen:
        raise UsageError(f"unknown suite {', '.join(unknown) or suite!r}: choose from {', '.join(SUITES)} or all")
    feats = tuple(f.strip() for f in features.split(",") if f.strip())
    for f in feats:
        if f not in ("behaviour", "tfidf", "text"):
            raise UsageError(f"unknown feature {f!r}: choose from behaviour, tfidf, text")
    if repeats < 1 or textbook_repeats < 1:
        raise UsageError("--repeats and --textbook-repeats must be at least 1")
    if k < 1 or groups < 1 or items < 1:
        raise UsageError(f"--k, --groups and --items must be at least 1, got {k}, {groups}, {items}")
    _check_bench_numbers(events_per_user, {"--budget-s": budget_s, "--run-budget-s": run_budget_s,
                                           "--wait-max": wait_max, "--wait-load": wait_load})
    options = BenchOptions(users=_ints(users), repeats=repeats, events_per_user=events_per_user, items=items,
                           groups=groups, k=k, features=feats, model=model, budget_s=budget_s,
                           run_budget_s=run_budget_s, textbook_repeats=textbook_repeats, warmup_users=warmup_users,
                           target_users=target_users, density_sample=density_sample, isolate=isolate,
                           wait_load=wait_load, wait_max_s=wait_max)
    if name and (name in (".", "..") or Path(name).name != name or "\\" in name):
        raise UsageError(f"--name {name!r} is a file stem, not a path: give a plain name such as 'nightly' (the "
                         "files go into --out)")
    path = out / f"{name}.json" if name else report.results_path(out)
    _check_results_folder(out, path)  # before the work: a bad --out must not cost a suite's minutes
    results = _read_results(path) if path.exists() else {}
    if report_only:
        if not results:
            raise UsageError(f"no results at {path} to render")
        written = report.save(report.finalise(results), path)
    else:
        command = "gpuclust bench " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index("bench") + 1:]) \
            if "bench" in sys.argv else f"gpuclust bench --suite {suite}"
        from gpuclust.cli.console import progress

        with progress(json_out) as on_step:
            options.progress = on_step
            for name_ in chosen:
                on_step(f"suite {name_}")
                section = run_suite(name_, options, results)
                results = report.merge(results, name_, section, command)
                written = report.save(results, path)  # after every suite: a later failure keeps earlier work
    if json_out:
        print(json.dumps(results, indent=1, default=str))
        return
    from rich.console import Console

    Console(stderr=True).print("wrote " + ", ".join(str(p) for p in written))
    md = path.with_suffix(".md")
    if "contenders" in results.get("suites", {}):
        Console().print(report.readme_table(results))
    elif md.exists():
        Console().print(f"see {md}")


def _check_bench_numbers(events_per_user: float, seconds: dict[str, float | None]) -> None:
    """The workload's events per user as synth takes them, and waits and budgets that are numbers >= 0 (inf:
    no limit), before any suite: a NaN ran every suite, each run failing in its subprocess, and exited 0."""
    from gpuclust.synth.generator import check_events_per_user

    check_events_per_user(events_per_user)
    for option, value in seconds.items():
        if value is not None and not value >= 0:
            raise UsageError(f"{option} must be a number of at least 0 (inf: no limit), got {value}")


def newest_results(folder: Path, model: str | None = None) -> Path:
    """The newest results file (by date in its name, then mtime) that has a scaling suite; with `model`,
    the newest whose runs used that text model ('none': no text feature) where one did, so a size
    learns from the latest runs of its own kind (the event table's runs left text out)."""
    found = []
    for path in folder.glob("*-????-??-??.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        scaling = data.get("suites", {}).get("scaling") if isinstance(data, dict) else None
        if isinstance(scaling, dict):
            found.append((path.stem[-10:], path.stat().st_mtime, path, measured_model(scaling)))
    if not found:
        raise UsageError(f"no results with a scaling suite in {folder}: run `gpuclust bench --suite scaling` first, "
                         "or pass --results FILE")
    same = [f for f in found if f[3] == model]
    return max(same or found)[2]


def measured_model(scaling: dict[str, Any]) -> str:
    """The text model of a scaling suite's runs, 'none' where they had no text feature."""
    workload = scaling.get("workload", {})
    return workload.get("model", "default") if "text" in workload.get("features", ()) else "none"


# Beyond these a prediction is an extrapolation of nothing measured, and float arithmetic overflows.
MAX_EVENTS_PER_USER = 1e6
MAX_EVENTS = 1e13


def _read_results(path: Path) -> dict[str, Any]:
    """A benchmark results JSON (an object), or a one-line UsageError saying what the file is instead."""
    require_file(path, "a benchmark results JSON (--results)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{path} is not a benchmark results JSON ({first}); give a .json file that `gpuclust "
                         "bench` or benchmarks/dask_bench.py wrote") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a benchmark results JSON (a JSON {type(data).__name__}, not an object)")
    return data


MARKDOWN_HEAD = "# gpuclust benchmarks"  # how benchmarks.report.markdown starts the page beside the JSON


def _check_results_folder(out: Path, path: Path) -> None:
    """`bench --out` is a folder that can be written (or made); the results file in it, if any, is one of
    bench's own (it has suites: any JSON object was merged into), and so are the Markdown page and the
    pictures beside it (with no results file yet, none may be there). Checked before any suite runs."""
    check_path_length(path, "--out")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; bench writes a results folder (JSON, Markdown and plots): give a "
                         "folder")
    ancestor = out
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write --out {out}: {ancestor} is not a writable folder")
    if path.exists() and "suites" not in _read_results(path):
        raise UsageError(f"{path} is not a results file of gpuclust bench (it has no 'suites'); give another "
                         "--name or --out: bench adds only to its own results")
    page = path.with_suffix(".md")
    if page.exists() and not page.read_text(encoding="utf-8", errors="replace").startswith(MARKDOWN_HEAD):
        raise UsageError(f"{page} exists and gpuclust bench did not write it; give another --name or --out: bench "
                         "never overwrites what it did not write")
    if not path.exists():  # a new results file: a picture already beside it is someone else's
        from benchmarks.plots import plot_paths

        for picture in plot_paths(path.with_suffix("")).values():
            if picture.exists():
                raise UsageError(f"{picture} exists and gpuclust bench did not write it (there is no {path.name} "
                                 "beside it); give another --name or --out: bench never overwrites what it did not "
                                 "write")


def size(
    users: Annotated[int, typer.Option(help="Users to cluster.")],
    events_per_user: Annotated[float, typer.Option(help="Mean events per user.")],
    model: Annotated[str | None, typer.Option(help="Text model the runs used ('default'); 'none' for a run without "
                                              "text (the default run), also from runs that had it.")] = None,
    results: Annotated[Path | None, typer.Option(help="A results JSON with a scaling suite (default: newest).")] = None,
    workers: Annotated[int | None, typer.Option(help="Predict the Dask path (--scheduler local) with this many "
                                                "workers, from benchmarks/dask_bench.py results.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")] = False,
) -> None:
    """Predict seconds and peak memory per stage, and the smallest GPU that fits, from the scaling runs."""
    load_benchmarks()
    if users < 1 or not 0 < events_per_user <= MAX_EVENTS_PER_USER or users * events_per_user > MAX_EVENTS:
        raise UsageError(f"--users must be at least 1 and --events-per-user a number above 0 and at most "
                         f"{MAX_EVENTS_PER_USER:,.0f}, for at most {MAX_EVENTS:,.0f} events in all; got --users {users:,} "
                         f"--events-per-user {events_per_user:g}")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if workers is not None:
        prediction = predict_dask(results or newest_dask_results(ROOT / "benchmarks" / "results"), users, workers)
        if json_out:
            print(json.dumps(prediction, indent=1))
        else:
            from rich.console import Console

            check = prediction.get("check")
            Console().print(f"Dask path, {users:,} users on {workers} worker(s): ~{prediction['seconds']:.0f} s end to "
                            f"end (model {prediction['model']} from {prediction['results']})"
                            + (f"; held-out check {check['error']:+.0%}" if check else "; no held-out check yet"))
        return
    path = results or newest_results(ROOT / "benchmarks" / "results", model)
    prediction = predict(_read_results(path), users, events_per_user, model, path)
    if json_out:
        print(json.dumps(prediction, indent=1))
        return
    _print_prediction(prediction)


def newest_dask_results(folder: Path) -> Path:
    """The newest Dask results with a time model (by the date they record: a fresh clone's file times say
    nothing); among one day's, the model that predicted its held-out point best."""
    ranked = []
    for path in folder.glob("dask-*.json"):
        data = json.loads(path.read_text())
        timing = data.get("time_model", {})
        if timing.get("model"):
            error = abs((timing.get("check") or {}).get("error", float("inf")))
            ranked.append((str(data.get("date", "")), -error, path.name, path))
    if not ranked:
        raise UsageError(f"no Dask results with a time model in {folder}: run benchmarks/dask_bench.py with two sizes "
                         "and two worker counts first, or pass --results FILE")
    return max(ranked)[-1]


def predict_dask(path: Path, users: int, workers: int) -> dict[str, Any]:
    """Wall seconds of the Dask path from the power law in users and workers that dask_bench.py fitted."""
    from benchmarks.dask_bench import predict_seconds

    data = _read_results(Path(path))
    model = (data.get("time_model") or {}).get("model") if isinstance(data.get("time_model"), dict) else None
    if not model:
        raise UsageError(f"{path} has no Dask time model: run benchmarks/dask_bench.py with two sizes")
    m = model
    return {"results": str(path), "users": users, "workers": workers,
            "seconds": predict_seconds(model, users, workers),
            "model": f"{m['a']:.3g} * users^{m['b_users']:.3f} * workers^{m['c_workers']:.3f}",
            "check": data["time_model"].get("check"), "machine": data.get("machine")}


def predict(data: dict[str, Any], users: int, events_per_user: float, model: str | None, path: Path) -> dict[str, Any]:
    """Library side of `gpuclust size`: per contender in the scaling suite, the fitted prediction."""
    from benchmarks.sizing import TEXT_STAGES, SizeModel, points_from, without_stages

    scaling = data.get("suites", {}).get("scaling")
    if not scaling:
        raise UsageError(f"{path} has no scaling suite: run `gpuclust bench --suite scaling` first")
    w = scaling["workload"]
    measured = measured_model(scaling)
    without_text = model == "none" and measured != "none"  # the default run: the same stages but text
    if model is not None and model != measured and not without_text:
        others = measured if measured == "none" else f"{measured} or none"  # "none or none" said one thing twice
        raise UsageError(f"the scaling runs in {path} used text model {measured!r}, not {model!r}: measure it "
                         f"with `gpuclust bench --suite scaling --model {model}` (or pass --model {others})")
    out: dict[str, Any] = {"results": str(path), "device": data.get("device"), "hardware": data.get("environment", {}),
                           "workload_measured": w, "users": users, "events_per_user": events_per_user, "predictions": {}}
    for contender, runs in scaling["runs"].items():
        points = points_from(runs)
        if without_text:
            points = without_stages(points, TEXT_STAGES)
        if len(points) < 2:
            continue
        fitted = SizeModel.fit(points, w["events_per_user"])
        pred = fitted.predict(users, events_per_user)
        if "gpu_peak_mib" not in pred:
            pred["gpu"] = ("cannot be predicted from these results: they hold CPU runs only (no GPU memory was "
                           "measured); peak RSS is predicted instead. Run `gpuclust bench --suite scaling` on a "
                           "GPU machine for a GPU figure")
        pred["check"] = None if without_text else scaling.get("sizing_check", {}).get(contender)
        if without_text:
            pred["notes"].append(f"--model none: predicted from runs with text model {measured!r}, their text "
                                 "stage left out of every stage sum and end-to-end time; peak memory may be "
                                 "overstated (the encoder was loaded in those runs)")
        out["predictions"][contender] = pred
    if not out["predictions"]:
        raise UsageError(f"{path}'s scaling suite has fewer than two measured sizes: nothing to fit")
    return out


def _print_prediction(p: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    hw = p["hardware"]
    for contender, pred in p["predictions"].items():
        table = Table(title=f"{contender}: {p['users']:,} users x {p['events_per_user']:g} events "
                            f"on {p['device']} ({hw.get('cpu', '?')}, {hw.get('cores', '?')} cores)")
        with_gpu = "gpu_peak_mib" in pred
        for col in ("stage", "seconds", "peak RSS GiB", *(["GPU GiB"] if with_gpu else [])):
            table.add_column(col, justify="left" if col == "stage" else "right")
        for name, s in pred["stages"].items():
            row = [name, f"{s['seconds']:.2f}", f"{s.get('peak_rss_mib', 0) / 1024:.2f}"]
            if with_gpu:
                row.append(f"{s.get('gpu_mib', 0) / 1024:.2f}")
            table.add_row(*row)
        table.add_row("[b]total[/b]", f"{pred['stage_sum_seconds']:.1f} (stages) / {pred['end_to_end_seconds']:.1f} "
                      "(end-to-end fit)", f"{pred['peak_rss_mib'] / 1024:.2f}",
                      *([f"{pred['gpu_peak_mib'] / 1024:.2f}"] if with_gpu else []))
        console.print(table)
        if with_gpu:
            g = pred["smallest_gpu"]
            console.print(f"smallest GPU that fits: {g['label']} (needs ~{g['need_gib']} GiB with headroom)")
        else:
            console.print(f"GPU memory: {pred['gpu']}")
        check = pred.get("check")
        if check:
            e2e, ss = check["end_to_end"], check["stage_sum"]
            console.print(f"check: fitted without {check['predicted_users']:,} users and predicted it: end to end "
                          f"{e2e['error']:+.0%}, stage sum {ss['error']:+.0%}, peak RSS {check['peak_rss']['error']:+.0%}")
        for note in pred["notes"]:
            console.print(f"note: {note}")
