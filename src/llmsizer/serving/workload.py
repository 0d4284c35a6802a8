"""Request streams: arrival times and prompt/output lengths, deterministic for a seed.

Arrivals follow `vllm bench serve` (vllm/benchmarks/serve.py `get_request`): inter-arrival gaps
~ Gamma(shape = burstiness, scale = 1 / (rate · burstiness)) — mean 1/rate; burstiness 1 is a
Poisson process, < 1 burstier, > 1 more regular, inf evenly spaced — then the cumulative delays
are rescaled so the last request lands at N / rate. A closed loop of N clients (`--concurrency`
without `--qps`) sends all it can at t = 0 and a new request whenever one finishes, as
`vllm bench serve --request-rate inf --max-concurrency N` does.

Lengths: fixed, or spread around a mean: `uniform:F` draws uniformly from [(1 − F)·L, (1 + F)·L]
(vllm bench serve's random dataset `--random-range-ratio F`), `normal:F` a normal with standard
deviation F·L, `exponential` an exponential with mean L; all rounded and at least 1 token. A trace
(JSON list of objects or CSV with a header) gives prompt_tokens, output_tokens and optionally
arrival_s per request. A shared prefix (`--prefix-fraction F`: the first F of every prompt is the
same text, e.g. a system prompt) is served from a warm prefix cache in whole blocks.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmsizer.errors import SpecError

SPREADS = ("fixed", "uniform:F", "normal:F", "exponential")


@dataclass(frozen=True)
class Workload:
    """K requests: lengths per request, and arrival times (None: a closed loop decides them)."""

    prompt_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]
    arrival_s: tuple[float, ...] | None
    concurrency: int | None = None  # cap on requests in flight (client-side semaphore)
    description: str = ""
    prefix_fraction: float = 0.0  # leading share of every prompt common to all requests

    def cached_tokens(self, block_size: int) -> list[int]:
        """Prompt tokens a warm prefix cache serves per request: the shared prefix in whole
        blocks, leaving at least the last prompt token to compute (as vLLM does on a full hit)."""
        f = self.prefix_fraction
        return [min(math.floor(f * p), p - 1) // block_size * block_size
                for p in self.prompt_tokens]

    def __post_init__(self) -> None:
        if len(self.prompt_tokens) != len(self.output_tokens) or not self.prompt_tokens:
            raise SpecError("requests", len(self.prompt_tokens), "at least one request")
        if not 0 <= self.prefix_fraction <= 1:
            raise SpecError("prefix-fraction", self.prefix_fraction, "a fraction in [0, 1]")
        if self.arrival_s is None and self.concurrency is None:
            raise SpecError("qps", None, "a rate (--qps) or a number of clients (--concurrency)")

    @property
    def requests(self) -> int:
        return len(self.prompt_tokens)


def gamma_arrivals(n: int, rate: float, burstiness: float, rng: np.random.Generator
                   ) -> list[float]:
    """Send times of n requests at `rate` per second (vllm bench serve's get_request)."""
    if math.isinf(rate):
        return [0.0] * n
    if math.isinf(burstiness):
        delays = np.full(n, 1.0 / rate)
    else:
        delays = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    cum = np.cumsum(delays)
    if cum[-1] > 0:
        cum *= (n / rate) / cum[-1]
    return [float(x) for x in cum]


def parse_spread(text: str | None, flag: str) -> tuple[str, float]:
    if text is None or text == "fixed":
        return "fixed", 0.0
    if text == "exponential":
        return "exponential", 0.0
    kind, _, value = text.partition(":")
    try:
        f = float(value)
    except ValueError:
        f = -1.0
    if kind not in ("uniform", "normal") or not (0 <= f < (1 if kind == "uniform" else math.inf)):
        raise SpecError(flag, text, "fixed, uniform:F (0 <= F < 1), normal:F (F >= 0) or "
                        "exponential")
    return kind, f


def draw_lengths(n: int, mean: int, spread: tuple[str, float], rng: np.random.Generator
                 ) -> list[int]:
    kind, f = spread
    if kind == "fixed":
        return [mean] * n
    if kind == "uniform":
        lo, hi = max(1, math.floor(mean * (1 - f))), max(1, math.ceil(mean * (1 + f)))
        return [int(x) for x in rng.integers(lo, hi + 1, size=n)]
    x = rng.normal(mean, f * mean, size=n) if kind == "normal" else rng.exponential(mean, size=n)
    return [max(1, int(round(v))) for v in x]


def synthetic(requests: int, prompt: int, output: int, *, qps: float | None,
              concurrency: int | None, burstiness: float = 1.0, seed: int = 0,
              prompt_spread: str | None = None, output_spread: str | None = None) -> Workload:
    for name, v in (("requests", requests), ("prompt", prompt), ("output", output)):
        if not isinstance(v, int) or v < 1:
            raise SpecError(name, v, "a positive integer")
    if qps is not None and not qps > 0:
        raise SpecError("qps", qps, "a positive rate (requests per second) or inf")
    if not burstiness > 0:
        raise SpecError("burstiness", burstiness, "a positive number (1 = Poisson) or inf")
    rng = np.random.default_rng(seed)
    # Lengths first, then arrivals, each from its own stream: a new rate keeps the same requests.
    len_rng, arr_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**63, size=2))
    prompts = draw_lengths(requests, prompt, parse_spread(prompt_spread, "prompt-spread"),
                           len_rng)
    outputs = draw_lengths(requests, output, parse_spread(output_spread, "output-spread"),
                           len_rng)
    arrivals = None if qps is None else gamma_arrivals(requests, qps, burstiness, arr_rng)
    desc = (f"closed loop of {concurrency} clients" if qps is None else
            f"{qps:g} req/s, burstiness {burstiness:g}"
            + (f", at most {concurrency} in flight" if concurrency else ""))
    return Workload(tuple(prompts), tuple(outputs), None if arrivals is None else tuple(arrivals),
                    concurrency, desc)


