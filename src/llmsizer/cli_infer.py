"""`llmsizer infer`: serving memory, roofline prefill/decode, latency, throughput, concurrency."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from llmsizer.errors import SpecError
from llmsizer.units import format_bytes

DEFAULT_PROMPT = 1024
DEFAULT_OUTPUT = 256


def add_parser(sub: Any, positive_int: Any) -> None:
    from llmsizer.cli import MAX_LENGTH, MAX_PARALLEL, add_model_and_gpu, arg_float, arg_int, arg_length

    p = sub.add_parser(
        "infer", help="serving: memory, TTFT, TPOT, throughput, max concurrency",
        description="Weights and KV cache per device, per-op roofline of prefill and decode, "
        "TTFT/TPOT/end-to-end latency, throughput and the largest batch that fits. Exits 3 when "
        "the batch does not fit in memory.")
    add_model_and_gpu(p)
    p.add_argument("--tp", type=arg_int(1, MAX_PARALLEL), default=1, help="tensor-parallel size")
    p.add_argument("--pp", type=arg_int(1, MAX_PARALLEL), default=1,
                   help="pipeline-parallel size")
    p.add_argument("--batch", type=arg_int(1, 2**20), default=1, help="concurrent requests")
    p.add_argument("--prompt", type=arg_length(1, MAX_LENGTH),
                   help=f"prompt tokens, 4k = 4096 (default: {DEFAULT_PROMPT}, shortened to fit "
                   "a model with fewer positions)")
    p.add_argument("--output", type=arg_length(1, MAX_LENGTH), default=DEFAULT_OUTPUT,
                   help="output tokens (1k = 1024)")
    p.add_argument("--max-seq", type=arg_length(1, MAX_LENGTH),
                   help="max tokens per request for concurrency (default: prompt + output)")
    p.add_argument("--allow-long-context", action="store_true",
                   help="size a request beyond the model's position limit anyway")
    p.add_argument("--weights", default="bf16", help="bf16, fp16, fp8, int8, int4, fp32")
    p.add_argument("--kv-dtype", default="bf16", help="bf16, fp16, fp8, int8, int4, fp32")
    p.add_argument("--mem-util", type=arg_float(0, 1, low_open=True, what="a fraction"),
                   default=0.9,
                   help="fraction of device memory usable, like vLLM's --gpu-memory-utilization")
    p.add_argument("--block-size", type=arg_int(0, 2**16), default=16,
                   help="paged KV block in tokens (0: exact)")
    p.add_argument("--kv-layout", choices=("engine", "hf", "expanded"), default="engine",
                   help="cache layout: engine (vLLM/SGLang: MLA latent replicated per TP rank, "
                   "conv state of kernel-1), hf (transformers 5.x), expanded (MLA keys and values "
                   "up-projected per head)")
    p.add_argument("--no-mla-absorb", action="store_true",
                   help="MLA decode up-projects the cached latent every step instead of folding "
                   "W_UK/W_UV into the query and output (weight absorption, the engines' default)")
    p.add_argument("--overhead", help="runtime overhead per device, e.g. 1GiB (default: 1GiB)")
    p.add_argument("--unfused-attention", action="store_true",
                   help="attention scores go through memory (no flash kernel)")
    p.add_argument("--gpus-per-node", type=arg_int(1, 1024), default=8, help="GPUs per node")
    p.add_argument("--sweep", action="store_true", help="latency/throughput per batch size")
    p.add_argument("--calibration", help="efficiency calibration file (llmsizer calibrate)")
    from llmsizer.charts import add_plot_argument

    add_plot_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--explain", action="store_true",
                   help="every number as its formula with values and source")


def build(args: argparse.Namespace) -> tuple[Any, ...]:
    from llmsizer.analysis.inference import ServingConfig
    from llmsizer.catalog import get_model
    from llmsizer.cli import accelerator_arg
    from llmsizer.cli_train import check_positions
    from llmsizer.specs.precision import kv_dtype_bytes, weight_format
    from llmsizer.units import parse_bytes

    spec = get_model(args.model)
    acc = accelerator_arg(args)
    if args.prompt is None:
        from llmsizer.catalog import position_limit
        from llmsizer.cli_train import note

        limit, _ = position_limit(args.model, spec)
        args.prompt = DEFAULT_PROMPT
        if DEFAULT_PROMPT + args.output > limit and limit > args.output:
            args.prompt = min(DEFAULT_PROMPT, limit - args.output)
            note(f"--prompt {args.prompt} (so that prompt + output fit {spec.name}'s {limit:,} "
                 f"positions; the default is {DEFAULT_PROMPT})")
    check_positions(spec, args.model, args.prompt + args.output, "prompt+output",
                    args.allow_long_context)
    if args.max_seq is not None:
        check_positions(spec, args.model, args.max_seq, "max-seq", args.allow_long_context)
    kw: dict[str, Any] = {}
    if args.overhead:
        kw["runtime_overhead"] = parse_bytes(args.overhead, "overhead")
        if not 0 <= kw["runtime_overhead"] <= 2**50:
            raise SpecError("overhead", args.overhead, "a size from 0 to 1PiB")
    weights = weight_format(args.weights)
    cfg = ServingConfig(tp=args.tp, pp=args.pp, weights=weights,
                        kv_dtype_bytes=kv_dtype_bytes(args.kv_dtype), mem_util=args.mem_util,
                        block_size=args.block_size or None, flash=not args.unfused_attention,
                        kv_layout=args.kv_layout, mla_absorb=not args.no_mla_absorb, **kw)
    from llmsizer.analysis.params import validate_parallel

    validate_parallel(spec, args.tp, args.pp)
    check_compute_dtype(acc, weights.compute_dtype, args.weights)
    return spec, acc, cfg


def check_compute_dtype(acc: Any, dtype: str, weights: str) -> None:
    """Refuse, with the way out, a weight format whose products this device has no peak for."""
    if dtype not in acc.peak_flops:
        hint = " (try --weights fp16)" if "fp16" in acc.peak_flops else ""
        raise SpecError("weights", weights, f"a format whose {dtype} matrix products "
                        f"{acc.display_name} has a peak for: " + ", ".join(acc.peak_flops) + hint)


def fit_suggestions(spec: Any, acc: Any, cfg: Any, batch: int, max_seq: int) -> list[str]:
    from llmsizer.analysis.inference import serving_memory
    from llmsizer.analysis.params import validate_parallel
    from llmsizer.specs.precision import weight_format

    tries: list[tuple[str, Any, int]] = []
    for tp in (cfg.tp * 2, cfg.tp * 4, cfg.tp * 8):
        tries.append((f"--tp {tp}", replace(cfg, tp=tp), max_seq))
    for w in ("int8", "int4"):
        tries.append((f"--weights {w}", replace(cfg, weights=weight_format(w)), max_seq))
    tries.append(("--kv-dtype fp8", replace(cfg, kv_dtype_bytes=1.0), max_seq))
    tries.append((f"--max-seq {max_seq // 2}", cfg, max_seq // 2))
    tries.append((f"--batch {max(1, batch // 2)}", cfg, max_seq))
    out = []
    for label, c, seq in tries:
        try:
            validate_parallel(spec, c.tp, c.pp)
        except SpecError:
            continue
        b = max(1, batch // 2) if label.startswith("--batch") else batch
        m = serving_memory(spec, acc, c, b, seq)
        if m.total <= m.capacity:
            out.append(f"{label}: {format_bytes(m.total)} of {format_bytes(m.capacity)}")
    return out[:5]


def run(args: argparse.Namespace) -> Any:
    from llmsizer.analysis.efficiency import Efficiency
    from llmsizer.analysis.inference import compute_bound_batch, serve
    from llmsizer.cli import EXIT_DOES_NOT_FIT, Outcome
    from llmsizer.report import dumps
    from llmsizer.report_inference import check_serving, inference_json, inference_text

    spec, acc, cfg = build(args)
    eff = Efficiency.for_accelerator(acc, args.calibration, workload="serving")
    result = serve(spec, acc, cfg, batch=args.batch, prompt=args.prompt, output=args.output,
                   max_seq=args.max_seq, gpus_per_node=args.gpus_per_node, eff=eff)
    check_serving(result)
    sweep = []
    if args.sweep:
        b = 1
        limit = max(1, min(result.max_concurrency, 2**20))  # doubling: at most 21 points
        while b <= limit:
            r = serve(spec, acc, cfg, batch=b, prompt=args.prompt, output=args.output,
                      max_seq=args.max_seq, gpus_per_node=args.gpus_per_node, eff=eff)
            check_serving(r)
            sweep.append(r)
            b *= 2
    turn = compute_bound_batch(spec, acc, cfg, args.prompt + max(1, args.output // 2), eff)
    data = inference_json(result, sweep, turn, args.explain)
    if not result.fits:
        data["suggestions"] = fit_suggestions(spec, acc, cfg, args.batch, result.max_seq)
    status = 0 if result.fits else EXIT_DOES_NOT_FIT
    from llmsizer.charts import maybe_plot

    maybe_plot(args, data)
    if args.json:
        return Outcome(dumps(data), status, wrap=False)
    return Outcome(inference_text(result, data, sweep, args.explain), status)
