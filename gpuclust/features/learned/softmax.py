"""Output layers over the item catalogue: a full softmax, or a sampled one for large catalogues.

Full softmax: when rows x items exceed a cell budget, the log-partition is computed over item chunks
by `chunked_logsumexp` (a custom autograd Function that recomputes each chunk's logits in the backward
pass), so memory is O(rows x chunk) rather than O(rows x catalogue): a GPU step can then hold its whole
token budget (131k events at 20k items would be 10 GiB of fp32 logits, plus as much again for their
gradient). Below the budget the logits are materialised as before (one matmul fewer).

Sampled softmax: one set of negatives per batch, drawn from the item frequencies to the power 0.75,
shared by every row; logits are corrected by -log(expected draws) (logQ correction, Bengio & Senecal;
Jean et al. 2015) and a negative that is the row's own target is masked out.
"""

from __future__ import annotations

from typing import Any

_LOGSUMEXP: Any = None


def chunked_logsumexp(h: Any, weight: Any, bias: Any, chunk: int) -> Any:
    """logsumexp over items of h @ weight.T + bias, (N,) float32, never holding more than N x `chunk`
    logits. Under autocast the matmuls run in the autocast dtype (as `h @ weight.t()` would); the
    softmax arithmetic and the gradients' accumulation are float32."""
    global _LOGSUMEXP
    if _LOGSUMEXP is None:
        _LOGSUMEXP = _chunked_function()
    import torch

    device = h.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
    with torch.autocast(device_type=device, enabled=False):
        return _LOGSUMEXP.apply(h, weight, bias, max(1, int(chunk)), dtype)


def _chunked_function() -> Any:
    import torch

    class ChunkedLogSumExp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, h, weight, bias, chunk, dtype):
            hc = h.to(dtype)
            lse = torch.full((h.shape[0],), float("-inf"), device=h.device, dtype=torch.float32)
            for start in range(0, weight.shape[0], chunk):
                logits = (hc @ weight[start:start + chunk].to(dtype).t()).float() + bias[start:start + chunk].float()
                lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=1))
            ctx.save_for_backward(h, weight, bias, lse)
            ctx.chunk, ctx.dtype = chunk, dtype
            return lse

        @staticmethod
        def backward(ctx, grad):
            h, weight, bias, lse = ctx.saved_tensors
            chunk, dtype = ctx.chunk, ctx.dtype
            hc = h.to(dtype)
            grad_h = torch.zeros(h.shape, dtype=torch.float32, device=h.device)
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
            g = grad.float()[:, None]
            for start in range(0, weight.shape[0], chunk):
                w = weight[start:start + chunk].to(dtype)
                logits = (hc @ w.t()).float() + bias[start:start + chunk].float()
                p = torch.exp(logits - lse[:, None]) * g  # d lse / d logits, scaled by the incoming gradient
                grad_b[start:start + chunk] = p.sum(0)
                p = p.to(dtype)
                grad_h += (p @ w).float()
                grad_w[start:start + chunk] = (p.t() @ hc).float()
            return grad_h.to(h.dtype), grad_w.to(weight.dtype), grad_b.to(bias.dtype), None, None

    return ChunkedLogSumExp


def sampling_distribution(item_counts: Any, padding: bool = True):
    """Item frequencies (a torch tensor, on its device) ** 0.75, normalised; with `padding`, index 0 is
    never drawn."""
    import torch

    q = item_counts.double().clamp(min=0) ** 0.75
    if padding:
        q[0] = 0.0
    total = q.sum()
    q = q / total if float(total) > 0 else torch.ones_like(q) / len(q)
    return q.float()


def next_item_loss(h: Any, targets: Any, weight: Any, bias: Any, negatives: int | None, q: Any,
                   generator: Any, max_cells: int | None = None) -> Any:
    """Summed cross-entropy of `targets` (N,) given states `h` (N, d); item 0 is padding. A full softmax
    over more than `max_cells` logits (N x items) is chunked over the items."""
    import torch
    import torch.nn.functional as F

    if negatives is None and max_cells is not None and h.shape[0] * weight.shape[0] > max_cells:
        lse = chunked_logsumexp(h, weight[1:], bias[1:], max(1, max_cells // max(h.shape[0], 1)))
        positive = (h * weight[targets]).sum(-1).float() + bias[targets].float()
        return (lse - positive).sum()
    if negatives is None:
        logits = h @ weight.t() + bias
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits.float(), targets, reduction="sum")
    drawn = torch.multinomial(q, negatives, replacement=True, generator=generator)
    log_expected = torch.log(q * negatives + 1e-30)
    positive = (h * weight[targets]).sum(-1) + bias[targets] - log_expected[targets]
    negative = h @ weight[drawn].t() + bias[drawn] - log_expected[drawn][None, :]
    negative = negative.masked_fill(drawn[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([positive[:, None], negative], dim=1).float()
    zeros = torch.zeros(len(targets), dtype=torch.long, device=h.device)
    return F.cross_entropy(logits, zeros, reduction="sum")


def multinomial_loss(h: Any, rows: Any, cols: Any, values: Any, weight: Any, bias: Any,
                     negatives: int | None, q: Any, generator: Any, max_cells: int | None = None) -> Any:
    """Summed multinomial log-likelihood loss of a sparse batch (rows, cols, values) given decoder
    states `h` (B, hidden): -sum values * log softmax(h W^T + b)[row, col]. A full softmax over more than
    `max_cells` logits (B x items) is chunked over the items."""
    import torch

    if negatives is None and max_cells is not None and h.shape[0] * weight.shape[0] > max_cells:
        lse = chunked_logsumexp(h, weight, bias, max(1, max_cells // max(h.shape[0], 1)))
        picked = (h[rows] * weight[cols]).sum(-1).float() + bias[cols].float()
        return -(values * (picked - lse[rows])).sum()
    if negatives is None:
        logp = torch.log_softmax((h @ weight.t() + bias).float(), dim=1)
        return -(values * logp[rows, cols]).sum()
    positives, where = torch.unique(cols, return_inverse=True)
    drawn = torch.multinomial(q, negatives, replacement=True, generator=generator)
    drawn = drawn[~torch.isin(drawn, positives)]
    candidates = torch.cat([positives, drawn])
    correction = torch.zeros(len(candidates), device=h.device)
    correction[len(positives):] = torch.log(q[drawn] * negatives + 1e-30)
    logits = h @ weight[candidates].t() + bias[candidates] - correction[None, :]
    logp = torch.log_softmax(logits.float(), dim=1)
    return -(values * logp[rows, where]).sum()
