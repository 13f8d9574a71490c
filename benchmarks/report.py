"""Results files: `<device>-<date>.json`, a Markdown table beside it, and PNG plots.

Each `gpuclust bench --suite X` run merges its section into the day's file for this device, then the
Markdown and plots are rendered again from the whole file, so the three never disagree.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from benchmarks.method import device_label, environment, stage_names
from benchmarks.sizing import holdout, points_from


def results_path(out_dir: Path, label: str | None = None, date: str | None = None) -> Path:
    return Path(out_dir) / f"{label or device_label()}-{date or time.strftime('%Y-%m-%d')}.json"


def load(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def merge(results: dict[str, Any], suite: str, section: dict[str, Any], command: str) -> dict[str, Any]:
    """Put a suite's section into the results and refresh what derives from it.

    A contenders or scaling section on the same workload (users aside) is merged size by size: a new
    run replaces the old one at the same (contender, users) and the others stay, so one size can be
    measured again without redoing the rest. Any other section replaces the old one.
    """
    env = environment()
    results = {**results, "device": device_label(env), "environment": env, "updated": time.strftime("%Y-%m-%d %H:%M")}
    suites = results.setdefault("suites", {})
    old = suites.get(suite)
    section = {**section, "command": command}
    if suite in ("contenders", "scaling") and old and old.get("workload") == section.get("workload"):
        runs = {c: list(r) for c, r in old["runs"].items()}
        for contender, new_runs in section["runs"].items():
            older = {int(r["workload"]["users"]): r for r in runs.get(contender, [])}
            for r in new_runs:
                _keep_earlier(r, older.pop(int(r["workload"]["users"]), None))
            runs[contender] = sorted([*older.values(), *new_runs], key=lambda r: int(r["workload"]["users"]))
        commands = [*old.get("commands", [old.get("command")]), command]
        section = {**section, "runs": runs, "commands": commands,
                   "options": {**section["options"], "target_users": old["options"]["target_users"]}}
    suites[suite] = section
    return finalise(results)


def _keep_earlier(new: dict[str, Any], old: dict[str, Any] | None) -> None:
    """A size measured again keeps the earlier session's figures beside the new ones: run-to-run spread
    on a shared machine is part of the result."""
    if not old or "seconds" not in old or old.get("extrapolated") or "seconds" not in new:
        return
    if old.get("reused_from") and old["seconds"] == new["seconds"]:
        return
    earlier = [*old.get("earlier", []), {k: old.get(k) for k in ("seconds", "repeats", "load_before", "load_after")}]
    new["earlier"] = earlier


def finalise(results: dict[str, Any]) -> dict[str, Any]:
    """Derived figures: the sizing check per scaling contender, and the 50k-user target comparison."""
    suites = results.get("suites", {})
    if "scaling" in suites:
        epu = suites["scaling"]["options"]["events_per_user"]
        suites["scaling"]["sizing_check"] = {
            c: holdout(points_from(runs), epu) for c, runs in suites["scaling"]["runs"].items()
            if len(points_from(runs)) >= 3}
    if "contenders" in suites:
        suites["contenders"]["target"] = target(suites["contenders"])
    return results


def _by_users(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(r["workload"]["users"]): r for r in records if "seconds" in r}


def target(section: dict[str, Any]) -> dict[str, Any]:
    """gpuclust-cpu against textbook at the target size: time ratio, and ARI at a size both really ran."""
    users = section["options"]["target_users"]
    ours, book = _by_users(section["runs"]["gpuclust-cpu"]), _by_users(section["runs"]["textbook"])
    out: dict[str, Any] = {"users": users}
    if users not in ours or users not in book:
        out["note"] = "no result at the target size for both contenders"
        return out
    t_book, t_ours = book[users]["seconds"]["median"], ours[users]["seconds"]["median"]
    out.update(textbook_seconds=t_book, textbook_extrapolated=bool(book[users].get("extrapolated")),
               gpuclust_cpu_seconds=t_ours, speedup=round(t_book / t_ours, 1),
               gpuclust_cpu_ari=ours[users]["metrics"].get("ari"))
    measured = [u for u, r in book.items() if not r.get("extrapolated") and u in ours]
    if measured:
        both = max(measured)
        out.update(quality_users=both, textbook_ari=book[both]["metrics"].get("ari"),
                   gpuclust_cpu_ari_same_size=ours[both]["metrics"].get("ari"),
                   measured_speedup_at_quality_users=round(book[both]["seconds"]["median"]
                                                            / ours[both]["seconds"]["median"], 1))
    return out


def save(results: dict[str, Any], path: Path) -> list[Path]:
    """Write the JSON, the Markdown beside it and the plots; returns the paths written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    written = [path]
    md = path.with_suffix(".md")
    md.write_text(markdown(results, path.stem))
    written.append(md)
    from benchmarks.plots import plot_all

    written += plot_all(results, path.with_suffix(""))
    return written


