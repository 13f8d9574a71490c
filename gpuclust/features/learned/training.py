"""The training loop the learned featurisers share.

- Seeds: `seeded(seed)` fixes torch's global generator (initial weights, dropout) and returns the
  generators the caller samples from; batch plans come from a seeded NumPy generator. The same seed,
  data and device give the same weights.
- Early stopping on a held-out slice of events: after each epoch `validate()` reports a loss (lower is
  better) and a hit rate; training stops once the loss has not improved for `patience` epochs, and the
  best epoch's weights are restored.
- Progress: `progress(text)` receives one line (epoch, a bar, running loss, the last validation
  figures) at most twice a second; the CLI shows it in its stage line.
- Precision: `torch.autocast` with bf16 where the GPU supports it, fp16 (with a gradient scaler)
  otherwise, fp32 on the CPU unless asked; the optimiser state and master weights stay fp32.
- Out of memory: the step is redone with the batch split in halves (gradients accumulate, one
  optimiser step), and `shrink()` halves the planner's budget for the rest of training.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from gpuclust.compat import torch_oom_error
from gpuclust.errors import UsageError
from gpuclust.features.learned import defaults
from gpuclust.features.text.encoder import autocast_context, resolve_precision

PROGRESS_SECONDS = 0.5
MIN_IMPROVEMENT = 1e-3  # relative: a validation loss must fall by 0.1% to count as better
T = TypeVar("T")


@contextlib.contextmanager
def torch_threads(device: str):
    """On the CPU, train and encode with `defaults.cpu_threads()` torch threads, then restore the count."""
    import torch

    if str(device).startswith("cuda"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(defaults.cpu_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seeded(seed: int, device: str):
    """Fix torch's global generator and return a generator on `device` for sampling negatives."""
    import torch

    torch.manual_seed(seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def capped(plan: Callable[[], Sequence[T]], epochs: int, steps_per_epoch: int,
           max_steps: int | None) -> tuple[Callable[[], Sequence[T]], int]:
    """`plan` and `epochs` cut to about `max_steps` optimiser steps (benchmarks' short samples): at most that
    many batches an epoch, and only the epochs they need; both as given where `max_steps` is None."""
    if max_steps is None:
        return plan, epochs
    return (lambda: plan()[:max_steps]), min(epochs, -(-max_steps // max(steps_per_epoch, 1)))


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float | None
    val_hr10: float | None
    seconds: float  # the whole epoch, validation included
    validation_seconds: float
    units: int  # tokens (sequence) or users (autoencoder) trained on


@dataclass
class TrainReport:
    """What the manifest keeps of a training run."""

    device: str
    precision: str
    parameters: int
    epochs_max: int
    epochs_run: int = 0
    best_epoch: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0  # the whole fit, validation included
    validation_seconds: float = 0.0
    final_train_loss: float | None = None
    best_val_loss: float | None = None
    best_val_hr10: float | None = None
    units_per_s: float = 0.0
    oom_retries: int = 0
    history: list[EpochRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["train_seconds"] = round(self.train_seconds, 3)
        out["validation_seconds"] = round(self.validation_seconds, 3)
        out["units_per_s"] = round(self.units_per_s, 1)
        for row in out["history"]:
            for key in ("train_loss", "val_loss", "val_hr10", "seconds", "validation_seconds"):
                if row[key] is not None:
                    row[key] = round(row[key], 5)
        return out


class Trainer:
    """Adam over `model`'s parameters; `fit` runs epochs of `plan()` batches through `loss_of`.

    loss_of(batch) -> (summed loss tensor, count) under autocast; units(batch) -> the count loss_of
    will report, known before the forward pass (it is the denominator when a batch is split).
    """

    def __init__(self, name: str, model: Any, *, learning_rate: float, epochs: int, patience: int,
                 precision: str, device: str, progress: Callable[[str], None] | None = None,
                 weight_decay: float = 0.0) -> None:
        self.name = name
        self.model = model
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.patience = patience
        self.device = device
        if precision == "fp16" and not str(device).startswith("cuda"):  # the text encoder's advice names int8
            raise UsageError(f"features.{name}.precision 'fp16' needs a CUDA device; on the CPU choose fp32, bf16 "
                             "or auto, or run with --device cuda")
        self.precision = resolve_precision(precision, device)
        self.progress = progress
        self.weight_decay = weight_decay

    def autocast(self):
        return autocast_context(self.precision, self.device)

    def fit(self, plan: Callable[[], Sequence[Any]], loss_of: Callable[[Any], tuple[Any, int]],
            units: Callable[[Any], int], validate: Callable[[], dict[str, float]] | None = None,
            shrink: Callable[[], None] | None = None, split: Callable[[Any], list[Any]] | None = None,
            work: Callable[[Any], int] | None = None) -> TrainReport:
        import torch

        model = self.model
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        report = TrainReport(str(self.device), self.precision, sum(p.numel() for p in params), self.epochs)
        best_state, best_loss, waited = None, math.inf, 0
        started = time.perf_counter()
        trained_units, last_shown = 0, 0.0
        for epoch in range(1, self.epochs + 1):
            epoch_started = time.perf_counter()
            model.train()
            batches = list(plan())
            total, count, epoch_units = 0.0, 0, 0
            for i, batch in enumerate(batches):
                loss, n = self._step(batch, loss_of, units, split, shrink, report)
                total, count = total + loss, count + n  # a device scalar: read once a line or an epoch
                epoch_units += work(batch) if work else units(batch)
                now = time.perf_counter()
                if self.progress is not None and (now - last_shown > PROGRESS_SECONDS or i + 1 == len(batches)):
                    last_shown = now
                    self.progress(self._line(epoch, (i + 1) / max(len(batches), 1), float(total) / max(count, 1),
                                             report))
            train_loss = float(total) / max(count, 1)
            if not math.isfinite(train_loss):
                raise UsageError(f"{self.name}: the training loss became {train_loss} in epoch {epoch}; lower "
                                 "the learning rate or use fp32 precision")
            val, validation_started = None, time.perf_counter()
            if validate is not None:
                model.eval()
                with torch.no_grad(), self.autocast():
                    val = validate()
            validation_seconds = time.perf_counter() - validation_started
            report.validation_seconds += validation_seconds
            trained_units += epoch_units
            report.history.append(EpochRecord(epoch, train_loss, None if val is None else val["loss"],
                                              None if val is None else val.get("hr10"),
                                              time.perf_counter() - epoch_started, validation_seconds, epoch_units))
            report.epochs_run, report.final_train_loss = epoch, train_loss
            if val is None:
                continue
            if val["loss"] < best_loss - MIN_IMPROVEMENT * abs(best_loss if math.isfinite(best_loss) else 0):
                best_loss, waited = val["loss"], 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                report.best_epoch, report.best_val_loss, report.best_val_hr10 = epoch, val["loss"], val.get("hr10")
            else:
                waited += 1
                if waited > self.patience:
                    report.stopped_early = True
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
        else:
            report.best_epoch = report.epochs_run
        model.eval()
        if str(self.device).startswith("cuda"):
            torch.cuda.synchronize()
        report.train_seconds = time.perf_counter() - started
        stepping = report.train_seconds - report.validation_seconds
        report.units_per_s = trained_units / stepping if stepping > 0 else 0.0
        return report

    def _step(self, batch, loss_of, units, split, shrink, report: TrainReport) -> tuple[Any, int]:
        """One optimiser step over `batch`; on out-of-memory, over its halves (accumulated) instead.
        Returns the summed loss as a device scalar (no host sync per step) and the units it covers."""
        import torch

        out_of_memory = torch_oom_error()
        pieces = [batch]
        denominator = max(int(units(batch)), 1)
        while True:
            self.optimizer.zero_grad(set_to_none=True)
            failed = False
            total, count = 0.0, 0
            try:
                for piece in pieces:
                    with self.autocast():
                        loss, n = loss_of(piece)
                    self.scaler.scale(loss.float() / denominator).backward()
                    total, count = total + loss.detach().float(), count + int(n)
            except out_of_memory:
                failed = True  # recover outside the handler, once the failed frames are freed
            if not failed:
                break
            self.optimizer.zero_grad(set_to_none=True)
            if split is None or all(len(getattr(p, "rows", [0, 0])) < 2 for p in pieces):
                raise UsageError(f"{self.name}: out of GPU memory on a batch of one user; lower max_length or "
                                 "the model size, or free GPU memory")
            report.oom_retries += 1
            if str(self.device).startswith("cuda"):
                torch.cuda.empty_cache()
            if shrink is not None:
                shrink()
            pieces = [half for p in pieces for half in split(p)]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return total, count

    def _line(self, epoch: int, done: float, loss: float, report: TrainReport) -> str:
        width = 20
        filled = int(round(done * width))
        bar = "█" * filled + "░" * (width - filled)
        text = f"{self.name}: epoch {epoch}/{self.epochs} {bar} {done:4.0%} loss {loss:.4f}"
        if report.history and report.history[-1].val_loss is not None:
            last = report.history[-1]
            text += f" | val loss {last.val_loss:.4f}"
            if last.val_hr10 is not None:
                text += f" HR@10 {last.val_hr10:.3f}"
        return text
