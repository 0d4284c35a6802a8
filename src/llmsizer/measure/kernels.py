"""`measure kernels`: time the model's kernels on this machine's device (one worker per rank).

Every rank runs the same compute benchmarks at once (on a CPU the processes share the memory
system, as they do in a training run); the collectives run across the ranks. The numbers are
turned into a calibration file by llmsizer.measure.calibration.
"""

from __future__ import annotations

import math
from typing import Any

from llmsizer.measure import shapes
from llmsizer.measure.runtime import Context, typical_time

# Square sizes for the peak sweep: large enough to leave the cache-bound regime, small enough
# to take a fraction of a second each (a CPU core: ~0.1 TFLOP/s; an H100: ~1 PFLOP/s).
SWEEP = {"cpu": (512, 1024), "cuda": (4096, 8192)}
PEAK_DTYPES = {"cpu": ("fp32", "bf16"), "cuda": ("bf16", "fp32")}
# On a CPU one timed product is held to this many FLOPs by shortening its token dimension (at
# >= 256 rows the throughput no longer depends on it); a GPU times the full shapes.
CPU_MAX_FLOPS_PER_PRODUCT = 2e9
MIN_TOKEN_ROWS = 256
STREAM_BYTES = {"cpu": 64 * 2**20, "cuda": 1 * 2**30}  # per array, far beyond the caches
BUDGET_S = {"cpu": 0.08, "cuda": 0.05}
COLLECTIVE_MAX_BYTES = {"cpu": 8 * 2**20, "cuda": 256 * 2**20}
COLLECTIVE_REPS = (2, 8)  # warm-up, timed (fixed: every rank must make the same calls)


