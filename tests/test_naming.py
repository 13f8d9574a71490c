"""Rule-based cluster names: every cluster gets a readable one from its facts, with no language model."""

from __future__ import annotations

import pytest

from gpuclust import PipelineConfig, UserClusterer
from gpuclust.explain.naming import NAME_WORDS, name_profiles, rule_description, rule_name
from gpuclust.privacy import suppress_small_groups
from gpuclust.synth import SynthSpec, generate


@pytest.fixture(scope="module")
def planted():
    data = generate(SynthSpec(n_users=3000, n_groups=6, seed=1))
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 6
    return data, UserClusterer(config=config).fit(data.events, data.items, data.truth)


def test_each_planted_persona_is_named_after_its_dominant_category(planted):
    data, model = planted
    assigned = model.labels_.merge(data.truth, on="user_id")
    assigned = assigned[assigned["group"] >= 0]
    profiles = {p["cluster"]: p for p in model.profiles_}
    for persona in data.personas:
        mine = assigned[assigned["group"] == persona["group"]]
        cluster = int(mine["cluster"].mode().iloc[0])  # where most of the persona's users went
        profile = profiles[cluster]
        name = profile["name"]
        favourites = {c.lower() for c in persona["favourite_categories"]}
        top = profile["top_categories"][0]["category"].lower()
        assert top in favourites, (persona, profile["top_categories"][:3])
        assert top in name, (name, persona["favourite_categories"])
        assert name == profile["rule_name"] and profile["described_by"] == "rules"
        assert len(name.split()) <= NAME_WORDS
        assert profile["description"].startswith(f"{profile['size']:,} users") and top in profile["description"].lower()
    assert model.manifest_["describe"] == {"model": None, "names": "rules"}


def test_behaviour_words_lead_and_the_role_comes_from_purchases():
    profile = {"cluster": 2, "size": 40, "share": 0.1, "top_categories": [{"category": "Beauty", "share": 0.5}],
               "behaviour_lift": {"monetary": 3.95, "sessions": 0.4, "recency_days": 1.1, "share_purchase": 2.5,
                                  "share_view": 0.3}}
    assert rule_name(profile) == "high spend infrequent beauty buyers"  # spend first; share_* only as the role
    profile["behaviour_lift"]["share_purchase"] = 0.4
    assert rule_name(profile) == "high spend infrequent beauty browsers"
    profile["behaviour_lift"] = {"monetary": 1.2}  # nothing stands out: subject and role only
    assert rule_name(profile) == "beauty shoppers"
    description = rule_description({**profile, "behaviour_lift": {"monetary": 3.95},
                                    "terms": [{"term": "perfume"}, {"term": "lipstick"}]})
    assert description == ("40 users (10.0% of all), mostly around Beauty. Against all users: spend per user x4.0. "
                           "Distinctive words: perfume, lipstick.")


def test_without_categories_the_terms_name_the_cluster_and_names_stay_short():
    profile = {"cluster": 0, "size": 500, "share": 0.5, "top_categories": [],
               "terms": [{"term": "espresso"}, {"term": "espresso machine"}, {"term": "perfume"}],
               "behaviour_lift": {"monetary": 4.0, "events": 3.0}}
    assert rule_name(profile) == "high spend espresso perfume shoppers"  # the second behaviour word would run long
    long = {**profile, "top_categories": [{"category": "home and kitchen small electrical appliances"}]}
    name = rule_name(long)
    assert len(name.split()) == NAME_WORDS and name == "home and kitchen small electrical shoppers"


def test_a_withheld_cluster_is_named_by_its_number_only():
    profiles = [{"cluster": 0, "size": 5, "share": 0.01, "top_categories": [{"category": "rare"}],
                 "behaviour_lift": {"monetary": 9.0}, "exemplars": ["u1"]}]
    kept, _ = suppress_small_groups(profiles, {"monetary": 1.0}, 10, 500)
    named = name_profiles(kept)[0]
    assert named["name"] == "cluster 0" and "rare" not in named["description"]
    assert named["description"] == "Figures withheld for privacy: fewer than 10 users."
