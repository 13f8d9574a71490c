"""Fuzzing round 7: the recommend command, its [recommend] settings, bench/size options, and the config numbers
that drive loops. Each test is a finding: what gpuclust did with the input, and what it must do."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import blob_events, cli

from gpuclust.backend import resolve_backend
from gpuclust.config import PipelineConfig
from gpuclust.errors import UsageError
from gpuclust.recommend.personal import binary_matrix, ease_weights, gram

CPU = resolve_backend("cpu")


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """A small events and items file. Item 1000 is bought with item 0 and never without it: XᵀX is singular."""
    root = tmp_path_factory.mktemp("round7")
    events, items, _ = blob_events(n_users=120, n_groups=3, events_per_user=12)
    twin = events[events.item_id == 0].assign(item_id=1000)
    events = pd.concat([events, twin], ignore_index=True)
    events.to_parquet(root / "events.parquet")
    items.to_parquet(root / "items.parquet")
    return root


def _run(monkeypatch, capsys, logs, out, toml: str, *extra):
    config = out.parent / f"{out.name}.toml"
    config.write_text(toml)
    return cli(monkeypatch, capsys, "run", "--events", logs / "events.parquet", "--k", "3", "--device", "cpu",
               "--config", config, "--out", out, *extra)


# --- EASE's λ: a float32 inverse needs λ in range ---------------------------------------------------

@pytest.mark.parametrize("lam", [1e39, 1e300])
def test_a_lambda_past_float32_is_refused_before_the_run(lam):
    """λ = 1e39 is inf in float32: the run finished (exit 0) and wrote a model whose EASE weights were NaN,
    which recommend and assign then refused as 'damaged'."""
    with pytest.raises(UsageError, match=r"recommend.lambdas .*at most"):
        PipelineConfig.from_dict({"recommend": {"lambdas": [100, lam]}}).validate()


def test_a_lambda_too_small_for_the_inverse_is_one_line_naming_it(logs, tmp_path, monkeypatch, capsys):
    """λ = 1e-300 is 0 in float32: XᵀX + λI is singular, and the run ended in LinAlgError, a traceback, exit 1."""
    out = tmp_path / "run"
    code, _, err = _run(monkeypatch, capsys, logs, out, '[recommend]\npersonal = "ease"\nlambdas = [1e-300]\n')
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "recommend.lambdas" in err and "1e-300" in err, err
    assert not out.exists()


def test_ease_weights_refuse_a_singular_gram_by_lambda():
    x = binary_matrix(np.array([0, 0, 1]), np.array([0, 1, 2]), 2, 4, CPU)  # item 3: nobody, a zero row
    with pytest.raises(UsageError, match="recommend.lambdas"):
        ease_weights(gram(x), 0.0, CPU)
    assert np.isfinite(ease_weights(gram(x), 1.0, CPU)).all()


# --- counts that are loops without an early stop have an upper bound --------------------------------

@pytest.mark.parametrize("section, key, most", [("cluster", "n_init", 1000),
                                                ("features", "svd_power_iterations", 100)])
def test_a_loop_count_past_its_bound_is_refused_before_the_run(logs, tmp_path, monkeypatch, capsys, section, key,
                                                               most):
    """n_init = 10**9 or svd_power_iterations = 10**9 was taken: the run never ended (killed after minutes)."""
    out = tmp_path / "run"
    code, _, err = _run(monkeypatch, capsys, logs, out, f"[{section}]\n{key} = 1000000000\n")
    assert code == 2 and err.count("\n") == 1 and f"{section}.{key}" in err and f"at most {most:,}" in err, err
    assert not out.exists()
    PipelineConfig.from_dict({section: {key: most}}).validate()


# --- a personal list past the model's scores ---------------------------------------------------------

def test_a_personal_list_past_the_models_scores_goes_on_by_global_popularity():
    """Item-kNN scores only an item's neighbours: a one-item user's list past them was items in the order of
    NumPy's partition (arbitrary ids, score 0), not the popular ones a segment list breaks ties by."""
    import scipy.sparse as sp

    from gpuclust.recommend.personal import PersonalModel, recommend_rows

    n_items = 8
    weights = sp.csr_matrix((np.array([0.5], np.float32), (np.array([0]), np.array([1]))), shape=(n_items, n_items))
    model = PersonalModel("knn", weights, None, 1)
    seen = binary_matrix(np.array([0]), np.array([0]), 1, n_items, CPU)  # one user, item 0
    table = np.zeros((2, n_items), np.float32)  # one cluster and the global row
    table[1] = [0.0, 0.05, 0.1, 0.3, 0.05, 0.2, 0.0, 0.3]  # popular: 3 and 7, then 5, 2, then 1 and 4
    items, scores, personal = recommend_rows(model, table, 1.0, np.array([0]), seen, 6, 1, CPU)
    assert personal.tolist() == [True]
    assert items[0].tolist() == [1, 3, 7, 5, 2, 4], items
    assert scores[0, 0] == np.float32(0.5) and (scores[0, 1:] == 0).all()


