"""The continuous-batching loop of one engine instance (a replica), step by step.

Semantics follow vLLM's V1 scheduler (vllm@00024d3 vllm/v1/core/sched/scheduler.py): every step
first serves RUNNING requests — each decoding sequence gets one token, a partially prefilled one
its next chunk — then admits WAITING requests in order while the token budget
(max_num_batched_tokens), the sequence limit (max_num_seqs) and free KV blocks allow, cutting the
last prompt into a chunk. KV blocks are taken as sequences grow; when a step's blocks are not there
the newest running request is preempted: its blocks are freed, its computed tokens forgotten, and
it goes back to the front of WAITING to be recomputed (prompt + tokens generated so far) — and no
new request is admitted in that step. A request whose prefill completes emits its first token at
the end of that step; a decoding sequence emits one token per step.

Engines that do not mix (SGLang) run a prefill-only step whenever a prefill can be scheduled and
a decode-only step otherwise; engines that reserve (TRT-LLM) admit a request only when blocks for
its prompt and output are free, and never preempt.

Speed (10,000 requests in well under a second): decoding sequences are not visited one by one
but kept as aggregates (count, Σ context, residues within a block, a heap of finishing steps), so
a step costs O(1) Python work plus O(chunks), and runs of decode-only steps are advanced at once
(serving/decode_run.py). What a run records is serving/replica_trace.py's ReplicaTrace.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Sequence
from math import floor

import numpy as np

from llmsizer.serving.decode_run import DecodeRun
from llmsizer.serving.engines import EngineProfile
from llmsizer.serving.replica_trace import ReplicaTrace
from llmsizer.serving.speculative import steps_to_reach
from llmsizer.serving.step_cost import StepCost

MAX_RUN = 4096  # steps advanced at once, at most


def run_replica(cost: StepCost, engine: EngineProfile, num_blocks: int, max_num_seqs: int,
                prompts: Sequence[int], outputs: Sequence[int],
                scheduled_s: Sequence[float], concurrency: int | None,
                progress: Callable[[int], None] | None = None,
                cached: Sequence[int] | None = None, expected_tokens: float = 1.0,
                lookahead: int = 0, loaded: Sequence[int] | None = None) -> ReplicaTrace:
    """Simulate one engine instance serving `prompts`/`outputs`, sent at `scheduled_s` (at most
    `concurrency` in flight when given: a client-side semaphore, as in vllm bench serve).
    `cached`: prompt tokens per request found in the prefix cache (whole blocks of one shared
    prefix, kept resident: their blocks are taken from the pool once and never freed).
    Speculative decoding: every decoding sequence gains ⌊n·E⌋ tokens over the first n decode
    steps (`expected_tokens` E) and holds `lookahead` KV slots beyond its context.
    `loaded` (a decode instance of a disaggregated deployment, instead of `cached`): prompt tokens
    per request whose KV arrives with it from a prefill instance: not computed again, but held in
    blocks of the request's own, and lost if it is preempted (then recomputed here)."""
    n_req = len(prompts)
    bs = engine.block_size
    max_tokens = engine.max_num_batched_tokens
    mixed, chunked = engine.mixed_batches, engine.chunked_prefill
    reserve = engine.admission == "reserve"
    E, L = expected_tokens, lookahead
    spec = E != 1.0 or L != 0
    q = cost.verify  # budget tokens per decoding sequence

    def A(step: int) -> int:  # tokens a decoding sequence gains over decode steps 0 … step−1
        return step if E == 1.0 else floor(step * E + 1e-9)  # = cumulative_tokens(step, E)

    def ceil_div(a: int) -> int:
        return -((-a) // bs)
    nan = math.nan
    tr = ReplicaTrace([nan] * n_req, [nan] * n_req, [nan] * n_req, total_blocks=num_blocks)
    send, first, finish = tr.send_s, tr.first_token_s, tr.finish_s
    itl_v, itl_w = tr.itl_values, tr.itl_weights
    one_v: list[float] = []  # single ITL samples since the last run of steps (value, count)
    one_w: list[float] = []

    def flush_itl() -> None:
        """Single samples become one array before a run's array (order kept)."""
        if one_v:
            itl_v.append(np.array(one_v))
            itl_w.append(np.array(one_w))
            one_v.clear()
            one_w.clear()

    # Client: requests leave in order; a semaphore slot frees when a request finishes.
    free_slots: deque[float] = deque([0.0] * concurrency) if concurrency else deque()
    nxt = 0  # next request to send

    def next_send() -> float:
        if nxt >= n_req or (concurrency and not free_slots):
            return math.inf
        return max(scheduled_s[nxt], free_slots[0]) if concurrency else scheduled_s[nxt]

    # Engine state.
    hit = list(loaded) if loaded else list(cached) if cached else [0] * n_req
    hitb = [0] * n_req if loaded else [h // bs for h in hit]
    free = num_blocks - max(hitb, default=0)
    now = 0.0
    D = 0  # decode steps so far: the clock of every decoding sequence
    t_dec_end = 0.0  # end of the last step that decoded
    waiting: deque[int] = deque()
    running: dict[int, None] = {}  # insertion order = admission order (newest last)
    prefilling: list[int] = []  # running requests still computing their prompt, in order
    computed = [0] * n_req  # tokens with KV (requests not decoding)
    gen = [0] * n_req  # output tokens emitted so far (requests not decoding)
    held = [0] * n_req  # KV blocks held (requests not decoding; reserve mode: all requests)
    t_last = [0.0] * n_req  # last emission (for the gap after a recompute)
    # Decoding sequences as aggregates.
    B = 0
    S0 = 0  # Σ (c_join − A(D_join) + 1): Σ context at decode step D is S0 + B·A(D)
    # Count by r = (c_join + 1 + L − A(D_join)) mod bs: before decode step D a sequence holds
    # ⌈(r + A(D−1))/bs⌉ blocks beyond whole ones and needs ⌈(r + A(D))/bs⌉ for it (without
    # speculation: a block when (c_join − D_join + D) % bs == 0).
    res = [0] * bs
    heap: list[tuple[int, int]] = []  # (decode step of the last token, request)
    d_join = [-1] * n_req
    c_join = [0] * n_req
    g_join = [0] * n_req
    joined: dict[int, float] = {}  # joined decoding since the last decode step: emission time
    done = 0
    plen, olen = prompts, outputs

    def leave_decode(rid: int) -> int:
        """Remove a decoding sequence; returns its computed tokens before step D."""
        nonlocal B, S0
        dj, cj = d_join[rid], c_join[rid]
        B -= 1
        adj = A(dj)
        S0 -= cj - adj + 1
        res[(cj + 1 + L - adj) % bs] -= 1
        d_join[rid] = -1
        gen[rid] = g_join[rid] + A(D) - adj
        return cj + A(D) - adj

    def held_before(x: int) -> int:
        """Blocks a decoding sequence with context x holds before decode step D."""
        return ceil_div(x + 1 + L - (A(D) - A(D - 1)))

    def step_need(step: int) -> int:
        """Blocks the decoding sequences need for decode step `step`. A sequence of residue r
        needs ⌈(r + a1)/bs⌉ − ⌈(r + a0)/bs⌉ = #{multiples of bs in [r + a0, r + a1 − 1]}: every
        sequence one per whole bs of a1 − a0, and those with r ≡ −(a0 + j) for j below the
        rest."""
        if not spec:
            return res[(1 - step) % bs]
        a0 = A(step - 1)
        full, part = divmod(A(step) - a0, bs)
        need = full * B
        for j in range(part):
            need += res[-(a0 + j) % bs]
        return need

    def finish_step(rid: int) -> int:
        """The decode step after which a decoding sequence has all its tokens."""
        if not spec:
            return d_join[rid] + olen[rid] - g_join[rid] - 1
        target = olen[rid] - g_join[rid] + A(d_join[rid])
        return max(d_join[rid], steps_to_reach(target, E) - 1)

    def preempt(rid: int) -> None:
        nonlocal free
        if d_join[rid] >= 0:
            blocks = held_before(leave_decode(rid)) - hitb[rid]
            t_last[rid] = joined.pop(rid, t_dec_end)
        else:
            blocks = held[rid]
            prefilling.remove(rid)
        free += held[rid] if reserve else blocks
        computed[rid] = held[rid] = 0
        if loaded:
            hit[rid] = 0  # the transferred KV went with the blocks
        waiting.appendleft(rid)
        tr.preemptions += 1

    def finished(rid: int, blocks: int) -> None:
        nonlocal free, done
        free += held[rid] if reserve else blocks
        del running[rid]
        finish[rid] = now
        done += 1
        if concurrency:
            free_slots.append(now)
        if progress and done % 1000 == 0:
            progress(done)

    def decode_itl(first_gap: float, d: float) -> None:
        """ITL samples of one decode step: old sequences wait since t_dec_end, new ones since
        their first token."""
        old = B
        for rid, t in joined.items():
            if d_join[rid] >= 0:
                one_v.append(now + d - t)
                one_w.append(1.0)
                old -= 1
        joined.clear()
        if old:
            one_v.append(first_gap)
            one_w.append(float(old))

    def claim_decode_blocks() -> bool:
        """Blocks for this step's decode tokens, preempting the newest requests if short;
        whether any was preempted."""
        nonlocal free
        need = 0 if reserve else step_need(D)
        preempted = False
        while need > free:
            victim = next(reversed(running))
            del running[victim]
            if d_join[victim] >= 0 and not reserve:
                r = (c_join[victim] + 1 + L - A(d_join[victim])) % bs
                need -= ceil_div(r + A(D)) - ceil_div(r + A(D - 1))
            preempt(victim)
            preempted = True
        free -= need
        return preempted

    def head_blocked(after_decode_free: int) -> bool:
        if not waiting:
            return False
        if len(running) >= max_num_seqs:
            return True
        rid = waiting[0]
        n = min(plen[rid] + gen[rid] - hit[rid], max_tokens)
        need = ceil_div((plen[rid] + olen[rid] if reserve else hit[rid] + n) + L) - hitb[rid]
        return need > after_decode_free

    while True:
        # Requests sent by now reach the engine in order.
        while nxt < n_req and next_send() <= now:
            s = next_send()
            if concurrency:
                free_slots.popleft()
            send[nxt] = s
            waiting.append(nxt)
            nxt += 1
        if not running and not waiting:
            t = next_send()
            if t == math.inf:
                break
            tr.end_s = now
            now = t
            continue

        need_now = 0 if reserve or not B else step_need(D)
        # ---- a run of decode-only steps ------------------------------------------------------
        if B and not prefilling and need_now <= free and not (
                waiting and not head_blocked(free - need_now)):
            while heap and (d_join[heap[0][1]] < 0 or heap[0][0] != finish_step(heap[0][1])):
                heapq.heappop(heap)
            k = min(heap[0][0] - D + 1, MAX_RUN)
            t_arr = next_send() if not waiting and len(running) < max_num_seqs else math.inf
            const = cost.decode_constant_s(B)
            if t_arr < math.inf:
                # Steps only grow longer as contexts grow, so at most (t_arr − now)/d₀ + 1 of
                # them start before the arrival; + 3 leaves room for rounding. Only the arrays
                # get shorter: the run stops at the same step.
                d0 = const + cost.decode_attention_1(B, float(S0 + B * A(D)))
                k = min(k, max(1, int((t_arr - now) / d0) + 3))
            run = DecodeRun(k, D=D, B=B, S0=S0, free=free, res=res, bs=bs, E=E, A=A,
                            spec=spec, reserve=reserve)
            k = run.k
            d = const + cost.decode_attention_s(B, run.contexts())
            if t_arr < math.inf:  # steps that start before the next arrival
                k = max(1, int(now < t_arr) + int(np.searchsorted(
                    now + np.cumsum(d[:-1]), t_arr, side="left")))
                d = d[:k]
            demand = run.demand(k)
            if demand is None:  # reserved at admission: a run takes no blocks
                used = np.full(k, num_blocks - free, dtype=float)
            else:
                used = num_blocks - free + demand
                free -= int(demand[-1])
            decode_itl(now - t_dec_end + float(d[0]), float(d[0]))
            if k > 1:
                flush_itl()
                itl_v.append(d[1:])
                itl_w.append(np.full(k - 1, float(B)))
            span = float(d.sum())
            tr.kv_block_seconds += float(used @ d)
            tr.queue_seconds += len(waiting) * span
            tr.max_kv_blocks = max(tr.max_kv_blocks, int(used[-1]))
            tr.busy_s += span
            tr.steps += k
            now += span
            D += k - 1
            while heap and heap[0][0] <= D:
                _, rid = heapq.heappop(heap)
                if d_join[rid] >= 0 and finish_step(rid) == D:
                    blocks = ceil_div(leave_decode(rid) + 1 + L) - hitb[rid]
                    finished(rid, blocks)
            D += 1
            t_dec_end = now
            tr.sample_t.append(now)
            tr.sample_kv_blocks.append(num_blocks - free)
            tr.sample_queue.append(len(waiting))
            continue

        # ---- one general step ----------------------------------------------------------------
        preempted = False
        budget = max_tokens

        can_prefill = bool(prefilling) or (bool(waiting) and not head_blocked(free))
        decode = B > 0 and (mixed or not can_prefill)
        if decode:
            preempted = claim_decode_blocks()
            budget -= B * q
        chunks: list[tuple[int, int, int]] = []
        if mixed or not decode:
            for rid in list(prefilling):
                if budget <= 0:
                    break
                if rid not in running:
                    continue
                n = min(plen[rid] + gen[rid] - computed[rid], budget)
                need = max(0, ceil_div(computed[rid] + n + L) - hitb[rid] - held[rid])
                while need > free and rid in running:
                    victim = next(reversed(running))
                    if d_join[victim] >= 0:
                        break  # the newest is decoding: this chunk waits
                    del running[victim]
                    preempt(victim)
                    preempted = True
                if rid not in running or need > free:
                    break
                free -= need
                held[rid] += need
                budget -= n
                chunks.append((rid, n, computed[rid] + n))
            while (not preempted and waiting and budget > 0
                   and len(running) < max_num_seqs):
                rid = waiting[0]
                target = plen[rid] + gen[rid] - hit[rid]
                n = min(target, budget)
                if not chunked and n < target and (target <= max_tokens or chunks):
                    break  # a whole prompt per step; one longer than any step goes in chunks
                need = ceil_div((plen[rid] + olen[rid] if reserve else hit[rid] + n) + L
                                ) - hitb[rid]
                if need > free:
                    break
                waiting.popleft()
                running[rid] = None
                computed[rid] = hit[rid]
                held[rid] = need
                free -= need
                budget -= n
                prefilling.append(rid)
                chunks.append((rid, n, hit[rid] + n))
        if not chunks and not decode and B:  # nothing to prefill after all: decode instead
            decode = True
            preempted = claim_decode_blocks() or preempted
            budget -= B * q
        if not decode and not chunks:
            if preempted:
                continue
            t = next_send()
            if t == math.inf:
                raise AssertionError("scheduler stalled with requests waiting")
            tr.end_s = now
            now = max(now, t)
            continue

        bd = B if decode else 0
        dt = cost.step_s(bd, S0 + B * A(D) if decode else 0, [(n, c) for _, n, c in chunks])
        tr.kv_block_seconds += (num_blocks - free) * dt
        tr.queue_seconds += len(waiting) * dt
        tr.max_kv_blocks = max(tr.max_kv_blocks, num_blocks - free)
        tr.max_running = max(tr.max_running, len(running))
        tr.busy_s += dt
        tr.steps += 1
        if decode:
            decode_itl(now - t_dec_end + dt, dt)
        now += dt
        if decode:
            while heap and heap[0][0] <= D:
                _, rid = heapq.heappop(heap)
                if d_join[rid] >= 0 and finish_step(rid) == D:
                    finished(rid, ceil_div(leave_decode(rid) + 1 + L) - hitb[rid])
            D += 1
            t_dec_end = now
        for rid, _, c in chunks:
            computed[rid] = c
            if c < plen[rid] + gen[rid]:
                continue
            prefilling.remove(rid)
            gen[rid] += 1
            if math.isnan(first[rid]):
                first[rid] = now
            else:
                one_v.append(now - t_last[rid])
                one_w.append(1.0)
            t_last[rid] = now
            if gen[rid] >= olen[rid]:
                finished(rid, ceil_div(c + L) - hitb[rid])
                continue
            d_join[rid], c_join[rid], g_join[rid] = D, c, gen[rid]
            B += 1
            S0 += c - A(D) + 1
            res[(c + 1 + L - A(D)) % bs] += 1
            if spec:  # hold what decode step D assumes is held; the rest goes back
                free += held[rid] - (held_before(c) - hitb[rid])
            heapq.heappush(heap, (finish_step(rid), rid))
            joined[rid] = now
        tr.sample_t.append(now)
        tr.sample_kv_blocks.append(num_blocks - free)
        tr.sample_queue.append(len(waiting))
    flush_itl()
    tr.end_s = max(tr.end_s, now)
    return tr
