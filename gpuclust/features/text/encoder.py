"""The item encoder: length-sorted token-budget batches through a transformer, pooled and normalised.

Forward passes run under `torch.inference_mode()` and `torch.autocast` (bf16 where the GPU supports it,
fp16 otherwise; fp32, bf16 or int8 weights (`quantize.py`) on the CPU by choice). Pooling and the L2 norm are done in fp32. Vectors come
back in the caller's order whatever order the batches ran in. An out-of-memory halves the batch and
retries, down to one sequence; the smaller budget then sticks for the rest of the call.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gpuclust.compat import torch_oom_error
from gpuclust.errors import UsageError
from gpuclust.features.text.batching import (
    TokenizedTexts,
    length_order,
    next_batch,
    tokenize,
)
from gpuclust.features.text.model import LoadedModel

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
POOLINGS = ("mean", "cls")
CPU_BATCH_TOKENS = 2048  # 1024-4096 tie on 2 Xeon cores for short item titles (benchmarks/results)
GPU_MIN_BATCH_TOKENS = 4096
GPU_MAX_BATCH_TOKENS = 262_144
GPU_MEMORY_SHARE = 0.25  # torch shares the card with RAPIDS: plan batches on a quarter of what is free
MAX_ROWS = 65_536


def resolve_precision(precision: str, device: str) -> str:
    """`auto` is bf16 on a GPU that supports it, fp16 on an older GPU, fp32 on the CPU."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    on_cuda = str(device).startswith("cuda")
    if precision == "auto":
        if not on_cuda:
            return "fp32"
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and not on_cuda:
        raise UsageError("precision 'fp16' needs a CUDA device; on the CPU choose 'fp32', 'bf16' or 'int8'")
    if precision == "int8" and on_cuda:
        raise UsageError("precision 'int8' is dynamic quantisation for the CPU; on a GPU choose 'bf16' or 'fp16' "
                         "(or 'auto')")
    return precision