# --- recommend --segments says why clusters are missing ------------------------------------------------

@pytest.fixture(scope="module")
def private_run(tmp_path_factory):
    """A pseudonymised run where one cluster of 5 users is withheld (min_group_size 10)."""
    from helpers import log_with_a_tiny_group

    root = tmp_path_factory.mktemp("private7")
    events, items, _ = log_with_a_tiny_group()
    events.to_parquet(root / "events.parquet")
    items.to_parquet(root / "items.parquet")
    config = PipelineConfig(device="cpu")
    config.cluster.k = 4
    from gpuclust.run import run_files

    run_files(config, root / "events.parquet", root / "run", items=root / "items.parquet", pseudonymise=b"k" * 32)
    return root


def test_segments_name_the_clusters_privacy_withholds(private_run, monkeypatch, capsys):
    """A withheld cluster was simply missing from the campaign view; export names such clusters."""
    code, out, err = cli(monkeypatch, capsys, "recommend", "--run", private_run / "run", "--segments")
    withheld = [line for line in err.splitlines() if line.startswith("withheld clusters")]
    assert code == 0 and len(withheld) == 1 and "fewer than 10 users" in withheld[0], err
    assert out.startswith("| cluster |")


def test_segments_of_a_log_of_one_item_give_the_true_reason(logs, tmp_path, monkeypatch, capsys):
    """A log of one item has no personal model; the refusal blamed recommend.personal = 'none' or Dask."""
    one = tmp_path / "one.parquet"
    pd.read_parquet(logs / "events.parquet").assign(item_id=7).to_parquet(one)
    code, _, err = cli(monkeypatch, capsys, "run", "--events", one, "--k", "3", "--device", "cpu",
                       "--out", tmp_path / "run")
    assert code == 0, err
    code, _, err = cli(monkeypatch, capsys, "recommend", "--run", tmp_path / "run", "--segments")
    assert code == 2 and err.count("\n") == 1 and "no user has two distinct items" in err, err


def test_segments_with_every_cluster_withheld_blame_privacy(logs, tmp_path, monkeypatch, capsys):
    """min_group_size above every cluster: the refusal said the model had no personal model."""
    (tmp_path / "key").write_text("k" * 32)
    code, _, err = _run(monkeypatch, capsys, logs, tmp_path / "run", "[privacy]\nmin_group_size = 100000\n",
                        "--pseudonymise", tmp_path / "key")
    assert code == 0, err
    code, _, err = cli(monkeypatch, capsys, "recommend", "--run", tmp_path / "run", "--segments")
    assert code == 2 and err.count("\n") == 1 and "privacy.min_group_size" in err, err


# --- bench and synth check their numbers before any work ----------------------------------------------

@pytest.mark.parametrize("option, value", [("--events-per-user", "nan"), ("--events-per-user", "-5"),
                                           ("--events-per-user", "1e12"), ("--budget-s", "nan"),
                                           ("--run-budget-s", "-1"), ("--wait-max", "nan")])
def test_bench_refuses_a_bad_number_before_any_suite(tmp_path, monkeypatch, capsys, option, value):
    """--events-per-user nan ran every suite, recorded each run's traceback as its result, wrote the results
    and exited 0; --budget-s nan ran too (no size is ever over a NaN budget)."""
    out = tmp_path / "results"
    code, _, err = cli(monkeypatch, capsys, "bench", "--suite", "stages", "--users", "300", "--features",
                       "behaviour", "--out", out, option, value)
    assert code == 2 and err.count("\n") == 1 and option in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("option, value", [("--events-per-user", "1e12"), ("--events-per-user", "1e300"),
                                           ("--items", "1000000000000")])
def test_synth_refuses_a_log_it_cannot_hold(tmp_path, monkeypatch, capsys, option, value):
    """A block of 4,096 users x 1e12 events (or a catalogue of 1e12 items) ended in a MemoryError or
    'lam value too large', a traceback and exit 1."""
    out = tmp_path / "data"
    code, _, err = cli(monkeypatch, capsys, "synth", "--users", "100", option, value, "--out", out)
    assert code == 2 and err.count("\n") == 1 and option in err and "Traceback" not in err, err
    assert not out.exists()


