"""Privacy: pseudonymised user ids and suppression of figures about small groups.

Behaviour logs are personal data. With a key (`--pseudonymise KEY_FILE`, `UserClusterer(pseudonymise=...)`)
every user id is replaced, where it enters gpuclust, by a keyed HMAC-SHA256 of its canonical text (the
id as `preprocess.parse.normalise_ids` reads it, so 501218, 501218.0 and "501218" are one user), hex,
first 128 bits. Raw ids then never reach a feature, an output file, a saved model, a report or a log;
whoever holds the key can compute a user's pseudonym to look them up, nobody else can reverse it. The
key is read once and never written anywhere: manifests and models record only its fingerprint, so a
model fitted under one key refuses to place users under another.

With privacy on, cluster reports (`clusters.json`, the saved model, `report.html`, the service's
`/v1/clusters`) leave out exemplar users, and every cluster-level figure computed from fewer than
`min_group_size` users (default 10) is withheld: the cluster keeps its number and says why.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import numpy as np

from gpuclust import schema
from gpuclust.errors import UsageError, require_file
from gpuclust.preprocess.parse import canonical_id

KEY_MIN_BYTES = 16
PSEUDONYM_HEX = 32  # 128 bits of the HMAC-SHA256
_FINGERPRINT_CONTEXT = b"gpuclust key fingerprint\x00"
MIN_GROUP_SIZE = 10
# What a withheld cluster keeps: its number, why, and empty figures of the usual shape.
_WITHHELD = {"size": None, "share": None, "label": None, "terms": [], "behaviour_mean": {}, "behaviour_lift": {},
             "top_categories": [], "top_items": []}


def read_key_file(path: str | Path, flag: str) -> bytes:
    """A secret key from a file: its bytes, surrounding whitespace (a trailing newline) stripped, at least
    KEY_MIN_BYTES of them. One reader for every key flag (--pseudonymise, --model-key)."""
    path = Path(path)
    require_file(path, f"a key file ({flag})")
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise UsageError(f"cannot read the key file {path}: {exc.strerror or exc}") from None
    if len(key) < KEY_MIN_BYTES:
        raise UsageError(f"the key file {path} holds {len(key)} bytes; a key needs at least {KEY_MIN_BYTES}: "
                         "make one with `python -c 'import secrets; print(secrets.token_hex(32))' > KEY_FILE`")
    return key


class Pseudonymiser:
    """Keyed HMAC-SHA256 of user ids. Its repr, its fingerprint and its errors never show the key."""

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) < KEY_MIN_BYTES:
            raise UsageError(f"a pseudonymisation key needs at least {KEY_MIN_BYTES} bytes; make one with "
                             "`python -c 'import secrets; print(secrets.token_hex(32))' > KEY_FILE`")
        self._key = bytes(key)
        self.fingerprint = "sha256:" + hashlib.sha256(_FINGERPRINT_CONTEXT + self._key).hexdigest()[:16]

    @classmethod
    def from_file(cls, path: str | Path) -> Pseudonymiser:
        """The key is the file's bytes, surrounding whitespace (a trailing newline) stripped."""
        return cls(read_key_file(path, "--pseudonymise"))

    def __repr__(self) -> str:
        return f"Pseudonymiser({self.fingerprint})"

    def __deepcopy__(self, memo: dict) -> Pseudonymiser:  # sklearn.clone copies parameters
        return self

    def one(self, canonical: str) -> str:
        """The pseudonym of one id given as its canonical text (`canonical_id`)."""
        return hmac.new(self._key, canonical.encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]

    def column(self, ids: Any) -> Any:
        """A user id column (pandas or cuDF) with each id replaced by its pseudonym; nulls stay null.

        Ids are normalised first, as preprocessing would, so one user has one pseudonym whatever the
        file's column type; each distinct id is hashed once."""
        from gpuclust.backend import to_host
        from gpuclust.frames import frame_kind
        from gpuclust.preprocess.parse import normalise_ids

        ids, _ = normalise_ids(ids)
        on_device = frame_kind(ids) == "cudf"
        codes, uniques = ids.factorize()
        if on_device:  # the distinct ids are hashed on the host; the codes come back once
            uniques, codes = uniques.to_pandas(), to_host(codes)
        table = np.asarray([self.one(canonical_id(v)) for v in uniques] + [None], dtype=object)
        values = table[np.where(np.asarray(codes) < 0, len(table) - 1, codes)]
        if on_device:
            import cudf

            return cudf.Series(values, index=ids.index, name=ids.name)
        import pandas as pd

        return pd.Series(values, index=ids.index, name=ids.name)

    def frame(self, df: Any, column: str = schema.USER) -> Any:
        """A copy of `df` with its user id column pseudonymised (the frame itself is left as it was)."""
        if df is None or column not in df.columns:
            return df
        out = df.copy()
        out[column] = self.column(df[column])
        return out


