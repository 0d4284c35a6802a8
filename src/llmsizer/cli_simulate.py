"""`llmsizer simulate`: a request stream served by continuously batching engine instances.

This module parses and checks the arguments and runs the simulation; the results are rendered by
cli_simulate_report.py, the inverse questions (--find) answered by cli_simulate_find.py."""

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
    from llmsizer.catalog import get_model
    from llmsizer.cli import accelerator_arg
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
    acc = accelerator_arg(args)
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
        from llmsizer.cli_simulate_find import run_find

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
    from llmsizer.cli_simulate_report import simulation_json, simulation_text

    data = simulation_json(r, args)
    from llmsizer.charts import maybe_plot

    maybe_plot(args, data)
    return dumps(data) if args.json else simulation_text(r)