def test_size_with_an_unmeasured_model_names_each_choice_once(monkeypatch, capsys):
    """Runs without text: the refusal ended '(or pass --model none or none)'."""
    code, _, err = cli(monkeypatch, capsys, "size", "--users", "1000", "--events-per-user", "5", "--model", "bogus")
    assert code == 2 and err.count("\n") == 1 and "none or none" not in err and "--model none" in err, err


# --- users whose every event is dropped (unknown items or event types) are counted --------------------

@pytest.fixture(scope="module")
def plain_run(logs, tmp_path_factory):
    from gpuclust.run import run_files

    config = PipelineConfig(device="cpu")
    config.cluster.k, config.cluster.n_init = 3, 1
    out = tmp_path_factory.mktemp("plain7") / "run"
    run_files(config, logs / "events.parquet", out)
    return out


@pytest.mark.parametrize("command", ["assign", "recommend"])
def test_users_left_without_a_known_item_are_counted(logs, plain_run, tmp_path, monkeypatch, capsys, command):
    """User 100's events all on items the model lacks: the warning counted the events, and the user was
    simply missing from the assignments and from recommend's lists."""
    events = pd.read_parquet(logs / "events.parquet")
    events["item_id"] = events["item_id"].where(events["user_id"] != 100, events["item_id"] + 10**6)
    events.to_parquet(tmp_path / "new.parquet")
    args = ["--model", plain_run / "model", "--out", tmp_path / "out"] if command == "assign" else \
        ["--run", plain_run, "--top-k", "3"]
    code, out, err = cli(monkeypatch, capsys, command, "--events", tmp_path / "new.parquet", *args)
    users = [line for line in err.splitlines() if line.startswith("warning: dropped") and " users (" in line]
    assert code == 0 and len(users) == 1 and "dropped 1 of 120 users" in users[0], err
    assert "the lines above say why" in users[0]


