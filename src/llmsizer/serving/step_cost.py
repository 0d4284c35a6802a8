"""Time of one scheduler step of a continuously batched engine, from the model's per-op roofline.

A step runs one forward pass over a ragged batch: `d` decode sequences (one new token each) and
some prefill chunks (n_i new tokens of a prompt whose context reaches c_i). Every op of
`analysis.inference.forward_pass` is timed as max(FLOPs / compute rate, bytes / memory rate); this
module derives, once per configuration, what that costs for any mix:

    step_s = body(T) + head(R) + Σ_g attention_g + launch + host

  T = d + Σ n_i        tokens in the step (rows of every linear op)
  R = d + #chunks      sequences in the step (rows of the lm_head: logits for each last position)
  body(T)              Σ over the layers' linear/router ops of max(compute, memory), plus the
                       tensor-parallel all-reduces and pipeline hand-offs of T tokens. It depends on
                       T alone, so it is tabulated from forward_pass(batch=T, new=1) at both ends
                       of every band of T that fills the same GEMM tiles (see _grid) and
                       interpolated linearly in between.
  head(R)              the lm_head, tabulated the same way.
  attention_g          for the layers g sharing one attention window W (None: full), one fused
                       kernel over the whole ragged batch:
                       max(f_g · pairs / rate_attn, (k_g · keys + q_g · T) / rate_mem)
                       pairs = Σ_i pairs(n_i, c_i) + Σ_decode min(ctx, W) (causal (query, key)
                       pairs), keys = Σ min(c, W) keys read, f_g, k_g, q_g = FLOPs per pair, KV
                       bytes per key and Q/O bytes per token summed over the group's layers.
                       These are read off forward_pass's own attention ops at three small shapes,
                       the rates off two large ones (so nothing of its formula is re-derived).
  launch               forward_pass's per-kernel launch cost, paid by decode-only steps (prefill
                       passes have none in forward_pass; their kernels are long enough to hide it).
  host                 the engine's scheduler overhead per step and per sequence (engines.py).

For a windowed layer Σ_decode min(ctx, W) is taken as min(Σ ctx, d · W) (exact when all contexts
are on the same side of W). Pipeline stages run in series for each step, as in forward_pass.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from llmsizer.analysis.efficiency import Efficiency
from llmsizer.analysis.inference import OpCost, PassCost, ServingConfig, _topology, forward_pass
from llmsizer.specs.hardware import Accelerator
from llmsizer.specs.model import ModelSpec

ATTENTION = "attention.core"


def causal_pairs(new: int, context: int, window: int | None) -> int:
    """(query, key) pairs of `new` queries ending at position `context`, each seeing the keys at
    or before it (at most `window` of them)."""
    first = context - new + 1
    if window is None or context <= window:
        return new * (first + context) // 2
    below = max(0, window - first + 1)  # queries at positions <= W see all their keys
    return below * (first + window) // 2 + (new - below) * window


@dataclass(frozen=True)
class AttentionGroup:
    window: int | None
    layers: int
    flops_per_pair: float
    bytes_per_key: float
    bytes_per_token: float
    # MLA decode with weight absorption (forward_pass's "attention.core (absorbed)"): W_UK/W_UV
    # are read once per step and the query/output pass through them once per token
    bytes_per_step: float = 0.0
    flops_per_token: float = 0.0


def _grid(limit: int, tile: int) -> list[int]:
    """Token counts where body(T) is evaluated: every T to 16, then both ends of each band of T
    that fills the same number of `tile`-row GEMM tiles (powers of two below one tile, as the
    skinny kernels pick). Inside a band an op's compute time is constant (the padded tiles cost
    the same) and its memory time affine, so interpolating between band ends is exact but for the
    kink where an op turns from compute- to memory-bound."""
    pts = set(range(1, min(limit, 16) + 1))
    edge = 16
    while edge < limit:
        nxt = min(edge * 2, tile) if edge < tile else edge + tile
        pts.update((edge + 1, min(nxt, limit)))
        edge = nxt
    return sorted(p for p in pts if p <= limit)


class StepCost:
    """Per-configuration step-time model; see the module docstring for the decomposition."""

    def __init__(self, spec: ModelSpec, acc: Accelerator, cfg: ServingConfig, eff: Efficiency,
                 *, max_tokens: int, gpus_per_node: int = 8, step_overhead_s: float = 0.0,
                 seq_overhead_s: float = 0.0):
        topo = _topology(acc, gpus_per_node, eff)
        self.layers = spec.num_layers
        self.verify = 1  # tokens per decoding sequence per step (k + 1 with speculation)
        self.draft: DraftCost | None = None

        def run(batch: int, new: int, context: int, decode: bool) -> PassCost:
            return forward_pass(spec, acc, cfg, eff, batch, new, context, topology=topo,
                                decode=decode)

        self.grid = _grid(max(1, max_tokens), eff.tile_m)
        body, head = [], []
        launch = 0.0
        for t in self.grid:
            p = run(t, 1, 1, True)
            body.append(sum(o.time_s for o in p.ops if o.layer is not None
                            and not o.op.startswith(ATTENTION))
                        + p.comm_s)
            head.append(sum(o.time_s for o in p.ops if o.layer is None))
            launch = p.overhead_s
        self.body_s = body
        self.head_s = head
        self.launch_s = launch
        self.step_overhead_s = step_overhead_s
        self.seq_overhead_s = seq_overhead_s
        self._constant: dict[int, float] = {}  # decode_constant_s by batch (a copy gets its own)
        self.groups, self.rate_attn, self.rate_mem = _attention_groups(run)
        self.largest_group = max(self.groups, key=lambda x: x.layers)

    # -- pieces -------------------------------------------------------------------------------
    def _table(self, values: list[float], x: float) -> float:
        g = self.grid
        if x <= g[0]:
            return values[0] * x / g[0]
        i = bisect.bisect_left(g, x)
        if i >= len(g):  # beyond the grid: extend the last segment
            i = len(g) - 1
        x0, x1 = g[i - 1], g[i]
        return values[i - 1] + (values[i] - values[i - 1]) * (x - x0) / (x1 - x0)

    def body(self, tokens: float) -> float:
        return self._table(self.body_s, tokens)

    def head(self, rows: float) -> float:
        return self._table(self.head_s, rows)

    def attention(self, tokens: float, pairs: list[float], keys: list[float]) -> float:
        t = 0.0
        for g, p, k in zip(self.groups, pairs, keys, strict=True):
            t += max((g.flops_per_pair * p + g.flops_per_token * tokens) / self.rate_attn,
                     (g.bytes_per_key * k + g.bytes_per_token * tokens + g.bytes_per_step)
                     / self.rate_mem) if g.bytes_per_step or g.flops_per_token else max(
                g.flops_per_pair * p / self.rate_attn,
                (g.bytes_per_key * k + g.bytes_per_token * tokens) / self.rate_mem)
        return t

    # -- whole steps --------------------------------------------------------------------------
    def step_s(self, decode_seqs: int, decode_context: float,
               chunks: list[tuple[int, int]]) -> float:
        """One step: `decode_seqs` sequences whose contexts (new token included) sum to
        `decode_context`, plus prefill `chunks` of (new tokens, context reached)."""
        q = self.verify
        d = decode_seqs
        tokens = d * q
        rows = d * q + len(chunks)
        for n, _ in chunks:
            tokens += n
        # Pair and key counts are whole numbers far below 2⁵³: summed as integers they equal
        # the float sums term by term.
        extra_pairs, extra_keys = d * q * (q - 1) // 2, d * (q - 1)
        t = self.body(tokens) + self.head(rows)
        ra, rm = self.rate_attn, self.rate_mem
        a = 0.0
        for g in self.groups:
            w = g.window
            dk = decode_context if w is None else min(decode_context, d * w)
            p, k = q * dk + extra_pairs, dk + extra_keys
            for n, c in chunks:
                p += causal_pairs(n, c, w)
                k += c if w is None or c <= w else w
            if g.bytes_per_step or g.flops_per_token:
                a += max((g.flops_per_pair * p + g.flops_per_token * tokens) / ra,
                         (g.bytes_per_key * k + g.bytes_per_token * tokens + g.bytes_per_step)
                         / rm)
            else:
                a += max(g.flops_per_pair * p / ra,
                         (g.bytes_per_key * k + g.bytes_per_token * tokens) / rm)
        t += a
        if not chunks:
            t += self.launch_s
        if self.draft is not None:
            if d:
                t += self.draft.decode_constant_s(d) + self.draft.decode_attention_1(
                    d, float(decode_context))
            if chunks:
                t += self.draft.prefill_s(chunks)
        return t + self.step_overhead_s + self.seq_overhead_s * (d + len(chunks))

    def decode_constant_s(self, seqs: int) -> float:
        """The part of a decode-only step that does not depend on the contexts."""
        t = self._constant.get(seqs)
        if t is None:
            q = self.verify
            t = (self.body(seqs * q) + self.head(seqs * q) + self.launch_s
                 + self.step_overhead_s + self.seq_overhead_s * seqs)
            if self.draft is not None:
                t += self.draft.decode_constant_s(seqs)
            self._constant[seqs] = t
        return t

    def decode_attention_s(self, seqs: int, contexts: np.ndarray) -> np.ndarray:
        """Attention time of decode-only steps, vectorized over Σ context values."""
        q = self.verify
        ra, rm = self.rate_attn, self.rate_mem
        t: np.ndarray | None = None
        for g in self.groups:
            k = contexts if g.window is None else np.minimum(contexts, seqs * g.window)
            if q == 1:
                pairs, keys = k, k
            else:
                pairs = q * k + seqs * q * (q - 1) / 2
                keys = k + seqs * (q - 1)
            if g.bytes_per_step or g.flops_per_token:
                part = np.maximum((g.flops_per_pair * pairs + g.flops_per_token * seqs * q) / ra,
                                  (g.bytes_per_key * keys + g.bytes_per_token * seqs * q
                                   + g.bytes_per_step) / rm)
            else:
                part = np.maximum(g.flops_per_pair * pairs / ra,
                                  (g.bytes_per_key * keys + g.bytes_per_token * seqs * q) / rm)
            t = part if t is None else t + part
        if t is None:
            t = np.zeros_like(contexts, dtype=float)
        if self.draft is not None:
            t = t + self.draft.decode_attention_s(seqs, contexts)
        return t

    def decode_attention_1(self, seqs: int, context: float) -> float:
        """decode_attention_s for one Σ context value, in scalar arithmetic (the same operations
        in the same order, so the same result to the last bit)."""
        q = self.verify
        t = 0.0
        for g in self.groups:
            k = context if g.window is None else min(context, seqs * g.window)
            pairs = q * k + seqs * q * (q - 1) / 2
            keys = k + seqs * (q - 1)
            if g.bytes_per_step or g.flops_per_token:
                t += max((g.flops_per_pair * pairs + g.flops_per_token * seqs * q)
                         / self.rate_attn,
                         (g.bytes_per_key * keys + g.bytes_per_token * seqs * q
                          + g.bytes_per_step) / self.rate_mem)
            else:
                t += max(g.flops_per_pair * pairs / self.rate_attn,
                         (g.bytes_per_key * keys + g.bytes_per_token * seqs * q)
                         / self.rate_mem)
        if self.draft is not None:
            t += self.draft.decode_attention_1(seqs, context)
        return t

    def layer_attention_s(self, tokens: float, pairs: np.ndarray, keys: np.ndarray
                          ) -> np.ndarray:
        """Attention of one average layer of the largest group (a draft head's own layer)."""
        g = self.largest_group
        if g.bytes_per_step or g.flops_per_token:
            return np.maximum((g.flops_per_pair * pairs + g.flops_per_token * tokens) / g.layers
                              / self.rate_attn,
                              (g.bytes_per_key * keys + g.bytes_per_token * tokens
                               + g.bytes_per_step) / g.layers / self.rate_mem)
        return np.maximum(g.flops_per_pair / g.layers * pairs / self.rate_attn,
                          (g.bytes_per_key * keys + g.bytes_per_token * tokens) / g.layers
                          / self.rate_mem)


    def layer_attention_1(self, tokens: float, pairs: float, keys: float) -> float:
        """layer_attention_s for one value, in scalar arithmetic (same operations, same order)."""
        g = self.largest_group
        if g.bytes_per_step or g.flops_per_token:
            return max((g.flops_per_pair * pairs + g.flops_per_token * tokens) / g.layers
                       / self.rate_attn,
                       (g.bytes_per_key * keys + g.bytes_per_token * tokens
                        + g.bytes_per_step) / g.layers / self.rate_mem)
        return max(g.flops_per_pair / g.layers * pairs / self.rate_attn,
                   (g.bytes_per_key * keys + g.bytes_per_token * tokens) / g.layers
                   / self.rate_mem)


class DraftCost:
    """What drafting k tokens per step costs (serving/speculative.py says what is counted).

    draft model: `own` is the draft's StepCost (no host overhead); k of its decode steps at the
    mean drafting context, and its prefill of every chunk. MTP/EAGLE: `own` is None and one
    average layer of the target plus its lm_head stand for each drafted token."""

    def __init__(self, target: StepCost, k: int, own: StepCost | None):
        self.target, self.k, self.own = target, k, own
        self._constant: dict[int, float] = {}

    def decode_constant_s(self, d: int) -> float:
        c = self._constant.get(d)
        if c is None:
            if self.own is not None:
                o = self.own
                c = self.k * (o.body(d) + o.head(d) + o.launch_s)
            else:
                t = self.target
                c = self.k * (t.body(d) / t.layers + t.head(d) + t.launch_s / t.layers)
            self._constant[d] = c
        return c

    def decode_attention_s(self, d: int, contexts: np.ndarray) -> np.ndarray:
        mean = contexts + d * (self.k - 1) / 2  # drafts j = 0 … k−1 see context + j
        if self.own is not None:
            return self.k * self.own.decode_attention_s(d, mean)
        return self.k * self.target.layer_attention_s(d, mean, mean)

    def decode_attention_1(self, d: int, context: float) -> float:
        """decode_attention_s for one value, in scalar arithmetic."""
        mean = context + d * (self.k - 1) / 2
        if self.own is not None:
            return self.k * self.own.decode_attention_1(d, mean)
        return self.k * self.target.layer_attention_1(d, mean, mean)

    def prefill_s(self, chunks: list[tuple[int, int]]) -> float:
        if self.own is not None:
            return self.own.step_s(0, 0, chunks)
        t = self.target
        tokens = sum(n for n, _ in chunks)
        pairs = sum(causal_pairs(n, c, None) for n, c in chunks)
        keys = sum(c for _, c in chunks)
        return t.body(tokens) / t.layers + t.layer_attention_1(tokens, float(pairs), float(keys))


def _attention_groups(run) -> tuple[list[AttentionGroup], float, float]:  # type: ignore[no-untyped-def]
    """Per-layer attention coefficients from forward_pass's attention ops, grouped by window."""
    def att(p: PassCost) -> dict[int | None, OpCost]:
        return {o.layer: o for o in p.ops if o.op.startswith(ATTENTION)}

    far = 1 << 20
    a, b, c = att(run(1, 1, 1, True)), att(run(1, 1, 2, True)), att(run(1, 1, far, True))
    two = None
    groups: dict[int | None, list[float]] = {}
    for layer, oa in a.items():
        ob, oc = b[layer], c[layer]
        per_key = ob.bytes - oa.bytes
        per_step = per_pair_flops = per_token_flops = 0.0
        if oa.op == ATTENTION:
            per_token = oa.bytes - per_key
            per_pair_flops = oa.flops  # pairs = 1
        else:  # absorbed MLA: a second sequence tells per-token from per-step bytes
            two = two or att(run(2, 1, 1, True))
            od = two[layer]
            per_token = od.bytes - oa.bytes - per_key
            per_step = oa.bytes - per_key - per_token
            per_pair_flops = ob.flops - oa.flops
            per_token_flops = oa.flops - per_pair_flops
        kept = (oc.bytes - per_token - per_step) / per_key if per_key else far
        window = None if kept > far - 0.5 else round(kept)
        g = groups.setdefault(window, [0, 0.0, 0.0, 0.0, 0.0, 0.0])
        g[0] += 1
        g[1] += per_pair_flops
        g[2] += per_key
        g[3] += per_token
        g[4] += per_step
        g[5] += per_token_flops
    out = [AttentionGroup(w, int(v[0]), v[1], v[2], v[3], v[4], v[5])
           for w, v in groups.items()]
    # Rates: a long prefill's attention is compute-bound, a long decode's memory-bound.
    big = 16384
    rate_attn = rate_mem = math.nan
    for o in run(1, big, big, False).ops:
        if o.op == ATTENTION and o.bound == "compute" and o.time_s > 0:
            rate_attn = o.flops / o.time_s
            break
    for o in c.values():
        if o.bound == "memory" and o.time_s > 0:
            rate_mem = o.bytes / o.time_s
            break
    if math.isnan(rate_attn) or math.isnan(rate_mem):
        raise AssertionError("attention rates not derivable from forward_pass")
    return out, rate_attn, rate_mem
