"""`--algorithm predictive`: clusters learned for the use they are put to (a cluster-bottleneck recommender).

k prototype vectors live in the space the estimator clusters (the fused, possibly learned, features).
A user's soft cluster is a softmax over negative squared distances to the prototypes (a learned
temperature); each cluster has a distribution over items (its decoder row). Trained jointly, the
prototypes, the temperature and the decoder maximise the likelihood of each user's *next* item under
their cluster mixture, with a balance term KL(mean assignment || uniform) that keeps clusters from
collapsing (in the spirit of deep embedded clustering, with the reconstruction replaced by next-item
prediction). The last third of training uses hard assignments (straight-through), so the clusters the
loss sees are the clusters the users get.

Where the next items come from: each eligible user's last item is held out of the data (leave-last-out,
the rules of `recommend.split`), the users are measured on the rest through `measure` (the estimator's
fitted featurisers; without it, x itself, which then already contains the target), and the held-out
item is the target. Start: k-means on x; decoder rows start as the log item shares of those clusters.
Labels are the nearest prototype of each user's full vector, so `cluster_centers_` (the prototypes)
place new users the way any saved model does.

Why the encoder is not fine-tuned through the bottleneck: the estimator's contract keeps featurisers
and clusterers separable (a featuriser is fitted, then frozen; a clusterer sees the fused space) and a
saved model places a new user at the nearest centre of that space. Back-propagating into the sequence
encoder would tie one featuriser to one clusterer, make the fused space move under the fuser's learned
scales, and give the saved model centres of a space that no longer exists. So the encoder is trained
self-supervised first (DEC's pretraining), and this stage learns the prototypes, their temperature
and decoder on top of it: the same separation DEC's two phases have, minus the encoder update.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from gpuclust.backend import Backend, from_torch, to_host, to_torch
from gpuclust.cluster.outcome import check_k, nearest_centres
from gpuclust.errors import UsageError

if TYPE_CHECKING:
    from gpuclust.preprocess.table import EventTable

SMOOTHING = 0.1  # added to each cluster's item counts before the log (decoder start)
HARD_SHARE = 1 / 3  # the last third of the epochs trains on hard assignments
BATCH_USERS = 8192


class _History(NamedTuple):
    """Leave-last-out on the event table: the training part (prepared data) and one target per user."""

    train: Any
    test_user: Any
    test_item: Any


class PredictiveClusters:
    """k prototypes whose clusters predict their users' next items; `fit` sets labels_,
    cluster_centers_, inertia_, n_iter_, engine_ and info_ (losses, sizes, seconds)."""

    algorithm = "predictive"

    def __init__(self, n_clusters: int = 8, engine: str = "auto", balance: float = 1.0, epochs: int = 200,
                 learning_rate: float = 0.02, random_state: int = 0) -> None:
        self.n_clusters = n_clusters
        self.engine = engine
        self.balance = balance
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.random_state = random_state

    def fit(self, x: Any, backend: Backend, data: Any = None, measure: Any = None) -> PredictiveClusters:
        import torch

        from gpuclust.cluster.torch_kmeans import TorchKMeans
        from gpuclust.features.learned.training import seeded, torch_threads
        started = time.perf_counter()
        check_k(self.n_clusters, int(x.shape[0]))
        self.engine_ = backend.pick_engine("predictive", self.engine)
        if data is None:
            raise UsageError("--algorithm predictive learns from the users' events: fit it through UserClusterer "
                             "(or pass data=PreparedData to fit)")
        device, k, xp = backend.torch_device, int(self.n_clusters), backend.xp
        with torch_threads(device):
            generator = seeded(self.random_state, device)
            split, x_hist = self._history(data, measure, x)
            full = to_torch(xp.ascontiguousarray(x, dtype=xp.float32)).to(device)
            past = to_torch(xp.ascontiguousarray(x_hist, dtype=xp.float32)).to(device)
            users = to_torch(backend.asarray(split.test_user).astype(xp.int64)).to(device)
            targets = to_torch(backend.asarray(split.test_item).astype(xp.int64)).to(device)

            start = TorchKMeans(k, n_init=3, random_state=self.random_state, device=device).fit(full)
            prototypes = torch.nn.Parameter(start.cluster_centers_.clone().float())
            decoder = torch.nn.Parameter(self._decoder_start(split.train.table, start.labels_, k, data.n_items, backend))
            spread = float(start.inertia_) / max(int(x.shape[0]), 1)
            log_temperature = torch.nn.Parameter(torch.tensor(np.log(max(spread, 1e-6)), device=device))
            optimiser = torch.optim.Adam([prototypes, decoder, log_temperature], lr=self.learning_rate)
            history_rows = []
            n = len(targets)
            hard_from = int(self.epochs * (1 - HARD_SHARE))
            for epoch in range(self.epochs):
                order = torch.randperm(n, device=device, generator=generator)
                total = balance_total = torch.zeros((), device=device)  # read every 20 epochs, not every step
                for begin in range(0, n, BATCH_USERS):
                    pick = order[begin:begin + BATCH_USERS]
                    q: torch.Tensor = torch.softmax(-torch.cdist(past[users[pick]], prototypes).pow(2) / log_temperature.exp(), 1)
                    if epoch >= hard_from:  # hard assignments forward, soft gradients back
                        hard = torch.nn.functional.one_hot(q.argmax(1), k).float()
                        q = hard + q - q.detach()
                    log_items = torch.log_softmax(decoder, dim=1)[:, targets[pick]].t()  # (B, k)
                    likelihood = -torch.logsumexp(torch.log(q.clamp(min=1e-12)) + log_items, dim=1).mean()
                    share = q.mean(0)
                    balance = (share * torch.log(share.clamp(min=1e-12) * k)).sum()
                    loss = likelihood + self.balance * balance
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    total = total + likelihood.detach() * len(pick)
                    balance_total = balance_total + balance.detach() * len(pick)
                if epoch % 20 == 0 or epoch == self.epochs - 1:
                    history_rows.append({"epoch": epoch + 1, "next_item_nll": round(float(total) / max(n, 1), 5),
                                         "balance_kl": round(float(balance_total) / max(n, 1), 5)})
            if not bool(torch.isfinite(prototypes).all()):  # a NaN centre puts every user in cluster 0
                raise UsageError(f"--algorithm predictive diverged (prototypes are not finite) with --balance "
                                 f"{self.balance:g}; lower it, e.g. --balance 1")
            centres = from_torch(prototypes.detach().float().contiguous(), backend)
        self.cluster_centers_ = xp.asarray(centres, dtype=xp.float32)
        self.labels_, distances = nearest_centres(x, self.cluster_centers_, xp)
        self.inertia_ = float((distances.astype(xp.float64) ** 2).sum())
        self.n_iter_ = self.epochs
        sizes = np.bincount(to_host(self.labels_), minlength=k)  # k integers' worth of summary
        self.info_ = {"targets": int(n), "measured_without_targets": measure is not None,
                      "temperature": float(log_temperature.detach().exp()), "history": history_rows,
                      "smallest_cluster": int(sizes.min()), "largest_cluster": int(sizes.max()),
                      "seconds": round(time.perf_counter() - started, 4)}
        return self

    def _history(self, data: Any, measure: Any, x: Any) -> tuple[_History, Any]:
        """The leave-last-out split and the users measured on their history, computed once per prepared
        log and measure (a k sweep fits this clusterer once per k; none of this depends on k)."""
        from gpuclust.recommend.split import split_table

        key = ("predictive_history", self.random_state, id(measure))
        if key not in data.cache:
            split = _History(*split_table(data, self.random_state))
            data.cache[key] = (split, measure(split.train) if measure is not None else None, measure)
        split, x_hist, _ = data.cache[key]  # the measure is kept so that its id is not reused
        return split, x if x_hist is None else x_hist

    @staticmethod
    def _decoder_start(train: EventTable, labels: Any, k: int, n_items: int, backend: Backend):
        """log item shares of the starting clusters (weighted events of their members), smoothed."""
        import torch

        device = labels.device
        users, items, weight = (to_torch(backend.asarray(a)).to(device) for a in (train.user, train.item, train.weight))
        users, items, weight = users.long(), items.long(), weight.float()
        counts: torch.Tensor = torch.zeros(k * n_items, device=device)
        counts.index_add_(0, labels.long()[users] * n_items + items, weight)
        counts = counts.view(k, n_items) + SMOOTHING
        return torch.log(counts / counts.sum(1, keepdim=True))
