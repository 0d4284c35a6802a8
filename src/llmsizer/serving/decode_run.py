"""The block arithmetic of a run of decode-only steps (serving/scheduler.py's fast path).

While nothing but decoding happens (no prefill can start, no request finishes, blocks last), the
scheduler advances many steps at once: their durations are a vector over the growing Σ context,
and the run stops at the next arrival, finish or block shortage. Decoding sequences are kept as
aggregates — their count B, Σ context S0 + B·A(D), and `res`, how many sit at each residue within
a block — so the blocks taken at each step of the run follow from `res` alone: without
speculation a sequence of residue r takes a new block at the steps where (r + step) is a multiple
of the block size, i.e. the demand cycles through `res` with period `bs`; with speculation a
sequence gains A(step+1) − A(step) tokens per step (⌊n·E⌋ after n steps) and takes one block per
multiple of `bs` crossed.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import accumulate

import numpy as np


class DecodeRun:
    """Up to `k` decode-only steps from decode step `D`, cut where the free blocks run out.

    `k` (after construction): how many steps the blocks allow (at least 1: the caller checked
    the first). `contexts()`: Σ context attended at each of those steps; `demand(n)`: blocks
    taken in total after each of the first n steps (None when the engine reserves every block at
    admission and a run takes none)."""

    __slots__ = ("k", "_S0", "_B", "_D", "_E", "_spec", "_reserve", "_cyc", "_a", "_run",
                 "_steps")

    def __init__(self, k: int, *, D: int, B: int, S0: int, free: int, res: list[int], bs: int,
                 E: float, A: Callable[[int], int], spec: bool, reserve: bool) -> None:
        self._S0, self._B, self._D, self._E = S0, B, D, E
        self._spec, self._reserve = spec, reserve
        self._cyc: list[int] = []
        self._a: np.ndarray | None = None
        self._run: list[int] | None = None  # cumulative demand, step by step (short runs)
        self._steps: np.ndarray | None = None  # demand per step (long runs, vectorized)
        if reserve:
            pass
        elif not spec:
            s0 = (1 - D) % bs  # blocks needed at steps D, D+1, …: res[(1 − D − j) % bs]
            cyc = res[s0::-1] + res[:s0:-1]
            qq, rem = divmod(free, B)
            j = 0
            while j < bs and cyc[j] <= rem:
                rem -= cyc[j]
                j += 1
            k = min(k, qq * bs + j)
            self._cyc = cyc
        elif k <= 8:  # step_need over the run, step by step
            a_run = [A(D - 1 + j) for j in range(k + 1)]
            cum, demand_run = 0, []
            for j in range(k):
                full, part = divmod(a_run[j + 1] - a_run[j], bs)
                cum += full * B + sum(res[-(a_run[j] + i) % bs] for i in range(part))
                if cum > free:
                    k = j
                    break
                demand_run.append(cum)
            self._a = np.array(a_run, dtype=np.int64)
            self._run = demand_run
        else:  # step_need over the run, vectorized
            k = min(k, 1024)
            a = np.floor((D - 1 + np.arange(k + 1)) * E + 1e-9).astype(np.int64)
            full, part = np.divmod(np.diff(a), bs)
            rot = np.array([res[-m % bs] for m in range(bs)] * 2, dtype=np.int64)
            window = np.concatenate(([0], np.cumsum(rot)))
            start = a[:-1] % bs
            steps = full * B + window[start + part] - window[start]
            k = min(k, int(np.searchsorted(np.cumsum(steps), free, side="right")))
            self._a, self._steps = a, steps
        self.k = k

    def contexts(self) -> np.ndarray:
        """Σ context of the decoding sequences at each of the run's k steps."""
        S0, B, D, k = self._S0, self._B, self._D, self.k
        if self._spec and not self._reserve:
            assert self._a is not None
            return S0 + B * self._a[1:k + 1].astype(float)
        if self._spec:
            return S0 + B * np.floor((D + np.arange(k)) * self._E + 1e-9)
        # S0 + B·(D + j): whole numbers, exact in floating point
        return np.arange(S0 + B * D, S0 + B * (D + k), B, dtype=float)

    def demand(self, n: int) -> np.ndarray | None:
        """Blocks taken in total after each of the first n ≤ k steps."""
        if self._reserve:
            return None
        if self._spec:
            if self._steps is None:
                assert self._run is not None
                return np.array(self._run[:n], dtype=float)
            return np.cumsum(self._steps[:n]).astype(float)
        cyc, bs = self._cyc, len(self._cyc)
        if n <= 4 * bs:
            return np.array(list(accumulate(cyc[j % bs] for j in range(n))), dtype=float)
        return np.cumsum(np.tile(np.array(cyc, dtype=float), -(-n // bs))[:n])
