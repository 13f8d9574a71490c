"""The benchmark runner and the sizing model: one quick smoke run, no speed assertions."""

from __future__ import annotations

import json

import pytest

from gpuclust.errors import UsageError
from tests.helpers import cli


@pytest.fixture(scope="module")
def bench():
    from gpuclust.cli.bench import load_benchmarks

    return load_benchmarks()


def test_contenders_smoke_writes_json_markdown_and_plots(bench, tmp_path):
    """Tiny sizes and a random-weight tiny BERT: every contender runs (or says why not), files appear."""
    from benchmarks import report
    from benchmarks.suites import BenchOptions, run_suite

    options = BenchOptions(users=(150, 300), repeats=2, items=300, groups=3, k=3, model="random:tiny",
                           warmup_users=60, target_users=300, isolate=False)
    section = run_suite("contenders", options)
    runs = section["runs"]
    for contender in ("textbook", "gpuclust-cpu"):
        assert [r["workload"]["users"] for r in runs[contender]] == [150, 300]
        for r in runs[contender]:
            assert r["seconds"]["median"] > 0 and r["seconds"]["min"] <= r["seconds"]["max"]
            assert -1 <= r["metrics"]["ari"] <= 1 and "silhouette" in r["metrics"]
    assert runs["gpuclust-cpu"][0]["repeats"] == 2 and "features.text" in runs["gpuclust-cpu"][0]["stages"]
    gpu = runs["gpuclust-gpu"][0]
    assert "seconds" in gpu or gpu["not_run"].startswith("not run: ")

    results = report.merge({}, "contenders", section, "test")
    assert results["suites"]["contenders"]["target"]["users"] == 300
    written = report.save(results, tmp_path / "cpu-test-2026-01-01.json")
    names = {p.name for p in written}
    assert {"cpu-test-2026-01-01.json", "cpu-test-2026-01-01.md", "cpu-test-2026-01-01-scaling.png"} <= names
    md = (tmp_path / "cpu-test-2026-01-01.md").read_text()
    assert "| users | contender |" in md and "For the README" in md
    assert json.loads((tmp_path / "cpu-test-2026-01-01.json").read_text())["environment"]["cores"] >= 1


def test_textbook_is_extrapolated_past_the_run_budget(bench, monkeypatch):
    from benchmarks import suites

    calls = []

    def fake(contender, workload, options, repeats):
        calls.append((contender, workload.users))
        return {"contender": contender, "workload": workload.to_dict(), "seconds": {"median": workload.users / 100},
                "metrics": {"ari": 0.5}}

    monkeypatch.setattr(suites, "_measure", fake)
    options = suites.BenchOptions(users=(1000, 2000, 50_000), run_budget_s=100)
    section = suites.contenders(options, {})
    book = section["runs"]["textbook"]
    assert ("textbook", 50_000) not in calls and book[-1]["extrapolated"]
    assert book[-1]["seconds"]["median"] == pytest.approx(500, rel=1e-6)  # linear in users


def test_power_law_fit_and_holdout_recover_a_clean_law(bench):
    from benchmarks.sizing import Point, SizeModel, fit_power_law, holdout, smallest_gpu

    a, b = fit_power_law([1e4, 1e5, 1e6], [2 * x**0.9 for x in (1e4, 1e5, 1e6)])
    assert a == pytest.approx(2) and b == pytest.approx(0.9)
    points = [Point(u, {"cluster": 1e-4 * u, "preprocess": 2e-5 * u}, {"cluster": 100 + u / 1e3},
                    {"cluster": u / 100}, 1.2e-4 * u, 100 + u / 1e3) for u in (10_000, 20_000, 40_000, 80_000)]
    check = holdout(points, 50.0)
    assert check["predicted_users"] == 80_000 and abs(check["stage_sum"]["error"]) < 1e-6
    pred = SizeModel.fit(points, 50.0).predict(160_000, events_per_user=100.0)
    assert pred["stages"]["preprocess"]["seconds"] == pytest.approx(2e-5 * 320_000, rel=1e-6)  # event-driven
    assert pred["stages"]["cluster"]["seconds"] == pytest.approx(1e-4 * 160_000, rel=1e-6)
    assert pred["smallest_gpu"]["gib"] == 16 and any("events per user" in n for n in pred["notes"])
    assert smallest_gpu(500 * 1024)["gib"] is None


