"""The report's business sections: clusters at a glance, each cluster, a comparison of two, anomalies.

Every behaviour figure is shown with what it measures and its unit, beside the whole population's
figure ("spend per user: 412.30 (all users: 104.10), x3.95"). A cluster whose figures privacy withheld
keeps its row, marked withheld, and nothing about it is shown; nor are anomalous users in it.
"""

from __future__ import annotations

import math
from typing import Any

from gpuclust.explain.behaviour_words import statistic
from gpuclust.explain.naming import lifts_ranked
from gpuclust.privacy import small_clusters
from gpuclust.report.fmt import MISSING, amount, count, direction, e, fmt, lift, log_lift, num, pct
from gpuclust.report.tables import Cell, Column, data_table, text

MAX_LIST = 8
WITHHELD = "withheld"


def title(c: dict) -> str:
    """What a cluster is called: its name where one was given (issue 20's names), else its label."""
    return str(c.get("name") or c.get("label") or "")


def described(c: dict) -> str:
    """A cluster's name and description in words, and who wrote them (the rules or a language model)."""
    if not c.get("description"):
        return ""
    by = c.get("described_by")
    source = "" if not by else f" <span class='muted'>({'rule-based' if by == 'rules' else 'by ' + e(by)})</span>"
    return (f"<p class='description'><b>{e(c.get('name') or '')}</b>{source}<br>{e(c['description'])}</p>")


def standout_chips(c: dict, population: dict, n: int) -> str:
    """The behaviour figures furthest from the population, each with its unit and the population's."""
    means = c.get("behaviour_mean") or {}
    out = []
    for name, value in lifts_ranked(c)[:n]:
        arrow = direction(value)
        out.append(f"<span class='chip'>{e(statistic(name).what)} <b class='{arrow}'>{lift(value)}</b> "
                   f"<span class='muted'>{e(amount(name, means.get(name)))} vs "
                   f"{e(amount(name, population.get(name)))}</span></span>")
    return "".join(out)


def _what(c: dict) -> str:
    if c.get("top_categories"):
        return ", ".join(str(x.get("category")) for x in c["top_categories"][:3])
    return "; ".join(str(x.get("title") or x.get("item_id")) for x in (c.get("top_items") or [])[:2])


def overview(clusters: list[dict], population: dict, withheld_users: int = 0) -> str:
    """One row per cluster: who (users), what they are worth (value), what they buy, how they behave.
    `withheld_users`: how many users the withheld clusters hold together (their rows show no size), said
    in a note and counted in the total, which would otherwise miss them."""
    if not clusters:
        return ""
    with_value = any("value_share" in c for c in clusters)
    spend = statistic("monetary").what
    columns = [Column("cluster", True), Column("name"), Column("users", True), Column("user share", True)]
    if with_value:
        columns += [Column("value share", True), Column(f"{spend}", True), Column("value lift", True)]
    columns += [Column("led by"), Column("top categories" if any(c.get("top_categories") for c in clusters)
                                         else "top items"), Column("stands out by")]
    rows = []
    for c in clusters:
        cid = c.get("cluster")
        withheld = bool(c.get("suppressed"))
        name = WITHHELD if withheld else ("noise" if c.get("noise") else title(c))
        row = [Cell(f"<a href='#cluster-{e(cid)}'>{e(cid)}</a>", cid), text(name),
               Cell(e(count(c.get("size"))), c.get("size")), Cell(e(pct(c.get("share"))), c.get("share"))]
        if with_value:
            mean = (c.get("behaviour_mean") or {}).get("monetary")
            value_lift = (c.get("behaviour_lift") or {}).get("monetary")
            row += [Cell(e(pct(c.get("value_share"))), c.get("value_share")),
                    Cell(e(amount("monetary", mean)), mean), Cell(e(lift(value_lift)), value_lift)]
        row += [text(c.get("label_driver") or ""), text(_what(c) or MISSING),
                Cell(standout_chips(c, population, 2), " ".join(k for k, _ in lifts_ranked(c)[:2]))]
        rows.append(row)
    note = ""
    withheld = small_clusters(clusters)
    if withheld:
        note = (f"<p class='note'>{e(count(withheld_users))} users are in clusters whose figures are withheld "
                f"({e(', '.join(map(str, sorted(withheld))))}: too few users each); their rows are blank"
                + ("; the total value counts them" if with_value else "") + ".</p>")
    if with_value:
        users = sum(num(c.get("size")) for c in clusters if c.get("size")) + withheld_users
        total = num(population.get("monetary")) * users
        note += (f"<p class='muted'>Value share: the cluster's part of all users' summed event value "
                 f"(revenue, where events are purchases); total {e(fmt(total))}. {e(spend.capitalize())} is the "
                 f"cluster's mean; value lift compares it with all users' mean "
                 f"({e(amount('monetary', population.get('monetary')))}).</p>") if math.isfinite(total) else ""
    return "<h2 id='glance'>Clusters at a glance</h2>" + note + data_table("clusters", columns, rows)


