"""`llmsizer plan` and `llmsizer plan-serve`: search layouts, print the best, export them."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

from llmsizer.errors import SpecError
from llmsizer.units import format_bytes, format_seconds


def add_parsers(sub: Any, positive_int: Any) -> None:
    from llmsizer.cli import (
        MAX_GPUS,
        MAX_LENGTH,
        MAX_PLAN_GPUS,
        add_model_and_gpu,
        add_moe_options,
        arg_count,
        arg_float,
        arg_int,
        arg_length,
    )

    p = sub.add_parser(
        "plan", help="search the fastest training layout for a cluster and export it",
        description="Enumerate dp × tp × pp × cp × ep × ZeRO × offload × recompute × micro-batch × "
        "schedule, keep what fits memory with a margin, rank by step time (ties by simplicity: "
        "no ZeRO before ZeRO-1 before 2 before 3, no offload, less recomputation). Exits 3 when "
        "no layout fits.")
    add_model_and_gpu(p)
    p.add_argument("--gpus", type=arg_int(1, MAX_PLAN_GPUS), required=True,
                   help=f"number of GPUs (at most {MAX_PLAN_GPUS:,}: the search enumerates "
                   "their divisors)")
    p.add_argument("--gpus-per-node", type=arg_int(1, 1024),
                   help="GPUs per node: the NVLink domain (default: the GPU's, 8 for an HGX/DGX "
                   "node, 72 for a GB200/GB300 NVL72 rack)")
    p.add_argument("--seq", type=arg_length(1, MAX_LENGTH), required=True,
                   help="sequence length in tokens (4k = 4096)")
    p.add_argument("--allow-long-context", action="store_true",
                   help="plan a --seq beyond the model's position limit anyway")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--global-batch", type=arg_int(1, 2**24), help="sequences per step")
    g.add_argument("--global-batch-tokens",
                   help="tokens per step, e.g. 4M (binary millions when the decimal reading is "
                   "not a multiple of --seq)")
    p.add_argument("--tokens", type=arg_count(), help="training tokens (for time-to-train and cost)")
    p.add_argument("--top", type=arg_int(1, 1000), default=10, help="layouts to show")
    p.add_argument("--objective", default="time", help="time, cost or memory")
    p.add_argument("--margin", type=arg_float(0, 1, high_open=True, what="a fraction"),
                   default=0.05, help="fraction of device memory kept free")
    p.add_argument("--precision", default="mixed",
                   help="mixed (bf16 + fp32 master), mixed-fp16, mixed-fp32-grads, bf16, fp32")
    p.add_argument("--optimizer", default="adam", help="adam, adamw, adam-8bit, sgd, sgd-momentum")
    p.add_argument("--price", type=arg_float(0, 1e6, what="a price per GPU-hour"),
                   help="price per GPU-hour (in --currency)")
    p.add_argument("--currency", default="USD", help="currency of --price")
    p.add_argument("--allow-cross-node-tp", action="store_true",
                   help="let tensor parallelism span nodes")
    p.add_argument("--no-offload", action="store_true", help="do not consider CPU offload")
    p.add_argument("--calibration", help="efficiency calibration file (llmsizer calibrate)")
    p.add_argument("--framework", help="megatron, nemo, deepspeed, fsdp2 or torchtitan: consider "
                   "only the layouts it runs, timed with its overlaps (default: every layout, "
                   "timed as Megatron-LM overlaps)")
    add_moe_options(p)
    p.add_argument("--export", help="deepspeed, megatron, torchrun, accelerate or torchtitan "
                   "(of the best layout; refused when that framework cannot run it)")
    p.add_argument("-o", "--output-file", help="with --export: write the export here")
    from llmsizer.charts import add_plot_argument

    add_plot_argument(p)
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (with --export: the export inside it)")

    s = sub.add_parser(
        "plan-serve", help="search the serving layout with the most throughput per GPU",
        description="TP × PP × replicas × batch limit that maximises output tokens/s per GPU "
        "under TTFT and TPOT objectives. Exits 3 when no layout fits or meets them.")
    add_model_and_gpu(s)
    s.add_argument("--gpus", type=arg_int(1, MAX_GPUS), required=True, help="number of GPUs")
    s.add_argument("--gpus-per-node", type=arg_int(1, 1024), default=8, help="GPUs per node")
    s.add_argument("--prompt", type=arg_length(1, MAX_LENGTH), required=True,
                   help="prompt tokens (4k = 4096)")
    s.add_argument("--output", type=arg_length(1, MAX_LENGTH), required=True,
                   help="output tokens")
    s.add_argument("--allow-long-context", action="store_true",
                   help="size a request beyond the model's position limit anyway")
    s.add_argument("--ttft-slo", help="time-to-first-token objective, e.g. 0.5s or 500ms")
    s.add_argument("--tpot-slo", help="time-per-output-token objective, e.g. 50ms")
    s.add_argument("--weights", default="bf16", help="bf16, fp16, fp8, int8, int4, fp32")
    s.add_argument("--kv-dtype", default="bf16", help="bf16, fp16, fp8, int8, int4, fp32")
    s.add_argument("--mem-util", type=arg_float(0, 1, low_open=True, what="a fraction"),
                   default=0.9, help="fraction of device memory usable")
    s.add_argument("--top", type=arg_int(1, 1000), default=5, help="layouts to show")
    s.add_argument("--calibration", help="efficiency calibration file (llmsizer calibrate)")
    s.add_argument("--qps", type=arg_float(0, 1e6, low_open=True, what="a request rate"),
                   help="target request rate: search on the serving simulator (TP × PP × "
                   "replicas × max-num-seqs × max-num-batched-tokens) for the most goodput per "
                   "GPU meeting the SLOs at --percentile; without it the static one-batch search")
    s.add_argument("--static", action="store_true",
                   help="the static one-batch search even with --qps")
    s.add_argument("--percentile", type=arg_float(1, 100, what="a percentile"), default=90.0,
                   help="with --qps: the percentile at which the SLOs must hold (default 90)")
    s.add_argument("--engine", default=None, help="with --qps: vllm, sglang, trtllm or lmdeploy "
                   "scheduling (default: the --export engine, else vllm)")
    from llmsizer.cli_plan_serve import add_simulated_arguments

    add_simulated_arguments(s)
    s.add_argument("--requests", type=arg_int(1, 10**6), default=300,
                   help="with --qps: requests per simulation (at least 200 per replica)")
    s.add_argument("--seed", type=arg_int(0, 2**63 - 1), default=0,
                   help="with --qps: the arrival and length draw")
    s.add_argument("--price", type=arg_float(0, 1e6, what="a price per GPU-hour"),
                   help="with --qps: price per GPU-hour (cost per hour and per million tokens)")
    s.add_argument("--currency", default="USD", help="currency of --price")
    s.add_argument("--export", help="vllm (static); with --qps: vllm, sglang or trtllm, the "
                   "launch command of the best plan with the model's Hugging Face repo id")
    s.add_argument("-o", "--output-file", help="with --export: write the export here")
    s.add_argument("--json", action="store_true",
                   help="print one JSON object (with --export: the export inside it)")


def check_export_flags(args: argparse.Namespace) -> None:
    if args.output_file and not args.export:
        raise SpecError("output-file", args.output_file, "given with --export (it writes the "
                        "export; redirect stdout to save the report)")


def emit_export(args: argparse.Namespace, kind: str, text: str, data: dict[str, Any]) -> Any:
    """The export on stdout, or written to -o FILE; with --json, inside the JSON."""
    from llmsizer.cli import Outcome
    from llmsizer.report import dumps

    if args.output_file:
        write_text(args.output_file, text)
    if args.json:
        data["export"] = {"kind": kind, "file": args.output_file, "text": text}
        return Outcome(dumps(data), wrap=False)
    if args.output_file:
        return f"wrote {args.output_file} ({kind})"
    return Outcome(text, wrap=False)


def write_text(path: str, text: str) -> None:
    """Write an export or calibration file; an unwritable path is a one-line error."""
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    except OSError as e:
        raise SpecError("output-file", path, f"a writable path ({e.strerror})") from None


def parse_seconds(text: str, field: str) -> float:
    t = text.strip().lower()
    try:
        if t.endswith("ms"):
            v = float(t[:-2]) / 1e3
        elif t.endswith("s"):
            v = float(t[:-1])
        else:
            v = float(t)
    except ValueError:
        raise SpecError(field, text, "a duration such as 0.5s or 50ms") from None
    if not (math.isfinite(v) and 0 < v <= 86400):
        raise SpecError(field, text, "a positive duration up to a day")
    return v


class _Progress:
    """A progress bar on stderr once a search has run for a second (terminals only)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not sys.stderr.isatty() or time.perf_counter() - self.start < 1.0:
            return
        width = 30
        filled = int(width * done / total)
        sys.stderr.write(f"\rsearching [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def run_plan(args: argparse.Namespace) -> Any:
    from llmsizer.analysis import step
    from llmsizer.analysis.cluster import Cluster
    from llmsizer.analysis.efficiency import Efficiency
    from llmsizer.analysis.planner import SearchSpace, search
    from llmsizer.catalog import get_model
    from llmsizer.cli import EXIT_DOES_NOT_FIT, Outcome, accelerator_arg
    from llmsizer.cli_train import check_positions, global_batch_sequences
    from llmsizer.specs.precision import optimizer, training_precision

    check_export_flags(args)
    spec = get_model(args.model)
    acc = accelerator_arg(args)
    args.gpus_per_node = args.gpus_per_node or acc.nvlink_domain
    check_positions(spec, args.model, args.seq, "seq", args.allow_long_context)
    global_batch = global_batch_sequences(args)
    assert global_batch is not None  # the parser requires one of the two
    precision = training_precision(args.precision)
    from llmsizer.analysis import frameworks
    from llmsizer.analysis.planner import framework
    from llmsizer.analysis.training import check_moe_runtime

    # the time model's overlaps: the framework's when one is named, else the default profile's
    prof = frameworks.profile(args.framework or frameworks.DEFAULT)
    check_moe_runtime(args.moe_dispatcher, args.moe_a2a_overlap, prof.name)
    st = step.Setting(spec, args.seq, precision, optimizer(args.optimizer),
                      Cluster(acc, gpus_per_node=args.gpus_per_node),
                      Efficiency.for_accelerator(acc, args.calibration), framework=prof.name,
                      moe_imbalance=args.moe_imbalance, moe_dispatcher=args.moe_dispatcher,
                      moe_a2a_overlap=args.moe_a2a_overlap, cuda_graphs=args.cuda_graphs)

    fw = framework(args.framework) if args.framework else None
    if fw is not None and args.export and args.export not in FRAMEWORK_EXPORTS[fw.name]:
        raise SpecError("export", args.export, f"an export {fw.name} reads: "
                        + ", ".join(FRAMEWORK_EXPORTS[fw.name]))
    space = SearchSpace(gpus=args.gpus, global_batch=global_batch,
                        allow_cross_node_tp=args.allow_cross_node_tp, offload=not args.no_offload,
                        framework=fw)
    progress = _Progress()
    result = search(st, space, objective=args.objective, margin=args.margin, top=args.top,
                    progress=progress)
    progress.close()
    data = plan_json(result, global_batch, args.seq, args.gpus, args.tokens, args.price)
    data = {"model": spec.name, "gpu": acc.name, "gpu_name": acc.display_name} | data
    if args.price is not None:
        data["currency"] = args.currency
    status = 0 if result.ranked else EXIT_DOES_NOT_FIT
    from llmsizer.charts import maybe_plot

    maybe_plot(args, data)
    if args.export:
        if not result.ranked:
            raise SpecError("export", args.export, "a plan that fits (none does)")
        text, warnings = export_training(args.export, spec, result.ranked[0].par, precision,
                                         args.seq, args.gpus_per_node)
        from llmsizer.cli_train import note

        for w in warnings:
            note(w)
        return emit_export(args, args.export, text, data)
    if args.json:
        from llmsizer.report import dumps

        return Outcome(dumps(data), status, wrap=False)
    return Outcome(plan_text(spec.name, acc.display_name, data), status)


FRAMEWORK_EXPORTS = {"megatron": ("megatron", "torchrun"), "nemo": ("megatron", "torchrun"),
                     "deepspeed": ("deepspeed",), "fsdp2": ("accelerate",),
                     "torchtitan": ("torchtitan",)}


def export_training(kind: str, spec: Any, par: Any, precision: Any, seq: int,
                    gpus_per_node: int) -> tuple[str, list[str]]:
    """The export of exactly `par`; a layout the framework cannot run is refused (SpecError),
    never replaced by a nearby one."""
    from llmsizer.export import deepspeed_config, megatron_args, torchrun_command

    if kind == "accelerate":
        from types import SimpleNamespace

        from llmsizer.export.finetune import _yaml, accelerate_fsdp

        if par.tp * par.pp * par.cp * par.ep > 1:
            raise SpecError("export", kind, "a data-parallel layout (FSDP alone has no tp/pp/"
                            "cp/ep; plan with --framework fsdp2)")
        return _yaml(accelerate_fsdp(SimpleNamespace(par=par), precision)), []
    if kind == "torchtitan":
        from llmsizer.export.training import torchtitan_toml

        return torchtitan_toml(par, precision, seq), []

    if kind == "deepspeed":
        cfg, warnings = deepspeed_config(par, precision)
        return json.dumps(cfg, indent=2), warnings
    if kind == "megatron":
        args, warnings = megatron_args(spec, par, precision, seq)
        return " \\\n  ".join(_pairs(args)), warnings
    if kind == "torchrun":
        args, warnings = megatron_args(spec, par, precision, seq)
        return torchrun_command(par, gpus_per_node, "pretrain_gpt.py", args), warnings
    raise SpecError("export", kind, "deepspeed, megatron, torchrun, accelerate or torchtitan")


def _pairs(args: list[str]) -> list[str]:
    out: list[str] = []
    for a in args:
        if a.startswith("--") or not out:
            out.append(a)
        else:
            out[-1] += f" {a}"
    return out


def _describe(par: Any) -> str:
    parts = [f"dp={par.dp} tp={par.tp} pp={par.pp}"]
    if par.cp > 1:
        parts.append(f"cp={par.cp}")
    if par.ep > 1:
        parts.append(f"ep={par.ep}")
    parts.append(f"ZeRO-{par.zero}")
    if par.offload:
        parts.append("offload " + "+".join(sorted(par.offload)))
    parts.append(f"recompute {par.recompute}")
    parts.append(f"mb {par.micro_batch}×{par.grad_accum}")
    parts.append(par.schedule + (f":{par.virtual_stages}" if par.virtual_stages > 1 else ""))
    return ", ".join(parts)


def plan_json(result: Any, global_batch: int, seq: int, gpus: int, tokens: float | None,
              price: float | None) -> dict[str, Any]:
    def cand(c: Any) -> dict[str, Any]:
        p = c.par
        tokens_per_s = global_batch * seq / c.step_s
        out = {"dp": p.dp, "tp": p.tp, "pp": p.pp, "cp": p.cp, "ep": p.ep, "zero": p.zero,
               "offload": sorted(p.offload), "recompute": p.recompute,
               "sequence_parallel": p.sequence_parallel, "micro_batch": p.micro_batch,
               "grad_accum": p.grad_accum, "schedule": p.schedule,
               "virtual_stages": p.virtual_stages, "peak_memory_bytes": c.peak_bytes,
               "step_time_s": c.step_s, "tokens_per_s": tokens_per_s, "summary": _describe(p)}
        if tokens:
            out["time_to_train_s"] = tokens / tokens_per_s
            out["gpu_hours"] = out["time_to_train_s"] * gpus / 3600
            if price is not None:
                out["cost"] = out["gpu_hours"] * price
        return out

    data: dict[str, Any] = {
        "evaluated": result.evaluated, "fitting": result.fitting, "seconds": result.seconds,
        "configs_per_s": result.configs_per_s, "capacity_bytes": result.capacity_bytes,
        "global_batch": global_batch, "seq": seq, "gpus": gpus,
        "plans": [cand(c) for c in result.ranked],
    }
    if result.nearest_misfit is not None:
        m = result.nearest_misfit
        data["nearest_misfit"] = cand(m) | {"over_bytes": m.peak_bytes - result.capacity_bytes}
    if not result.ranked and result.least_memory is not None:
        m = result.least_memory
        data["impossible"] = {
            "least_memory_layout": cand(m),
            "over_bytes": m.peak_bytes - result.capacity_bytes,
        }
    return data


def plan_text(model: str, gpu: str, d: dict[str, Any]) -> str:
    from llmsizer.report import table

    lines = [f"{model} on {d['gpus']}× {gpu}, seq {d['seq']}, global batch {d['global_batch']}: "
             f"{d['evaluated']:,} layouts evaluated in {d['seconds']:.2f} s "
             f"({d['configs_per_s']:,.0f}/s), {d['fitting']:,} fit in "
             f"{format_bytes(d['capacity_bytes'])} per device"]
    if "impossible" in d:
        imp = d["impossible"]
        lines.append(f"NOTHING FITS: the layout needing least memory "
                     f"({imp['least_memory_layout']['summary']}) needs "
                     f"{format_bytes(imp['least_memory_layout']['peak_memory_bytes'])}, "
                     f"{format_bytes(imp['over_bytes'])} over; add GPUs or use a smaller batch/"
                     "sequence")
        return "\n".join(lines)
    rows = []
    best = d["plans"][0]["step_time_s"]
    for i, c in enumerate(d["plans"], 1):
        rows.append((i, c["summary"], format_bytes(c["peak_memory_bytes"]),
                     format_seconds(c["step_time_s"]), f"{c['tokens_per_s']:,.0f}",
                     f"{100 * (c['step_time_s'] / best - 1):+.1f}%" if i > 1 else "best"))
    lines += ["", table(rows, ["#", "layout", "peak memory", "step", "tokens/s", "vs best"],
                        "rlrrrr")]
    b = d["plans"][0]
    if "time_to_train_s" in b:
        lines.append(f"time to train: {format_seconds(b['time_to_train_s'])}, "
                     f"{b['gpu_hours']:,.0f} GPU-hours"
                     + (f", cost {b['cost']:,.0f} {d.get('currency', '')}".rstrip()
                        if "cost" in b else ""))
    if "nearest_misfit" in d:
        m = d["nearest_misfit"]
        lines.append(f"nearest faster layout that does not fit: {m['summary']} "
                     f"({format_seconds(m['step_time_s'])}/step) needs "
                     f"{format_bytes(m['peak_memory_bytes'])}, {format_bytes(m['over_bytes'])} "
                     "over the limit")
    lines.append("export the best: --export deepspeed | megatron | torchrun [-o FILE]")
    return "\n".join(lines)


def run_plan_serve(args: argparse.Namespace) -> Any:
    from llmsizer.analysis.efficiency import Efficiency
    from llmsizer.analysis.inference import ServingConfig, max_concurrency, serve
    from llmsizer.analysis.params import validate_parallel
    from llmsizer.catalog import get_model
    from llmsizer.cli import EXIT_DOES_NOT_FIT, Outcome, accelerator_arg
    from llmsizer.cli_train import check_positions
    from llmsizer.report import dumps, table
    from llmsizer.specs.precision import kv_dtype_bytes, weight_format

    check_export_flags(args)
    if getattr(args, "qps", None) is not None and not args.static:
        from llmsizer.cli_plan_serve import run_simulated

        return run_simulated(args)
    spec = get_model(args.model)
    acc = accelerator_arg(args)
    check_positions(spec, args.model, args.prompt + args.output, "prompt+output",
                    args.allow_long_context)
    ttft_slo = parse_seconds(args.ttft_slo, "ttft-slo") if args.ttft_slo else None
    tpot_slo = parse_seconds(args.tpot_slo, "tpot-slo") if args.tpot_slo else None
    from llmsizer.cli_infer import check_compute_dtype

    weights, kv = weight_format(args.weights), kv_dtype_bytes(args.kv_dtype)
    check_compute_dtype(acc, weights.compute_dtype, args.weights)
    eff = Efficiency.for_accelerator(acc, args.calibration, workload="serving")
    max_seq = args.prompt + args.output
    found = []
    evaluated = 0
    for tp in (1, 2, 4, 8, 16):
        for pp in (1, 2, 4, 8):
            n = tp * pp
            if n > args.gpus or args.gpus % n or tp > args.gpus_per_node:
                continue
            try:
                validate_parallel(spec, tp, pp)
                cfg = ServingConfig(tp=tp, pp=pp, weights=weights, kv_dtype_bytes=kv,
                                    mem_util=args.mem_util)
            except SpecError:
                continue
            limit = max_concurrency(spec, acc, cfg, max_seq)
            b = 1
            while b <= limit:
                r = serve(spec, acc, cfg, batch=b, prompt=args.prompt, output=args.output,
                          gpus_per_node=args.gpus_per_node, eff=eff)
                evaluated += 1
                ok = (ttft_slo is None or r.ttft_s <= ttft_slo) and (
                    tpot_slo is None or r.tpot_s <= tpot_slo)
                if ok:
                    replicas = args.gpus // n
                    found.append({"tp": tp, "pp": pp, "replicas": replicas, "max_num_seqs": b,
                                  "ttft_s": r.ttft_s, "tpot_s": r.tpot_s,
                                  "throughput_tokens_per_s": replicas * r.throughput_tokens_per_s,
                                  "tokens_per_s_per_gpu": r.throughput_tokens_per_s / n,
                                  "memory_bytes_per_device": r.memory.total})
                b *= 2
    found.sort(key=lambda x: (-x["tokens_per_s_per_gpu"], x["tp"] * x["pp"]))
    data = {"model": spec.name, "gpu": acc.name, "gpu_name": acc.display_name,
            "gpus": args.gpus, "evaluated": evaluated, "plans": found[: args.top],
            "ttft_slo_s": ttft_slo, "tpot_slo_s": tpot_slo, "prompt": args.prompt,
            "output": args.output}
    status = 0 if found else EXIT_DOES_NOT_FIT
    if args.export:
        if args.export != "vllm":
            raise SpecError("export", args.export, "vllm")
        if not found:
            raise SpecError("export", args.export, "a plan that meets the objectives (none does)")
        from llmsizer.export import vllm_args

        best = found[0]
        cfg = ServingConfig(tp=best["tp"], pp=best["pp"], weights=weights, kv_dtype_bytes=kv,
                            mem_util=args.mem_util)
        text = vllm_args(_served_name(args.model), cfg, best["max_num_seqs"], max_seq)
        return emit_export(args, "vllm", text, data)
    if args.json:
        return Outcome(dumps(data), status, wrap=False)
    if not found:
        if not evaluated:
            return Outcome(f"nothing fits: no tp × pp that divides {args.gpus} GPUs holds {spec.name} "
                    f"with a {max_seq}-token request on {acc.display_name} (try more GPUs, "
                    "--weights int8/int4 or --kv-dtype fp8)", status)
        slos = ", ".join(x for x in (f"TTFT ≤ {args.ttft_slo}" if args.ttft_slo else "",
                                     f"TPOT ≤ {args.tpot_slo}" if args.tpot_slo else "") if x)
        return Outcome(f"no layout of {args.gpus}× {acc.display_name} meets the objectives "
                       f"({slos}); {evaluated} evaluated", status)
    rows = [(i, f"tp={p['tp']} pp={p['pp']} × {p['replicas']} replicas", p["max_num_seqs"],
             format_seconds(p["ttft_s"]), format_seconds(p["tpot_s"]),
             f"{p['tokens_per_s_per_gpu']:,.0f}", f"{p['throughput_tokens_per_s']:,.0f}")
            for i, p in enumerate(found[: args.top], 1)]
    return (f"{spec.name} on {args.gpus}× {acc.display_name}, prompt {args.prompt}, output "
            f"{args.output}: {evaluated} layouts evaluated\n\n"
            + table(rows, ["#", "layout", "batch", "TTFT", "TPOT", "tok/s/GPU", "tok/s total"],
                    "rlrrrrr")
            + "\nexport the best: --export vllm [-o FILE]")


def _served_name(model: str) -> str:
    """What an engine loads: the catalog entry's Hugging Face repo id (engines download by repo
    id, not by llmsizer's short name), else the name or path as given."""
    from llmsizer.catalog import model_entry
    from llmsizer.errors import LlmsizerError

    try:
        return model_entry(model).hf_repo or model
    except LlmsizerError:  # a config.json path or an unknown name: passed through unchanged
        return model