def _results_file(tmp_path, gpu: bool):
    runs = []
    for users in (10_000, 20_000, 40_000):
        stage = {"seconds": {"median": users / 1e4}, "peak_rss_mib": 200 + users / 100}
        if gpu:
            stage["gpu_mib"] = users / 50
        runs.append({"workload": {"users": users}, "stages": {"cluster": stage}, "seconds": {"median": users / 9e3},
                     "peak_rss_mib": 200 + users / 100})
    data = {"device": "cpu-test", "environment": {"cpu": "test", "cores": 2},
            "suites": {"scaling": {"workload": {"events_per_user": 50.0, "features": ["behaviour", "tfidf", "text"],
                                                "model": "default"},
                                   "runs": {"gpuclust-cpu": runs}}}}
    path = tmp_path / "cpu-test-2026-01-01.json"
    path.write_text(json.dumps(data))
    return path


def test_size_command_predicts_rss_and_says_no_gpu_from_cpu_results(bench, monkeypatch, capsys, tmp_path):
    path = _results_file(tmp_path, gpu=False)
    code, out, _ = cli(monkeypatch, capsys, "size", "--users", 80_000, "--events-per-user", 50, "--results", path,
                       "--json")
    assert code == 0
    pred = json.loads(out)["predictions"]["gpuclust-cpu"]
    assert pred["stages"]["cluster"]["seconds"] == pytest.approx(8.0, rel=1e-6)
    assert "cannot be predicted" in pred["gpu"] and pred["peak_rss_mib"] > 0
    code, _, err = cli(monkeypatch, capsys, "size", "--users", 80_000, "--events-per-user", 50, "--results", path,
                       "--model", "bert-base")
    assert code == 2 and "default" in err and len(err.strip().splitlines()) == 1


def test_size_names_the_smallest_gpu_from_gpu_results(bench, monkeypatch, capsys, tmp_path):
    path = _results_file(tmp_path, gpu=True)
    code, out, _ = cli(monkeypatch, capsys, "size", "--users", 500_000, "--events-per-user", 50, "--results", path,
                       "--json")
    pred = json.loads(out)["predictions"]["gpuclust-cpu"]
    assert code == 0 and pred["gpu_peak_mib"] == pytest.approx(10_000, rel=1e-6) and pred["smallest_gpu"]["gib"] == 16
    code, out, _ = cli(monkeypatch, capsys, "size", "--users", 500_000, "--events-per-user", 50, "--results", path)
    assert code == 0 and "smallest GPU that fits" in out


def test_bad_suite_is_one_line_exit_2(monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "bench", "--suite", "nope")
    assert code == 2 and "stages" in err


def test_without_the_source_tree_bench_says_so(monkeypatch, tmp_path):
    from gpuclust.cli import bench as bench_cli

    monkeypatch.setattr(bench_cli, "ROOT", tmp_path)
    with pytest.raises(UsageError, match="wheel install"):
        bench_cli.load_benchmarks()


def test_a_size_measured_again_replaces_its_row_and_keeps_the_earlier_session(bench):
    from benchmarks import report

    def section(users, seconds):
        runs = [{"contender": "textbook", "workload": {"users": u, "k": 3}, "seconds": {"median": s, "min": s, "max": s,
                                                                                      "n": 1}, "metrics": {"ari": 0.5}}
                for u, s in zip(users, seconds, strict=True)]
        return {"options": {"target_users": 20}, "workload": {"k": 3}, "runs": {"textbook": runs, "gpuclust-cpu": []}}

    first = report.merge({}, "contenders", section([10, 20], [1.0, 2.0]), "first")
    both = report.merge(first, "contenders", section([10], [1.5]), "second")
    runs = both["suites"]["contenders"]["runs"]["textbook"]
    assert [(r["workload"]["users"], r["seconds"]["median"]) for r in runs] == [(10, 1.5), (20, 2.0)]
    assert runs[0]["earlier"][0]["seconds"]["median"] == 1.0
    assert both["suites"]["contenders"]["commands"] == ["first", "second"]


