"""Synthetic user-behaviour logs with planted user groups (known truth).

The demo and the tests need data whose right answer is known: K personas, each with favourite
categories, a price taste, an activity level and a funnel depth, plus noise users who follow no
persona. Everything is vectorised NumPy over blocks of users, so a million users stream to Parquet
in bounded memory.

With `sequential=True`, personas also have an order: they come in pairs that share everything a bag
of items can see (favourite categories, equally weighted, price taste, funnel, activity, hours) and
differ only in the route they take through their favourite categories within a session (one pair
member walks the route forwards, the other backwards; each next look follows the route with
probability SEQUENTIAL_FOLLOW). Bag-of-items features cannot tell a pair apart; a sequence model can.
The default (sequential=False) data are unchanged, byte for byte.

Determinism: the catalogue and personas come from ``SeedSequence(seed, spawn_key=(0,))`` and users
``[b * BLOCK_USERS, (b + 1) * BLOCK_USERS)`` from ``SeedSequence(seed, spawn_key=(1, b))``. The rows
therefore depend only on the spec, never on ``chunk_users`` (which only sets the Parquet row-group
size, rounded up to whole blocks); the same spec and ``chunk_users`` give byte-identical files.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from gpuclust.errors import UsageError
from gpuclust.io.outputs import OutputDir

EVENT_TYPES = ("view", "click", "cart", "purchase")
BLOCK_USERS = 4096  # users per seeding block; fixed so output does not depend on chunk size
MAX_NEW_USERS = 1_000_000  # new_events.parquet is built in memory
USER_ID_BASE = 10_000_000  # ids are base + 16 * index + jitter: distinct, sorted, never 0..n-1
ITEM_ID_BASE = 500_000
PRICE_BETAS = np.array([-1.6, -0.8, 0.0, 0.8, 1.6])  # cheap .. premium taste (tilt on log-price z)
PRICE_WORDS = ("bargain", "thrifty", "mid-range", "quality", "premium")
MAX_DAYS = 36_500
# A seeding block holds BLOCK_USERS users' events in memory, and the catalogue is built whole: 10,000 events
# a user is 41M events a block (about 2 GiB), 10M items about 1 GiB. Beyond them NumPy ran out of memory.
MAX_EVENTS_PER_USER = 10_000
MAX_ITEMS = 10_000_000

# Category vocabulary: name, adjectives, "noun:typical price". Materials and colours recur across
# categories (cotton, linen, leather, stainless steel, organic, wireless...) so title embeddings
# put similar items from different categories near each other.
_CATALOGUE = (
    ("t-shirts & tops", "cotton,crew neck,v-neck,slim fit,oversized,linen,striped,organic cotton",
     "t-shirt:18,tank top:14,polo shirt:28,blouse:32,long-sleeve top:24"),
    ("jeans & trousers", "denim,slim fit,relaxed,stretch,cotton,cargo,linen",
     "jeans:55,chinos:40,trousers:45,joggers:30,shorts:25"),
    ("dresses & skirts", "floral,linen,wrap,summer,silk,pleated,cotton",
     "dress:55,maxi dress:70,skirt:35,sundress:40"),
    ("running shoes", "cushioned,lightweight,breathable,mesh,waterproof,running",
     "running shoes:95,trail shoes:110,racing flats:140,trainers:70"),
    ("sportswear", "running,breathable,moisture-wicking,stretch,mesh,lightweight",
     "leggings:40,running shorts:28,sports bra:30,training top:32,track jacket:60"),
    ("outdoor & camping", "waterproof,lightweight,insulated,hiking,2-person,compact",
     "tent:160,sleeping bag:80,backpack:70,camping stove:45,headlamp:25"),
    ("kitchen", "stainless steel,non-stick,cast iron,bamboo,ceramic,glass",
     "frying pan:35,saucepan:40,chef knife:55,cutting board:20,mixing bowl:18"),
    ("coffee & tea", "arabica,ground,electric,glass,loose-leaf,organic,ceramic",
     "coffee beans:14,espresso machine:220,french press:30,tea set:40,kettle:45"),
    ("bedding", "soft cotton,linen,memory foam,king size,organic cotton,wool",
     "duvet cover:50,pillow:25,bed sheet set:45,blanket:40,mattress topper:90"),
    ("home decor", "ceramic,scented,glass,velvet,rustic,wool,linen",
     "candle:15,vase:30,picture frame:18,throw cushion:25,wall mirror:70"),
    ("furniture", "oak,velvet,leather,walnut,modular,bamboo",
     "sofa:650,armchair:280,coffee table:180,bookshelf:150,desk:220"),
    ("tools & diy", "cordless,stainless steel,18v,magnetic,heavy-duty,compact",
     "drill:90,screwdriver set:25,hammer:18,tape measure:12,tool box:40"),
    ("garden", "ceramic,cordless,organic,stainless steel,expandable,solar",
     "garden hose:30,plant pot:15,pruning shears:22,lawn mower:250,seed kit:12"),
    ("smartphones", "128gb,5g,wireless,silicone,fast-charging,dual-sim",
     "smartphone:450,phone case:15,screen protector:10,wireless charger:30"),
    ("laptops & computers", "15-inch,wireless,gaming,mechanical,ultra-thin,usb-c",
     "laptop:900,monitor:220,keyboard:60,mouse:30,webcam:50"),
    ("audio", "wireless,noise-cancelling,waterproof,over-ear,hi-fi,bluetooth",
     "headphones:150,earbuds:90,bluetooth speaker:70,soundbar:200,turntable:180"),
    ("video games", "wireless,gaming,rgb,multiplayer,retro,collector's",
     "game controller:55,gaming headset:70,console:400,racing game:50,puzzle game:30"),
    ("books", "hardcover,paperback,illustrated,bestselling,classic,signed",
     "novel:14,cookbook:25,biography:20,travel guide:18,children's book:10"),
    ("toys", "wooden,educational,soft,remote-control,1000-piece,plush",
     "building blocks:35,jigsaw puzzle:18,teddy bear:20,board game:30,toy car:15"),
    ("baby", "organic cotton,soft,bpa-free,newborn,foldable,wooden",
     "baby bottle:12,nappies:20,baby monitor:90,pram:350,romper:18"),
    ("beauty", "hydrating,organic,vitamin c,matte,fragrance-free,vegan",
     "face cream:25,lipstick:18,serum:35,shampoo:10,perfume:70"),
    ("grocery", "organic,extra virgin,gluten-free,whole grain,fair-trade,loose-leaf",
     "olive oil:9,pasta:3,granola:5,dark chocolate:4,green tea:6"),
    ("pet supplies", "grain-free,soft,organic,durable,reflective,waterproof",
     "dog food:30,cat litter:12,pet bed:40,chew toy:10,leash:18"),
    ("fitness equipment", "non-slip,adjustable,cast iron,foldable,cushioned,rubber",
     "yoga mat:30,dumbbells:60,resistance bands:20,exercise bike:400,kettlebell:45"),
    ("jewellery & watches", "silver,gold-plated,leather,stainless steel,minimalist,vintage",
     "necklace:60,ring:80,watch:180,bracelet:45,earrings:40"),
    ("bags & accessories", "leather,canvas,waterproof,polarised,minimalist,vintage",
     "backpack:60,wallet:35,handbag:90,sunglasses:50,belt:30"),
    ("cycling", "lightweight,breathable,rechargeable,carbon,reflective,waterproof",
     "bike helmet:60,bike light:25,cycling jersey:55,bike lock:35,saddle:45"),
    ("stationery", "dotted,leather,recycled,a5,refillable,hardcover",
     "notebook:10,fountain pen:45,planner:18,sketchbook:12,pencil set:8"),
    ("cleaning", "cordless,eco,concentrated,fragrance-free,microfiber,refillable",
     "vacuum cleaner:180,mop:25,dish soap:4,laundry detergent:12,cleaning cloths:8"),
    ("camera & photo", "mirrorless,50mm,compact,waterproof,64gb,vintage",
     "camera:650,lens:400,tripod:60,memory card:20,camera bag:50"),
)
_SHARED_WORDS = ("black", "white", "navy", "grey", "red", "green", "beige", "classic", "compact", "everyday",
                 "modern", "eco")
_CHEAP_WORDS = ("basic", "value", "budget", "essentials")
_PREMIUM_WORDS = ("premium", "deluxe", "luxury", "pro", "signature")

# Behaviour constants (seconds, rates) that make the log look like a shop's.
_CHAIN_GAP_S = 75.0  # mean gap between item interactions within a session
_STAGE_DELAY_S = (0.0, 20.0, 90.0, 150.0)  # mean delay before click, cart, purchase (after 1 s)
_CHAINS_PER_SESSION = 6.0
_ACTIVITY_SIGMA = 0.9  # lognormal spread of per-user activity: heavy-tailed
_PREF_CONCENTRATION = 40.0  # how closely a user follows its persona's category mix
SEQUENTIAL_FOLLOW = 0.85  # sequential personas: chance that the next look in a session follows the route


@dataclass
class SynthSpec:
    """What to generate; ``validate`` rejects impossible combinations with a UsageError."""

    n_users: int = 5000
    n_items: int = 2000
    n_groups: int = 8
    seed: int = 0
    events_per_user: float = 40.0  # mean; heavy-tailed per user
    noise_share: float = 0.05  # users with no persona, truth group -1
    n_categories: int = 24
    days: int = 90
    start: str = "2026-01-01"
    sequential: bool = False  # personas in pairs that differ only in the order of their categories

    def validate(self) -> SynthSpec:
        _check_int("n_users", self.n_users, 1)
        _check_int("n_categories", self.n_categories, 1)
        _check_int("n_items", self.n_items, 1, MAX_ITEMS)
        _check_int("n_groups", self.n_groups, 1)
        _check_int("seed", self.seed, 0)
        _check_int("days", self.days, 1, MAX_DAYS)
        if self.n_items < self.n_categories:
            raise UsageError(f"{_set('n_items', self.n_items)} is below n_categories={self.n_categories}; "
                             f"give at least one item per category, e.g. --items {self.n_categories}")
        if self.n_groups > self.n_users:
            raise UsageError(f"{_set('n_groups', self.n_groups)} exceeds {_set('n_users', self.n_users)}; "
                             f"give at most one group per user, e.g. --groups {self.n_users}")
        if not isinstance(self.sequential, bool):
            raise UsageError(f"sequential={self.sequential!r} must be true or false")
        if self.sequential:
            bases = -(-self.n_groups // 2)
            sets = sum(math.comb(self.n_categories, m) for m in _SEQUENTIAL_SIZES if m <= self.n_categories)
            if self.n_categories < 3 or bases > sets:
                raise UsageError(f"sequential personas need routes of 3-4 categories: n_groups={self.n_groups} needs "
                                 f"{bases} distinct sets but n_categories={self.n_categories} allows {sets}")
        combos = _n_favourite_sets(self.n_categories)
        if self.n_groups > combos:
            raise UsageError(f"n_groups={self.n_groups} needs distinct favourite-category sets but "
                             f"n_categories={self.n_categories} allows only {combos}; add categories")
        check_events_per_user(self.events_per_user)
        ns = self.noise_share
        if isinstance(ns, bool) or not isinstance(ns, int | float) or not 0 <= ns < 1:
            raise UsageError(f"{_set('noise_share', ns)} must be in [0, 1), e.g. 0.05")
        try:
            pd.Timestamp(self.start)
        except (ValueError, TypeError):
            raise UsageError(f"start={self.start!r} is not a date; give ISO-8601 like 2026-01-01") from None
        return self


@dataclass
class SynthData:
    """Events, item catalogue and truth as pandas frames (dtypes as read back from Parquet)."""

    events: pd.DataFrame
    items: pd.DataFrame
    truth: pd.DataFrame
    personas: list[dict[str, Any]] = field(default_factory=list)


# The `gpuclust synth` flag of each SynthSpec field, named beside it in messages.
FLAGS = {"n_users": "--users", "n_items": "--items", "n_groups": "--groups", "events_per_user": "--events-per-user",
         "noise_share": "--noise-share", "seed": "--seed", "files": "--files",
         "new_users": "--new-users"}


def _set(name: str, value: Any) -> str:
    """`n_groups=0 (--groups)`: the field as the library names it, and the flag as the CLI does."""
    return f"{name}={value!r}" + (f" ({FLAGS[name]})" if name in FLAGS else "")


def check_events_per_user(epu: Any) -> None:
    """A mean events per user the generator can hold: above 0, at most MAX_EVENTS_PER_USER (bench takes
    the same number, and checks it here before its suites start)."""
    if isinstance(epu, bool) or not isinstance(epu, int | float) or not math.isfinite(epu) or \
            not 0 < epu <= MAX_EVENTS_PER_USER:
        raise UsageError(f"{_set('events_per_user', epu)} must be a number above 0 and at most "
                         f"{MAX_EVENTS_PER_USER:,}, e.g. 40")


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise UsageError(f"{_set(name, value)} must be an integer")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise UsageError(f"{_set(name, value)} is out of range; it must be {bound}")


def _fav_sizes(n_categories: int) -> range:
    return range(min(2, n_categories), min(4, n_categories) + 1)


_SEQUENTIAL_SIZES = (3, 4)  # a route needs 3+ categories: forwards and backwards differ only then


def _n_favourite_sets(n_categories: int) -> int:
    return sum(math.comb(n_categories, m) for m in _fav_sizes(n_categories))


# --- the world: catalogue and personas, shared by every block ------------------------------


@dataclass
class _World:
    """Everything users draw from; built once per spec."""

    category_names: list[str]
    item_category: np.ndarray  # int, items sorted by category (internal order)
    item_ids: np.ndarray  # int64 public id per internal item
    price: np.ndarray  # float32
    titles: np.ndarray  # object
    item_keys: np.ndarray  # (levels, items) category + within-category CDF, for searchsorted
    favourites: list[tuple[int, ...]]
    cat_pref: np.ndarray  # (K, C) persona category mix
    persona_cum: np.ndarray  # (K,) cumulative persona sizes
    price_level: np.ndarray  # (K,) index into PRICE_BETAS
    activity: np.ndarray  # (K,) events multiplier, size-weighted mean 1
    funnel: np.ndarray  # (K, 3) P(click | view), P(cart | click), P(purchase | cart)
    peak_hour: np.ndarray  # (K,)
    next_category: np.ndarray | None = None  # (K, C) sequential personas: the route's next category, -1 off it


def _category_vocab(n_categories: int) -> list[tuple[str, list[str], list[str], np.ndarray]]:
    """(name, adjectives, nouns, noun prices) per category; beyond the list, names get a number."""
    out = []
    for c in range(n_categories):
        name, adjs, nouns = _CATALOGUE[c % len(_CATALOGUE)]
        if c >= len(_CATALOGUE):
            name = f"{name} {c // len(_CATALOGUE) + 1}"
        pairs = [n.rsplit(":", 1) for n in nouns.split(",")]
        out.append((name, adjs.split(","), [p[0] for p in pairs], np.array([float(p[1]) for p in pairs])))
    return out


def _pick(words: list[str] | tuple[str, ...], idx: np.ndarray) -> np.ndarray:
    return np.asarray(words, dtype=object)[idx]


def _build_catalogue(spec: SynthSpec, rng: np.random.Generator) -> dict[str, Any]:
    """Items sorted by category: price from noun and lognormal spread, title from vocabulary."""
    vocab = _category_vocab(spec.n_categories)
    C, n = spec.n_categories, spec.n_items
    share = rng.dirichlet(np.full(C, 6.0))
    counts = 1 + rng.multinomial(n - C, share)
    cat = np.repeat(np.arange(C), counts)
    titles = np.empty(n, dtype=object)
    price = np.empty(n)
    z = rng.standard_normal(n)
    lo = 0
    for c, (_, adjs, nouns, noun_price) in enumerate(vocab):  # loop over categories only
        sl = slice(lo, lo + counts[c])
        k = counts[c]
        noun = rng.integers(0, len(nouns), k)
        price[sl] = noun_price[noun] * np.exp(0.35 * z[sl])
        adj = _pick(adjs, rng.integers(0, len(adjs), k))
        shared = np.where(rng.random(k) < 0.5, _pick(_SHARED_WORDS, rng.integers(0, len(_SHARED_WORDS), k)), "")
        tier = np.where(z[sl] < -0.6, _pick(_CHEAP_WORDS, rng.integers(0, len(_CHEAP_WORDS), k)), "")
        tier = np.where(z[sl] > 0.6, _pick(_PREMIUM_WORDS, rng.integers(0, len(_PREMIUM_WORDS), k)), tier)
        adj = np.where(rng.random(k) < 0.85, adj, "")
        titles[sl] = tier + " " + shared + " " + adj + " " + _pick(nouns, noun)
        lo += k
    titles = pd.Series(titles).str.split().str.join(" ").to_numpy(dtype=object)
    price = np.maximum(np.round(price, 2), 0.5).astype(np.float32)
    ids = ITEM_ID_BASE + 8 * np.arange(n, dtype=np.int64) + rng.integers(0, 8, n)
    return {
        "category_names": [v[0] for v in vocab],
        "item_category": cat,
        "item_ids": ids[rng.permutation(n)],  # id order is not category order
        "price": price,
        "titles": titles,
        "item_keys": _item_keys(cat, counts, price, rng),
    }


def _item_keys(cat: np.ndarray, counts: np.ndarray, price: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per price taste, category index + within-category CDF over items (Zipf popularity x price tilt).

    ``searchsorted(keys[level], category + u)`` then draws an item of that category in O(log n).
    """
    starts = np.cumsum(counts) - counts
    rank = np.empty(len(cat))
    logp = np.log(price.astype(np.float64))
    z = np.empty(len(cat))
    for s, k in zip(starts, counts, strict=True):  # loop over categories only
        rank[s:s + k] = rng.permutation(k) + 1
        lp = logp[s:s + k]
        z[s:s + k] = (lp - lp.mean()) / (lp.std() + 1e-9) if k > 1 else 0.0
    popularity = rank ** -1.05
    keys = np.empty((len(PRICE_BETAS), len(cat)))
    for lvl, beta in enumerate(PRICE_BETAS):
        w = popularity * np.exp(beta * z)
        cs = np.cumsum(w)
        seg_before = np.repeat(cs[starts] - w[starts], counts)
        seg_total = np.repeat(np.add.reduceat(w, starts), counts)
        within = (cs - seg_before) / seg_total
        within[starts + counts - 1] = 1.0
        keys[lvl] = cat + within
    return keys


