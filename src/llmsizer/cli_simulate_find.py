"""`llmsizer simulate --find`: the inverse questions (highest rate meeting the SLOs, fewest
replicas for a rate, what one instance's KV pool holds) searched on the simulator
(serving/search.py) and reported."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from llmsizer.cli_simulate_report import simulation_json, simulation_text
from llmsizer.errors import SpecError

MIN_REQUESTS_PER_REPLICA = 200  # --find min-gpus: each replica sees at least this many


def run_find(args: argparse.Namespace, spec: Any, acc: Any, cfg: Any, engine: Any, work: Any,
             slo_ttft: float | None, slo_tpot: float | None, eff: Any) -> Any:
    """--find max-rate | min-gpus | max-context | max-seqs."""
    from llmsizer.analysis.serving_sim import instance_limits, simulate
    from llmsizer.cli import EXIT_DOES_NOT_FIT, Outcome
    from llmsizer.report import dumps, table
    from llmsizer.serving import search
    from llmsizer.units import format_bytes, format_seconds

    sp = args._speculation
    pct = args.percentile
    tty = sys.stderr.isatty()

    def sim(w: Any, replicas: int) -> Any:
        return simulate(spec, acc, cfg, engine, w, replicas=replicas, eff=eff,
                        slo_ttft_s=slo_ttft, slo_tpot_s=slo_tpot,
                        gpus_per_node=args.gpus_per_node, speculation=sp,
                        dp_attention=args._dp_attention)

    def log(p: Any) -> None:
        if tty:
            print(f"  probe {p.value:,.4g}: p{pct:g} TTFT {format_seconds(p.ttft_s)}, TPOT "
                  f"{format_seconds(p.tpot_s)} -> {'meets' if p.meets else 'misses'}",
                  file=sys.stderr, flush=True)

    gpus = cfg.tp * cfg.pp
    if args.find in ("max-context", "max-seqs"):
        if args._dp_attention is not None:
            raise SpecError("find", args.find, "max-rate or min-gpus with --dp-attention")
        pool, max_seqs = instance_limits(spec, acc, cfg, engine, sp)
        longest = max(a + b for a, b in zip(work.prompt_tokens, work.output_tokens, strict=True))
        cap = search.memory_capacity(pool, spec.max_seq_len, longest,
                                     sp.reserved_slots if sp else 0, max_seqs)
        data = {"model": spec.name, "gpu": acc.name, "find": args.find, "engine": engine.name,
                "tp": cfg.tp, "pp": cfg.pp, "kv_pool_tokens": pool.tokens,
                "kv_pool_bytes": int(pool.pool_bytes), "block_size": pool.block_size,
                "kv_pool_rule": pool.rule, "model_max_positions": spec.max_seq_len, **cap}
        if args.json:
            return dumps(data)
        return "\n".join([
            f"{spec.name} on {acc.display_name}, tp {cfg.tp} x pp {cfg.pp}, engine "
            f"{engine.name}: KV pool {format_bytes(pool.pool_bytes)} = {pool.tokens:,} tokens "
            f"({pool.num_blocks:,} blocks of {pool.block_size}; {pool.rule})",
            f"longest context of one sequence: {cap['max_context_tokens']:,} tokens"
            + (" (the model's positions)" if cap["max_context_tokens"] == spec.max_seq_len
               else ""),
            f"sequences of {longest:,} tokens held at once: {cap['max_concurrent_sequences']:,}"
            f" ({cap['blocks_per_sequence']} blocks each); the engine runs at most "
            f"{max_seqs:,}"])

    if args.find == "max-rate":
        sat = sim(args._workload(math.inf, args.requests), args.replicas)
        found = search.max_rate(lambda rate: sim(args._workload(rate, args.requests),
                                                 args.replicas),
                                pct, slo_ttft, slo_tpot, sat.requests_per_s, log=log)
        data = {"model": spec.name, "gpu": acc.name, "find": "max-rate", "percentile": pct,
                "slo_ttft_s": slo_ttft, "slo_tpot_s": slo_tpot, "replicas": args.replicas,
                "gpus": gpus * args.replicas,
                "max_rate_requests_per_s": found.value,
                "saturation_requests_per_s": sat.requests_per_s,
                "probes": [p.as_dict("qps") for p in found.probes]}
        answer = f"highest rate meeting the SLOs: {found.value:,.3g} req/s"
    else:
        def run_n(n: int) -> Any:
            return sim(args._workload(args.qps, max(args.requests,
                                                    MIN_REQUESTS_PER_REPLICA * n)), n)

        one = sim(args._workload(math.inf, max(args.requests, MIN_REQUESTS_PER_REPLICA)), 1)
        start = max(1, math.ceil(args.qps / one.requests_per_s * 0.8))
        found = search.min_replicas(run_n, pct, slo_ttft, slo_tpot, start=start,
                                    limit=max(1, 4096 // gpus), log=log)
        n = int(found.value)
        data = {"model": spec.name, "gpu": acc.name, "find": "min-gpus", "percentile": pct,
                "slo_ttft_s": slo_ttft, "slo_tpot_s": slo_tpot, "qps": args.qps,
                "replicas": n, "gpus_per_replica": gpus, "gpus": n * gpus,
                "replica_saturation_requests_per_s": one.requests_per_s,
                "probes": [p.as_dict("replicas") for p in found.probes]}
        answer = (f"fewest replicas for {args.qps:g} req/s: {n} x {gpus} GPUs = {n * gpus} GPUs"
                  if n else f"no replica count up to {4096 // gpus} meets the SLOs")
    status = 0 if found.result is not None else EXIT_DOES_NOT_FIT
    if found.result is not None:
        data["at_answer"] = simulation_json(found.result, args, qps=(
            found.value if args.find == "max-rate" else args.qps))
    if args.json:
        return Outcome(dumps(data), status, wrap=False)
    slo = ", ".join(x for x in (f"TTFT <= {format_seconds(slo_ttft)}" if slo_ttft else "",
                                f"TPOT <= {format_seconds(slo_tpot)}" if slo_tpot else "") if x)
    key = "qps" if args.find == "max-rate" else "replicas"
    rows = [(f"{p.value:,.4g}", format_seconds(p.ttft_s), format_seconds(p.tpot_s),
             "yes" if p.meets else "no") for p in found.probes]
    lines = [f"{spec.name} on {acc.display_name}, {args.find} at p{pct:g} {slo}:",
             table(rows, [key, f"p{pct:g} TTFT", f"p{pct:g} TPOT", "meets"], "rrrl"), "",
             answer]
    if found.result is not None:
        lines += ["", simulation_text(found.result)]
    return Outcome("\n".join(lines), status)
