"""`llmsizer train`: flags → specs → training analysis → report."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from llmsizer.errors import SpecError


def add_parser(sub: Any, positive_int: Any) -> None:
    t = sub.add_parser(
        "train", help="training memory, FLOPs, step time, MFU and time-to-train",
        description="Memory per device, FLOPs, step time, throughput, MFU/HFU and time-to-train "
        "of a training run; or, given a measurement (--gpu-hours, --step-time, --tokens-per-s), "
        "the MFU it achieved.")
    t.add_argument("model", help="catalog name, alias, HF repo id, or path to a config.json")
    t.add_argument("--gpu", required=True, help="accelerator name/alias or JSON file")
    t.add_argument("--gpus", type=positive_int("gpus"), help="number of GPUs (default: one node)")
    t.add_argument("--gpus-per-node", type=positive_int("gpus-per-node"), default=8)
    t.add_argument("--tokens", help="training tokens, e.g. 15T (for time-to-train)")
    t.add_argument("--seq", type=positive_int("seq"), default=4096, help="sequence length (4096)")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--global-batch", type=positive_int("global-batch"), help="sequences per step")
    g.add_argument("--global-batch-tokens", help="tokens per step, e.g. 4M")
    t.add_argument("--micro-batch", type=positive_int("micro-batch"), default=1)
    for name in ("tp", "pp", "cp", "ep"):
        t.add_argument(f"--{name}", type=positive_int(name), default=1,
                       help=f"{name.upper()} size (1)")
    t.add_argument("--zero", default="0", help="ZeRO stage 0-3 (or FSDP name: full_shard, "
                   "shard_grad_op, no_shard)")
    t.add_argument("--offload", default="", help="optimizer, params or optimizer,params")
    t.add_argument("--offload-device", default="cpu", help="cpu or nvme")
    t.add_argument("--recompute", default="none", help="none, selective or full")
    t.add_argument("--sequence-parallel", action="store_true")
    t.add_argument("--schedule", default="1f1b", help="gpipe, 1f1b or interleaved:V")
    t.add_argument("--precision", default="mixed",
                   help="mixed (bf16 + fp32 master, default), mixed-fp16, mixed-fp32-grads, "
                   "bf16, fp32")
    t.add_argument("--optimizer", default="adam", help="adam, adamw, adam-8bit, sgd, sgd-momentum")
    t.add_argument("--activations", default="megatron", help="megatron (default)")
    t.add_argument("--attention", default="flash", help="flash (default) or eager kernels")
    t.add_argument("--mfu-attention", default="dense",
                   help="attention convention of the MFU numerator: dense (PaLM, Megatron) or causal")
    t.add_argument("--overhead", help="framework overhead per device, e.g. 1GiB (default 1 GiB)")
    t.add_argument("--price", type=float, help="price per GPU-hour, for the cost")
    t.add_argument("--matmul-efficiency", type=float, help="ceiling fraction of peak (0.8)")
    t.add_argument("--memory-efficiency", type=float, help="fraction of HBM bandwidth (0.85)")
    t.add_argument("--comm-efficiency", type=float, help="fraction of link bandwidth (0.8)")
    t.add_argument("--inter-node-gbps", type=float, default=400.0,
                   help="inter-node network per GPU in Gb/s (400)")
    t.add_argument("--calibration", help="efficiency calibration file (llmsizer calibrate)")
    t.add_argument("--no-dp-overlap", action="store_true",
                   help="do not hide gradient reduction behind the backward pass")
    m = t.add_mutually_exclusive_group()
    m.add_argument("--gpu-hours", help="measured GPU-hours (with --tokens): achieved MFU")
    m.add_argument("--step-time", type=float, help="measured seconds per step: achieved MFU")
    m.add_argument("--tokens-per-s", help="measured tokens/s of the whole run: achieved MFU")
    t.add_argument("--json", action="store_true")
    t.add_argument("--explain", action="store_true")


def _zero(text: str) -> int:
    from llmsizer.specs.parallel import ZERO_FSDP_NAMES

    key = text.lower()
    if key in ZERO_FSDP_NAMES:
        return ZERO_FSDP_NAMES[key]
    if key.isdigit():
        return int(key)
    raise SpecError("zero", text, "0, 1, 2, 3 or an FSDP name (no_shard, shard_grad_op, "
                    "full_shard)")


def global_batch_sequences(args: argparse.Namespace) -> int | None:
    """--global-batch (sequences) or --global-batch-tokens (a multiple of --seq)."""
    from llmsizer.units import parse_count

    if not args.global_batch_tokens:
        return args.global_batch  # type: ignore[no-any-return]
    tokens = parse_count(args.global_batch_tokens, "global-batch-tokens")
    below = int(tokens // args.seq)
    if tokens % args.seq:
        raise SpecError("global-batch-tokens", args.global_batch_tokens,
                        f"a multiple of seq ({args.seq}), e.g. {below * args.seq:,} or "
                        f"{(below + 1) * args.seq:,} ({below} or {below + 1} sequences)")
    return below


def build(args: argparse.Namespace) -> tuple[Any, ...]:
    from llmsizer.analysis.efficiency import Efficiency
    from llmsizer.analysis.training import Cluster
    from llmsizer.catalog import get_accelerator, get_model
    from llmsizer.specs.parallel import Parallelism, parse_schedule
    from llmsizer.specs.precision import optimizer, training_precision
    from llmsizer.units import parse_bytes, parse_count

    spec = get_model(args.model)
    acc = get_accelerator(args.gpu)
    gpus = args.gpus or args.gpus_per_node
    mp = args.tp * args.pp * args.cp
    if gpus % mp:
        raise SpecError("gpus", gpus, f"a multiple of tp·pp·cp = {args.tp}·{args.pp}·{args.cp} "
                        f"= {mp}")
    dp = gpus // mp
    schedule, v = parse_schedule(args.schedule)
    global_batch = global_batch_sequences(args)
    per_step = args.micro_batch * dp
    if global_batch is None:
        accum = 1 if args.pp == 1 else 4 * args.pp
    else:
        if global_batch % per_step:
            raise SpecError("global-batch", global_batch,
                            f"a multiple of micro-batch·dp = {args.micro_batch}·{dp} = {per_step}")
        accum = global_batch // per_step
    offload = frozenset(x.strip() for x in args.offload.split(",") if x.strip())
    par = Parallelism(dp=dp, tp=args.tp, pp=args.pp, cp=args.cp, ep=args.ep,
                      sequence_parallel=args.sequence_parallel, zero=_zero(args.zero),
                      offload=offload, offload_device=args.offload_device,
                      recompute=args.recompute, micro_batch=args.micro_batch, grad_accum=accum,
                      schedule=schedule, virtual_stages=v)
    if schedule == "interleaved" and spec.num_layers % (args.pp * v):
        raise SpecError("schedule", args.schedule,
                        f"V with num_layers ({spec.num_layers}) divisible by pp·V")
    overrides = {k: v for k, v in (("matmul_ceiling", args.matmul_efficiency),
                                    ("memory_ceiling", args.memory_efficiency),
                                    ("comm_efficiency", args.comm_efficiency)) if v is not None}
    eff = Efficiency.for_accelerator(acc, args.calibration)
    if overrides:
        eff = replace(eff, **overrides, source=eff.source + " with command-line overrides")
    if args.inter_node_gbps <= 0:
        raise SpecError("inter-node-gbps", args.inter_node_gbps, "a positive bandwidth")
    cluster = Cluster(acc, gpus_per_node=args.gpus_per_node,
                      inter_node_bytes_s=args.inter_node_gbps * 1e9 / 8)
    if args.attention not in ("flash", "eager"):
        raise SpecError("attention", args.attention, "flash or eager")
    if args.mfu_attention not in ("dense", "causal"):
        raise SpecError("mfu-attention", args.mfu_attention, "dense or causal")
    overhead = parse_bytes(args.overhead, "overhead") if args.overhead else None
    if overhead is not None and overhead < 0:
        raise SpecError("overhead", args.overhead, "a size of 0 or more")
    precision = training_precision(args.precision)
    if precision.compute_dtype not in acc.peak_flops:
        fp16 = " (try --precision mixed-fp16)" if "fp16" in acc.peak_flops else ""
        raise SpecError("precision", args.precision,
                        f"a recipe whose {precision.compute_dtype} matrix products "
                        f"{acc.display_name} has a peak for: "
                        + ", ".join(acc.peak_flops) + fp16)
    train_tokens = parse_count(args.tokens, "tokens") if args.tokens else None
    return (spec, acc, par, precision, optimizer(args.optimizer), eff, cluster, overhead,
            train_tokens)


def suggestions(spec: Any, par: Any, precision: Any, opt: Any, seq: int, capacity: float,
                activations: str, flash: bool, overhead: float | None) -> list[str]:
    """Nearby configurations that fit, simplest first (seed 002's order: more ZeRO before
    offload, recomputation before a smaller micro-batch)."""
    from llmsizer.analysis.memory import training_memory

    tries: list[tuple[str, dict[str, Any]]] = []
    for z in range(par.zero + 1, 4):
        if par.dp > 1:
            tries.append((f"--zero {z}", {"zero": z}))
    if par.recompute != "full":
        tries.append(("--recompute full", {"recompute": "full"}))
    if par.micro_batch > 1:
        tries.append((f"--micro-batch {par.micro_batch // 2}",
                      {"micro_batch": par.micro_batch // 2, "grad_accum": par.grad_accum * 2}))
    if par.dp > 1:
        tries.append(("--zero 3 --recompute full", {"zero": 3, "recompute": "full"}))
        tries.append(("--zero 3 --offload optimizer --recompute full",
                      {"zero": 3, "offload": frozenset({"optimizer"}), "recompute": "full"}))
        tries.append(("--zero 3 --offload optimizer,params --recompute full",
                      {"zero": 3, "offload": frozenset({"optimizer", "params"}),
                       "recompute": "full"}))
    if par.dp % 2 == 0:
        tries.append((f"--tp {par.tp * 2} (dp {par.dp // 2})", {"tp": par.tp * 2, "dp": par.dp // 2,
                                                                "zero": par.zero if par.dp > 2 else 0}))
        tries.append((f"--pp {par.pp * 2} (dp {par.dp // 2})", {"pp": par.pp * 2, "dp": par.dp // 2,
                                                                "zero": par.zero if par.dp > 2 else 0}))
    out = []
    from llmsizer.analysis.memory import DEFAULT_FRAMEWORK_OVERHEAD

    for label, change in tries:
        try:
            p = replace(par, **change)
            m = training_memory(spec, p, precision, opt, seq, activations=activations,
                                flash_attention=flash,
                                framework_overhead=DEFAULT_FRAMEWORK_OVERHEAD
                                if overhead is None else overhead)
        except (SpecError, ValueError):
            continue
        if m.peak.total <= capacity:
            from llmsizer.units import format_bytes

            out.append(f"{label}: {format_bytes(m.peak.total)} per device")
        if len(out) >= 4:
            break
    return out


def run(args: argparse.Namespace) -> str:
    from llmsizer.analysis.training import train_step
    from llmsizer.report import dumps
    from llmsizer.report_training import achieved, training_json, training_text
    from llmsizer.units import parse_count

    spec, acc, par, precision, opt, eff, cluster, overhead, tokens = build(args)
    result = train_step(spec, par, precision, opt, args.seq, cluster, eff,
                        activations=args.activations, attention_backward=args.attention,
                        mfu_attention=args.mfu_attention, framework_overhead=overhead,
                        dp_overlap=not args.no_dp_overlap)
    if args.gpu_hours is not None and tokens is None:
        raise SpecError("gpu-hours", args.gpu_hours, "given together with --tokens")
    inverse = achieved(
        result,
        gpu_hours=parse_count(args.gpu_hours, "gpu-hours") if args.gpu_hours else None,
        step_time_s=args.step_time,
        tokens_per_s=parse_count(args.tokens_per_s, "tokens-per-s") if args.tokens_per_s else None,
        tokens=tokens)
    if args.step_time is not None and args.step_time <= 0:
        raise SpecError("step-time", args.step_time, "a positive number of seconds")
    data = training_json(result, tokens, args.price, inverse, args.explain)
    data["gpu"] = acc.name
    data["gpu_name"] = acc.display_name
    if not result.fits:
        data["suggestions"] = suggestions(spec, par, precision, opt, args.seq,
                                          result.capacity_bytes, args.activations,
                                          args.attention == "flash", overhead)
    if args.json:
        return dumps(data)
    text = training_text(result, data)
    if args.explain:
        text += "\n\nexplain:\n" + "\n".join("  " + line for line in data["explain"])
    return text
