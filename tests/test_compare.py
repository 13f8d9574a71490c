"""`gpuclust evaluate --compare/--k list|auto`: every representation at every k, baselines, errors, plot."""

import json

import pytest

from gpuclust import UserClusterer
from gpuclust.config import PipelineConfig
from gpuclust.errors import UsageError
from gpuclust.preprocess.prepared import event_frames
from gpuclust.recommend.compare import GLOBAL, PERSONAL_ROW, compare, feature_sets, markdown_tables, plot
from gpuclust.recommend.objective import choose_k
from gpuclust.recommend.recipe import NAME as RECIPE
from gpuclust.synth import SynthSpec, generate
from tests.helpers import cli


@pytest.fixture(scope="module")
def synthetic():
    return generate(SynthSpec(n_users=900, n_items=300, n_groups=4, seed=0, events_per_user=25))


STEPS: list[str] = []
FRAMES: dict[str, int] = {}  # events frames built while the fixture's compare ran


@pytest.fixture(scope="module")
def result(synthetic):
    cfg = PipelineConfig(device="cpu", seed=0)
    cfg.features.autoencoder.epochs = 3
    before = event_frames.built
    out = compare(synthetic.events, synthetic.items, cfg, "tfidf,behaviour+tfidf,autoencoder", k_values=(3, 4, 8),
                  progress=STEPS.append)
    FRAMES["compare"] = event_frames.built - before
    return out


def test_compare_builds_no_events_frame(result):
    """The split, each contender's fit and features of the training part, the recipe, popularity and the
    personal model all work on the event table: no stage makes the events frame."""
    assert FRAMES["compare"] == 0


def test_each_step_is_named_as_it_starts(result):
    assert STEPS[:2] == ["preprocess and split", "personal model"] and STEPS[-1] == RECIPE
    for name in ("tfidf (1 of 3)", "behaviour+tfidf (2 of 3)", "autoencoder (3 of 3)"):
        assert f"{name}: cluster" in STEPS and f"{name}: clusters at k=8" in STEPS
    assert any(s.startswith("autoencoder (3 of 3): ") and "epoch" in s for s in STEPS)  # training updates too


def test_every_representation_at_every_k_with_baselines_and_errors(result):
    names = [r["representation"] for r in result["rows"]]
    assert names.count(GLOBAL) == 1 and names.count(RECIPE) == 3 and names.count(PERSONAL_ROW) == 1
    for name in ("tfidf", "behaviour+tfidf", "autoencoder"):
        assert sorted(r["k"] for r in result["rows"] if r["representation"] == name) == [3, 4, 8]
    for row in result["rows"]:
        assert 0 <= row["NDCG@10"] <= row["HR@10"] <= 1 and 0 < row["HR@10_se"] < 0.05
        assert row["users"] == result["users"]["evaluated"] > 800
    best = max(r["HR@10"] for r in result["rows"] if r["representation"] == "tfidf")
    assert best > next(r["HR@10"] for r in result["rows"] if r["representation"] == GLOBAL) + 0.1
    ae = [r for r in result["rows"] if r["representation"] == "autoencoder"]
    assert ae[0]["training"]["autoencoder"]["train_seconds"] > 0
    json.dumps(result)


def test_the_share_of_the_personal_lift_is_reported_for_every_representation_and_k(result):
    rows = result["rows"]
    glob = next(r for r in rows if r["representation"] == GLOBAL)["HR@10"]
    personal = next(r for r in rows if r["representation"] == PERSONAL_ROW)
    assert personal["k"] is None and personal["selection"]["chosen"]["kind"] in ("ease", "knn")
    for row in rows:
        if row["k"] is not None:
            share = (row["HR@10"] - glob) / (personal["HR@10"] - glob)
            assert row["captured_lift"]["HR@10"] == pytest.approx(share, abs=1e-4)
    assert "that the clusters capture" in markdown_tables(result)


