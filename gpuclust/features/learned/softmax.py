"""Output layers over the item catalogue: a full softmax, or a sampled one for large catalogues.

Sampled softmax: one set of negatives per batch, drawn from the item frequencies to the power 0.75,
shared by every row; logits are corrected by -log(expected draws) (logQ correction, Bengio & Senecal;
Jean et al. 2015) and a negative that is the row's own target is masked out.
"""

from __future__ import annotations

from typing import Any


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
                   generator: Any) -> Any:
    """Summed cross-entropy of `targets` (N,) given states `h` (N, d); item 0 is padding."""
    import torch
    import torch.nn.functional as F

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
                     negatives: int | None, q: Any, generator: Any) -> Any:
    """Summed multinomial log-likelihood loss of a sparse batch (rows, cols, values) given decoder
    states `h` (B, hidden): -sum values * log softmax(h W^T + b)[row, col]."""
    import torch

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