def autocast_context(precision: str, device: str):
    """`torch.autocast` for bf16/fp16; a no-op context for fp32 and int8 (int8 is in the weights)."""
    import torch

    if precision in ("fp32", "int8"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda" if str(device).startswith("cuda") else "cpu", dtype=dtype)


def default_batch_tokens(model: Any, device: str, max_length: int) -> int:
    """Padded tokens per batch: fixed on the CPU, sized from free memory on CUDA.

    The per-token estimate covers the live activations of one layer under autocast (fp32 residual
    stream and LayerNorm outputs, bf16 q/k/v and FFN) plus attention scores in case the kernel
    materialises them.
    """
    if not str(device).startswith("cuda"):
        return CPU_BATCH_TOKENS
    import torch

    cfg = model.config
    hidden, inter = int(cfg.hidden_size), int(getattr(cfg, "intermediate_size", 4 * cfg.hidden_size))
    heads = int(getattr(cfg, "num_attention_heads", 12))
    per_token = 24 * hidden + 6 * inter + 4 * heads * max_length
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    budget = int(free * GPU_MEMORY_SHARE // per_token)
    return int(min(GPU_MAX_BATCH_TOKENS, max(GPU_MIN_BATCH_TOKENS, budget)))


@dataclass
class EncodeStats:
    """What one `encode` call did. `tokens` counts padded positions fed to the model."""

    items: int = 0
    tokens: int = 0
    non_pad_tokens: int = 0
    batches: int = 0
    unpadded_batches: int = 0  # batches of one length: no padding, no attention mask
    oom_retries: int = 0
    batch_tokens: int = 0
    tokenize_seconds: float = 0.0
    seconds: float = 0.0  # wall time of the whole call, tokenising included

    @property
    def padding_share(self) -> float:
        return 0.0 if not self.tokens else 1.0 - self.non_pad_tokens / self.tokens

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Non-pad (useful) tokens per second."""
        return self.non_pad_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(padding_share=round(self.padding_share, 4), items_per_s=round(self.items_per_s, 1),
                   tokens_per_s=round(self.tokens_per_s, 1))
        out["seconds"] = round(self.seconds, 4)
        out["tokenize_seconds"] = round(self.tokenize_seconds, 4)
        return out


class ItemEncoder:
    """Texts (or token ids) -> L2-normalised float32 torch vectors on the model's device.

    Parameters are stored as given and checked on first use. `sort_by_length=False` with `batch_size`
    gives the naive fixed-row-count baseline, kept for the benchmark. `unpadded` (default: on CUDA)
    cuts the sorted batches where the length changes, so most need no padding and no attention mask
    (`batching.next_batch`); on the CPU the padded batches were as fast. `stats_` describes the last call.
    """

    def __init__(self, model: LoadedModel, *, pooling: str = "mean", precision: str = "auto",
                 batch_tokens: int | None = None, max_length: int = 128, sort_by_length: bool = True,
                 batch_size: int | None = None, unpadded: bool | None = None) -> None:
        self.model = model
        self.pooling = pooling
        self.precision = precision
        self.batch_tokens = batch_tokens
        self.max_length = max_length
        self.sort_by_length = sort_by_length
        self.batch_size = batch_size
        self.unpadded = unpadded

    # --- checks -------------------------------------------------------------------------------
    def resolve(self) -> ItemEncoder:
        """Check the parameters and fix device, precision and max length (`*_` attributes)."""
        if self.pooling not in POOLINGS:
            raise UsageError(f"unknown pooling {self.pooling!r}: choose one of {', '.join(POOLINGS)}")
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise UsageError(f"max_length must be an integer of at least 2 tokens, got {self.max_length!r}")
        if self.batch_tokens is not None and (not isinstance(self.batch_tokens, int) or self.batch_tokens < 1):
            raise UsageError(f"batch_tokens must be a positive integer, got {self.batch_tokens!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise UsageError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        self.device_ = self.model.device
        self.precision_ = resolve_precision(self.precision, self.device_)
        self.max_length_ = min(self.max_length, self.model.max_positions)
        if self.precision_ == "int8" and getattr(self, "module_", None) is None:
            from gpuclust.features.text.quantize import quantize_int8

            self.module_ = quantize_int8(self.model.model)  # a copy: the caller's model stays fp32
        elif self.precision_ != "int8":
            self.module_ = self.model.model
        return self

    # --- public -------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> TokenizedTexts:
        self.resolve()
        if self.model.tokenizer is None:
            raise UsageError(f"model {self.model.name!r} was loaded without a tokenizer; pass token ids instead")
        return tokenize(self.model.tokenizer, texts, self.max_length_)

    def encode(self, texts: Sequence[str]):
        """Encode texts; returns a (len(texts), hidden) float32 tensor in input order."""
        started = time.perf_counter()
        tokens = self.tokenize(texts)
        tokenize_seconds = time.perf_counter() - started
        out = self.encode_tokens(tokens, _started=started)
        self.stats_.tokenize_seconds = tokenize_seconds
        return out

    def encode_tokens(self, tokens: TokenizedTexts, *, _started: float | None = None):
        """Encode pre-tokenised sequences (already truncated); same output as `encode`."""
        import torch

        self.resolve()
        out_of_memory = torch_oom_error()
        started = time.perf_counter() if _started is None else _started
        device = self.device_
        on_cuda = device.startswith("cuda")
        multiple = 8 if on_cuda else 1  # tensor cores like widths that are multiples of 8
        n = len(tokens)
        stats = EncodeStats(items=n)
        budget = self.batch_tokens or default_batch_tokens(self.model.model, device, self.max_length_)
        stats.batch_tokens = budget
        out = torch.empty((n, self.model.hidden_size), dtype=torch.float32, device=device)
        lengths = tokens.lengths
        order = length_order(lengths) if self.sort_by_length else np.arange(n)
        rows = self.batch_size or max(1, budget // self.max_length_)
        uniform = on_cuda if self.unpadded is None else bool(self.unpadded)
        start = 0
        with torch.inference_mode(), autocast_context(self.precision_, device):
            while start < n:
                if self.sort_by_length:
                    batch = next_batch(order, lengths, start, budget, multiple, max_rows=self.batch_size or MAX_ROWS,
                                       uniform=uniform)
                else:
                    batch = order[start:start + rows]
                try:
                    pooled, width, unmasked = self._forward(tokens, batch, multiple, on_cuda)
                except out_of_memory:
                    pooled = None  # recover outside the except block, once the failed frame is freed
                if pooled is None:
                    if len(batch) == 1:
                        raise UsageError(
                            f"out of GPU memory encoding a single sequence of {int(lengths[batch[0]])} tokens; "
                            "lower max_length or free GPU memory"
                        )
                    stats.oom_retries += 1
                    if on_cuda:
                        torch.cuda.empty_cache()
                    half = len(batch) // 2
                    width = int(lengths[batch].max())
                    budget = max(1, half * (-(-width // multiple) * multiple))
                    rows = half
                    continue
                index = torch.from_numpy(np.ascontiguousarray(batch)).to(device, non_blocking=on_cuda)
                out[index] = pooled
                stats.batches += 1
                stats.unpadded_batches += int(unmasked)
                stats.tokens += width * len(batch)
                stats.non_pad_tokens += int(lengths[batch].sum())
                start += len(batch)
        if on_cuda:
            torch.cuda.synchronize(device)
        stats.seconds = time.perf_counter() - started
        self.stats_ = stats
        return out

    # --- internals ----------------------------------------------------------------------------
    def _forward(self, tokens: TokenizedTexts, batch: np.ndarray, multiple: int, on_cuda: bool):
        import torch
        import torch.nn.functional as F

        lengths = tokens.lengths[batch]
        uniform = bool(len(batch)) and int(lengths.min()) == int(lengths.max())
        arrays = tokens.pad(batch, multiple_of=1 if uniform else multiple)
        if uniform:  # no padding: no mask, so attention may run mask-free (flash kernels on the GPU)
            arrays.pop("attention_mask")
        inputs = {}
        for key, value in arrays.items():
            tensor = torch.from_numpy(value)
            if on_cuda:
                tensor = tensor.pin_memory().to(self.device_, non_blocking=True)
            inputs[key] = tensor
        hidden = self.module_(**inputs).last_hidden_state.float()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif uniform:
            pooled = hidden.mean(dim=1)
        else:
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return F.normalize(pooled, p=2.0, dim=1), arrays["input_ids"].shape[1], uniform