def test_size_reads_the_newest_dask_model_by_recorded_date_then_best_held_out_check(tmp_path):
    import json

    from gpuclust.cli.bench import newest_dask_results

    def write(name, date, error):
        model = {"model": {"a": 1.0, "b_users": 0.5, "c_workers": -0.5}, "check": {"error": error}}
        (tmp_path / name).write_text(json.dumps({"date": date, "time_model": model}))

    write("dask-a.json", "2026-11-29", -0.56)
    write("dask-b.json", "2026-11-29", 0.28)
    write("dask-c.json", "2026-11-28", 0.01)
    (tmp_path / "dask-d.json").write_text(json.dumps({"date": "2026-12-01", "time_model": {}}))  # no model
    assert newest_dask_results(tmp_path).name == "dask-b.json"


def test_size_model_none_predicts_the_default_run_from_runs_with_text(bench, monkeypatch, capsys, tmp_path):
    runs = []
    for users in (10_000, 20_000, 40_000):
        stages = {"cluster": {"seconds": {"median": users / 1e4}, "peak_rss_mib": 300.0},
                  "features.text": {"seconds": {"median": 50.0 + users / 1e3}, "peak_rss_mib": 900.0}}
        total = sum(s["seconds"]["median"] for s in stages.values()) + 1.0
        runs.append({"workload": {"users": users}, "stages": stages, "seconds": {"median": total},
                     "peak_rss_mib": 900.0})
    data = {"device": "cpu-test", "environment": {"cpu": "test", "cores": 2},
            "suites": {"scaling": {"workload": {"events_per_user": 50.0, "features": ["behaviour", "tfidf", "text"],
                                                "model": "default"}, "runs": {"gpuclust-cpu": runs}}}}
    path = tmp_path / "cpu-test-2026-01-01.json"
    path.write_text(json.dumps(data))
    code, out, err = cli(monkeypatch, capsys, "size", "--users", 80_000, "--events-per-user", 50, "--results", path,
                         "--model", "none", "--json")
    assert code == 0, err
    pred = json.loads(out)["predictions"]["gpuclust-cpu"]
    assert list(pred["stages"]) == ["cluster"] and pred["stages"]["cluster"]["seconds"] == pytest.approx(8.0)
    assert pred["end_to_end_seconds"] == pytest.approx(9.0, rel=0.05)  # the text stage's time left out
    assert pred["check"] is None and any("--model none" in n for n in pred["notes"])
    code, out, _ = cli(monkeypatch, capsys, "size", "--users", 80_000, "--events-per-user", 50, "--results", path,
                       "--json")
    assert code == 0 and "features.text" in json.loads(out)["predictions"]["gpuclust-cpu"]["stages"]


def test_size_learns_from_the_newest_runs_of_its_own_kind(tmp_path):
    """Runs without text (the event table's) are newer than the runs with text: --model none reads them,
    --model default still reads the text runs, and no model given reads the newest of all."""
    import json
    import os

    from gpuclust.cli.bench import newest_results

    def suite(features, model="default"):
        return {"suites": {"scaling": {"workload": {"features": features, "model": model}, "runs": {}}}}

    (tmp_path / "cpu-2core-2026-11-28.json").write_text(json.dumps(suite(["behaviour", "tfidf", "text"])))
    (tmp_path / "cpu-2core-2026-12-04.json").write_text(json.dumps(suite(["behaviour", "tfidf"])))
    (tmp_path / "notes-2026-12-05.json").write_text(json.dumps({"suites": {}}))  # no scaling suite: never
    os.utime(tmp_path / "cpu-2core-2026-11-28.json", (2e9, 2e9))  # a fresh clone's times say nothing
    assert newest_results(tmp_path, "none").name == "cpu-2core-2026-12-04.json"
    assert newest_results(tmp_path, "default").name == "cpu-2core-2026-11-28.json"
    assert newest_results(tmp_path).name == "cpu-2core-2026-12-04.json"
    assert newest_results(tmp_path, "random:minilm-l6").name == "cpu-2core-2026-12-04.json"  # none of its kind