def behaviour_table(c: dict, population: dict) -> str:
    """Each statistic with its meaning and unit: the cluster's mean, all users' mean, and the ratio."""
    means = c.get("behaviour_mean") or {}
    rows = []
    for name, value in lifts_ranked(c):
        words = statistic(name)
        arrow = direction(value)
        strong = " class='strong'" if log_lift(value) >= math.log(2) else ""
        rows.append(f"<tr{strong}><td>{e(words.what)} <span class='muted'>({e(name)})</span></td>"
                    f"<td class='num'>{e(amount(name, means.get(name)))}</td>"
                    f"<td class='num muted'>{e(amount(name, population.get(name)))}</td>"
                    f"<td class='num'><b class='{arrow}'>{lift(value)}</b></td></tr>")
    if not rows:
        return ""
    return ("<table class='fig'><tr><th>behaviour (mean per user of the cluster)</th><th class='num'>this cluster"
            "</th><th class='num'>all users</th><th class='num'>ratio</th></tr>" + "".join(rows) + "</table>")


def _items_table(items: list[dict]) -> str:
    rows = []
    for item in items[:MAX_LIST]:
        name = item.get("title") or item.get("item_id")
        extra = f" <span class='muted'>({e(item.get('category'))})</span>" if item.get("category") else ""
        rows.append(f"<tr><td>{e(name)}{extra}</td><td class='muted'>{e(item.get('item_id'))}</td>"
                    f"<td class='num'>{e(pct(item.get('share')))}</td><td class='num'>{e(lift(item.get('lift')))}"
                    "</td></tr>")
    return ("<table class='fig'><tr><th>item</th><th>id</th><th class='num'>share of the cluster's events</th>"
            "<th class='num'>lift over all users</th></tr>" + "".join(rows) + "</table>")


def _pairs(value: Any, key: str) -> list[tuple[str, Any]]:
    """[{'term': t, 'score': s}] or [[t, s]] -> [(t, s)]."""
    out = []
    for entry in value or []:
        if isinstance(entry, dict) and key in entry:
            out.append((str(entry[key]), entry.get("score")))
        elif isinstance(entry, list | tuple) and entry:
            out.append((str(entry[0]), entry[1] if len(entry) > 1 else None))
        elif isinstance(entry, str):
            out.append((entry, None))
    return out[:MAX_LIST]


def cluster_cards(clusters: list[dict], population: dict) -> str:
    if not clusters:
        return ""
    cards = ["<h2 id='clusters'>Each cluster</h2>"]
    for c in clusters:
        cid = c.get("cluster")
        # The heading holds the rule-based name (the label where a profile has none); the card leads with
        # the name and description in words (a language model's with --describe) and who wrote them.
        name = "noise (no cluster)" if c.get("noise") else str(c.get("rule_name") or title(c))
        head = f"Cluster {e(cid)}" + (f" — <span class='name'>{e(name)}</span>" if name else "")
        description = described(c) if not c.get("suppressed") else ""
        if c.get("suppressed"):
            cards.append(f"<div class='card' id='cluster-{e(cid)}'><h3>{head}</h3><p class='muted'>Figures "
                         f"withheld: {e(c['suppressed'])}.</p></div>")
            continue
        who = f"{count(c.get('size'))} users ({pct(c.get('share'))} of all)"
        if "value_share" in c:
            who += f" · {pct(c.get('value_share'))} of all value"
        rows = [f"<tr><th>who</th><td>{e(who)}</td></tr>"]
        if c.get("label"):
            driver = {"behaviour": " <span class='muted'>(led by behaviour: it sets the cluster apart more than "
                                   "its items do)</span>",
                      "items": " <span class='muted'>(from the words of its items)</span>"}.get(
                c.get("label_driver"), "")
            rows.append(f"<tr><th>label</th><td>{e(c['label'])}{driver}</td></tr>")
        table = behaviour_table(c, population)
        if table:
            rows.append(f"<tr><th>behaviour</th><td>{table}</td></tr>")
        if c.get("top_categories"):
            chips = "".join(f"<span class='chip'>{e(x.get('category'))} · {pct(x.get('share'))}"
                            f" · {lift(x.get('lift'))}</span>" for x in c["top_categories"][:MAX_LIST])
            rows.append(f"<tr><th>top categories</th><td>{chips}</td></tr>")
        if c.get("top_items"):
            rows.append(f"<tr><th>top items</th><td>{_items_table(c['top_items'])}</td></tr>")
        for key, field, label in (("term", "terms", "distinctive words"),
                                  ("category", "ctfidf_categories", "distinctive categories")):
            pairs = _pairs(c.get(field), key)
            if pairs:
                rows.append(f"<tr><th>{label}</th><td>" + "".join(
                    f"<span class='chip'>{e(t)} <span class='muted'>{e(fmt(s))}</span></span>" for t, s in pairs)
                    + "</td></tr>")
        exemplars = c.get("exemplars")
        if isinstance(exemplars, list) and exemplars:
            rows.append("<tr><th>users nearest the centre</th><td>"
                        + ", ".join(e(u) for u in exemplars[:MAX_LIST * 2]) + "</td></tr>")
        cards.append(f"<div class='card' id='cluster-{e(cid)}'><h3>{head}</h3>{description}"
                     f"<table class='kv'>{''.join(rows)}</table></div>")
    return "\n".join(cards)