def torch_dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def worker(ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
    """All the compute benchmarks on this rank, then the collectives across ranks."""
    from llmsizer.catalog import get_model

    spec = get_model(payload["model"])
    tokens = payload["micro_batch"] * payload["seq"]
    import time

    from llmsizer.measure.runtime import cpu_share

    def together() -> None:
        # Every rank starts each benchmark at the same moment, as the ranks of a training step
        # run the same kernels together: on a machine whose cores share caches, memory or a
        # physical core, a rank timed while its neighbour runs a different benchmark measures
        # a contention no step has.
        if ctx.world > 1:
            _sync(ctx)

    c0, t0 = time.process_time(), time.perf_counter()
    out: dict[str, Any] = {"threads": ctx.threads}
    ctx.progress("GEMM peak sweep")
    together()
    out["peak_flops"] = {d: gemm_sweep(ctx, d) for d in PEAK_DTYPES[ctx.device]}
    ctx.progress(f"the model's GEMMs at {tokens} tokens")
    together()
    out["gemms"] = model_gemms(ctx, spec, tokens, payload["dtype"])
    ctx.progress("fused attention (SDPA), forward and backward")
    together()
    out["attention"] = attention(ctx, spec, payload["micro_batch"], payload["seq"],
                                 payload["dtype"])
    ctx.progress("element-wise kernels and a memory stream")
    together()
    out["elementwise"] = elementwise(ctx, spec, payload["micro_batch"], payload["seq"],
                                     payload["dtype"])
    together()
    out["stream"] = stream(ctx)
    out["kernel_overhead_s"] = kernel_overhead(ctx)
    out["cpu_share"] = cpu_share(time.process_time() - c0, time.perf_counter() - t0, ctx)
    if ctx.world > 1:
        ctx.progress(f"collectives over {ctx.world} processes ({ctx.backend})")
        grad_bytes = 4 * sum(lin.count * lin.in_features * lin.out_features
                             for lin in shapes.linears(spec))
        out["collectives"] = collectives(ctx, grad_bytes)
    return out


def _product_time(ctx: Context, m: int, k: int, n: int, dtype: str) -> float:
    import torch

    dev = ctx.torch_device()
    a = torch.randn(m, k, dtype=torch_dtype(dtype), device=dev)
    b = torch.randn(k, n, dtype=torch_dtype(dtype), device=dev)
    c = torch.empty(m, n, dtype=torch_dtype(dtype), device=dev)
    return typical_time(lambda: torch.matmul(a, b, out=c), ctx, BUDGET_S[ctx.device])


def gemm_sweep(ctx: Context, dtype: str) -> float:
    """The best FLOP/s of square products: this device's practical peak for `dtype`."""
    return max(2 * n**3 / _product_time(ctx, n, n, n, dtype) for n in SWEEP[ctx.device])


def _linear_time(ctx: Context, tokens: int, lin: shapes.Linear, dtype: str) -> float:
    """Forward and backward of one projection as the step runs it: F.linear under autograd
    (x·Wᵀ, then the input and weight gradients), with its transposes and bookkeeping."""
    import torch
    import torch.nn.functional as F

    dev, dt = ctx.torch_device(), torch_dtype(dtype)
    x = torch.randn(tokens, lin.in_features, dtype=dt, device=dev, requires_grad=True)
    w = torch.randn(lin.out_features, lin.in_features, dtype=dt, device=dev, requires_grad=True)
    grad = torch.randn(tokens, lin.out_features, dtype=dt, device=dev)

    def step() -> None:
        x.grad = w.grad = None
        F.linear(x, w).backward(grad)

    return typical_time(step, ctx, BUDGET_S[ctx.device])


def model_gemms(ctx: Context, spec: Any, tokens: int, dtype: str) -> list[dict[str, Any]]:
    """Every projection of the step and the head, forward and backward (3 products of
    2·tokens·in·out FLOPs each); on a CPU the token dimension is shortened to keep one timing
    short (see CPU_MAX_FLOPS_PER_PRODUCT)."""
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[int, int, int], float] = {}
    for lin in shapes.linears(spec):
        flops = 6 * tokens * lin.in_features * lin.out_features
        rows_timed = tokens
        if ctx.device == "cpu" and flops / 3 > CPU_MAX_FLOPS_PER_PRODUCT:
            rows_timed = max(min(tokens, MIN_TOKEN_ROWS),
                             round(tokens * CPU_MAX_FLOPS_PER_PRODUCT / (flops / 3)))
        key = (rows_timed, lin.in_features, lin.out_features)
        if key not in seen:
            seen[key] = 6 * rows_timed * lin.in_features * lin.out_features / _linear_time(
                ctx, rows_timed, lin, dtype)
        rows.append({"name": lin.name, "m": tokens, "k": lin.in_features,
                     "n": lin.out_features, "timed_rows": rows_timed, "count": lin.count,
                     "flops": flops, "flops_per_s": seen[key]})
    return rows


def attention(ctx: Context, spec: Any, batch: int, seq: int, dtype: str) -> dict[str, Any]:
    """torch's scaled_dot_product_attention, causal, forward and forward + backward, with the
    model's heads and head size (keys and values repeated to the query heads, as transformers'
    sdpa path does for grouped-query attention)."""
    import torch
    import torch.nn.functional as F

    dev, dt = ctx.torch_device(), torch_dtype(dtype)
    q, k, v = (torch.randn(batch, spec.num_heads, seq, spec.head_size, dtype=dt, device=dev,
                           requires_grad=True) for _ in range(3))
    grad = torch.randn(batch, spec.num_heads, seq, spec.head_size, dtype=dt, device=dev)

    def forward() -> Any:
        with torch.no_grad():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def forward_backward() -> None:
        F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad)

    fwd = shapes.attention_forward_flops(batch, spec.num_heads, seq, spec.head_size)
    t_f = typical_time(forward, ctx, BUDGET_S[ctx.device])
    t_fb = typical_time(forward_backward, ctx, BUDGET_S[ctx.device])
    return {"batch": batch, "heads": spec.num_heads, "seq": seq, "head_dim": spec.head_size,
            "forward_flops": fwd, "forward_s": t_f, "forward_backward_s": t_fb,
            "training_flops": fwd * (1 + shapes.ATTENTION_BACKWARD_OVER_FORWARD)}


