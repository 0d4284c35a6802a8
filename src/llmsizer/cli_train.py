"""`llmsizer train`: flags → specs → training analysis → report."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from llmsizer.errors import SpecError

DEFAULT_SEQ = 4096


def add_parser(sub: Any, positive_int: Any) -> None:
    from llmsizer.cli import (
        MAX_GPUS,
        MAX_LENGTH,
        MAX_MICRO_BATCH,
        MAX_PARALLEL,
        add_model_and_gpu,
        add_moe_options,
        arg_count,
        arg_float,
        arg_int,
        arg_length,
    )

    t = sub.add_parser(
        "train", help="training memory, FLOPs, step time, MFU and time-to-train",
        description="Memory per device, FLOPs, step time, throughput, MFU/HFU and time-to-train "
        "of a training run; or, given a measurement (--gpu-hours, --step-time, --tokens-per-s), "
        "the MFU it achieved. Exits 3 when the run does not fit in memory.")
    add_model_and_gpu(t)
    t.add_argument("--gpus", type=arg_int(1, MAX_GPUS),
                   help="number of GPUs (default: one node, --gpus-per-node)")
    t.add_argument("--gpus-per-node", type=arg_int(1, 1024),
                   help="GPUs per node: the NVLink domain (default: the GPU's, 8 for an HGX/DGX "
                   "node, 72 for a GB200/GB300 NVL72 rack)")
    t.add_argument("--tokens", type=arg_count(), help="training tokens, e.g. 15T (for time-to-train)")
    t.add_argument("--seq", type=arg_length(1, MAX_LENGTH),
                   help="sequence length in tokens, 4k = 4096 (default: 4096, or the model's "
                   "position limit where that is shorter)")
    t.add_argument("--allow-long-context", action="store_true",
                   help="size a --seq beyond the model's position limit anyway")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--global-batch", type=arg_int(1, 2**24),
                   help="sequences per step (default: micro-batch · dp · accumulation, which is "
                   "1 without pipelining and 4·pp with it)")
    g.add_argument("--global-batch-tokens",
                   help="tokens per step, e.g. 4M (binary millions when the decimal reading is "
                   "not a multiple of --seq)")
    t.add_argument("--micro-batch", type=arg_int(1, MAX_MICRO_BATCH), default=1,
                   help="sequences per micro-batch per device")
    for name, what in (("tp", "tensor"), ("pp", "pipeline"), ("cp", "context"),
                       ("ep", "expert")):
        t.add_argument(f"--{name}", type=arg_int(1, MAX_PARALLEL), default=1,
                       help=f"{what}-parallel size")
    t.add_argument("--zero", default="0", help="ZeRO stage 0-3 (or FSDP name: full_shard, "
                   "shard_grad_op, no_shard)")
    t.add_argument("--offload", default="", help="optimizer, params or optimizer,params "
                   "(default: none)")
    t.add_argument("--offload-device", default="cpu", help="cpu or nvme")
    t.add_argument("--recompute", default="none", help="none, selective or full")
    t.add_argument("--sequence-parallel", action="store_true",
                   help="shard norms and dropout over the tensor-parallel group (Megatron)")
    t.add_argument("--schedule", default="1f1b", help="gpipe, 1f1b or interleaved:V")
    t.add_argument("--precision", default="mixed",
                   help="mixed (bf16 + fp32 master), mixed-fp16, mixed-fp32-grads, bf16, fp32")
    t.add_argument("--optimizer", default="adam", help="adam, adamw, adam-8bit, sgd, sgd-momentum")
    t.add_argument("--activations", default="megatron", help="activation-memory convention")
    t.add_argument("--attention", default="flash", help="flash or eager kernels")
    t.add_argument("--mfu-attention", default="auto",
                   help="attention pairs counted in the MFU numerator: auto (what the timed "
                   "kernels compute: causal for --attention flash, dense for eager), dense (PaLM, "
                   "Megatron-LM's papers) or causal")
    t.add_argument("--overhead", help="framework overhead per device, e.g. 1GiB (default: 1GiB)")
    t.add_argument("--price", type=arg_float(0, 1e6, what="a price per GPU-hour"),
                   help="price per GPU-hour, for the cost (in --currency)")
    t.add_argument("--currency", default="USD", help="currency of --price")
    t.add_argument("--matmul-efficiency", type=arg_float(0, 1, low_open=True, what="a fraction"),
                   help="ceiling fraction of peak for matrix products (default: the GPU "
                   "generation's measured maximum, scaled by the packaged training fit)")
    t.add_argument("--memory-efficiency", type=arg_float(0, 1, low_open=True, what="a fraction"),
                   help="fraction of HBM bandwidth reached (default: the GPU generation's "
                   "measured stream bandwidth)")
    t.add_argument("--comm-efficiency", type=arg_float(0, 1, low_open=True, what="a fraction"),
                   help="NCCL bus bandwidth over the intra-node link's (default: the GPU "
                   "generation's measured all-reduce bus bandwidth)")
    t.add_argument("--inter-node-gbps", type=arg_float(0, 1e6, low_open=True, what="Gb/s"),
                   help="network per GPU in Gb/s, one NIC per GPU (default: the GPU "
                   "generation's usual NIC: 200 for A100 (DGX A100: HDR), 400 for H100/B200 "
                   "(NDR))")
    t.add_argument("--calibration", help="efficiency calibration file (llmsizer calibrate)")
    t.add_argument("--framework", default="megatron",
                   help="whose overlaps time the step: megatron, nemo, deepspeed, fsdp2, fsdp1, "
                   "torchtitan or foundry, optionally with switches such as "
                   "megatron+tp-comm-overlap, deepspeed+overlap-grad-reduce or "
                   "torchtitan+compile (fused element-wise ops) (default: "
                   "megatron, with --overlap-grad-reduce and --overlap-param-gather on)")
    t.add_argument("--first-stage-layers", type=arg_int(1, 2**20),
                   help="layers on the first pipeline stage (Megatron-LM "
                   "--decoder-first-pipeline-num-layers; default: layers as even as possible)")
    t.add_argument("--last-stage-layers", type=arg_int(1, 2**20),
                   help="layers on the last pipeline stage (the loss and output layer live "
                   "there; default: layers as even as possible)")
    t.add_argument("--fp8-recipe", default="delayed",
                   help="with --precision fp8: delayed, current, tensorwise, rowwise, blockwise "
                   "or mxfp8 scaling (what the casts cost; default: delayed)")
    add_moe_options(t)
    t.add_argument("--no-dp-overlap", action="store_true",
                   help="do not hide gradient reduction behind the backward pass")
    m = t.add_mutually_exclusive_group()
    m.add_argument("--gpu-hours", type=arg_count(1e15),
                   help="measured GPU-hours (with --tokens): achieved MFU")
    m.add_argument("--step-time", type=arg_float(0, 1e7, low_open=True, what="seconds"),
                   help="measured seconds per step: achieved MFU")
    m.add_argument("--tokens-per-s", type=arg_count(1e15),
                   help="measured tokens/s of the whole run: achieved MFU")
    from llmsizer.charts import add_plot_argument

    add_plot_argument(t)
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.add_argument("--explain", action="store_true",
                   help="every number as its formula with values and source")


def _zero(text: str) -> int:
    from llmsizer.specs.parallel import ZERO_FSDP_NAMES

    key = text.strip().lower()
    if key in ZERO_FSDP_NAMES:
        return ZERO_FSDP_NAMES[key]
    if key in ("0", "1", "2", "3"):
        return int(key)
    raise SpecError("zero", text, "0, 1, 2, 3 or an FSDP name (no_shard, shard_grad_op, "
                    "full_shard)")


def global_batch_sequences(args: argparse.Namespace) -> int | None:
    """--global-batch (sequences) or --global-batch-tokens (a multiple of --seq).

    "16M" is 16,000,000 tokens when that is a multiple of --seq, else the papers' binary
    16·2^20 = 16,777,216 when that is; the reading taken is noted on stderr."""
    from llmsizer.units import count_readings

    if not args.global_batch_tokens:
        return args.global_batch  # type: ignore[no-any-return]
    text = args.global_batch_tokens
    decimal, binary = count_readings(text, "global-batch-tokens")
    if not 0 < decimal <= 2**40:
        raise SpecError("global-batch-tokens", text, "a positive number of tokens up to 2^40")
    for tokens, reading in ((decimal, "decimal"), (binary, "binary")):
        if tokens is not None and tokens == int(tokens) and int(tokens) % args.seq == 0:
            if binary is not None and binary != decimal:
                why = (f" (the decimal {int(decimal):,} is not a multiple of --seq {args.seq})"
                       if reading == "binary" else "")
                note(f"--global-batch-tokens {text} read as {reading} {int(tokens):,} tokens = "
                     f"{int(tokens) // args.seq:,} sequences of {args.seq}{why}")
            return int(tokens) // args.seq
    below = int(decimal // args.seq)
    raise SpecError("global-batch-tokens", text,
                    f"a multiple of seq ({args.seq}) in its decimal or binary reading, e.g. "
                    f"{below * args.seq:,} or {(below + 1) * args.seq:,} ({below} or {below + 1} "
                    "sequences)")


def note(text: str) -> None:
    """A one-line note for stderr (what was assumed), printed once the command succeeds."""
    from llmsizer.cli import NOTES

    NOTES.append(text)


def check_positions(spec: Any, model: str, tokens: int, what: str, allow: bool) -> None:
    """Refuse a sequence longer than the model's positions unless --allow-long-context."""
    from llmsizer.catalog import position_limit

    limit, how = position_limit(model, spec)
    if tokens > limit and not allow:
        raise SpecError(what, tokens, f"at most {spec.name}'s {limit:,} positions ({how}); "
                        "--allow-long-context sizes it anyway")


