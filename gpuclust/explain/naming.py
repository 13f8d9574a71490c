"""Rule-based cluster names and descriptions: every cluster gets a readable name, with or without a
language model ("high spend frequent beauty buyers").

Built from the facts a profile already holds: the words for its behaviour statistics furthest from the
population (`behaviour_words`, the same words the labels and the report use), its top category (or,
without categories, its top c-TF-IDF terms), and its buying role (the purchase share against the
population's). A cluster whose figures were withheld for
privacy keeps a name that says only its number: its figures are not for naming either.
"""

from __future__ import annotations

import math
from typing import Any

from gpuclust.explain.behaviour_words import CALL_OUT_LOG2, behaviour_words, statistic

NAME_WORDS = 6  # a name longer than this is not a name
PURCHASE_SHARE = "share_purchase"
RULES = "rules"  # `described_by` of a rule-based name and description
ROLE_LIFT = 2.0 ** CALL_OUT_LOG2  # a purchase share this far from the population's makes buyers or browsers


def lifts_ranked(profile: dict) -> list[tuple[str, float]]:
    """(statistic, lift) by how far each lies from the population (|log lift|), largest first."""
    lifts = profile.get("behaviour_lift") or {}
    valid = [(k, float(v)) for k, v in lifts.items() if isinstance(v, int | float) and v > 0 and math.isfinite(v)]
    return sorted(valid, key=lambda kv: (-abs(math.log(kv[1])), kv[0]))


def subject(profile: dict) -> str:
    """What the cluster is about: its top category, else its top two c-TF-IDF terms, else ''."""
    categories = [str(c.get("category")) for c in profile.get("top_categories") or [] if c.get("category")]
    if categories:
        return categories[0].lower()
    terms = [str(t.get("term")) for t in profile.get("terms") or [] if t.get("term")]
    chosen: list[str] = []
    for term in terms:
        if not any(term in kept or kept in term for kept in chosen):
            chosen.append(term)
        if len(chosen) == 2:
            break
    return " ".join(chosen)


def role(profile: dict) -> str:
    lift = (profile.get("behaviour_lift") or {}).get(PURCHASE_SHARE)
    if isinstance(lift, int | float) and lift >= ROLE_LIFT:
        return "buyers"
    if isinstance(lift, int | float) and 0 < lift <= 1 / ROLE_LIFT:
        return "browsers"
    return "shoppers"


def rule_name(profile: dict) -> str:
    """At most NAME_WORDS words: the behaviour words (`behaviour_words`), the subject, the role ("high
    spend beauty buyers"). The event-type shares speak through the role; where the name would run long,
    behaviour words go first, then the subject's tail."""
    if profile.get("suppressed"):
        return f"cluster {profile['cluster']}"
    if profile.get("noise"):
        return "unclustered users"
    lifts = {k: v for k, v in (profile.get("behaviour_lift") or {}).items() if not k.startswith("share_")}
    phrases = behaviour_words(lifts)
    about = subject(profile).split()
    while phrases and len(" ".join(phrases).split()) + len(about) + 1 > NAME_WORDS:
        phrases.pop()
    words = [*" ".join(phrases).split(), *about][:NAME_WORDS - 1]
    return " ".join([*words, role(profile)])


def rule_description(profile: dict) -> str:
    """Two or three sentences from the same facts: who they are, how they differ, what sets them apart."""
    if profile.get("suppressed"):
        return f"Figures withheld for privacy: {profile['suppressed']}."
    size, share = profile.get("size"), profile.get("share")
    who = f"{size:,} users" if isinstance(size, int) else "These users"
    if isinstance(share, int | float):
        who += f" ({100 * share:.1f}% of all)"
    cats = [str(c["category"]) for c in (profile.get("top_categories") or [])[:3] if c.get("category")]
    items = [str(i.get("title") or i.get("item_id")) for i in (profile.get("top_items") or [])[:2]]
    focus = ", ".join(cats) if cats else "; ".join(items)
    sentences = [f"{who}{', mostly around ' + focus if focus else ''}."]
    contrasts = [f"{statistic(name).what} x{lift:.1f}"
                 for name, lift in lifts_ranked(profile)[:3] if abs(math.log(lift)) >= math.log(1.2)]
    if contrasts:
        sentences.append("Against all users: " + ", ".join(contrasts) + ".")
    terms = [str(t.get("term")) for t in (profile.get("terms") or [])[:4] if t.get("term")]
    if terms:
        sentences.append("Distinctive words: " + ", ".join(terms) + ".")
    return " ".join(sentences)


def name_profiles(profiles: list[dict]) -> list[dict]:
    """Profiles with `rule_name`, and `name` and `description` from the rules, `described_by` 'rules'."""
    out = []
    for profile in profiles:
        name = rule_name(profile)
        out.append({**profile, "rule_name": name, "name": name, "description": rule_description(profile),
                    "described_by": RULES})
    return out


def with_description(profile: dict[str, Any], name: str, description: str, source: str) -> dict[str, Any]:
    """A profile whose `name` and `description` come from `source` (a model); the rule name stays."""
    return {**profile, "name": name, "description": description, "described_by": source}