def _rms_norm(x: Any, w: Any) -> Any:
    """Root-mean-square normalisation as eager PyTorch code runs it (Zhang & Sennrich 2019)."""
    import torch

    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))


def _rotate(x: Any, cos: Any, sin: Any) -> Any:
    """Rotary embedding (Su et al. 2021) in the rotate-half form."""
    import torch

    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def _activation(name: str) -> Any:
    """The model's own activation module as transformers runs it (ACT2FN), else torch's."""
    import torch.nn.functional as F

    try:
        from transformers.activations import ACT2FN

        return ACT2FN[name]
    except (ImportError, KeyError):
        return F.silu if name in ("silu", "swish") else F.gelu


def elementwise(ctx: Context, spec: Any, batch: int, seq: int, dtype: str) -> dict[str, Any]:
    """One layer's element-wise work, forward and backward, as unfused eager kernels: the norms
    (RMSNorm or LayerNorm), the residual adds, the FFN activation (the model's own) and rotary
    embedding at the model's shapes. Its `model_bytes` are what llmsizer counts for them
    (3 passes: forward, 2× backward)."""
    import torch
    import torch.nn.functional as F

    dev, dt, h = ctx.torch_device(), torch_dtype(dtype), spec.hidden_size

    def leaf(*shape: int) -> Any:
        return torch.randn(*shape, dtype=dt, device=dev, requires_grad=True)

    x, attn_out, w1, w2, b = leaf(batch, seq, h), leaf(batch, seq, h), leaf(h), leaf(h), leaf(h)
    gate, up = leaf(batch, seq, spec.ffn_size), leaf(batch, seq, spec.ffn_size)
    q, k = leaf(batch, spec.num_heads, seq, spec.head_size), leaf(batch, spec.kv_heads, seq,
                                                                  spec.head_size)
    cos = torch.randn(seq, spec.head_size, dtype=dt, device=dev)
    sin = torch.randn(seq, spec.head_size, dtype=dt, device=dev)
    act = _activation(spec.activation)
    gated, rotary = spec.ffn_kind == "gated", spec.position == "rotary"

    def norm(t: Any, w: Any) -> Any:
        return _rms_norm(t, w) if spec.norm == "rmsnorm" else F.layer_norm(t, (h,), w, b)

    def step() -> None:
        outs = [norm(x, w1)]
        r1 = x + attn_out
        outs += [r1 + norm(r1, w2), act(gate) * up if gated else act(up)]
        if rotary:
            outs += [_rotate(q, cos, sin), _rotate(k, cos, sin)]
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])

    t = typical_time(step, ctx, BUDGET_S[ctx.device])
    e = torch.finfo(dt).bits // 8
    per_token = shapes.elementwise_elements_per_token(spec)
    return {"seconds": t, "model_bytes": 3 * e * batch * seq * per_token}


def stream(ctx: Context) -> dict[str, float]:
    """STREAM's copy (2 arrays moved) and triad (3) on arrays far larger than the caches
    (McCalpin, STREAM benchmark: bytes counted as the kernel's reads plus writes)."""
    import torch

    n = STREAM_BYTES[ctx.device] // 4
    dev = ctx.torch_device()
    a, b, c = (torch.rand(n, device=dev) for _ in range(3))
    t_copy = typical_time(lambda: a.copy_(b), ctx, BUDGET_S[ctx.device])
    t_triad = typical_time(lambda: torch.add(b, c, alpha=3.0, out=a), ctx, BUDGET_S[ctx.device])
    return {"copy_bytes_s": 2 * 4 * n / t_copy, "triad_bytes_s": 3 * 4 * n / t_triad}