def build(args: argparse.Namespace) -> tuple[Any, ...]:
    from llmsizer.analysis.efficiency import Efficiency
    from llmsizer.analysis.training import Cluster
    from llmsizer.catalog import get_model
    from llmsizer.cli import accelerator_arg
    from llmsizer.specs.parallel import Parallelism, parse_schedule
    from llmsizer.specs.precision import optimizer, training_precision
    from llmsizer.units import parse_bytes

    spec = get_model(args.model)
    acc = accelerator_arg(args)
    args.gpus_per_node = args.gpus_per_node or acc.nvlink_domain
    if args.seq is None:
        from llmsizer.catalog import position_limit

        limit, _ = position_limit(args.model, spec)
        args.seq = min(DEFAULT_SEQ, limit)
        if args.seq < DEFAULT_SEQ:
            note(f"--seq {args.seq} ({spec.name}'s position limit; the default is "
                 f"{DEFAULT_SEQ})")
    check_positions(spec, args.model, args.seq, "seq", args.allow_long_context)
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
                      schedule=schedule, virtual_stages=v, stage_split=_split(args, spec))
    if schedule == "interleaved" and spec.num_layers < args.pp * v:
        # Megatron and torchtitan split layers unevenly over the pp·V chunks; each chunk needs
        # one layer at least
        raise SpecError("schedule", args.schedule,
                        f"V with pp·V at most num_layers ({spec.num_layers})")
    overrides = {k: v for k, v in (("matmul_ceiling", args.matmul_efficiency),
                                    ("memory_ceiling", args.memory_efficiency),
                                    ("comm_efficiency", args.comm_efficiency)) if v is not None}
    eff = Efficiency.for_accelerator(acc, args.calibration)
    if overrides:
        eff = replace(eff, **overrides, source=eff.source + " with command-line overrides")
    cluster = Cluster(acc, gpus_per_node=args.gpus_per_node,
                      inter_node_bytes_s=(args.inter_node_gbps * 1e9 / 8
                                          if args.inter_node_gbps else None))
    if args.attention not in ("flash", "eager"):
        raise SpecError("attention", args.attention, "flash or eager")
    if args.mfu_attention not in ("auto", "dense", "causal"):
        raise SpecError("--mfu-attention", args.mfu_attention, "auto, dense or causal")
    overhead = parse_bytes(args.overhead, "overhead") if args.overhead else None
    if overhead is not None and not 0 <= overhead <= 2**50:
        raise SpecError("overhead", args.overhead, "a size from 0 to 1PiB")
    precision = training_precision(args.precision)
    if precision.compute_dtype not in acc.peak_flops:
        fp16 = " (try --precision mixed-fp16)" if "fp16" in acc.peak_flops else ""
        raise SpecError("precision", args.precision,
                        f"a recipe whose {precision.compute_dtype} matrix products "
                        f"{acc.display_name} has a peak for: "
                        + ", ".join(acc.peak_flops) + fp16)
    return (spec, acc, par, precision, optimizer(args.optimizer), eff, cluster, overhead,
            args.tokens)


