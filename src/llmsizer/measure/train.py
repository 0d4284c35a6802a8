"""`measure train`: real training steps (forward, backward, AdamW) of the model under DDP or
FSDP2, one worker per rank; step time and peak memory as the device reports them."""

from __future__ import annotations

import statistics
import time
from typing import Any

from llmsizer.measure.runtime import (
    Context,
    cpu_share,
    device_seconds,
    peak_rss_bytes,
    rss_bytes,
    synchronize,
    uses_cpu_time,
)


def _saved_bytes(model: Any, run: Any) -> int:
    """Bytes of the tensors autograd saves for backward during `run()` (each storage once,
    parameters excluded: they are weights, not activations), via saved_tensors_hooks (torch
    docs, "Hooks for saved tensors")."""
    import torch

    def storage(t: Any) -> tuple[int, int] | None:
        local = t.to_local() if hasattr(t, "to_local") else t  # FSDP2 shards are DTensors
        try:
            s = local.untyped_storage()
            return s.data_ptr(), s.nbytes()
        except RuntimeError:  # FSDP2 frees unsharded parameter storage between uses
            return None

    params = {k[0] for p in model.parameters() if (k := storage(p)) is not None}
    seen: dict[int, int] = {}

    def pack(t: Any) -> Any:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            k = storage(t)
            if k is not None and k[0] not in params:
                seen[k[0]] = k[1]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values())


def worker(ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    from llmsizer.measure.model import build, decoder_layers

    torch.manual_seed(1234 + ctx.rank)
    dev = ctx.torch_device()
    baseline = rss_bytes()
    model = build(payload["config"], torch.float32, dev)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    cuda = ctx.device == "cuda"
    if payload["strategy"] == "fsdp2":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if cuda else MixedPrecisionPolicy()
        for layer in decoder_layers(model):
            fully_shard(layer, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        wrapped = model
    else:
        from torch.nn.parallel import DistributedDataParallel

        # gradients as views into the all-reduce buckets: no second copy of every gradient
        # (torch DistributedDataParallel docs, gradient_as_bucket_view), as llmsizer counts them
        wrapped = DistributedDataParallel(model, device_ids=[ctx.rank] if cuda else None,
                                          gradient_as_bucket_view=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (payload["micro_batch"], payload["seq"]), device=dev)
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=cuda and payload["strategy"] == "ddp")

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = wrapped(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        return float(loss.detach())

    ctx.progress(f"{n_params / 1e6:.1f}M parameters, {payload['strategy']} over {ctx.world} "
                 f"process(es): warm-up")
    saved = _saved_bytes(model, step)
    for _ in range(max(0, payload["warmup"] - 1)):
        step()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    clock = device_seconds(ctx)
    times, cpu_times, shares = [], [], []
    for i in range(payload["steps"]):
        dist.barrier()
        synchronize(ctx.device)
        c0, t0, p0 = clock(), time.perf_counter(), time.process_time()
        loss = step()
        synchronize(ctx.device)
        wall, cpu = time.perf_counter() - t0, clock() - c0
        used = time.process_time() - p0
        t = torch.tensor([wall, cpu, -cpu_share(used, wall, ctx)],
                         dtype=torch.float64, device=dev)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)  # a step lasts as long as its slowest rank
        times.append(float(t[0]))
        cpu_times.append(float(t[1]))
        shares.append(-float(t[2]))
        ctx.progress(f"step {i + 1}/{payload['steps']}: {times[-1]:.3f} s, loss {loss:.3f}")
    peak = int(torch.cuda.max_memory_allocated()) if cuda else peak_rss_bytes()
    return {"step_times_s": times, "step_time_s": statistics.median(times),
            "peak_memory_bytes": peak, "baseline_rss_bytes": baseline,
            "saved_activation_bytes": saved, "params": n_params,
            "cpu_share": statistics.median(shares) if ctx.device == "cpu" else None,
            "step_cpu_time_s": statistics.median(cpu_times) if uses_cpu_time(ctx) else None,
            "memory_kind": "CUDA allocator peak (torch.cuda.max_memory_allocated)" if cuda
            else "process peak resident set (getrusage ru_maxrss)"}