def as_pseudonymiser(value: Any) -> Pseudonymiser | None:
    """None, a Pseudonymiser, key bytes, or the path of a key file."""
    if value is None or value is False:
        return None
    if isinstance(value, Pseudonymiser):
        return value
    if isinstance(value, bytes | bytearray):
        return Pseudonymiser(bytes(value))
    if isinstance(value, str | Path):
        return Pseudonymiser.from_file(value)
    raise UsageError(f"pseudonymise must be a key file path, key bytes or a Pseudonymiser, got {type(value).__name__}")


def privacy_record(pseudonymiser: Pseudonymiser | None, min_group_size: int) -> dict[str, Any]:
    """What manifests and models say about privacy: never the key, only its fingerprint."""
    if pseudonymiser is None:
        return {"pseudonymised": False}
    return {"pseudonymised": True, "method": f"HMAC-SHA256, first {PSEUDONYM_HEX * 4} bits, hex",
            "key_fingerprint": pseudonymiser.fingerprint, "min_group_size": int(min_group_size)}


def check_key(recorded: dict[str, Any] | None, pseudonymiser: Pseudonymiser | None, where: str) -> None:
    """A private model needs its own key to place users; a key for a model of raw ids is a mistake too."""
    private = bool(recorded and recorded.get("pseudonymised"))
    if private and pseudonymiser is None:
        raise UsageError(f"{where} was fitted on pseudonymised user ids: give the same key "
                         f"(--pseudonymise KEY_FILE; fingerprint {recorded.get('key_fingerprint')})")
    if private and pseudonymiser.fingerprint != recorded.get("key_fingerprint"):
        raise UsageError(f"the key given ({pseudonymiser.fingerprint}) is not the key {where} was fitted with "
                         f"({recorded.get('key_fingerprint')}): its users would not match")
    if not private and pseudonymiser is not None:
        raise UsageError(f"{where} was fitted on raw user ids, so a key cannot apply to it; fit it again with "
                         "--pseudonymise to have pseudonymised outputs")


def suppress_small_groups(profiles: list[dict], population: dict, min_group_size: int,
                          n_users: int) -> tuple[list[dict], dict]:
    """Profiles without exemplar users, and with every figure of a cluster smaller than `min_group_size`
    withheld (the cluster keeps its number and a `suppressed` reason). The population's figures go too
    when the whole population is that small."""
    why = f"fewer than {min_group_size} users"
    out = []
    for profile in profiles:
        kept = {k: v for k, v in profile.items() if k != "exemplars"}
        if int(profile.get("size") or 0) < min_group_size:
            kept = {"cluster": profile["cluster"], **({"noise": True} if profile.get("noise") else {}),
                    **_WITHHELD, "suppressed": why}
        out.append(kept)
    if n_users < min_group_size:
        population = {name: None for name in population}
    return out, population


def small_clusters(profiles: list[dict]) -> set[int]:
    """The clusters whose figures were withheld."""
    return {int(p["cluster"]) for p in profiles if p.get("suppressed")}