def test_a_model_whose_settings_have_an_unknown_key_is_named_as_the_damaged_model(plain_run, tmp_path, monkeypatch,
                                                                                 capsys):
    """A model.json (checksums recomputed) with [recommend] top_k: the refusal read 'unknown key(s) top_k in
    [recommend]', as if the user's TOML were wrong, and named neither the model nor the fix."""
    import hashlib
    import json
    import shutil

    model = tmp_path / "model"
    shutil.copytree(plain_run / "model", model)
    meta = json.loads((model / "model.json").read_text())
    meta["config"]["recommend"]["top_k"] = 5
    (model / "model.json").write_text(json.dumps(meta))
    sums = [line.split(None, 1) for line in (model / "checksums.sha256").read_text().splitlines()]
    (model / "checksums.sha256").write_text("".join(
        f"{hashlib.sha256((model / name.strip()).read_bytes()).hexdigest()}  {name.strip()}\n" for _, name in sums))
    code, _, err = cli(monkeypatch, capsys, "assign", "--model", model, "--events", tmp_path / "nowhere.parquet",
                       "--out", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and str(model) in err and "top_k" in err and "re-save" in err, err


def test_evaluate_takes_each_top_k_once():
    """--top-k 10,10 printed and wrote every HR@10 and NDCG@10 column twice; --k 8,8 was already one k."""
    from gpuclust.cli.evaluate import parse_top_k

    assert parse_top_k("10,10") == (10,)
    assert parse_top_k("20,10,20") == (20, 10)


@pytest.mark.parametrize("name", ["/nonexistent-model", "./nonexistent-model", "~/nonexistent-model"])
def test_describe_with_a_missing_model_folder_says_no_such_folder(name):
    """A path that is not there was handed to the hub as a repo id: the refusal quoted 'Repo id must use
    alphanumeric chars ...', about a rule the user never broke (the text model's says 'no such directory')."""
    from gpuclust.explain.language_model import LocalLM

    with pytest.raises(UsageError, match=r"no such folder") as caught:
        LocalLM(name, "cpu").prepare()
    assert "Repo id" not in str(caught.value)


@pytest.mark.parametrize("inside", ["model/x.json", "sub/deeper/x.json", "result.json"])
def test_an_out_inside_an_input_folder_suggests_a_name_that_is_taken(tmp_path, inside):
    """drift --model run/model --out run/model/sub/x.json suggested run/model/sub/result.json: inside the same
    folder, refused in turn. The suggestion is now beside the input folder, and taking it works."""
    import re

    from gpuclust.io.outputs import check_file_target

    folder = tmp_path / "run"
    (folder / "model").mkdir(parents=True)
    with pytest.raises(UsageError, match="inside the folder of --run") as caught:
        check_file_target(folder / inside, inputs={"--run": folder}, suffixes=(".json",))
    suggested = re.search(r"e\.g\. (\S+)", str(caught.value)).group(1)
    assert check_file_target(suggested, inputs={"--run": folder}, suffixes=(".json",)) == tmp_path / "result.json"


@pytest.mark.parametrize("name", ["../escape", "sub/results", "."])
def test_bench_name_is_a_plain_file_stem(tmp_path, monkeypatch, capsys, name):
    """--name ../escape wrote escape.json, .md and plots beside --out, outside the results folder."""
    out = tmp_path / "results"
    code, _, err = cli(monkeypatch, capsys, "bench", "--suite", "stages", "--users", "300", "--features",
                       "behaviour", "--out", out, "--name", name)
    assert code == 2 and err.count("\n") == 1 and "--name" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("mine", [{"mine.json": '{"a": 1}\n'}, {"mine.md": "my notes\n"},
                                  {"mine-stages.png": "a picture of mine\n"}])
def test_bench_never_merges_into_or_replaces_a_file_it_did_not_write(tmp_path, monkeypatch, capsys, mine):
    """--name mine in a folder holding the user's mine.json (a JSON object) merged the suites into it, and
    mine.md, the user's notes, was replaced by bench's Markdown; mine-stages.png, by bench's plot."""
    out = tmp_path / "results"
    out.mkdir()
    for name, text in mine.items():
        (out / name).write_text(text)
    code, _, err = cli(monkeypatch, capsys, "bench", "--suite", "stages", "--users", "300", "--features",
                       "behaviour", "--out", out, "--name", "mine")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert {p.name: p.read_text() for p in out.iterdir()} == mine


def test_bench_knows_its_own_markdown_page():
    """The check above reads the first words of the page bench writes: the two must not drift apart."""
    from benchmarks.report import markdown
    from gpuclust.cli.bench import MARKDOWN_HEAD

    assert markdown({"suites": {}}, "x").startswith(MARKDOWN_HEAD)


def test_a_log_without_two_items_by_any_user_has_no_personal_model(logs, tmp_path, monkeypatch, capsys):
    """Every user on one item: no pair of items co-occurs, the personal model's weights were all 0 and every
    user got a 'personal' list of score 0 (items in index order) in place of the segment's list."""
    from gpuclust import UserClusterer

    events = pd.read_parquet(logs / "events.parquet")
    events["item_id"] = events.groupby("user_id")["item_id"].transform("first")
    config = PipelineConfig(device="cpu")
    config.cluster.n_init = 1
    model = UserClusterer(3, config=config).fit(events)
    assert model.personal_ is None and model.manifest_["recommend"]["personal"] is None
    assert set(model.recommend(events.head(50), top_k=3)["source"]) == {"segment"}


def test_users_left_without_an_event_of_a_known_type_are_counted(logs, plain_run, tmp_path, monkeypatch, capsys):
    """User 100's events all of a type the model has no weight for: the type's warning counted the events,
    and the user vanished from the assignments without a word (the round's first count covered unknown
    items only). Now one line counts the users, whatever dropped their events."""
    events = pd.read_parquet(logs / "events.parquet")
    events["event_type"] = events["event_type"].astype(str).where(events["user_id"] != 100, "wishlist")
    events.to_parquet(tmp_path / "new.parquet")
    code, _, err = cli(monkeypatch, capsys, "assign", "--events", tmp_path / "new.parquet", "--model",
                       plain_run / "model", "--out", tmp_path / "out")
    users = [line for line in err.splitlines() if line.startswith("warning: dropped") and " users (" in line]
    assert code == 0 and len(users) == 1 and "dropped 1 of 120 users" in users[0], err
    assert any("wishlist" in line for line in err.splitlines() if line.startswith("warning: dropped")), err
    placed = pd.read_parquet(tmp_path / "out" / "assignments.parquet")
    assert 100 not in set(placed["user_id"]) and len(placed) == 119
    steps = {s["step"]: s for s in json.loads((tmp_path / "out" / "manifest.json").read_text())["rows"]["steps"]}
    assert (steps["users_not_placed"]["rows_in"], steps["users_not_placed"]["rows_out"]) == (120, 119)