def kernel_overhead(ctx: Context) -> float:
    """Seconds per launch of a trivial kernel (a one-element add), 100 in a row."""
    import torch

    a = torch.ones(1, device=ctx.torch_device())
    b = torch.empty_like(a)

    def hundred() -> None:
        for _ in range(100):
            torch.add(a, a, out=b)

    return typical_time(hundred, ctx, BUDGET_S[ctx.device]) / 100


def collectives(ctx: Context, grad_bytes: int) -> list[dict[str, Any]]:
    """All-reduce, all-gather, reduce-scatter, all-to-all and a p2p ping-pong, each at a tiny
    size (latency) and at the model's gradient size (bandwidth; held to 1-8 MiB on a CPU, up to
    256 MiB on GPUs). Bus bandwidth as nccl-tests defines it (nccl-tests doc/PERFORMANCE.md):
    all-reduce moves 2(n-1)/n of the buffer per rank, all-gather, reduce-scatter and all-to-all
    (n-1)/n, p2p the buffer."""


    n = ctx.world
    big = int(min(COLLECTIVE_MAX_BYTES[ctx.device], max(2**20, grad_bytes))) // (4 * n) * (4 * n)
    return [row for size in (4 * n, big) for row in _collectives_at(ctx, size)]


def _collectives_at(ctx: Context, size: int) -> list[dict[str, Any]]:
    """Each collective on a buffer of `size` bytes per rank, timed over COLLECTIVE_REPS."""
    import time

    import torch
    import torch.distributed as dist

    n, dev = ctx.world, ctx.torch_device()
    elems = size // 4
    x = torch.ones(elems, device=dev)
    gathered = torch.empty(elems * n, device=dev)
    shard = torch.empty(elems // n, device=dev)
    swapped = torch.empty_like(x)
    ops = {
        "all_reduce": (lambda: dist.all_reduce(x), 2 * (n - 1) / n),
        "all_gather": (lambda: _all_gather(gathered, x), (n - 1) / n),
        "reduce_scatter": (lambda: _reduce_scatter(shard, x), (n - 1) / n),
        "all_to_all": (lambda: dist.all_to_all_single(swapped, x), (n - 1) / n),
        "p2p": (lambda: _ping_pong(ctx, x), 1.0),
    }
    rows: list[dict[str, Any]] = []
    warm, reps = COLLECTIVE_REPS
    for name, (op, factor) in ops.items():
        nbytes = size * (n if name == "all_gather" else 1)
        try:
            for _ in range(warm):
                op()
            _sync(ctx)
            t0 = time.perf_counter()
            for _ in range(reps):
                op()
            _sync(ctx)
        except (RuntimeError, NotImplementedError) as e:
            rows.append({"op": name, "bytes": nbytes, "error": str(e).splitlines()[0][:120]})
            dist.barrier()
            continue
        seconds = (time.perf_counter() - t0) / reps / (2 if name == "p2p" else 1)
        rows.append({"op": name, "bytes": nbytes, "seconds": seconds,
                     "bus_bytes_s": factor * nbytes / seconds if seconds > 0 else math.inf})
    return rows


def _all_gather(out: Any, x: Any) -> None:
    import torch.distributed as dist

    # all_gather_single supersedes all_gather_into_tensor in torch 2.13 (same semantics)
    (getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor)(out, x)


def _reduce_scatter(out: Any, x: Any) -> None:
    import torch.distributed as dist

    (getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor)(out, x)


def _sync(ctx: Context) -> None:
    import torch.distributed as dist

    from llmsizer.measure.runtime import synchronize

    synchronize(ctx.device)
    dist.barrier()


def _ping_pong(ctx: Context, x: Any) -> None:
    """Rank 0 sends to rank 1 and gets it back; the others wait (a p2p hop = half of this)."""
    import torch.distributed as dist

    if ctx.rank == 0:
        dist.send(x, 1)
        dist.recv(x, 1)
    elif ctx.rank == 1:
        dist.recv(x, 0)
        dist.send(x, 0)
