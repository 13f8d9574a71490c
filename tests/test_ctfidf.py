"""Class-based TF-IDF: the words that set a cluster apart come out on top, and labels read well."""

import numpy as np
import pandas as pd
import pytest

import gpuclust.explain.exemplars as exemplars
from gpuclust.backend import cpu_backend
from gpuclust.errors import UsageError
from gpuclust.explain.ctfidf import LABEL_SEPARATOR, ClassTfidf, phrase_terms, readable_label, tokenize
from gpuclust.explain.exemplars import exemplar_histories, nearest_users
from gpuclust.preprocess.clean import Preprocessor


def shop(n_per_group: int = 40, seed: int = 0):
    """Cluster 0 buys wool scarves, cluster 1 garden tools; both buy the same popular mug."""
    rng = np.random.default_rng(seed)
    catalogue = pd.DataFrame({
        "item_id": np.arange(9),
        "title": ["Chunky Wool Scarf", "Wool scarf, hand knit", "Merino wool scarf", "Garden Hose 20m",
                  "Pruning shears for the garden", "Garden trowel", "Coffee mug", "Coffee mug with a lid",
                  "A"],
        "category": ["scarves", "scarves", "scarves", "garden", "garden", "garden", "kitchen", "kitchen", None],
    })
    rows = []
    for user in range(2 * n_per_group):
        group = user // n_per_group
        own = [0, 1, 2] if group == 0 else [3, 4, 5]
        for item in rng.choice(own, 6).tolist() + [6, 7, 8]:
            rows.append((user, item, "purchase" if rng.random() < 0.3 else "view"))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type"])
    events["timestamp"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(len(events)), unit="min")
    data = Preprocessor().run(events, cpu_backend(), catalogue)
    labels = (data.users["user_id"].to_numpy() >= n_per_group).astype(np.int32)
    return data, labels


@pytest.mark.parametrize("reduce_frequent_words", [False, True])
def test_wool_scarf_buyers_get_wool_and_scarf_as_top_terms(reduce_frequent_words):
    data, labels = shop()
    model = ClassTfidf(top_n=5, reduce_frequent_words=reduce_frequent_words).fit(data, labels)
    top = [t for t, _ in model.terms_[0][:2]]
    assert set(top) == {"wool", "scarf"}
    assert {t for t, _ in model.terms_[1][:1]} == {"garden"}
    assert model.categories_[0][0][0] == "scarves" and model.categories_[1][0][0] == "garden"
    scores = [s for _, s in model.terms_[0]]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    # the shared mug is in every cluster, so it never beats a cluster's own words
    assert all(t not in ("coffee", "mug") for t, _ in model.terms_[0][:3])


@pytest.mark.parametrize("ngram_range", [(1, 1), (1, 2)])
def test_unigram_counts_are_one_product_shared_with_phrase_detection(ngram_range):
    import scipy.sparse as sp

    class Counted(sp.csr_matrix):  # the real matrix, counting the (cluster x item) @ (item x term) products
        products = 0

        def __matmul__(self, other):
            Counted.products += 1
            return sp.csr_matrix(self) @ other

    data, labels = shop()
    model = ClassTfidf(top_n=5, ngram_range=ngram_range)
    per_item, clusters = model._cluster_item_weights(data, labels)
    plain = ClassTfidf(top_n=5, ngram_range=ngram_range).fit(data, labels)
    counted = model.fit_weights(Counted(per_item), clusters, data)
    # words and word pairs for phrases, categories, and the terms only where they are not the words
    assert Counted.products == (3 if ngram_range == (1, 1) else 4)
    assert (counted.terms_, counted.categories_, counted.labels_) == (plain.terms_, plain.categories_, plain.labels_)
    # the scores are c-TF-IDF of the words' cluster counts: tf = count / cluster total, idf = log(1 + A / f_t)
    counts = np.asarray((per_item @ model._words[0]).todense())
    tf = counts / counts.sum(axis=1, keepdims=True)
    idf = np.log1p(counts.sum(axis=1).mean() / counts.sum(axis=0))
    words = {w: j for j, w in enumerate(model._words[1])}
    if ngram_range == (1, 1):
        for c in clusters:
            assert [s for _, s in counted.terms_[c]] == [round(float(tf[c, words[t]] * idf[words[t]]), 6)
                                                        for t, _ in counted.terms_[c]]