def _split(args: Any, spec: Any) -> tuple[int, int] | None:
    """(first, last) stage layers from --first/--last-stage-layers: one given, the other takes
    what an even split of the rest would give it."""
    first, last = args.first_stage_layers, args.last_stage_layers
    if first is None and last is None:
        return None
    if args.pp < 2:
        raise SpecError("first-stage-layers" if first else "last-stage-layers",
                        first or last, "used with --pp 2 or more")
    from llmsizer.analysis.params import check_split

    n, pp = spec.num_layers, args.pp
    if first is None or last is None:
        given = first if first is not None else last
        other = n - given if pp == 2 else max(1, round((n - given) / (pp - 1)))
        first, last = (given, other) if first is not None else (other, given)
    check_split(n, pp, (first, last))
    return first, last


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


def run(args: argparse.Namespace) -> Any:
    from llmsizer.analysis.training import train_step
    from llmsizer.cli import EXIT_DOES_NOT_FIT, Outcome
    from llmsizer.report import dumps
    from llmsizer.report_training import achieved, check_training, training_json, training_text

    spec, acc, par, precision, opt, eff, cluster, overhead, tokens = build(args)
    if args.gpu_hours is not None and tokens is None:
        raise SpecError("gpu-hours", args.gpu_hours, "given together with --tokens")
    result = train_step(spec, par, precision, opt, args.seq, cluster, eff,
                        activations=args.activations, attention_backward=args.attention,
                        mfu_attention=args.mfu_attention, framework_overhead=overhead,
                        dp_overlap=not args.no_dp_overlap, framework=args.framework,
                        fp8_recipe=args.fp8_recipe, moe_imbalance=args.moe_imbalance,
                        moe_dispatcher=args.moe_dispatcher,
                        moe_a2a_overlap=args.moe_a2a_overlap,
                        cuda_graphs=args.cuda_graphs)
    check_training(result)
    inverse = achieved(result, gpu_hours=args.gpu_hours, step_time_s=args.step_time,
                       tokens_per_s=args.tokens_per_s, tokens=tokens)
    data = training_json(result, tokens, args.price, inverse, args.explain, args.currency)
    data["gpu"] = acc.name
    data["gpu_name"] = acc.display_name
    if not result.fits:
        data["suggestions"] = suggestions(spec, par, precision, opt, args.seq,
                                          result.capacity_bytes, args.activations,
                                          args.attention == "flash", overhead)
    status = 0 if result.fits else EXIT_DOES_NOT_FIT
    from llmsizer.charts import maybe_plot

    maybe_plot(args, data)
    if args.json:
        return Outcome(dumps(data), status, wrap=False)
    text = training_text(result, data)
    if args.explain:
        text += "\n\nexplain:\n" + "\n".join("  " + line for line in data["explain"])
    return Outcome(text, status)