def test_tables_and_plot(result, tmp_path):
    text = markdown_tables(result)
    assert "| representation | k=3 | k=4 | k=8 |" in text and "±" in text and "NDCG@10" in text
    path = plot(result, tmp_path / "hr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_k_auto_chooses_per_representation_and_compares_the_recipe_at_that_k(synthetic):
    cfg = PipelineConfig(device="cpu", seed=0)
    cfg.cluster.k_values = (2, 3, 4, 6)
    cfg.cluster.objective = "recommend"
    before = event_frames.built
    out = compare(synthetic.events, synthetic.items, cfg, "tfidf", k_values="auto")
    assert event_frames.built == before
    row = next(r for r in out["rows"] if r["representation"] == "tfidf")
    assert row["k"] in (2, 3, 4, 6) and row["k_sweep"]["objective"] == "recommend"
    assert {c["k"] for c in row["k_sweep"]["curve"]} == {2, 3, 4, 6}
    assert any(r["representation"] == RECIPE and r["k"] == row["k"] for r in out["rows"])
    assert "chosen k" in markdown_tables(out)


def test_feature_sets_parse_and_refuse_empties():
    assert feature_sets("tfidf, behaviour+tfidf") == {"tfidf": ("tfidf",), "behaviour+tfidf": ("behaviour", "tfidf")}
    with pytest.raises(UsageError, match="feature set"):
        feature_sets(" , ")
    with pytest.raises(UsageError, match="unknown feature 'nonsense' in --compare"):
        compare(None, None, PipelineConfig(device="cpu"), "tfidf+nonsense", k_values=(2,))


def test_feature_sets_name_compare_for_unknown_names_and_fold_repeats():
    """An unknown name was blamed on --features (not given); tfidf+tfidf was a second, identical row."""
    with pytest.raises(UsageError, match=r"unknown feature 'foo' in --compare 'tfidf,foo': choose from behaviour"):
        feature_sets("tfidf,foo")
    assert feature_sets("tfidf+tfidf,tfidf, behaviour + tfidf+behaviour") == {
        "tfidf": ("tfidf",), "behaviour+tfidf": ("behaviour", "tfidf")}


def test_recommend_objective_in_the_estimator_keeps_its_curve(synthetic, tmp_path):
    cfg = PipelineConfig(device="cpu", seed=0)
    cfg.cluster.objective = "recommend"
    model = UserClusterer("2-6", config=cfg).fit(synthetic.events, synthetic.items)
    sweep = model.manifest_["cluster"]["k_sweep"]
    assert sweep["objective"] == "recommend" and sweep["best_k"] == model.n_clusters_
    assert all("validation_hr10" in row and "validation_hr10_se" in row for row in sweep["curve"])
    model.save(tmp_path / "m")
    assert UserClusterer.load(tmp_path / "m").sweep_.to_dict()["objective"] == "recommend"


def test_one_standard_error_rule():
    curve = [{"k": 4, "validation_hr10": 0.30, "validation_hr10_se": 0.01},
             {"k": 8, "validation_hr10": 0.335, "validation_hr10_se": 0.01},
             {"k": 12, "validation_hr10": 0.34, "validation_hr10_se": 0.01}]
    assert choose_k(curve) == 8


def test_cli_compare_writes_json_and_png(synthetic, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    data.mkdir()
    synthetic.events.to_parquet(data / "events.parquet")
    code, out, err = cli(monkeypatch, capsys, "evaluate", "--events", data / "events.parquet", "--device", "cpu",
                         "--compare", "tfidf,behaviour+tfidf", "--k", "3,6", "--out", tmp_path / "r.json",
                         "--plot", tmp_path / "r.png")
    assert code == 0, err
    assert "| tfidf |" in out and "recipe" in out
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["k_values"] == [3, 6] and (tmp_path / "r.png").stat().st_size > 1000


def test_cli_refuses_a_plot_of_one_configuration(synthetic, tmp_path, monkeypatch, capsys):
    synthetic.events.to_parquet(tmp_path / "events.parquet")
    code, _, err = cli(monkeypatch, capsys, "evaluate", "--events", tmp_path / "events.parquet", "--k", "4",
                       "--plot", tmp_path / "r.png")
    assert code == 2 and "--plot" in err


def test_cli_settings_of_a_compared_feature_take_effect(synthetic, tmp_path, monkeypatch, capsys):
    synthetic.events.to_parquet(tmp_path / "events.parquet")
    (tmp_path / "c.toml").write_text('[features.autoencoder]\nepochs = 2\nkind = "vae"\n')
    code, out, err = cli(monkeypatch, capsys, "evaluate", "--events", tmp_path / "events.parquet", "--device", "cpu",
                         "--compare", "tfidf,autoencoder", "--k", "3,4", "--config", tmp_path / "c.toml", "--json")
    assert code == 0, err
    rows = [r for r in json.loads(out)["rows"] if r["representation"] == "autoencoder"]
    assert rows[0]["training"]["autoencoder"]["epochs_run"] == 2


def test_cli_never_writes_its_result_or_plot_over_an_input_or_over_each_other(synthetic, tmp_path, monkeypatch,
                                                                             capsys):
    """A synth output carries gpuclust's mark, yet evaluate --out onto it destroyed the events it read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    events = tmp_path / "events.parquet"
    table = pa.Table.from_pandas(synthetic.events, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({"gpuclust.synth": "{}"}), events)  # as `gpuclust synth` marks it
    before = events.read_bytes()
    base = ("evaluate", "--events", events, "--device", "cpu")
    for extra, flag in ((("--out", events), "--out"), (("--compare", "tfidf", "--k", "3", "--plot", events), "--plot"),
                        (("--compare", "tfidf", "--k", "3", "--out", tmp_path / "r.json", "--plot",
                          tmp_path / "r.json"), "--plot")):
        code, _, err = cli(monkeypatch, capsys, *base, *extra)
        assert code == 2 and err.count("\n") == 1 and f"{flag} " in err and "Traceback" not in err, err
    assert events.read_bytes() == before and not (tmp_path / "r.json").exists()


def test_cli_replaces_its_own_plot_but_names_plot_when_refusing_a_foreign_one(synthetic, tmp_path, monkeypatch,
                                                                                capsys):
    synthetic.events.to_parquet(tmp_path / "events.parquet")
    args = ("evaluate", "--events", tmp_path / "events.parquet", "--device", "cpu", "--compare", "tfidf", "--k", "3")
    for _ in range(2):  # a rerun replaces the PNG it wrote
        code, _, err = cli(monkeypatch, capsys, *args, "--plot", tmp_path / "r.png")
        assert code == 0, err
    (tmp_path / "mine.png").write_bytes(b"not gpuclust's")
    code, _, err = cli(monkeypatch, capsys, *args, "--plot", tmp_path / "mine.png")
    assert code == 2 and err.startswith("error: --plot ") and (tmp_path / "mine.png").read_bytes() == b"not gpuclust's"


def test_a_k_above_the_users_says_which_k_would_do(synthetic):
    with pytest.raises(UsageError, match=r"k=100000 is larger than the number of users \(900\); give --k values up "
                                         r"to 900, e.g. --k 90,225"):
        compare(synthetic.events, None, PipelineConfig(device="cpu"), "tfidf", k_values=(4, 100_000))
    few = synthetic.events[synthetic.events["user_id"].isin(synthetic.events["user_id"].unique()[:5])]
    with pytest.raises(UsageError, match=r"\(5\); give --k values up to 5, e.g. --k 2$"):  # was: --k 1,1
        compare(few, None, PipelineConfig(device="cpu"), "tfidf", k_values=(8, 20, 40))
