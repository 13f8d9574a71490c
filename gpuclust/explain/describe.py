"""Cluster names and descriptions in words, written by a local language model (BERTopic's
representation model, for user segments).

For each cluster a prompt is built from what the run already knows (size, top categories and items,
c-TF-IDF terms, behaviour lifts against the population, and a few exemplar users' recent items, labelled
"user 1", "user 2"..., or by their pseudonym where ids are pseudonymised: never a raw id). All clusters
go to the generator in one batch; its answer is parsed into a name (at most 6 words) and a description
(2-3 sentences). An answer that does not parse keeps the rule-based name and description
(`explain.naming`), and the record says which clusters fell back and why.

`Describer` does that one job with any generator: `explain.language_model.LocalLM` (a Hugging Face
causal or seq2seq model, offline), or anything with its `generate(prompts) -> Generation`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from gpuclust.errors import UsageError
from gpuclust.explain.behaviour_words import statistic
from gpuclust.explain.naming import NAME_WORDS, lifts_ranked, with_description
from gpuclust.privacy import PSEUDONYM_HEX

MAX_SENTENCES = 3
# What can be said of a pseudonym (PSEUDONYM_HEX hex digits): an answer that echoes one has it taken out.
_PSEUDONYM = re.compile(rf"\b[0-9a-f]{{{PSEUDONYM_HEX}}}\b")
_NAME = re.compile(r"^\s*\**\s*name\s*\**\s*[:\-]\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_DESCRIPTION = re.compile(r"^\s*\**\s*description\s*\**\s*[:\-]\s*(.+)", re.IGNORECASE | re.MULTILINE | re.DOTALL)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
INSTRUCTION = ("You name customer segments for a marketing team. From the facts below, give the segment a short "
               "name (at most 6 words) and a description of 2 or 3 sentences saying who these customers are and "
               "how to reach them.")
ANSWER_START = "Name:"
# The form, shown by an example from another trade: placeholders ("<at most 6 words>") are what small models
# copy, and an answer that copies the example, or echoes the prompt's own words, is refused.
EXAMPLE_NAME = "Weekend garden hobbyists"
EXAMPLE_DESCRIPTION = "They buy seeds and tools in spring, mostly on Saturdays."
ANSWER_FORM = ("Answer with two lines and nothing else, as in this example for a garden shop's segment:\n"
               f"Name: {EXAMPLE_NAME}\nDescription: {EXAMPLE_DESCRIPTION} "
               "Seasonal bundles and weekend reminders reach them.")
# Words of the prompt, not of an answer: a name or description holding one (or the example's) is the prompt
# echoed.
_ECHOES = re.compile("|".join([r"[<>{}]", "segment facts", r"sentences?\s*\d", r"\buser \d+:", "at most 6 words",
                               re.escape(EXAMPLE_NAME), re.escape(EXAMPLE_DESCRIPTION[:24])]), re.IGNORECASE)


@dataclass
class Generation:
    """What a generator returns: one text per prompt, and what it cost."""

    texts: list[str]
    new_tokens: int = 0
    seconds: float = 0.0
    timed_out: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # model, device, dtype, ...


class Generator(Protocol):
    name: str

    def generate(self, prompts: list[str]) -> Generation: ...


History = tuple[str, list[str]]  # (how the user is shown: "user 1" or a pseudonym, their recent items)


def prompt_for(profile: dict, histories: list[History] | None = None, n: int = 5) -> str:
    """The facts about one cluster, as a prompt (no raw user id: histories come labelled)."""
    lines = [INSTRUCTION, "", "Segment facts:"]
    size, share = profile.get("size"), profile.get("share")
    if isinstance(size, int):
        lines.append(f"- size: {size:,} users" + (f" ({100 * share:.1f}% of all users)"
                                                   if isinstance(share, int | float) else ""))
    cats = profile.get("top_categories") or []
    if cats:
        lines.append("- top categories: " + "; ".join(
            f"{c.get('category')} ({_pct(c.get('share'))} of their activity, x{_num(c.get('lift'))} the average)"
            for c in cats[:n]))
    items = profile.get("top_items") or []
    if items:
        lines.append("- top items: " + "; ".join(
            f"{i.get('title') or i.get('item_id')} (x{_num(i.get('lift'))} the average)" for i in items[:n]))
    terms = [str(t.get("term")) for t in profile.get("terms") or [] if t.get("term")]
    if terms:
        lines.append("- distinctive words: " + ", ".join(terms[:8]))
    lifts = lifts_ranked(profile)[:n]
    if lifts:
        lines.append("- behaviour against all users: " + ", ".join(
            f"{statistic(name).what} x{lift:.2f}" for name, lift in lifts))
    if histories:
        lines.append("- recent items of users typical of the segment:")
        lines += [f"  - {label}: {', '.join(seen)}" for label, seen in histories if seen]
    lines += ["", ANSWER_FORM]
    return "\n".join(lines)


def parse_answer(text: str, pseudonyms: bool = True) -> tuple[str, str] | None:
    """(name, description) from a generator's answer, or None when it holds no usable pair.

    The name is cut to NAME_WORDS words and stripped of quotes and trailing punctuation; the description
    to MAX_SENTENCES sentences. Without the 'Name:'/'Description:' form, the first line is the name and
    the rest the description. Placeholders, the example's words or the prompt's (`_ECHOES`) make an
    answer unusable: a small model that copies its prompt has not described anything."""
    if pseudonyms:
        text = _PSEUDONYM.sub("a user", text)
    name_match, desc_match = _NAME.search(text), _DESCRIPTION.search(text)
    if name_match and desc_match:
        name, description = name_match[1], desc_match[1]
    else:
        lines = [line for line in text.strip().splitlines() if line.strip()]
        if len(lines) < 2:
            return None
        name, description = lines[0], " ".join(lines[1:])
    name = " ".join(re.sub(r"[\"'*#`]", " ", name).split()[:NAME_WORDS]).strip(" .,:;-")
    description = " ".join(_cut_before_label(description).split())
    sentences = [s for s in _SENTENCE_END.split(description) if s]
    description = " ".join(sentences[:MAX_SENTENCES])
    if not _words(name) or len(_words(description)) < 4 or _ECHOES.search(name) or _ECHOES.search(description):
        return None
    return name, description


class Describer:
    """Names and describes every cluster with a generator, in one batch; falls back to the rules.

    `describe(profiles, histories)` returns the profiles with `name`, `description` and `described_by`
    (the model's name, or 'rules' where its answer was unusable), and a record for the manifest."""

    def __init__(self, generator: Generator, examples: int = 5) -> None:
        self.generator = generator
        self.examples = examples

    def describe(self, profiles: list[dict], histories: dict[int, list[History]] | None = None
                 ) -> tuple[list[dict], dict[str, Any]]:
        if not hasattr(self.generator, "generate"):
            raise UsageError(f"a describer's generator needs generate(prompts); got {type(self.generator).__name__}")
        histories = histories or {}
        wanted = [p for p in profiles if not p.get("suppressed") and not p.get("noise")]
        prompts = [prompt_for(p, histories.get(int(p["cluster"])), self.examples) for p in wanted]
        started = time.perf_counter()
        result = self.generator.generate(prompts) if prompts else Generation([])
        if len(result.texts) != len(prompts):
            raise UsageError(f"the generator {self.generator.name} answered {len(result.texts)} of "
                             f"{len(prompts)} prompts")
        seconds = result.seconds or time.perf_counter() - started
        answers = {int(p["cluster"]): parse_answer(t) for p, t in zip(wanted, result.texts, strict=True)}
        source = str(self.generator.name)
        out, fallback = [], []
        for profile in profiles:
            c = int(profile["cluster"])
            answer = answers.get(c)
            if answer is None:
                if c in answers:
                    fallback.append(c)
                out.append(profile)
            else:
                out.append(with_description(profile, *answer, source))
        record = {
            "model": source, **result.info,
            "clusters": len(prompts), "described": len(prompts) - len(fallback),
            "fallback": {"clusters": fallback, "why": "the answer held no usable name and description (a description "
                                                      "of at least 4 words, neither echoing the prompt): the rule-based "
                                                      "ones stand"} if fallback else None,
            "skipped": sorted(int(p["cluster"]) for p in profiles if p.get("suppressed") or p.get("noise")),
            "timed_out": bool(result.timed_out), "seconds": round(seconds, 4), "new_tokens": int(result.new_tokens),
            "tokens_per_second": round(result.new_tokens / seconds, 2) if seconds > 0 else None,
        }
        return out, record


def _cut_before_label(text: str) -> str:
    """The description up to the next 'Name:' line (a model that goes on to a second segment)."""
    match = _NAME.search(text)
    return text[:match.start()] if match else text


def _words(text: str) -> list[str]:
    return [w for w in text.split() if any(ch.isalpha() for ch in w)]


def _pct(value: Any) -> str:
    return f"{100 * value:.0f}%" if isinstance(value, int | float) else "?"


def _num(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "?"