def test_label_is_three_distinct_terms_none_inside_another():
    data, labels = shop()
    model = ClassTfidf(top_n=8, ngram_range=(1, 2)).fit(data, labels)
    for label in model.labels_.values():
        parts = label.split(LABEL_SEPARATOR)
        assert 1 <= len(parts) <= 3 and len(set(parts)) == len(parts)
        assert not any(a != b and a in b for a in parts for b in parts)
    # "wool" and "scarf" stand side by side in every scarf title: one phrase, not two terms
    assert "wool scarf" in model.labels_[0].split(LABEL_SEPARATOR)
    assert readable_label(["wool", "wool scarf", "scarf", "knit", "hand"]) == "wool · scarf · knit"


def test_tokenize_drops_stop_words_short_tokens_and_numbers():
    stop = frozenset({"the", "for", "with", "a"})
    assert tokenize("Pruning shears for the garden, 20 cm x 3", stop) == ["pruning", "shears", "garden", "cm"]
    assert tokenize("T-shirt, V-neck", stop) == ["t-shirt", "v-neck"]


def test_noise_users_are_ignored_and_annotate_adds_the_fields():
    data, labels = shop()
    labels = labels.copy()
    labels[:5] = -1
    model = ClassTfidf().fit(data, labels)
    assert set(model.terms_) == {0, 1}
    profiles = model.annotate([{"cluster": 0, "size": 35}, {"cluster": 1, "size": 40}])
    assert profiles[0]["label"] == model.labels_[0]
    assert profiles[0]["terms"][0] == {"term": model.terms_[0][0][0], "score": model.terms_[0][0][1]}
    assert profiles[1]["ctfidf_categories"][0]["category"] == "garden"


def test_without_text_the_label_falls_back_to_categories_then_the_cluster_number():
    data, labels = shop()
    data.items = data.items.drop(columns=["title"])
    data.text_columns = ()
    model = ClassTfidf().fit(data, labels)
    assert model.terms_[0] == [] and model.labels_[0].startswith("scarves")
    data.items = data.items.drop(columns=["category"])
    assert ClassTfidf().fit(data, labels).labels_[1] == "cluster 1"


def test_bad_parameters_name_the_value():
    data, labels = shop()
    with pytest.raises(UsageError, match="ngram_range"):
        ClassTfidf(ngram_range=(2, 1)).fit(data, labels)
    with pytest.raises(UsageError, match="labels has 3 entries"):
        ClassTfidf().fit(data, labels[:3])


def test_nearest_users_are_the_closest_to_their_centre_nearest_first():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4)).astype(np.float32)
    centres = rng.normal(size=(3, 4)).astype(np.float32)
    labels = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
    labels[:7] = -1
    ids = np.arange(500) + 1000
    got = nearest_users(x, labels, centres, ids, n=4, xp=np, chunk=64)
    dist = ((x - centres[np.clip(labels, 0, None)]) ** 2).sum(1)
    for c in range(3):
        members = np.flatnonzero(labels == c)
        assert got[c] == (ids[members[np.argsort(dist[members])[:4]]]).tolist()
    assert all(isinstance(u, int) for u in got[0])


