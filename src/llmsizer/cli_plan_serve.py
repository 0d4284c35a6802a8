"""`llmsizer plan-serve --qps R`: the serving plan searched on the simulator (serving/planner.py),
its table, JSON and launch commands for vLLM, SGLang and TensorRT-LLM."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from llmsizer.errors import SpecError


def add_simulated_arguments(s: argparse.ArgumentParser) -> None:
    """plan-serve's flags that only the simulated search (--qps) reads, beyond cli_plan's."""
    from llmsizer.serving.planner import DISAGGREGATE

    s.add_argument("--disaggregate", default="off", metavar="|".join(DISAGGREGATE),
                   help="with --qps: also search disaggregated prefill/decode layouts (x "
                   "prefill + y decode instances, each pool's TP) and rank them with the "
                   "colocated ones (auto), or only them (only); default off")


def run_simulated(args: argparse.Namespace) -> Any:
    from llmsizer.analysis.efficiency import Efficiency
    from llmsizer.analysis.inference import ServingConfig
    from llmsizer.catalog import get_model
    from llmsizer.cli import EXIT_DOES_NOT_FIT, Outcome, accelerator_arg
    from llmsizer.cli_infer import check_compute_dtype
    from llmsizer.cli_plan import _Progress, emit_export, parse_seconds
    from llmsizer.cli_train import check_positions
    from llmsizer.export.serving import SERVING_EXPORTS, hf_model_id, launch_command
    from llmsizer.report import dumps, table
    from llmsizer.serving import planner
    from llmsizer.serving.engines import ENGINES, engine_profile
    from llmsizer.serving.workload import synthetic
    from llmsizer.specs.precision import kv_dtype_bytes, weight_format
    from llmsizer.units import format_seconds

    disaggregate = getattr(args, "disaggregate", "off")
    if disaggregate not in planner.DISAGGREGATE:
        raise SpecError("disaggregate", disaggregate, ", ".join(planner.DISAGGREGATE))
    if args.export and args.export not in SERVING_EXPORTS:
        raise SpecError("export", args.export, ", ".join(SERVING_EXPORTS))
    engine_name = args.engine or (args.export or "vllm")
    if engine_name not in ENGINES:
        raise SpecError("engine", engine_name, ", ".join(ENGINES))
    ttft_slo = parse_seconds(args.ttft_slo, "ttft-slo") if args.ttft_slo else None
    tpot_slo = parse_seconds(args.tpot_slo, "tpot-slo") if args.tpot_slo else None
    if ttft_slo is None and tpot_slo is None:
        raise SpecError("qps", args.qps, "given with an SLO to meet (--ttft-slo and/or "
                        "--tpot-slo)")
    spec = get_model(args.model)
    acc = accelerator_arg(args)
    check_positions(spec, args.model, args.prompt + args.output, "prompt+output",
                    args.allow_long_context)
    weights, kv = weight_format(args.weights), kv_dtype_bytes(args.kv_dtype)
    check_compute_dtype(acc, weights.compute_dtype, args.weights)
    eff = Efficiency.for_accelerator(acc, args.calibration, workload="serving")
    engine = engine_profile(engine_name, acc)
    if args.mem_util != 0.9:  # --mem-util overrides the engine's memory fraction
        from dataclasses import replace

        engine = replace(engine, memory_fraction=args.mem_util)
    cfg = ServingConfig(weights=weights, kv_dtype_bytes=kv)

    def workload(n: int) -> Any:
        return synthetic(n, args.prompt, args.output, qps=args.qps, concurrency=None,
                         seed=args.seed)

    bar = _Progress()
    try:
        found, tried, sims = planner.plan(
            spec, acc, cfg, engine, eff, gpus=args.gpus, qps=args.qps, make_workload=workload,
            percentile=args.percentile, slo_ttft_s=ttft_slo, slo_tpot_s=tpot_slo,
            requests=args.requests, gpus_per_node=args.gpus_per_node,
            progress=bar if sys.stderr.isatty() else None, disaggregate=disaggregate)
    finally:
        bar.close()
    model_id, from_catalog = hf_model_id(args.model)
    max_len = args.prompt + args.output
    data: dict[str, Any] = {
        "model": spec.name, "hf_model_id": model_id if from_catalog else None,
        "gpu": acc.name, "gpu_name": acc.display_name, "gpus": args.gpus,
        "mode": "simulated", "engine": engine.name, "qps": args.qps,
        "percentile": args.percentile, "ttft_slo_s": ttft_slo, "tpot_slo_s": tpot_slo,
        "prompt": args.prompt, "output": args.output, "requests": args.requests,
        "seed": args.seed, "candidates": tried, "simulations": sims,
        "disaggregate": disaggregate,
        "objective": "goodput_requests_per_s_per_gpu",
        "plans": [c.as_dict(args.price) for c in found[: args.top]]}
    if args.price is not None:
        data["price_per_gpu_hour"] = args.price
        data["currency"] = args.currency
    status = 0 if found else EXIT_DOES_NOT_FIT
    if args.export:
        if not found:
            raise SpecError("export", args.export, "a plan that meets the objectives (none "
                            "does)")
        best = found[0]
        if best.split is not None:
            raise SpecError("export", args.export, "a colocated best plan (the best is "
                            f"disaggregated, {best.layout}: launch its prefill and decode "
                            "instances with the engine's KV-transfer connector; try "
                            "--disaggregate off)")
        text = launch_command(
            args.export, model_id, tp=best.tp, pp=best.pp, max_num_seqs=best.max_num_seqs,
            max_num_batched_tokens=best.max_num_batched_tokens, max_model_len=max_len,
            memory_fraction=engine.memory_fraction if args.export == engine.name else
            engine_profile(args.export, acc).memory_fraction,
            kv_fp8=kv == 1, weights=weights.name, instances=best.replicas,
            gpus_per_node=args.gpus_per_node)
        if not from_catalog:
            text = (f"# {args.model} has no Hugging Face repo id in the catalog: replace it "
                    "with the checkpoint's id or path\n" + text)
        data["instances"] = best.replicas
        return emit_export(args, args.export, text, data)
    if args.json:
        return Outcome(dumps(data), status, wrap=False)
    p = f"p{args.percentile:g}"
    slos = ", ".join(x for x in (f"TTFT <= {format_seconds(ttft_slo)}" if ttft_slo else "",
                                 f"TPOT <= {format_seconds(tpot_slo)}" if tpot_slo else "")
                     if x)
    head = (f"{spec.name} on up to {args.gpus}x {acc.display_name}, {args.qps:g} req/s of "
            f"{args.prompt} + {args.output} tokens, {slos} at {p} ({engine.name} scheduling): "
            f"{tried} configurations, {sims} simulations")
    if not found:
        return Outcome(head + f"\nno configuration within {args.gpus} GPUs meets the SLOs at "
                       f"{args.qps:g} req/s (try more --gpus, --weights fp8 or looser SLOs)",
                       status)
    rows = []
    for i, c in enumerate(found[: args.top], 1):
        row = [i, c.layout, c.gpus,
               f"{c.max_num_seqs}/{c.max_num_batched_tokens}", format_seconds(c.ttft_s),
               format_seconds(c.tpot_s), f"{c.goodput_requests_per_s:,.2f}",
               f"{c.goodput_per_gpu:,.3f}"]
        if args.price is not None:
            cost = c.as_dict(args.price)["cost_per_million_good_output_tokens"]
            row.append("-" if cost is None else f"{cost:,.2f}")
        rows.append(row)
    cols = ["#", "layout", "GPUs", "seqs/chunk", f"{p} TTFT", f"{p} TPOT", "good/s", "/GPU"]
    if args.price is not None:
        cols.append(f"{args.currency}/Mtok")
    best = found[0]
    lines = [head, "", table(rows, cols, "rlrrrrrr" + ("r" if args.price is not None else "")),
             "", best_line(best),
             *([f"disaggregated layouts: xP tpA + yD tpB = x prefill instances of TP A, y "
                f"decode instances of TP B ({disaggregate})"] if disaggregate != "off" else []),
             "good/s: requests/s meeting both SLOs; /GPU: that per GPU"
             + (f"; {args.currency}/Mtok: per million output tokens of those requests"
                if args.price is not None else ""),
             "export the best: --export vllm | sglang | trtllm [-o FILE]"]
    return "\n".join(lines)


def best_line(best: Any) -> str:
    """The best plan in words; for a disaggregated one, its prefill:decode ratio."""
    if best.split is None:
        return (f"best: {best.replicas} instance{'s' if best.replicas != 1 else ''} of "
                f"tp={best.tp} pp={best.pp} ({best.gpus} GPUs), max-num-seqs "
                f"{best.max_num_seqs}, max-num-batched-tokens {best.max_num_batched_tokens}")
    d = best.split
    info = best.result.disaggregation
    return (f"best: disaggregated {d.prefill_instances}P:{d.decode_instances}D, "
            f"{d.prefill_instances} prefill instance{'s' if d.prefill_instances != 1 else ''} "
            f"of tp={d.prefill_tp} + {d.decode_instances} decode "
            f"instance{'s' if d.decode_instances != 1 else ''} of tp={d.decode_tp} "
            f"({best.gpus} GPUs; pools busy {info.prefill.busy_fraction:.0%} / "
            f"{info.decode.busy_fraction:.0%}, KV over {info.transfer.link}), max-num-seqs "
            f"{best.max_num_seqs}, max-num-batched-tokens {best.max_num_batched_tokens}")