# --- Markdown -----------------------------------------------------------------------------------


def _s(spread: dict[str, Any] | None, digits: int = 1) -> str:
    if not spread or spread.get("median") is None:
        return "-"
    med = f"{spread['median']:.{digits}f}"
    if spread.get("n", 0) > 1:
        return f"{med} ({spread['min']:.{digits}f}–{spread['max']:.{digits}f})"
    return med


def _f(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


def _pct(value: Any) -> str:
    return f"{value:+.0%}" if isinstance(value, int | float) else "-"


def machine_line(results: dict[str, Any]) -> str:
    env = results.get("environment", {})
    gpu = env.get("gpu") or {}
    gpu_text = (f"GPU {gpu['name']} ({gpu['memory_total_gib']} GiB)" if gpu
                else "no GPU (CUDA unusable here: every GPU row says 'not run')")
    v = env.get("versions", {})
    libs = ", ".join(f"{k} {v[k]}" for k in ("python", "torch", "transformers", "scikit-learn", "faiss-cpu", "pandas",
                                             "numpy", "cupy-cuda12x", "cudf-cu12", "cuml-cu12") if k in v)
    return (f"{env.get('cpu', '?')}, {env.get('cores', '?')} cores, {env.get('memory_gib', '?')} GiB RAM, "
            f"torch threads {env.get('torch_threads', '?')}; {gpu_text}. {libs}.")


def markdown(results: dict[str, Any], stem: str) -> str:
    suites = results.get("suites", {})
    lines = [f"# gpuclust benchmarks: {results.get('device', '?')} ({results.get('updated', '')})", "",
             f"Machine: {machine_line(results)}", "",
             "Method: in the contenders, stages and scaling suites each (contender, size) runs in a fresh process "
             "(engines and embed run in the bench process): one untimed warm-up on a small slice of the same "
             "workload (1,000 users; 200 for textbook), then timed repeats (CUDA synchronised before and after); "
             "figures are medians with (min–max). Memory is the worst repeat's peak RSS (VmHWM, reset per stage). The 1-minute load "
             "average of this shared machine is recorded with every run: other jobs were running, so read the "
             "spread.", ""]
    for name, render in (("contenders", _contenders_md), ("stages", _stages_md), ("scaling", _scaling_md),
                         ("engines", _engines_md), ("embed", _embed_md)):
        if name in suites:
            lines += render(suites[name], stem)
            commands = suites[name].get("commands") or [suites[name].get("command", "?")]
            lines += ["", "Command" + ("s" if len(commands) > 1 else "") + ": " + "; ".join(f"`{c}`" for c in commands)
                      + f" (last: wall {suites[name].get('wall_seconds', '?')} s, load {suites[name].get('load_before')}"
                      f" → {suites[name].get('load_after')})", ""]
    if "contenders" in suites:
        lines += ["## For the README", "", readme_table(results), ""]
    return "\n".join(lines)


def _note(r: dict[str, Any]) -> str:
    for key in ("not_run", "skipped", "error"):
        if key in r:
            return r[key]
    notes = []
    if r.get("extrapolated"):
        notes.append("**extrapolated**: " + r["basis"])
    if r.get("reused_from"):
        notes.append(f"from the {r['reused_from']} suite")
    if r.get("repeats_cut"):
        notes.append(r["repeats_cut"])
    for e in r.get("earlier", []):
        notes.append(f"earlier session: {_s(e['seconds'])} s (n={e.get('repeats')}, load {e.get('load_before')}→"
                     f"{e.get('load_after')})")
    if "load_before" in r:
        notes.append(f"load {r['load_before']}→{r.get('load_after')}")
    return "; ".join(notes)


def _contenders_md(section: dict[str, Any], stem: str) -> list[str]:
    w = section["workload"]
    lines = ["## Contenders: time next to quality", "",
             f"Synthetic log, {w['events_per_user']:g} events per user (mean), {w['items']:,} items, {w['groups']} planted "
             f"groups, k={w['k']}, seed {w['seed']}. textbook: pandas, one MiniLM ({w['model']}) pass per user over "
             "their item titles (most recent first, 128 tokens), fp32, unsorted batches of 32, mean pooling, "
             f"scikit-learn KMeans (n_init 3). gpuclust: `Pipeline.fit` with features {', '.join(w['features'])} "
             "(text in item mode), assess and explain included. Both start from in-memory frames and load "
             "their model inside the timed run. ARI is against the planted groups (noise users left out); "
             "silhouette is on each contender's own feature space (20k-row sample), so compare it within a "
             "contender, not across.", "",
             "| users | contender | seconds | repeats | ARI | silhouette | peak RSS MiB | note |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    rows = [r for runs in section["runs"].values() for r in runs]
    rows.sort(key=lambda r: (int(r["workload"]["users"]), r["contender"]))
    for r in rows:
        m = r.get("metrics", {})
        lines.append(f"| {int(r['workload']['users']):,} | {r['contender']} | {_s(r.get('seconds'))} | "
                     f"{r.get('repeats', '-')} | {_f(m.get('ari'))} | {_f(m.get('silhouette'))} | "
                     f"{_f(r.get('peak_rss_mib'), 0)} | {_note(r)} |")
    t = section.get("target", {})
    if "speedup" in t:
        how = "extrapolated textbook time" if t["textbook_extrapolated"] else "both measured"
        lines += ["", f"**Target at {t['users']:,} users**: gpuclust-cpu {t['gpuclust_cpu_seconds']:.1f} s vs textbook "
                  f"{t['textbook_seconds']:.0f} s ({how}): **{t['speedup']:.0f}x**. ARI: gpuclust-cpu "
                  f"{_f(t['gpuclust_cpu_ari'])} at {t['users']:,}; at {t.get('quality_users', 0):,} users, where both "
                  f"ran, gpuclust-cpu {_f(t.get('gpuclust_cpu_ari_same_size'))} vs textbook {_f(t.get('textbook_ari'))} "
                  f"(measured speed-up there {t.get('measured_speedup_at_quality_users', '-')}x)."]
    lines += ["", f"![time vs users]({stem}-scaling.png)"]
    return lines


def _stages_md(section: dict[str, Any], stem: str) -> list[str]:
    runs = section["runs"]
    cpu, gpu = runs.get("gpuclust-cpu", {}), runs.get("gpuclust-gpu", {})
    w = section["workload"]
    lines = ["## Stages", "",
             f"{w['users']:,} users, {w['events_per_user']:g} events per user, features {', '.join(w['features'])}, "
             f"k={w['k']}; {cpu.get('repeats', '?')} repeats. Peak RSS is per stage (whole process, reset at each "
             "stage start).", ""]
    if "not_run" in gpu or not gpu:
        lines.append(f"gpuclust-gpu: {gpu.get('not_run', 'not run')}.")
        lines.append("")
    if "gpu_allocators" in gpu:
        measured = ", ".join(f"{name} ({why})" for name, why in gpu["gpu_allocators"].items())
        lines += [f"GPU memory is the sum of each allocator's peak in use during the stage: {measured}.", ""]
    head = "| stage | CPU seconds | CPU peak RSS MiB |"
    sep = "| --- | ---: | ---: |"
    with_gpu = "stages" in gpu
    if with_gpu:
        head += " GPU seconds | GPU memory MiB | speed-up |"
        sep += " ---: | ---: | ---: |"
    lines += [head, sep]
    for name in stage_names(cpu):
        c = cpu["stages"][name]
        row = f"| {name} | {_s(c['seconds'], 2)} | {_f(c.get('peak_rss_mib'), 0)} |"
        if with_gpu and name in gpu["stages"]:
            g = gpu["stages"][name]
            up = c["seconds"]["median"] / max(g["seconds"]["median"], 1e-6)
            row += f" {_s(g['seconds'], 3)} | {_f(g.get('gpu_mib'), 0)} | {up:.1f}x |"
        lines.append(row)
    if "seconds" in cpu:
        total = f"| **end to end** | {_s(cpu['seconds'], 1)} | {_f(cpu.get('peak_rss_mib'), 0)} |"
        if with_gpu:
            total += f" {_s(gpu['seconds'], 2)} | {_f(gpu.get('gpu_peak_mib'), 0)} | " \
                     f"{cpu['seconds']['median'] / gpu['seconds']['median']:.1f}x |"
        lines.append(total)
        m = cpu.get("metrics", {})
        lines += ["", f"Quality (CPU): ARI {_f(m.get('ari'))}, silhouette {_f(m.get('silhouette'))}; engine "
                  f"{cpu.get('engine')}; {_note(cpu)}."]
    lines += ["", f"![stages]({stem}-stages.png)"]
    return lines


def _scaling_md(section: dict[str, Any], stem: str) -> list[str]:
    w = section["workload"]
    lines = ["## Scaling", "",
             f"Users grow, {w['events_per_user']:g} events per user and the {w['items']:,}-item catalogue stay fixed; "
             f"features {', '.join(w['features'])}, k={w['k']}. Stage columns are medians in seconds.", ""]
    for contender, runs in section["runs"].items():
        done = [r for r in runs if "stages" in r]
        if not done:
            why = next((_note(r) for r in runs), "no runs")
            lines += [f"{contender}: {why}.", ""]
            continue
        names = stage_names(done[-1])
        lines += [f"### {contender}", "",
                  "| users | events | end to end s | " + " | ".join(names) + " | peak RSS MiB | ARI | note |",
                  "| ---: | ---: | ---: | " + " | ".join("---:" for _ in names) + " | ---: | ---: | --- |"]
        for r in runs:
            if "stages" not in r:
                lines.append(f"| {int(r['workload']['users']):,} | | | " + " | ".join("" for _ in names)
                             + f" | | | {_note(r)} |")
                continue
            st = r["stages"]
            cells = " | ".join(_f(st[n]["seconds"]["median"], 2) if n in st else "-" for n in names)
            lines.append(f"| {int(r['workload']['users']):,} | {r['rows']['events']:,} | {_s(r['seconds'])} | {cells} | "
                         f"{_f(r['peak_rss_mib'], 0)} | {_f(r['metrics'].get('ari'))} | {_note(r)} |")
        lines.append("")
        check = section.get("sizing_check", {}).get(contender)
        if check:
            lines += _check_md(check)
    return lines


def _check_md(check: dict[str, Any]) -> list[str]:
    fitted = ", ".join(f"{u:,}" for u in check["fitted_on_users"])
    lines = [f"Sizing check (what `gpuclust size` does, tested): per stage, seconds = a·x^b and memory = c + a·x^b "
             f"fitted on {fitted} users, predicting {check['predicted_users']:,}. The predicted total is the sum of "
             "the stages; one law for the whole run is shown for comparison.", "",
             "| stage | predicted s | measured s | error | predicted RSS MiB | measured RSS MiB | RSS error |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in stage_names(check):
        s = check["stages"][name]
        lines.append(f"| {name} | {_f(s['predicted_s'], 2)} | {_f(s['measured_s'], 2)} | {_pct(s['error'])} | "
                     f"{_f(s.get('predicted_rss_mib'), 0)} | {_f(s.get('measured_rss_mib'), 0)} | {_pct(s.get('rss_error'))} |")
    ss, e2e, rss = check["stage_sum"], check["end_to_end"], check["peak_rss"]
    lines.append(f"| **sum of stages** | {_f(ss['predicted_s'], 1)} | {_f(ss['measured_s'], 1)} | {_pct(ss['error'])} | | | |")
    lines.append(f"| **process peak RSS** | | | | {_f(rss['predicted_mib'], 0)} | {_f(rss['measured_mib'], 0)} | "
                 f"{_pct(rss['error'])} |")
    lines.append(f"| end to end as one law (comparison) | {_f(e2e['predicted_s'], 1)} | {_f(e2e['measured_s'], 1)} | "
                 f"{_pct(e2e['error'])} | | | |")
    if "gpu_peak" in check:
        g = check["gpu_peak"]
        lines.append(f"| **GPU peak MiB** | {_f(g['predicted_mib'], 0)} | {_f(g['measured_mib'], 0)} | {_pct(g['error'])} | | | |")
    return lines + [""]


def _engines_md(section: dict[str, Any], stem: str) -> list[str]:
    w = section["workload"]
    lines = ["## Engines", "",
             f"Input: the fused features of our pipeline ({', '.join(section['features'])}) for {w['users']:,} users, "
             f"shape {section['shape'][0]:,} x {section['shape'][1]}; k={w['k']}, seed {w['seed']}, n_init 3, "
             "max_iter 100. ARI against the planted groups.", "",
             "| algorithm | engine | device | rows | seconds | ARI | inertia / noise | note |",
             "| --- | --- | --- | ---: | ---: | ---: | --- | --- |"]
    for r in section["kmeans"]:
        lines.append(f"| kmeans | {r['engine']} | {r['device']} | {r.get('rows', '-')} | {_s(r.get('seconds'), 2)} | "
                     f"{_f(r.get('ari'))} | {_f(r.get('inertia'), 0)} | {r.get('not_run', '')} |")
    d = section["density"]
    for r in d["runs"]:
        extra = (f"{r.get('clusters_found')} clusters, noise {r['noise_share']:.1%}" if "noise_share" in r
                 else _f(r.get("inertia"), 0))
        params = ", ".join(f"{k}={v}" for k, v in r.get("params", {}).items())
        lines.append(f"| {r['algorithm']} | {r.get('engine', '-')} | {r['device']} | {r['rows']:,} | "
                     f"{_s(r.get('seconds'), 2)} | {_f(r.get('ari'))} | {extra} | {params or ''} {r.get('not_run', '')} |")
    lines += ["", f"DBSCAN and HDBSCAN run on a seeded subsample of {d['sample']:,} of the {d['of']:,} users (their "
              "cost grows faster than linearly); KMeans on the same subsample is listed beside them. DBSCAN's eps is "
              "the median distance to the 10th neighbour; density noise counts as its own label in the ARI."]
    return lines


def _embed_md(section: dict[str, Any], stem: str) -> list[str]:
    lines = ["## Encoder throughput", "",
             f"{section['texts']:,} synthetic item texts (title | category), model `{section['model']}`, max 128 "
             "tokens; best of the repeats (all runs in the JSON), via benchmarks/embed_bench.py's comparisons. "
             "tokens/s counts non-pad tokens; tokenisation is included.", ""]
    for device, d in section["devices"].items():
        if "not_run" in d:
            lines += [f"{device}: {d['not_run']}.", ""]
            continue
        lines += [f"### {device} (mean {d['mean_tokens']} tokens per text)", "",
                  "| batching / precision | batches | padding | seconds | items/s | non-pad tokens/s |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in d["batching"]:
            lines.append(f"| {r['batching']} (fp32) | {r['batches']} | {r['padding_share']:.1%} | {r['seconds']:.2f} | "
                         f"{r['items_per_s']:.0f} | {r['tokens_per_s']:.0f} |")
        for r in d["precision"]:
            agree = f", cosine vs fp32 min {r['cosine_vs_fp32_min']}" if "cosine_vs_fp32_min" in r else ""
            lines.append(f"| sorted, {r['batch_tokens']} tokens, {r['precision']}{agree} | {r['batches']} | "
                         f"{r['padding_share']:.1%} | {r['seconds']:.2f} | {r['items_per_s']:.0f} | {r['tokens_per_s']:.0f} |")
        lines.append("")
    return lines


def _with_sessions(r: dict[str, Any]) -> str:
    """Median of the latest session, and the range over every session where a size was run again."""
    text = f"{r['seconds']['median']:.1f} s"
    spreads = [r["seconds"], *(e["seconds"] for e in r.get("earlier", []))]
    if len(spreads) > 1:
        lo = min(s["min"] if s.get("min") is not None else s["median"] for s in spreads)
        hi = max(s["max"] if s.get("max") is not None else s["median"] for s in spreads)
        text += f" ({lo:.0f}–{hi:.0f} over {len(spreads)} sessions)"
    return text


def readme_table(results: dict[str, Any]) -> str:
    """The short table the README shows: the contenders at each size, and on what hardware."""
    section = results["suites"]["contenders"]
    w = section["workload"]
    by = {c: _by_users(r) for c, r in section["runs"].items()}
    sizes = sorted({u for runs in by.values() for u in runs})
    head = ["| users | textbook (CPU) | gpuclust-cpu | gpuclust-gpu | speed-up cpu vs textbook | ARI textbook / cpu |",
            "| ---: | ---: | ---: | ---: | ---: | --- |"]
    for u in sizes:
        b, c, g = by["textbook"].get(u), by["gpuclust-cpu"].get(u), by.get("gpuclust-gpu", {}).get(u)
        book = "-" if not b else (f"~{b['seconds']['median']:.0f} s (extrapolated)" if b.get("extrapolated")
                                  else _with_sessions(b))
        ours = _with_sessions(c) if c else "-"
        gpu = f"{g['seconds']['median']:.2f} s" if g else "not run"
        up = f"{b['seconds']['median'] / c['seconds']['median']:.0f}x" if b and c else "-"
        ari_b = "-" if not b or b.get("extrapolated") else _f(b["metrics"].get("ari"), 2)
        ari_c = _f(c["metrics"].get("ari"), 2) if c else "-"
        head.append(f"| {u:,} | {book} | {ours} | {gpu} | {up} | {ari_b} / {ari_c} |")
    t = section.get("target", {})
    if "speedup" in t:
        how = "extrapolated" if t["textbook_extrapolated"] else "measured"
        head += ["", f"At {t['users']:,} users gpuclust-cpu is **{t['speedup']:.0f}x** faster than textbook end to end "
                 f"({how}), with ARI {_f(t.get('gpuclust_cpu_ari_same_size'), 2)} vs {_f(t.get('textbook_ari'), 2)}"
                 f" (at {t.get('quality_users', 0):,} users)."]
    env = results.get("environment", {})
    gpu_note = "no GPU was at hand" if not env.get("gpu") else f"GPU {env['gpu']['name']}"
    head += ["", f"Measured on {env.get('cpu', '?')} ({env.get('cores', '?')} cores, {env.get('memory_gib', '?')} GiB), "
             f"{gpu_note}; {w['events_per_user']:g} events per user, {w['items']:,} items, k={w['k']}, features "
             f"{', '.join(w['features'])} (item-mode MiniLM). Medians of the repeats, end to end from in-memory "
             f"frames. Details: benchmarks/results/{results.get('device')}-*.md."]
    return "\n".join(head)
