"""`llmsizer simulate`'s results rendered: the JSON object and the text report of one
simulation (analysis/serving_sim.py SimulationResult), as `simulate` and `simulate --find` print
them."""

from __future__ import annotations

import argparse
import math
from typing import Any


def simulation_json(r: Any, args: argparse.Namespace, qps: float | None = None
                    ) -> dict[str, Any]:
    e, w, pool = r.engine, r.workload, r.pool
    qps = args.qps if qps is None else qps
    dis = r.disaggregation
    gpus = dis.plan.gpus(r.cfg.pp) if dis else r.cfg.tp * r.cfg.pp * r.replicas
    return {
        "model": r.spec.name, "gpu": r.acc.name,
        "config": {
            "engine": e.name, "tp": r.cfg.tp, "pp": r.cfg.pp, "replicas": r.replicas,
            "gpus": gpus,
            "weights": r.cfg.weights.name if r.cfg.weights else "bf16",
            "kv_dtype_bytes": r.cfg.kv_dtype_bytes,
            "max_num_seqs": r.max_num_seqs, "max_num_batched_tokens": e.max_num_batched_tokens,
            "block_size": e.block_size, "kv_pool_blocks": pool.num_blocks,
            "kv_pool_tokens": pool.tokens, "kv_pool_bytes": int(pool.pool_bytes),
            "kv_pool_rule": pool.rule, "weights_bytes_per_device": int(pool.weights),
            "mixed_batches": e.mixed_batches, "chunked_prefill": e.chunked_prefill,
            "admission": e.admission, "step_overhead_s": e.step_overhead_s,
            "seq_overhead_s": e.seq_overhead_s, "sources": e.sources,
            "workload": {
                "requests": w.requests, "description": w.description,
                "qps": None if qps is None or math.isinf(qps) else qps,
                "concurrency": args.concurrency, "burstiness":
                None if math.isinf(args.burstiness) else args.burstiness, "seed": args.seed,
                "trace": args.trace, "prompt": None if args.trace else args.prompt or 1024,
                "output": None if args.trace else args.output or 256,
                "prompt_spread": args.prompt_spread, "output_spread": args.output_spread,
                "prefix_fraction": args.prefix_fraction, "prefix_caching": e.prefix_caching,
                "mean_prompt_tokens": float(r.prompts.mean()),
                "mean_output_tokens": float(r.outputs.mean())},
            "slo_ttft_s": r.slo_ttft_s, "slo_tpot_s": r.slo_tpot_s,
            "speculative": speculation_json(r.speculation),
        },
        "disaggregated": dis.as_dict() if dis else None,
        "dp_attention": None if r.expert_parallel is None else {
            "ranks": r.expert_parallel.ranks, "ep": r.expert_parallel.ep,
            "attention_tp": 1, "kv_pool_blocks_per_rank": pool.num_blocks
            // r.expert_parallel.ranks, "source": "serving/dp_attention.py: SGLang "
            "--enable-dp-attention, vLLM --enable-expert-parallel"},
        "capacity": capacity_json(r),
        "ttft_s": r.dist("ttft").as_dict(), "tpot_s": r.dist("tpot").as_dict(),
        "itl_s": r.dist("itl").as_dict(), "e2e_latency_s": r.dist("e2e").as_dict(),
        "throughput_tokens_per_s": r.throughput_tokens_per_s,
        "total_tokens_per_s": r.total_tokens_per_s,
        "requests_per_s": r.requests_per_s,
        "goodput_requests_per_s": r.goodput_requests_per_s,
        "duration_s": r.duration_s, "mean_in_flight": r.mean_in_flight,
        "steps": r.steps, "preemptions": r.preemptions,
        "kv_cache_utilization": {"mean": r.kv_utilization_mean, "max": r.kv_utilization_max,
                                 "series": {"t_s": r.kv_series[0],
                                            "fraction": r.kv_series[1]}},
        "queue_length": {"mean": r.queue_mean, "max": r.queue_max,
                         "series": {"t_s": r.queue_series[0], "requests": r.queue_series[1]}},
    }


