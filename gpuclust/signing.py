"""Signed models: a keyed HMAC over a model's checksum file, so a deployment can refuse models it did not sign.

The checksum file (`model.checksums.sha256`) detects corruption, not tampering: whoever can write the
model folder can edit a file and recompute its sum. A signature made with a key they do not hold can
not be recomputed. `gpuclust run --model-key FILE` signs the saved model; every command that loads a
model with `--model-key FILE` (assign, drift, serve) refuses one whose signature is missing or made with
another key. The key is read once and never written; the signature file names its fingerprint only.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from gpuclust.errors import UsageError

SIGNATURE = "signature.hmac"
_CONTEXT = b"gpuclust model signature\x00"
_FINGERPRINT_CONTEXT = b"gpuclust model key fingerprint\x00"


class ModelKey:
    """A signing key; its repr and fingerprint never show the key."""

    def __init__(self, key: bytes) -> None:
        from gpuclust.privacy import KEY_MIN_BYTES

        if not isinstance(key, bytes | bytearray) or len(key) < KEY_MIN_BYTES:
            raise UsageError(f"a model key needs at least {KEY_MIN_BYTES} bytes; make one with "
                             "`python -c 'import secrets; print(secrets.token_hex(32))' > KEY_FILE`")
        self._key = bytes(key)
        self.fingerprint = "sha256:" + hashlib.sha256(_FINGERPRINT_CONTEXT + self._key).hexdigest()[:16]

    @classmethod
    def from_file(cls, path: str | Path) -> ModelKey:
        from gpuclust.privacy import read_key_file

        return cls(read_key_file(path, "--model-key"))

    def __repr__(self) -> str:
        return f"ModelKey({self.fingerprint})"

    def __deepcopy__(self, memo: dict) -> ModelKey:
        return self

    def sign(self, checksums: bytes) -> str:
        """The signature file's text: the key's fingerprint and the HMAC-SHA256 of the checksum file."""
        return f"hmac-sha256 {self.fingerprint} {hmac.new(self._key, _CONTEXT + checksums, hashlib.sha256).hexdigest()}\n"

    def verify(self, checksums: bytes, signature: bytes | None, where: str) -> None:
        if signature is None:
            raise UsageError(f"{where} is not signed, and --model-key asks for a model signed with key "
                             f"{self.fingerprint}; re-save it with `gpuclust run --model-key KEY_FILE`")
        if not hmac.compare_digest(signature, self.sign(checksums).encode()):
            raise UsageError(f"{where} is not signed with key {self.fingerprint} (it was signed with another key, "
                             "or changed after signing); refusing it")


def as_model_key(value: object) -> ModelKey | None:
    """None, a ModelKey, key bytes or a key file path."""
    if value is None or isinstance(value, ModelKey):
        return value
    if isinstance(value, bytes | bytearray):
        return ModelKey(bytes(value))
    if isinstance(value, str | Path):
        return ModelKey.from_file(value)
    raise UsageError(f"model_key must be a key file path, key bytes or a ModelKey, got {type(value).__name__}")