def from_trace(path: str, *, qps: float | None, concurrency: int | None, burstiness: float = 1.0,
               seed: int = 0, requests: int | None = None) -> Workload:
    """A trace: JSON (a list of objects) or CSV with columns prompt_tokens, output_tokens and
    optionally arrival_s. Without arrival_s the arrivals come from --qps or --concurrency."""
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except OSError:
        raise SpecError("trace", path, "a readable JSON or CSV file") from None
    try:
        rows = json.loads(text) if p.suffix.lower() == ".json" else list(csv.DictReader(
            text.splitlines()))
    except json.JSONDecodeError as e:
        raise SpecError("trace", path, f"valid JSON (broken at line {e.lineno})") from None
    if isinstance(rows, dict):
        rows = rows.get("requests", rows)
    if not isinstance(rows, list) or not rows:
        raise SpecError("trace", path, "a non-empty list of requests")
    if requests is not None:
        rows = rows[:requests]
    prompts: list[int] = []
    outputs: list[int] = []
    arrivals: list[float] = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise SpecError(f"trace[{i}]", r, "an object with prompt_tokens and output_tokens")
        for key, out in (("prompt_tokens", prompts), ("output_tokens", outputs)):
            try:
                v = int(float(r[key]))
            except (KeyError, TypeError, ValueError):
                raise SpecError(f"trace[{i}].{key}", r.get(key), "a positive integer") from None
            if v < 1:
                raise SpecError(f"trace[{i}].{key}", v, "a positive integer")
            out.append(v)
        a = r.get("arrival_s")
        if a not in (None, ""):
            try:
                arrivals.append(float(a))
            except (TypeError, ValueError):
                raise SpecError(f"trace[{i}].arrival_s", a, "seconds (a number)") from None
    if arrivals and len(arrivals) != len(rows):
        raise SpecError("trace", path, "arrival_s on every request or on none")
    if arrivals:
        if any(b < a for a, b in zip(arrivals, arrivals[1:], strict=False)) or arrivals[0] < 0:
            raise SpecError("trace", path, "arrival_s non-negative and non-decreasing")
        times: list[float] | None = arrivals
        desc = f"trace {p.name} with its arrival times"
    elif qps is not None:
        times = gamma_arrivals(len(rows), qps, burstiness, np.random.default_rng(seed))
        desc = f"trace {p.name}, {qps:g} req/s, burstiness {burstiness:g}"
    elif concurrency is not None:
        times, desc = None, f"trace {p.name}, closed loop of {concurrency} clients"
    else:
        raise SpecError("qps", None, "a rate (--qps) or --concurrency: the trace has no "
                        "arrival_s")
    return Workload(tuple(prompts), tuple(outputs), None if times is None else tuple(times),
                    concurrency, desc)
