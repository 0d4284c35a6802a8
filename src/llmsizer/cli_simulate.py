"""`llmsizer simulate`: a request stream served by continuously batching engine instances."""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import replace
from typing import Any

from llmsizer.errors import SpecError

DURATION_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "min": 60.0}
FINDS = ("max-rate", "min-gpus", "max-context", "max-seqs")
MIN_REQUESTS_PER_REPLICA = 200  # --find min-gpus: each replica sees at least this many


def parse_seconds(text: str, flag: str) -> float:
    """"1s", "50ms", "250us", "0.5" (seconds)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(s|ms|us|µs|min)?\s*", text)
    if not m:
        raise SpecError(flag, text, "a duration such as 1s, 50ms or 0.2 (seconds)")
    v = float(m.group(1)) * DURATION_UNITS[m.group(2) or ""]
    if not (v > 0 and math.isfinite(v)):
        raise SpecError(flag, text, "a positive duration")
    return v


def _rate(flag: str):  # type: ignore[no-untyped-def]
    def parse(text: str) -> float:
        t = text.strip().lower()
        if t in ("inf", "infinity"):
            return math.inf
        try:
            v = float(t)
        except ValueError:
            v = math.nan
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"={text} is not allowed: a positive number or inf")
        return v

    return parse


def add_parser(sub: Any, positive_int: Any) -> None:
    from llmsizer.cli import MAX_PARALLEL, add_model_and_gpu, arg_float, arg_int, arg_length
    from llmsizer.serving.engines import ENGINES

    p = sub.add_parser(
        "simulate", help="serving under load: latency percentiles, throughput, goodput",
        description="Simulate a request stream (Poisson/gamma arrivals, a closed loop of "
        "clients, or a trace) served by continuously batching engine instances: chunked "
        "prefill, paged KV cache, preemption, per-engine defaults; step times from the "
        "model's per-op roofline. Metrics as vllm bench serve defines them.")
    add_model_and_gpu(p)
    p.add_argument("--tp", type=arg_int(1, MAX_PARALLEL), default=1)
    p.add_argument("--pp", type=arg_int(1, MAX_PARALLEL), default=1)
    p.add_argument("--dp-attention", action="store_true",
                   help="MoE serving as SGLang/vLLM run DeepSeek-V3: attention data-parallel "
                   "over the --tp GPUs of an instance (each rank its own requests and KV cache),"
                   " routed experts sharded over them (--ep = --tp) with an all-to-all dispatch"
                   " and combine per MoE layer; default: off (tensor parallelism throughout)")
    p.add_argument("--ep", type=arg_int(1, MAX_PARALLEL),
                   help="with --dp-attention: expert-parallel ranks (must equal --tp)")
    p.add_argument("--replicas", type=arg_int(1, 4096), default=1,
                   help="engine instances; requests dealt round-robin")
    p.add_argument("--qps", type=_rate("qps"),
                   help="request rate per second (inf: all at once)")
    p.add_argument("--concurrency", type=arg_int(1, 2**20),
                   help="clients in a closed loop (with --qps: at most this many in flight)")
    p.add_argument("--requests", type=arg_int(1, 10**7), default=1000, help="requests sent")
    p.add_argument("--prompt", type=arg_length(), help="prompt tokens (default 1024)")
    p.add_argument("--output", type=arg_length(), help="output tokens (default 256)")
    p.add_argument("--prompt-spread", default="fixed",
                   help="fixed, uniform:F ([1-F, 1+F]·prompt), normal:F, exponential")
    p.add_argument("--output-spread", default="fixed", help="as --prompt-spread")
    p.add_argument("--prefix-fraction", type=arg_float(0, 1, what="a fraction"), default=0.0,
                   help="leading share of every prompt common to all requests (system prompt), "
                   "served from the engine's prefix cache")
    p.add_argument("--trace", help="JSON/CSV of prompt_tokens, output_tokens[, arrival_s]")
    p.add_argument("--burstiness", type=_rate("burstiness"), default=1.0,
                   help="gamma shape of inter-arrival gaps: 1 Poisson, <1 burstier, inf even")
    p.add_argument("--seed", type=arg_int(0, 2**63 - 1), default=0)
    p.add_argument("--slo-ttft", help="time-to-first-token SLO for goodput, e.g. 1s")
    p.add_argument("--slo-tpot", help="time-per-output-token SLO for goodput, e.g. 50ms")
    p.add_argument("--engine", default="vllm", choices=ENGINES, metavar="ENGINE",
                   help="scheduling and memory defaults of " + ", ".join(ENGINES))
    p.add_argument("--max-num-seqs", type=arg_int(1, 2**20),
                   help="sequences per step (default: the engine's)")
    p.add_argument("--max-num-batched-tokens", type=arg_int(1, 2**22),
                   help="tokens per step (default: the engine's)")
    p.add_argument("--weights", default="bf16", help="bf16, fp16, fp8, int8, int4, fp32")
    p.add_argument("--kv-dtype", default="bf16", help="bf16, fp16, fp8, int8, int4, fp32")
    p.add_argument("--overhead", help="runtime overhead per device, e.g. 1GiB (default)")
    p.add_argument("--gpus-per-node", type=arg_int(1, 1024), default=8)
    p.add_argument("--calibration", help="efficiency calibration file (llmsizer calibrate)")
    p.add_argument("--speculative", metavar="draft:MODEL|mtp|eagle",
                   help="speculative decoding: a draft model, or MTP / EAGLE heads")
    p.add_argument("--spec-tokens", type=arg_int(1, 64), default=None,
                   help="tokens drafted per step, k (default 3 with --speculative)")
    p.add_argument("--acceptance", type=arg_float(0, 1, what="a rate"), default=None,
                   help="per-token acceptance rate alpha (default 0.7 with --speculative)")
    p.add_argument("--disaggregate", metavar="XP:YD",
                   help="disaggregated prefill/decode: X prefill and Y decode instances (e.g. "
                   "1P:3D); the prompt's KV moves over NVLink when both pools fit in one node "
                   "(--gpus-per-node), else over the network; default: off (every instance "
                   "does both, --replicas of them)")
    p.add_argument("--prefill-tp", type=arg_int(1, MAX_PARALLEL),
                   help="with --disaggregate: tensor parallelism of a prefill instance "
                   "(default --tp)")
    p.add_argument("--decode-tp", type=arg_int(1, MAX_PARALLEL),
                   help="with --disaggregate: tensor parallelism of a decode instance "
                   "(default --tp)")
    p.add_argument("--find", choices=FINDS, metavar="QUESTION",
                   help="inverse question: max-rate (highest --qps meeting the SLOs), "
                   "min-gpus (fewest replicas for --qps), max-context, max-seqs (what the KV "
                   "pool holds)")
    p.add_argument("--percentile", type=arg_float(1, 100, what="a percentile"), default=90.0,
                   help="with --find: the percentile at which the SLOs must hold (default 90)")
    from llmsizer.charts import add_plot_argument

    add_plot_argument(p)
    p.add_argument("--json", action="store_true")


def build(args: argparse.Namespace) -> tuple[Any, ...]:
    from llmsizer.analysis.inference import ServingConfig
    from llmsizer.analysis.params import validate_parallel
    from llmsizer.catalog import get_accelerator, get_model
    from llmsizer.serving import workload as wl
    from llmsizer.serving.engines import engine_profile
    from llmsizer.specs.precision import kv_dtype_bytes, weight_format
    from llmsizer.units import parse_bytes

    find = getattr(args, "find", None)
    if find in ("max-rate", "min-gpus"):
        if args.concurrency is not None:
            raise SpecError("find", find, "an open loop of arrivals (no --concurrency)")
        if find == "min-gpus" and (args.qps is None or math.isinf(args.qps)):
            raise SpecError("find", find, "a finite target rate (--qps R)")
        if not (args.slo_ttft or args.slo_tpot):
            raise SpecError("find", find, "an SLO to meet (--slo-ttft and/or --slo-tpot)")
    elif args.qps is None and args.concurrency is None and find is None:
        raise SpecError("qps", "(none)", "a request rate (--qps R) or a closed loop "
                        "(--concurrency N)")
    if args.trace and (args.prompt or args.output):
        raise SpecError("trace", args.trace, "either a trace or --prompt/--output, not both")
    spec = get_model(args.model)
    acc = get_accelerator(args.gpu)
    kw: dict[str, Any] = {}
    if args.overhead:
        kw["runtime_overhead"] = parse_bytes(args.overhead, "overhead")
    weights = weight_format(args.weights)
    cfg = ServingConfig(tp=args.tp, pp=args.pp, weights=weights,
                        kv_dtype_bytes=kv_dtype_bytes(args.kv_dtype), **kw)
    validate_parallel(spec, args.tp, args.pp)
    from llmsizer.cli_infer import check_compute_dtype

    check_compute_dtype(acc, weights.compute_dtype, args.weights)
    engine = engine_profile(args.engine, acc).with_limits(args.max_num_seqs,
                                                          args.max_num_batched_tokens)
    def workload(qps: float | None, requests: int) -> Any:
        if args.trace:
            w = wl.from_trace(args.trace, qps=qps, concurrency=args.concurrency,
                              burstiness=args.burstiness, seed=args.seed, requests=requests)
        else:
            w = wl.synthetic(requests, args.prompt or 1024, args.output or 256,
                             qps=qps, concurrency=args.concurrency,
                             burstiness=args.burstiness, seed=args.seed,
                             prompt_spread=args.prompt_spread, output_spread=args.output_spread)
        if args.prefix_fraction:
            w = replace(w, prefix_fraction=args.prefix_fraction)
        return w

    qps = args.qps
    if qps is None and args.concurrency is None:  # --find without a rate: all at once
        qps = math.inf
    work = workload(qps, args.requests)
    if find == "max-rate" and work.description.endswith("with its arrival times"):
        raise SpecError("find", find, "arrivals from --qps (the trace has arrival_s)")
    slo_ttft = parse_seconds(args.slo_ttft, "slo-ttft") if args.slo_ttft else None
    slo_tpot = parse_seconds(args.slo_tpot, "slo-tpot") if args.slo_tpot else None
    args._workload = workload
    args._speculation = speculation(args)
    args._disaggregation = disaggregation(args, spec)
    args._dp_attention = None
    if getattr(args, "dp_attention", False):
        from llmsizer.serving.dp_attention import check

        if args._disaggregation is not None or args._speculation is not None:
            raise SpecError("dp-attention", "on", "not combined with --disaggregate or "
                            "--speculative")
        args._dp_attention = check(spec, args.tp, args.pp, args.ep)
    elif getattr(args, "ep", None) is not None:
        raise SpecError("ep", args.ep, "given with --dp-attention")
    return spec, acc, cfg, engine, work, slo_ttft, slo_tpot


def disaggregation(args: argparse.Namespace, spec: Any) -> Any:
    """--disaggregate XP:YD with --prefill-tp / --decode-tp."""
    from llmsizer.analysis.params import validate_parallel
    from llmsizer.serving.disaggregated import Disaggregation, parse_disaggregate

    text = getattr(args, "disaggregate", None)
    if not text:
        for flag in ("prefill_tp", "decode_tp"):
            if getattr(args, flag, None) is not None:
                raise SpecError(flag.replace("_", "-"), getattr(args, flag),
                                "given with --disaggregate XP:YD")
        return None
    x, y = parse_disaggregate(text)
    for flag, bad, what in (
            ("replicas", args.replicas != 1, "1 with --disaggregate (it sets the instances)"),
            ("concurrency", args.concurrency is not None,
             "not given with --disaggregate (open-loop arrivals only)"),
            ("find", getattr(args, "find", None) is not None, "not given with --disaggregate"),
            ("speculative", bool(getattr(args, "speculative", None)),
             "not given with --disaggregate")):
        if bad:
            raise SpecError(flag, getattr(args, flag), what)
    tp_p = args.prefill_tp or args.tp
    tp_d = args.decode_tp or args.tp
    validate_parallel(spec, tp_p, args.pp)
    validate_parallel(spec, tp_d, args.pp)
    return Disaggregation(x, y, tp_p, tp_d)


def speculation(args: argparse.Namespace) -> Any:
    """--speculative draft:MODEL | mtp | eagle, with --spec-tokens k and --acceptance alpha."""
    from llmsizer.serving.speculative import Speculation

    text = getattr(args, "speculative", None)
    if not text:
        for flag in ("spec_tokens", "acceptance"):
            if getattr(args, flag, None) is not None:
                raise SpecError(flag.replace("_", "-"), getattr(args, flag),
                                "given with --speculative")
        return None
    k = args.spec_tokens if args.spec_tokens is not None else 3
    alpha = args.acceptance if args.acceptance is not None else 0.7
    kind, _, name = text.partition(":")
    kind = kind.strip().lower()
    if kind == "draft" and name:
        from llmsizer.catalog import get_model

        return Speculation("draft", k, alpha, get_model(name))
    if kind in ("mtp", "eagle") and not name:
        return Speculation(kind, k, alpha)
    raise SpecError("speculative", text, "draft:MODEL, mtp or eagle")


def run(args: argparse.Namespace) -> str:
    from llmsizer.analysis.efficiency import Efficiency
    from llmsizer.analysis.serving_sim import simulate
    from llmsizer.report import dumps

    spec, acc, cfg, engine, work, slo_ttft, slo_tpot = build(args)
    eff = Efficiency.for_accelerator(acc, args.calibration, workload="serving")
    if args.find:
        return run_find(args, spec, acc, cfg, engine, work, slo_ttft, slo_tpot, eff)
    show = sys.stderr.isatty() and work.requests >= 2000

    def progress(done: int) -> None:
        print(f"\rsimulating: {done:,}/{work.requests:,} requests finished", end="",
              file=sys.stderr, flush=True)

    try:
        r = simulate(spec, acc, cfg, engine, work, replicas=args.replicas, eff=eff,
                     slo_ttft_s=slo_ttft, slo_tpot_s=slo_tpot, gpus_per_node=args.gpus_per_node,
                     progress=progress if show else None, speculation=args._speculation,
                     disaggregation=args._disaggregation, dp_attention=args._dp_attention)
    finally:
        if show:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
    data = simulation_json(r, args)
    from llmsizer.charts import maybe_plot

    maybe_plot(args, data)
    return dumps(data) if args.json else simulation_text(r)


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
