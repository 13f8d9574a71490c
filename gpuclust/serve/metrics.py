"""The service's counters, in the Prometheus text exposition format (version 0.0.4), without a client library.

Requests and errors by endpoint and status code, a latency histogram per endpoint, the sizes of the
micro-batches (users and requests), the model being served, the share of each cluster among the
users assigned since that model was loaded, and the drift of those users against the fit
(`quality.drift`), with an alert flag per measure.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from gpuclust.quality.drift import DriftCounts, Thresholds, compare

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
ENDPOINTS = ("/v1/assign", "/v1/recommend", "/v1/clusters", "/v1/admin/reload", "/healthz", "/metrics")


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: dict[str, str]) -> list[str]:
        out, running = [], 0
        for bound, n in zip((*self.buckets, "+Inf"), self.counts, strict=True):
            running += n
            out.append(f"{name}_bucket{_labels({**labels, 'le': str(bound)})} {running}")
        out.append(f"{name}_sum{_labels(labels)} {self.sum:.6f}")
        out.append(f"{name}_count{_labels(labels)} {self.count}")
        return out


class Metrics:
    """Everything /metrics shows; updated on the event loop only, so it needs no lock."""

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.started = time.time()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.latency = {endpoint: Histogram(LATENCY_BUCKETS) for endpoint in (*ENDPOINTS, "other")}
        self.batch_users = Histogram(SIZE_BUCKETS)
        self.batch_requests = Histogram(SIZE_BUCKETS)
        self.reloads: Counter[str] = Counter()
        self.thresholds = thresholds or Thresholds()
        self.model_reset()

    def model_reset(self) -> None:
        """A new model: its assignments and drift start from zero."""
        self.assigned = DriftCounts()
        self.unplaced = 0

    def observe_request(self, path: str, code: int, seconds: float) -> None:
        endpoint = path if path in ENDPOINTS else "other"  # hostile paths must not grow the label set
        self.requests[(endpoint, int(code))] += 1
        self.latency[endpoint].observe(seconds)

    def observe_batch(self, users: int, requests: int) -> None:
        self.batch_users.observe(users)
        self.batch_requests.observe(requests)

    def render(self, state: Any) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[str]) -> None:
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples])

        family("gpuclust_requests_total", "counter", "HTTP requests by endpoint and status code.",
               [f"gpuclust_requests_total{_labels({'endpoint': e, 'code': str(c)})} {n}"
                for (e, c), n in sorted(self.requests.items())])
        family("gpuclust_request_errors_total", "counter", "HTTP requests answered with a 4xx or 5xx code.",
               [f"gpuclust_request_errors_total{_labels({'endpoint': e, 'code': str(c)})} {n}"
                for (e, c), n in sorted(self.requests.items()) if c >= 400])
        family("gpuclust_request_duration_seconds", "histogram", "Time from request to response, by endpoint.",
               [line for e, h in self.latency.items() if h.count
                for line in h.lines("gpuclust_request_duration_seconds", {"endpoint": e})])
        family("gpuclust_batch_users", "histogram", "Users placed per pass through the model (micro-batch).",
               self.batch_users.lines("gpuclust_batch_users", {}))
        family("gpuclust_batch_requests", "histogram", "Requests merged per pass through the model.",
               self.batch_requests.lines("gpuclust_batch_requests", {}))
        family("gpuclust_model_info", "gauge", "The model being served (value 1).",
               [f"gpuclust_model_info{_labels(state.info_labels())} 1"])
        family("gpuclust_model_loaded_timestamp_seconds", "gauge", "When the model being served was loaded.",
               [f"gpuclust_model_loaded_timestamp_seconds {state.loaded_at:.3f}"])
        family("gpuclust_model_reloads_total", "counter", "Reloads (SIGHUP or /v1/admin/reload) by result.",
               [f"gpuclust_model_reloads_total{_labels({'result': r})} {self.reloads.get(r, 0)}"
                for r in ("ok", "refused")])
        a = self.assigned
        family("gpuclust_users_assigned_total", "counter", "Users placed since the model was loaded.",
               [f"gpuclust_users_assigned_total {a.users}"])
        family("gpuclust_users_unplaced_total", "counter", "Users of a request that could not be placed.",
               [f"gpuclust_users_unplaced_total {self.unplaced}"])
        k = state.k
        shares = [(a.cluster_users[c] if c < len(a.cluster_users) else 0) / a.users if a.users else 0.0
                  for c in range(k)]
        family("gpuclust_cluster_share", "gauge", "Share of each cluster among the users assigned since load.",
               [f"gpuclust_cluster_share{_labels({'cluster': str(c)})} {s:.6f}" for c, s in enumerate(shares)])
        family("gpuclust_cluster_share_fit", "gauge", "Share of each cluster among the users the model was fitted on.",
               [f"gpuclust_cluster_share_fit{_labels({'cluster': str(c)})} {s:.6f}"
                for c, s in enumerate(state.drift_baseline["cluster_shares"])])
        rows = compare(state.drift_baseline, a, self.thresholds) if a.users else []
        family("gpuclust_drift", "gauge", "Drift of the users assigned since load against the fit "
               "(gpuclust drift's measures).", [f"gpuclust_drift{_labels({'measure': r['metric']})} {r['value']:.6f}"
                                                 for r in rows])
        family("gpuclust_drift_alert", "gauge", "1 where a drift measure is past its threshold.",
               [f"gpuclust_drift_alert{_labels({'measure': r['metric']})} {int(r['alert'])}" for r in rows])
        family("gpuclust_uptime_seconds", "gauge", "Seconds since the service started.",
               [f"gpuclust_uptime_seconds {time.time() - self.started:.3f}"])
        return "\n".join(lines) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + body + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