def comparison(clusters: list[dict], population: dict) -> str:
    """Every figure for all users and every cluster in one table; two pickers show two clusters beside
    all users (scripts off: every column shows). The CSV holds them all."""
    shown = [c for c in clusters if not c.get("suppressed") and not c.get("noise")]
    if len(shown) < 2:
        return ""
    stats = list(dict.fromkeys(k for c in shown for k in (c.get("behaviour_mean") or {})))
    columns = [Column("figure"), Column("all users", True, "all")]
    columns += [Column(f"{c['cluster']}: {title(c)}", True, str(c["cluster"])) for c in shown]
    n_users = sum(num(c.get("size")) for c in clusters if c.get("size"))

    def row(name: str, whole: Cell, per: list[Cell]) -> list[Cell]:
        return [text(name), whole, *per]

    rows = [row("users", Cell(e(count(n_users)), n_users),
                [Cell(e(count(c.get("size"))), c.get("size")) for c in shown]),
            row("user share", Cell("100%", 1.0), [Cell(e(pct(c.get("share"))), c.get("share")) for c in shown])]
    if any("value_share" in c for c in shown):
        rows.append(row("value share", Cell("100%", 1.0),
                        [Cell(e(pct(c.get("value_share"))), c.get("value_share")) for c in shown]))
    for name in stats:
        words = statistic(name)
        per = []
        for c in shown:
            mean = (c.get("behaviour_mean") or {}).get(name)
            ratio = (c.get("behaviour_lift") or {}).get(name)
            per.append(Cell(f"{e(amount(name, mean))} <span class='muted'>{lift(ratio)}</span>", mean))
        rows.append(row(words.what, Cell(e(amount(name, population.get(name))), population.get(name)), per))
    rows.append(row("top items", text(""), [text("; ".join(str(i.get("title") or i.get("item_id"))
                                                           for i in (c.get("top_items") or [])[:3])) for c in shown]))
    options = "".join(f"<option value='{e(c['cluster'])}'>{e(c['cluster'])}: {e(title(c))}</option>" for c in shown)
    pickers = " ".join(
        f"<label>{side} <select class='compare' id='compare-{side.lower()}'>"
        + options.replace(f"value='{e(shown[i]['cluster'])}'", f"value='{e(shown[i]['cluster'])}' selected", 1)
        + "</select></label>" for i, side in enumerate(("A", "B")))
    table = data_table("compare-table", columns, rows, "compare.csv")
    return ("<h2 id='compare'>Compare two clusters</h2><p class='muted'>Pick two clusters: their figures show beside "
            "all users', each behaviour figure with its ratio to all users. The CSV holds every cluster.</p>"
            f"<div class='tools'>{pickers}</div>{table}")


def anomalies(rows: list[dict], clusters: list[dict], scores: Any, threshold: float, pseudonymised: bool) -> str:
    """The users furthest from their own cluster's centre, with why; none of a withheld cluster."""
    if not rows and scores is None:
        return ""
    withheld = small_clusters(clusters)
    names = {int(c["cluster"]): title(c) for c in clusters if "cluster" in c}
    parts = ["<h2 id='anomalies'>Anomalies</h2>",
             "<p class='muted'>A user's anomaly score is the robust z-score of its distance to its own cluster's centre "
             f"(within that cluster); above {fmt(threshold)} is unusually far. Density noise always scores high.</p>"]
    if scores is not None and len(scores):
        import numpy as np

        values, labels = scores
        over = values > threshold
        per = {int(k): int(v) for k, v in zip(*np.unique(labels[over], return_counts=True), strict=True)
               if int(k) not in withheld}
        busiest = sorted(per.items(), key=lambda kv: -kv[1])[:3]
        parts.append(f"<p><b>{int(over.sum()):,}</b> of {len(values):,} users ({over.mean():.1%}) score above "
                     f"{e(fmt(threshold))}" + (" — most in cluster " + ", ".join(
                         f"{k} ({v:,})" for k, v in busiest) if busiest else "") + ".</p>")
    kept = [r for r in rows if isinstance(r, dict) and int(r.get("cluster", -1)) not in withheld]
    if len(kept) < len(rows):
        parts.append(f"<p class='note'>{len(rows) - len(kept)} anomalous user(s) in clusters whose figures are "
                     "withheld (too few users) are left out.</p>")
    if kept:
        columns = [Column("user" + (" (pseudonymised)" if pseudonymised else "")), Column("cluster", True),
                   Column("cluster name"), Column("score", True), Column("why")]
        table_rows = [[text(r.get("user_id")), Cell(e(r.get("cluster")), r.get("cluster")),
                       text("noise" if r.get("noise") else names.get(int(r.get("cluster", -1)), "")),
                       Cell(e(fmt(num(r.get("score")))), r.get("score")), text(r.get("why"))] for r in kept]
        parts.append(data_table("anomalies-table", columns, table_rows, "anomalies.csv"))
    return "".join(parts)
