"""Latency and throughput metrics as `vllm bench serve` defines them (vllm/benchmarks/serve.py
`calculate_metrics`): TTFT = first token − send; E2E = last token − send; TPOT per request =
(E2E − TTFT) / (output − 1), over requests with more than one output token (0 for the others when
judging goodput); ITL = every gap between consecutive tokens, pooled over all requests;
throughput = tokens / benchmark duration (start to the last completion); goodput = requests per
second meeting every given SLO (metric ≤ SLO). Percentiles as numpy.percentile (linear).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Distribution:
    mean: float
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, values: np.ndarray) -> Distribution:
        if values.size == 0:
            return cls(0.0, 0.0, 0.0, 0.0)
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return cls(float(values.mean()), float(p50), float(p90), float(p99))

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "p50": self.p50, "p90": self.p90, "p99": self.p99}


def pooled(values: list[np.ndarray], weights: list[np.ndarray]) -> np.ndarray:
    """Samples stored as (value, count) runs, expanded to the pooled list vllm would hold."""
    if not values:
        return np.zeros(0)
    v = np.concatenate(values)
    w = np.concatenate(weights).astype(np.int64)
    return np.repeat(v, w)


def tpot_per_request(ttft: np.ndarray, e2e: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """(E2E − TTFT)/(output − 1); 0 where output ≤ 1 (vLLM's all_tpots)."""
    out = np.zeros_like(e2e)
    many = outputs > 1
    out[many] = (e2e[many] - ttft[many]) / (outputs[many] - 1)
    return out


def binned(t: np.ndarray, v: np.ndarray, end: float, bins: int) -> tuple[list[float], list[float]]:
    """A series downsampled to `bins` equal intervals of [0, end]: the mean of the samples in each
    (the previous bin's value where none fell)."""
    if end <= 0 or t.size == 0:
        return [], []
    edges = np.linspace(0.0, end, bins + 1)
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, bins - 1)
    sums = np.bincount(idx, weights=v, minlength=bins)
    counts = np.bincount(idx, minlength=bins)
    out, last = [], 0.0
    for s, c in zip(sums, counts, strict=True):
        last = s / c if c else last
        out.append(float(last))
    return [float(x) for x in edges[1:]], out