def test_exemplar_histories_copy_every_chosen_users_events_at_once(monkeypatch):
    data, _ = shop()
    users = data.users["user_id"].tolist()
    profiles = [{"cluster": 0, "exemplars": users[:3]}, {"cluster": 1, "exemplars": users[40:43] + [999]},
                {"cluster": 2, "exemplars": users[5:6]}]
    copies = []
    real = exemplars.to_host
    monkeypatch.setattr(exemplars, "to_host", lambda a: copies.append(len(a)) or real(a))
    got = exemplar_histories(data, profiles, False, items=4, skip={2})
    assert len(copies) == 2  # the chosen users' offsets, then all their recent events: not one copy per user
    # what each user touched last, newest first, distinct, by title: read here from the events frame
    events = data.events.sort_values(["user_idx", "timestamp"], kind="stable")
    titles = dict(zip(data.items["item_id"], data.items["title"], strict=True))
    for c, chosen in ((0, users[:3]), (1, users[40:43])):
        want = []
        for j, user in enumerate(chosen):
            recent = [titles[i] for i in events[events["user_id"] == user]["item_id"].tolist()[::-1]]
            want.append((f"user {j + 1}", list(dict.fromkeys(recent))[:4]))
        assert got[c] == want
    assert set(got) == {0, 1}  # the withheld cluster gets none; an unknown exemplar is passed over


def test_words_that_stand_together_in_titles_stay_one_phrase():
    pairs = {("olive", "oil"), ("hot", "water"), ("water", "bottle")}
    together = lambda a, b: (a, b) in pairs  # noqa: E731
    assert phrase_terms(["tea", "olive", "oil", "towel"], together) == ["tea", "olive oil", "towel"]
    assert phrase_terms(["water", "bottle", "hot", "glass"], together, 2) == ["hot water bottle", "glass"]
    # a phrase of max_words takes no more words; a term sharing a word with a kept one is skipped
    assert phrase_terms(["water", "bottle", "hot", "hot water"], together, 1, max_words=2) == ["water bottle"]


def test_olive_oil_buyers_are_labelled_olive_oil_not_olive_and_oil():
    rng = np.random.default_rng(1)
    catalogue = pd.DataFrame({"item_id": np.arange(6), "title": [
        "Extra virgin olive oil", "Olive oil, 1 litre", "Olive oil tin", "Lamp oil", "Garden hose", "Hose reel"]})
    rows = [(u, int(i)) for u in range(60) for i in rng.choice([0, 1, 2] if u < 30 else [4, 5], 5)]
    rows += [(u, 3) for u in range(30, 60)]  # lamp oil: "oil" elsewhere, never after "olive"
    events = pd.DataFrame(rows, columns=["user_id", "item_id"]).assign(event_type="purchase")
    events["timestamp"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(len(events)), unit="min")
    data = Preprocessor().run(events, cpu_backend(), catalogue)
    labels = (data.users["user_id"].to_numpy() >= 30).astype(np.int32)
    parts = ClassTfidf().fit(data, labels).labels_[0].split(LABEL_SEPARATOR)
    assert "olive oil" in parts and "olive" not in parts and "oil" not in parts


def test_a_cluster_set_apart_by_behaviour_is_labelled_by_it_first():
    from gpuclust.explain.behaviour_words import lead_label

    big_spenders = {"behaviour_lift": {"monetary": 3.27, "recency_days": 0.25, "sessions": 2.7, "span_days": 1.2},
                    "top_items": [{"lift": 0.98}, {"lift": 1.03}, {"lift": 0.97}]}
    label, driver = lead_label(big_spenders, ["red", "metal sign", "heart"], LABEL_SEPARATOR)
    assert (label, driver) == ("high spend, recently active (red · metal sign)", "behaviour")
    # the same behaviour, but items bought nowhere else: the items name the cluster
    crafters = {**big_spenders, "top_items": [{"lift": 13.4}, {"lift": 12.9}, {"lift": 8.8}]}
    assert lead_label(crafters, ["feltcraft", "doll"], LABEL_SEPARATOR) == ("feltcraft · doll", "items")
    # nothing twice or half the population's: no behaviour words, whatever the items
    usual = {"behaviour_lift": {"monetary": 1.4, "events": 0.8}, "top_items": [{"lift": 1.0}]}
    assert lead_label(usual, ["mug"], LABEL_SEPARATOR) == ("mug", "items")