def simulation_text(r: Any) -> str:
    import numpy as np

    from llmsizer.report import table
    from llmsizer.units import format_bytes, format_seconds

    e, pool = r.engine, r.pool
    gpus = r.cfg.tp * r.cfg.pp
    dis = r.disaggregation
    head = (f"{r.replicas} x (tp {r.cfg.tp} x pp {r.cfg.pp}) = {r.replicas * gpus} GPUs"
            if dis is None else
            f"{dis.plan.prefill_instances} prefill x (tp {dis.plan.prefill_tp} x pp {r.cfg.pp})"
            f" + {dis.plan.decode_instances} decode x (tp {dis.plan.decode_tp} x pp {r.cfg.pp})"
            f" = {dis.plan.gpus(r.cfg.pp)} GPUs")
    if r.expert_parallel is not None:
        head += (f" (attention data-parallel over {r.expert_parallel.ranks} ranks, experts "
                 f"over ep {r.expert_parallel.ep})")
    lines = [
        f"{r.spec.name} on {r.acc.display_name}: {head}, engine {e.name}",
        f"  {r.max_num_seqs:,} seqs and {e.max_num_batched_tokens:,} tokens per step, "
        + ("mixed prefill+decode" if e.mixed_batches else "prefill-first")
        + (", chunked prefill" if e.chunked_prefill else ""),
        f"  KV pool {format_bytes(pool.pool_bytes)}: {pool.num_blocks:,} blocks of "
        f"{pool.block_size} = {pool.tokens:,} tokens",
        f"  ({pool.rule})",
        *([f"  speculative decoding: {r.speculation.describe()}"] if r.speculation else []),
        f"workload: {r.workload.requests:,} requests, {r.workload.description}",
        f"  mean prompt {r.prompts.mean():,.0f} tokens, mean output {r.outputs.mean():,.0f}",
        "",
    ]
    rows = []
    for name, key in (("TTFT", "ttft"), ("TPOT", "tpot"), ("ITL", "itl"), ("E2E", "e2e")):
        d = r.dist(key)
        rows.append((name, *(format_seconds(v) for v in (d.mean, d.p50, d.p90, d.p99))))
    lines.append(table(rows, ["latency", "mean", "p50", "p90", "p99"]))
    lines.append("")
    slo = [f"TTFT <= {format_seconds(r.slo_ttft_s)}" if r.slo_ttft_s else "",
           f"TPOT <= {format_seconds(r.slo_tpot_s)}" if r.slo_tpot_s else ""]
    slo_text = ", ".join(s for s in slo if s) or "no SLO given"
    lines += [
        f"throughput {r.throughput_tokens_per_s:,.0f} output tok/s ({r.total_tokens_per_s:,.0f}"
        f" total), {r.requests_per_s:,.2f} req/s",
        f"goodput {r.goodput_requests_per_s:,.2f} req/s ({slo_text})",
        f"KV cache in use: mean {r.kv_utilization_mean:.0%}, max {r.kv_utilization_max:.0%}; "
        f"waiting: mean {r.queue_mean:,.1f}, max {r.queue_max:,}",
        f"{r.preemptions:,} preemptions; {r.steps:,} steps in {format_seconds(r.duration_s)}; "
        f"{r.mean_in_flight:,.1f} requests in flight on average",
    ]
    if dis is not None:
        t = dis.transfer
        lines += [
            f"disaggregated: prefill pool busy {dis.prefill.busy_fraction:.0%} (KV "
            f"{dis.prefill.kv_cache_utilization:.0%}), decode pool busy "
            f"{dis.decode.busy_fraction:.0%} (KV {dis.decode.kv_cache_utilization:.0%})",
            f"KV transfer over {t.link}: {format_bytes(t.bytes_per_token)} per prompt token, "
            f"mean {format_seconds(float(t.transfer_s.mean()))} (+ "
            f"{format_seconds(float(t.wait_s.mean()))} waiting for the link), p99 "
            f"{format_seconds(float(np.percentile(t.transfer_s, 99)))}",
            "(the KV-cache line above is the decode pool's)"]
    return "\n".join(lines)


def capacity_json(r: Any) -> dict[str, Any]:
    """What one instance's KV pool holds (serving/search.py memory_capacity)."""
    from llmsizer.serving.search import memory_capacity

    sp = r.speculation
    longest = int((r.prompts + r.outputs).max())
    return memory_capacity(r.pool, r.spec.max_seq_len, longest,
                           sp.reserved_slots if sp else 0, r.max_num_seqs)


def speculation_json(sp: Any) -> dict[str, Any] | None:
    if sp is None:
        return None
    return {"method": sp.method, "draft_model": sp.draft.name if sp.draft else None,
            "spec_tokens": sp.k, "acceptance": sp.acceptance,
            "expected_tokens_per_step": sp.expected_tokens,
            "verify_tokens_per_step": sp.verify_tokens,
            "reserved_kv_slots_per_sequence": sp.reserved_slots,
            "source": "Leviathan et al. 2023 (arXiv 2211.17192) Eq. 1: "
                      "(1 - alpha^(k+1)) / (1 - alpha)"}