def _pick_favourites(rng: np.random.Generator, n_categories: int, k: int,
                     sizes: tuple[int, ...] | None = None) -> list[tuple[int, ...]]:
    """Distinct favourite sets of 2-4 categories; any two personas share at most one where possible."""
    sizes = np.array(list(_fav_sizes(n_categories)) if sizes is None else [m for m in sizes if m <= n_categories])
    for max_overlap in range(1, int(sizes.max()) + 1):
        chosen: list[frozenset[int]] = []
        for _ in range(k):
            for _try in range(300):
                m = int(rng.choice(sizes))
                combo = frozenset(rng.choice(n_categories, m, replace=False).tolist())
                if combo not in chosen and all(len(combo & c) <= max_overlap for c in chosen):
                    chosen.append(combo)
                    break
            else:
                break
        if len(chosen) == k:
            return [tuple(sorted(c)) for c in chosen]
    # Few categories: enumerate every set (validate() guaranteed there are at least k).
    every = [c for m in sizes for c in itertools.combinations(range(n_categories), int(m))]
    return [every[i] for i in sorted(rng.choice(len(every), k, replace=False))]


def _spread(rng: np.random.Generator, k: int, levels: int) -> np.ndarray:
    """k draws from 0..levels-1 that cover the levels evenly before repeating."""
    return rng.permutation(np.tile(np.arange(levels), -(-k // levels)))[:k]


def _build_personas(spec: SynthSpec, rng: np.random.Generator) -> dict[str, Any]:
    K, C = spec.n_groups, spec.n_categories
    favourites = _pick_favourites(rng, C, K)
    cat_pref = np.empty((K, C))
    background = rng.dirichlet(np.full(C, 3.0))
    for g, fav in enumerate(favourites):  # loop over personas only
        fav = list(fav)
        fav_share = rng.uniform(0.78, 0.9) if len(fav) < C else 1.0
        row = background.copy()
        row[fav] = 0.0
        row = row / row.sum() * (1 - fav_share) if row.sum() > 0 else row
        row[fav] = fav_share * (0.7 / len(fav) + 0.3 * rng.dirichlet(np.full(len(fav), 4.0)))
        cat_pref[g] = row
    sizes = rng.dirichlet(np.full(K, 8.0))
    price_level = _spread(rng, K, len(PRICE_BETAS))
    buyer = (_spread(rng, K, 4) + rng.random(K)) / 4  # 0 = browser .. 1 = buyer
    funnel = np.column_stack([0.10 + 0.35 * buyer, 0.12 + 0.45 * buyer, 0.25 + 0.5 * buyer])
    activity = np.exp(rng.uniform(-0.7, 0.7, K))
    activity /= (sizes * activity).sum()
    return {
        "favourites": favourites,
        "cat_pref": cat_pref,
        "persona_cum": np.cumsum(sizes),
        "price_level": price_level,
        "activity": activity,
        "funnel": funnel,
        "peak_hour": rng.choice(np.array([9, 13, 20, 22]), K),
    }


def _build_sequential_personas(spec: SynthSpec, rng: np.random.Generator) -> dict[str, Any]:
    """Pairs of personas equal in every attribute a bag of items shows, with opposite routes."""
    K, C = spec.n_groups, spec.n_categories
    bases = -(-K // 2)
    routes = [tuple(rng.permutation(np.array(f))) for f in _pick_favourites(rng, C, bases, _SEQUENTIAL_SIZES)]
    background = rng.dirichlet(np.full(C, 3.0))
    base_pref = np.empty((bases, C))
    for j, route in enumerate(routes):
        fav = list(route)
        row = background.copy()
        row[fav] = 0.0
        fav_share = rng.uniform(0.78, 0.9) if len(fav) < C else 1.0
        row = row / row.sum() * (1 - fav_share) if row.sum() > 0 else row
        row[fav] = fav_share / len(fav)  # equal weights: forwards and backwards walks visit them alike
        base_pref[j] = row
    base = np.arange(K) // 2
    sizes = rng.dirichlet(np.full(K, 8.0))
    price_level = _spread(rng, bases, len(PRICE_BETAS))[base]
    buyer = ((_spread(rng, bases, 4) + rng.random(bases)) / 4)[base]
    funnel = np.column_stack([0.10 + 0.35 * buyer, 0.12 + 0.45 * buyer, 0.25 + 0.5 * buyer])
    activity = np.exp(rng.uniform(-0.7, 0.7, bases))[base]
    activity /= (sizes * activity).sum()
    next_category = np.full((K, C), -1, dtype=np.int64)
    for g in range(K):
        route = routes[base[g]] if g % 2 == 0 else routes[base[g]][::-1]
        for i, c in enumerate(route):
            next_category[g, c] = route[(i + 1) % len(route)]
    return {
        "favourites": [tuple(sorted(routes[b])) for b in base],
        "cat_pref": base_pref[base],
        "persona_cum": np.cumsum(sizes),
        "price_level": price_level,
        "activity": activity,
        "funnel": funnel,
        "peak_hour": rng.choice(np.array([9, 13, 20, 22]), bases)[base],
        "next_category": next_category,
    }


def build_world(spec: SynthSpec) -> _World:
    """Catalogue and personas: the part every user block shares, drawn from its own seed stream."""
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(0,)))
    catalogue = _build_catalogue(spec, rng)
    personas = _build_sequential_personas(spec, rng) if spec.sequential else _build_personas(spec, rng)
    return _World(**catalogue, **personas)


def describe_personas(world: _World) -> list[dict[str, Any]]:
    """Human-readable personas, for reports and for checking what a clustering found."""
    out = []
    for g, fav in enumerate(world.favourites):
        buyer = float(world.funnel[g, 0] * world.funnel[g, 1] * world.funnel[g, 2])
        out.append({
            "group": g,
            "favourite_categories": [world.category_names[c] for c in fav],
            "price_taste": PRICE_WORDS[int(world.price_level[g])],
            "activity": round(float(world.activity[g]), 3),
            "view_to_purchase": round(buyer, 4),
            "peak_hour": int(world.peak_hour[g]),
            "share_of_persona_users": round(float(np.diff(world.persona_cum, prepend=0.0)[g]), 4),
        })
        if world.next_category is not None:
            out[-1]["route"] = _route_names(world, g)
    return out


def _route_names(world: _World, g: int) -> list[str]:
    """A sequential persona's route through its categories, from its lowest-numbered category."""
    nxt = world.next_category[g]
    start = int(np.flatnonzero(nxt >= 0).min())
    route, c = [start], int(nxt[start])
    while c != start:
        route.append(c)
        c = int(nxt[c])
    return [world.category_names[c] for c in route]


# --- users and their events, one block at a time -------------------------------------------


def _users(spec: SynthSpec, world: _World, rng: np.random.Generator, lo: int, hi: int) -> dict[str, np.ndarray]:
    """Per-user group, ids and behaviour parameters for users lo..hi-1."""
    n = hi - lo
    idx = np.arange(lo, hi, dtype=np.int64)
    user_id = USER_ID_BASE + 16 * idx + rng.integers(0, 16, n)
    noise = rng.random(n) < spec.noise_share
    persona = np.minimum(np.searchsorted(world.persona_cum, rng.random(n) * world.persona_cum[-1], side="right"),
                         spec.n_groups - 1)
    first = idx < spec.n_groups  # the first K users seed every group, so all groups exist
    persona[first], noise[first] = idx[first], False
    group = np.where(noise, -1, persona)
    p = np.where(noise, 0, persona)

    alpha = np.where(noise[:, None], 0.5, _PREF_CONCENTRATION * world.cat_pref[p] + 1e-3)
    pref = rng.gamma(alpha) + 1e-12
    pref /= pref.sum(axis=1, keepdims=True)

    shift = rng.choice(np.array([-1, 0, 1]), n, p=[0.15, 0.7, 0.15])
    level = np.clip(world.price_level[p] + shift, 0, len(PRICE_BETAS) - 1)
    level = np.where(noise, rng.integers(0, len(PRICE_BETAS), n), level)

    act = np.where(noise, 1.0, world.activity[p])
    target = spec.events_per_user * act * rng.lognormal(-_ACTIVITY_SIGMA**2 / 2, _ACTIVITY_SIGMA, n)
    noise_funnel = world.funnel.min(0) + rng.random((n, 1)) * np.ptp(world.funnel, axis=0)
    funnel = np.where(noise[:, None], noise_funnel, world.funnel[p] * rng.lognormal(0, 0.12, (n, 3)))
    funnel = np.clip(funnel, 0.01, 0.95)
    per_chain = 1 + funnel[:, 0] * (1 + funnel[:, 1] * (1 + funnel[:, 2]))
    chains = np.maximum(1, rng.poisson(target / per_chain))
    sessions = np.minimum(chains, 1 + rng.poisson((chains - 1) / _CHAINS_PER_SESSION))
    hour = np.where(noise, rng.integers(0, 24, n), world.peak_hour[p])
    return {"user_id": user_id, "group": group, "pref": pref, "level": level, "funnel": funnel,
            "chains": chains, "sessions": sessions, "hour": hour}


def _segment_offsets(gaps: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Cumulative sum of gaps restarting at each True in `first` (gaps there count as zero)."""
    gaps = np.where(first, 0.0, gaps)
    cs = np.cumsum(gaps)
    start = np.maximum.accumulate(np.where(first, np.arange(len(first)), 0))
    return cs - cs[start]


def _draw_rows(cum: np.ndarray, row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each entry of `row`, a column drawn from that row's distribution (rows of `cum` are CDFs)."""
    n_rows, n_cols = cum.shape
    keys = (np.arange(n_rows)[:, None] + cum).ravel()
    col = np.searchsorted(keys, row + rng.random(len(row)), side="right") - row * n_cols
    return np.clip(col, 0, n_cols - 1)


def _chains(world: _World, u: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One chain = one item a user looked at in a session: category, item and funnel depth."""
    n = len(u["chains"])
    user = np.repeat(np.arange(n), u["chains"])
    sess_first = np.cumsum(u["sessions"]) - u["sessions"]
    session = np.sort(sess_first[user] + (rng.random(len(user)) * u["sessions"][user]).astype(np.int64))

    cum = np.cumsum(u["pref"], axis=1)
    cum[:, -1] = 1.0
    cat = _draw_rows(cum, user, rng)
    if world.next_category is not None:
        cat = _follow_routes(world, u["group"][user], session, cat, rng)
    item = np.empty(len(user), dtype=np.int64)
    level = u["level"][user]
    draw = cat + rng.random(len(user))
    for lvl in range(len(PRICE_BETAS)):  # loop over price tastes only
        m = level == lvl
        item[m] = np.searchsorted(world.item_keys[lvl], draw[m], side="right")
    item = np.minimum(item, len(world.item_ids) - 1)

    reached = np.cumprod(rng.random((len(user), 3)) < u["funnel"][user], axis=1)
    depth = 1 + reached.sum(axis=1)
    first = np.r_[True, session[1:] != session[:-1]]
    offset = _segment_offsets(rng.exponential(_CHAIN_GAP_S, len(user)), first)
    return {"user": user, "session": session, "item": item, "depth": depth, "offset": offset}


def _follow_routes(world: _World, group: np.ndarray, session: np.ndarray, cat: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Sequential personas: after a look at a route category, the next look in the session goes to the
    route's next category with probability SEQUENTIAL_FOLLOW (otherwise the independent draw stays)."""
    cat = cat.copy()
    first = np.r_[True, session[1:] != session[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(session)), 0))
    rank = np.arange(len(session)) - start
    follow = (rng.random(len(cat)) < SEQUENTIAL_FOLLOW) & (group >= 0)
    persona = np.maximum(group, 0)
    for r in range(1, int(rank.max(initial=0)) + 1):  # loop over positions in a session only
        at = np.flatnonzero((rank == r) & follow)
        nxt = world.next_category[persona[at], cat[at - 1]]
        cat[at] = np.where(nxt >= 0, nxt, cat[at])
    return cat


def _session_starts(spec: SynthSpec, u: dict[str, np.ndarray], span: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
    """Seconds from `start` for each session: a random day, near the user's peak hour, ending in range."""
    s_user = np.repeat(np.arange(len(u["sessions"])), u["sessions"])
    n = len(s_user)
    hour = np.where(rng.random(n) < 0.7, u["hour"][s_user] + rng.normal(0, 2.0, n), rng.uniform(0, 24, n))
    start = rng.integers(0, spec.days, n) * 86400.0 + np.mod(hour, 24) * 3600.0
    end = spec.days * 86400.0 - 1.0
    start = np.where(start + span > end, start - 86400.0, start)  # a late session on the last day moves back a day
    return np.clip(np.minimum(start, end - span), 0.0, None)


def _block(spec: SynthSpec, world: _World, start_ms: int, b: int, new: int = 0) -> dict[str, np.ndarray]:
    """Events and truth for seeding block b, as column arrays sorted by user then time.

    With `new` > 0, block b of `new` further users (indices from n_users on, their own seed stream): the
    same shop and personas as the log, other people, whatever the log's size."""
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(2 if new else 1, b)))
    lo, hi = b * BLOCK_USERS, min(new or spec.n_users, (b + 1) * BLOCK_USERS)
    if new:
        lo, hi = lo + spec.n_users, hi + spec.n_users
    u = _users(spec, world, rng, lo, hi)
    ch = _chains(world, u, rng)

    depth = ch["depth"]
    chain = np.repeat(np.arange(len(depth)), depth)
    stage = (np.arange(len(chain)) - np.repeat(np.cumsum(depth) - depth, depth)).astype(np.int8)
    delay = 1.0 + rng.exponential(1.0, len(chain)) * np.asarray(_STAGE_DELAY_S)[stage]
    rel = ch["offset"][chain] + _segment_offsets(delay, stage == 0)

    session = ch["session"][chain]
    span = np.zeros(int(u["sessions"].sum()))
    bounds = np.flatnonzero(np.r_[True, session[1:] != session[:-1]])
    span[session[bounds]] = np.maximum.reduceat(rel, bounds)
    t_ms = start_ms + np.round((_session_starts(spec, u, span, rng)[session] + rel) * 1000).astype(np.int64)

    user = ch["user"][chain]
    order = np.argsort(user * (spec.days * 86_400_000 + 1) + (t_ms - start_ms), kind="stable")
    item = ch["item"][chain]
    qty = rng.geometric(0.75, len(chain))
    value = np.where(stage == 3, world.price[item] * qty, 0.0).astype(np.float32)
    return {
        "user_id": u["user_id"][user][order], "item_id": world.item_ids[item][order],
        "event": stage[order], "timestamp": t_ms[order], "value": value[order],
        "truth_user_id": u["user_id"], "truth_group": u["group"].astype(np.int64),
    }


# --- Arrow tables and the two entry points -------------------------------------------------

EVENTS_SCHEMA = pa.schema([
    ("user_id", pa.int64()), ("item_id", pa.int64()),
    ("event_type", pa.dictionary(pa.int8(), pa.string())),
    ("timestamp", pa.timestamp("ms")), ("value", pa.float32()),
])
TRUTH_SCHEMA = pa.schema([("user_id", pa.int64()), ("group", pa.int64())])
_EVENT_DICT = pa.array(EVENT_TYPES, pa.string())


def _events_table(cols: dict[str, np.ndarray]) -> pa.Table:
    return pa.table([
        pa.array(cols["user_id"]), pa.array(cols["item_id"]),
        pa.DictionaryArray.from_arrays(pa.array(cols["event"], pa.int8()), _EVENT_DICT),
        pa.array(cols["timestamp"].view("datetime64[ms]")), pa.array(cols["value"]),
    ], schema=EVENTS_SCHEMA)


def _truth_table(cols: dict[str, np.ndarray]) -> pa.Table:
    return pa.table([pa.array(cols["truth_user_id"]), pa.array(cols["truth_group"])], schema=TRUTH_SCHEMA)


def _items_table(world: _World) -> pa.Table:
    order = np.argsort(world.item_ids)
    return pa.table({
        "item_id": pa.array(world.item_ids[order]),
        "title": pa.array(world.titles[order], pa.string()),
        "category": pa.array(np.asarray(world.category_names, dtype=object)[world.item_category[order]], pa.string()),
        "price": pa.array(world.price[order]),
    })


def _concat(blocks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def _chunks(spec: SynthSpec, world: _World, chunk_users: int,
            breaks: Sequence[int] = ()) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(users done, columns) per chunk of whole seeding blocks; a chunk also ends before each block in
    `breaks` (where the next events file starts), so that no chunk straddles two files."""
    start_ms = int(pd.Timestamp(spec.start).value // 1_000_000)
    n_blocks = -(-spec.n_users // BLOCK_USERS)
    per_chunk = max(1, -(-chunk_users // BLOCK_USERS))
    first = 0
    while first < n_blocks:
        end = min([n_blocks, first + per_chunk, *(b for b in breaks if b > first)])
        blocks = [_block(spec, world, start_ms, b) for b in range(first, end)]
        yield min(spec.n_users, end * BLOCK_USERS), _concat(blocks)
        first = end


def new_events(spec: SynthSpec, world: _World, new_users: int) -> pa.Table:
    """The events of `new_users` users who are not in the log: what `assign`, `drift` and the service see."""
    start_ms = int(pd.Timestamp(spec.start).value // 1_000_000)
    blocks = [_block(spec, world, start_ms, b, new=new_users) for b in range(-(-new_users // BLOCK_USERS))]
    return _events_table(_concat(blocks))


def generate(spec: SynthSpec) -> SynthData:
    """The whole data set in memory; rows are identical to what `write` puts in its files."""
    spec.validate()
    world = build_world(spec)
    parts = [cols for _, cols in _chunks(spec, world, spec.n_users)]
    cols = _concat(parts)
    return SynthData(
        events=_events_table(cols).to_pandas(),
        items=_items_table(world).to_pandas(),
        truth=_truth_table(cols).to_pandas(),
        personas=describe_personas(world),
    )


def _spec_record(spec: SynthSpec) -> dict[str, Any]:
    """The spec as the files record it; `sequential` only when set, so default files stay byte-identical."""
    record = asdict(spec)
    if not spec.sequential:
        record.pop("sequential")
    return record


def _with_meta(schema: pa.Schema, spec: SynthSpec) -> pa.Schema:
    return schema.with_metadata({"gpuclust.synth": json.dumps(_spec_record(spec))})


def _write_chunk(ev_w: Any, tr_w: Any, cols: dict[str, np.ndarray]) -> None:
    """Runs on a worker thread: Parquet encoding and compression release the GIL."""
    ev_w.write_table(_events_table(cols), row_group_size=len(cols["event"]))
    tr_w.write_table(_truth_table(cols))


SYNTH_LAYOUT = {"events.parquet": None, "events": re.compile(r"part\.\d+\.parquet"), "items.parquet": None,
                "truth.parquet": None, "new_events.parquet": None}


class _EventFiles:
    """Where event chunks go: one events.parquet, or events/part.N.parquet with whole seeding blocks per file
    (the rows are the same either way; only the files differ)."""

    def __init__(self, staging: Path, spec: SynthSpec, files: int) -> None:
        self.staging, self.spec, self.files = staging, spec, files
        self.blocks = -(-spec.n_users // BLOCK_USERS)
        self.writer: Any = None
        self.index = -1
        if files > 1:
            (staging / "events").mkdir()

    def writer_for(self, first_user: int) -> Any:
        import pyarrow.parquet as pq

        index = 0 if self.files == 1 else self.file_of(first_user // BLOCK_USERS)
        if index != self.index:
            self.close()
            path = self.staging / ("events.parquet" if self.files == 1 else f"events/part.{index}.parquet")
            self.writer = pq.ParquetWriter(path, _with_meta(EVENTS_SCHEMA, self.spec), compression="zstd")
            self.index = index
        return self.writer

    def file_of(self, block: int) -> int:
        """The file a seeding block goes to: blocks spread evenly, so every one of the files gets some."""
        return block * self.files // self.blocks

    def starts(self) -> list[int]:
        """The first block of each file after the first."""
        return [-(-i * self.blocks // self.files) for i in range(1, self.files)]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def write(spec: SynthSpec, out_dir: str | Path, chunk_users: int = 100_000,
          progress: Callable[[int, int], None] | None = None, files: int = 1, new_users: int = 0) -> dict[str, Any]:
    """Stream DIR/events.parquet (or, with `files` > 1, the dataset DIR/events/part.N.parquet: users split
    across files in whole blocks), DIR/items.parquet and DIR/truth.parquet, replacing DIR as one unit;
    with `new_users`, also DIR/new_events.parquet (`new_events`).

    Memory is bounded by `chunk_users` (one Parquet row group per chunk), not by the data size.
    """
    import pyarrow.parquet as pq

    spec.validate()
    _check_int("chunk_users", chunk_users, 1)
    _check_int("files", files, 1)
    _check_int("new_users", new_users, 0, MAX_NEW_USERS)
    if files > 1:  # whole seeding blocks per file (chunks never straddle two files: `_EventFiles.starts`)
        blocks = -(-spec.n_users // BLOCK_USERS)
        if files > blocks:
            raise UsageError(f"{_set('files', files)} is more than the {blocks} blocks of {BLOCK_USERS} users; "
                             f"give at most {blocks}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    counts = np.zeros(len(EVENT_TYPES), dtype=np.int64)
    with OutputDir(out, "synth", SYNTH_LAYOUT) as staging:  # the destination is checked before the work
        world = build_world(spec)
        event_files = _EventFiles(staging, spec, files)
        with pq.ParquetWriter(staging / "truth.parquet", _with_meta(TRUTH_SCHEMA, spec), compression="zstd") as tr_w, \
                ThreadPoolExecutor(max_workers=1) as pool:
            pending: Future[None] | None = None
            previous = 0
            try:
                for done, cols in _chunks(spec, world, chunk_users, event_files.starts()):
                    counts += np.bincount(cols["event"], minlength=len(EVENT_TYPES))
                    if pending is not None:
                        pending.result()  # at most two chunks in memory: one generating, one writing
                    pending = pool.submit(_write_chunk, event_files.writer_for(previous), tr_w, cols)
                    previous = done
                    if progress is not None:
                        progress(done, spec.n_users)
                if pending is not None:
                    pending.result()
            finally:
                if pending is not None:
                    pending.exception()
                event_files.close()
        pq.write_table(_items_table(world).replace_schema_metadata({"gpuclust.synth": json.dumps(_spec_record(spec))}),
                       staging / "items.parquet", compression="zstd")
        if new_users:
            pq.write_table(new_events(spec, world, new_users).replace_schema_metadata(
                {"gpuclust.synth": json.dumps({**_spec_record(spec), "new_users": new_users})}),
                staging / "new_events.parquet", compression="zstd")
    return {
        "n_users": spec.n_users,
        "n_items": spec.n_items,
        "n_groups": spec.n_groups,
        "n_events": int(counts.sum()),
        "event_counts": dict(zip(EVENT_TYPES, counts.tolist(), strict=True)),
        "seconds": round(time.perf_counter() - t0, 3),
        "files": {**{k: str(out / f"{k}.parquet") for k in ("events", "items", "truth")},
                  **({"new_events": str(out / "new_events.parquet"), "new_users": new_users} if new_users else {}),
                  **({"events": str(out / "events"), "event_files": files} if files > 1 else {})},
        "personas": describe_personas(world),
        "spec": asdict(spec),
    }
